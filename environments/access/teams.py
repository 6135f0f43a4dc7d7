"""Team membership: who may act on an environment, and for which team a request is.

The one home of this rule: the web pages, the API and the CLI all ask here.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

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
    """Owners, their teammates and admins may act on an environment."""
    if environment.owner_id == user.pk or roles.is_admin(user):
        return True
    return Membership.objects.filter(team_id=environment.team_id, user=user).exists()
