"""Team membership: who may act on an environment, and for which team a request is.

The one home of this rule: the web pages, the API and the CLI all ask here.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import Q

from environments.access import roles
from environments.lib.errors import ServiceError
from environments.models import Environment, Membership, Team


def team_for(user, team: Team | None) -> Team:
    """The team a new environment is for: the one asked for, or the user's only team.

    Members may request for their team; portal admins for any team (they run the
    portal for everyone). Everyone else is refused, in the UI, the API and the CLI.
    """
    teams = list(Team.objects.filter(memberships__user=user))
    if team is not None:
        if team not in teams and not roles.is_admin(user):
            raise PermissionDenied(f"You are not a member of team {team.name}.")
        return team
    if not teams:
        raise ServiceError("You are not in a team yet; ask a portal admin to add you to one.")
    if len(teams) > 1:
        raise ServiceError("You are in several teams; choose the team this environment is for.")
    return teams[0]


def requestable_teams(user) -> list[Team]:
    """The teams ``user`` may request environments for, by name: what the form offers."""
    teams = Team.objects.order_by("name")
    if roles.is_admin(user):
        return list(teams)
    return list(teams.filter(memberships__user=user))


def can_change(user, environment: Environment) -> bool:
    """Who may change an environment (extend, rename, update, retry, delete, clone) and
    download its kubeconfig: its owner, admins, and in its team the leads, or every
    member when the team's change policy is "any member". Teammates who may not change
    it still see it (``Environment.objects.visible_to``)."""
    if not getattr(user, "is_authenticated", False):
        return False
    if environment.owner_id == user.pk or roles.is_admin(user):
        return True
    membership = (
        Membership.objects.filter(team_id=environment.team_id, user=user)
        .select_related("team")
        .first()
    )
    if membership is None:
        return False
    return membership.lead or membership.team.change_policy == Team.ChangePolicy.ANY_MEMBER


def can_hold_kubeconfig(user, environment: Environment) -> bool:
    """Who may download, and keep using, a kubeconfig for an environment: an active
    person who may change it and still belongs to its team (admins need not). An owner
    who leaves the team loses it like anyone else (``access.credentials`` revokes)."""
    if not getattr(user, "is_active", False) or not can_change(user, environment):
        return False
    return (
        roles.is_admin(user)
        or Membership.objects.filter(team_id=environment.team_id, user=user).exists()
    )


def changeable_team_ids(user) -> set[int] | None:
    """The teams whose members' environments ``user`` may change (besides their own):
    None for every team (admins); else where they lead or the team lets any member.
    One query, for lists (``can_change`` is the rule for one environment)."""
    if roles.is_admin(user):
        return None
    if not getattr(user, "is_authenticated", False):
        return set()
    return set(
        Membership.objects.filter(user=user)
        .filter(Q(lead=True) | Q(team__change_policy=Team.ChangePolicy.ANY_MEMBER))
        .values_list("team_id", flat=True)
    )


# --- Approvers ----------------------------------------------------------------------------
# The approver role (or admin) approves every team's requests; a membership marked
# ``approver`` approves that team's only.


def approver_team_ids(user) -> set[int] | None:
    """The teams whose requests ``user`` may decide: None for every team (the approver
    or admin role), else the ids of the teams they approve for (maybe none)."""
    if roles.is_approver(user):
        return None
    if not getattr(user, "is_authenticated", False):
        return set()
    return set(
        Membership.objects.filter(user=user, approver=True).values_list("team_id", flat=True)
    )


def is_any_approver(user) -> bool:
    """May see the approval queue: approves for every team or for at least one."""
    teams = approver_team_ids(user)
    return teams is None or bool(teams)


def can_approve_for(user, team_id) -> bool:
    teams = approver_team_ids(user)
    return teams is None or team_id in teams
