"""People and teams, managed in the portal: invitations, membership, roles, deactivation.

Every write a portal admin makes to people goes through here and leaves an audit entry
with ``before`` and ``after``. An invitation link carries a random token; only its
SHA-256 hash is stored (like API tokens), it works once and expires. The email with the
link is sent when the transaction commits, from this process, never through a job: a
job's arguments sit in Redis, and the link must not be stored anywhere in clear.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
import zoneinfo
from datetime import timedelta

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from environments.access import roles
from environments.governance import audit
from environments.lib.errors import ServiceError
from environments.lifecycle import queue
from environments.models import ApiToken, Invitation, Membership, Profile, Team

log = logging.getLogger(__name__)

INVITATION_DAYS = 7


def hash_link_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_url(token: str) -> str:
    return f"{settings.SITE_URL}/invitations/{token}/"


def _require_admin(actor) -> None:
    if not roles.is_admin(actor):
        raise PermissionDenied("Only portal admins manage people.")


def _roles_of(user) -> list[str]:
    return sorted(user.groups.values_list("name", flat=True))


def _teams_of(user) -> list[str]:
    return sorted(Team.objects.filter(memberships__user=user).values_list("slug", flat=True))


def find_account(email: str):
    """The account that signs in with ``email`` (any case), or None."""
    return get_user_model().objects.filter(email__iexact=email).first()


# --- Invitations ----------------------------------------------------------------------


@transaction.atomic
def invite(
    *, actor, email: str, team: Team, approver: bool = False, ip: str | None = None
) -> Invitation:
    """Invite ``email`` into ``team``: an email with a link that works once, for
    ``INVITATION_DAYS`` days. A newer invitation to the same address replaces older
    pending ones (their links stop working)."""
    _require_admin(actor)
    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise ServiceError(f"“{email}” is not an email address.") from None
    if find_account(email) is not None:
        raise ServiceError(
            f"{email} already has an account; add them to team {team.name} on their page."
        )
    now = timezone.now()
    replaced = Invitation.objects.filter(
        email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=now)
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        email=email,
        team=team,
        approver=approver,
        token_hash=hash_link_token(token),
        invited_by=actor,
        created_at=now,
        expires_at=now + timedelta(days=INVITATION_DAYS),
    )
    audit.record(
        actor=actor,
        action="person.invite",
        target=invitation,
        after={
            "email": email,
            "team": team.slug,
            "approver": approver,
            "expires_at": invitation.expires_at.isoformat(),
            "replaced_invitations": replaced,
        },
        ip=ip,
    )
    subject = f"You are invited to Ephemera, team {team.name}"
    body = (
        f"{audit.who(actor)} invited you to Ephemera, the portal for short-lived "
        f"environments, as a member of team {team.name}.\n\n"
        f"Set your password and sign in here (the link works once, until "
        f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC):\n\n{invitation_url(token)}\n"
    )
    transaction.on_commit(lambda: _send_invitation(subject, body, email, invitation.pk))
    return invitation


def invite_attendee(*, actor, email: str, team: Team) -> tuple[Invitation, str]:
    """A class's roster is the invitation under invite-only sign-up: an invitation to
    ``email`` into the class's attendee team, made by its trainer (not an admin). Returns
    the invitation and its link's token, which the class's own email carries; the caller
    sends it on commit and never stores or logs it."""
    email = email.strip().lower()
    now = timezone.now()
    Invitation.objects.filter(
        email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=now)
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        email=email,
        team=team,
        token_hash=hash_link_token(token),
        invited_by=actor,
        created_at=now,
        expires_at=now + timedelta(days=INVITATION_DAYS),
    )
    audit.record(
        actor=actor,
        action="person.invite",
        target=invitation,
        after={"email": email, "team": team.slug, "expires_at": invitation.expires_at.isoformat()},
    )
    return invitation, token


def _send_invitation(subject: str, body: str, email: str, invitation_id: int) -> None:
    try:
        send_mail(subject, body, None, [email])
    except Exception:  # noqa: BLE001 - the invitation stands; the admin can send it again
        # Never log the body: it holds the link.
        log.exception("invitation %s: the email to %s could not be sent", invitation_id, email)


def pending_invitation(token: str) -> Invitation | None:
    """The invitation ``token`` opens, whatever its state (the page says which), or None."""
    if not token or len(token) > 200:
        return None
    return invitation_by_hash(hash_link_token(token))


def invitation_by_hash(token_hash: str) -> Invitation | None:
    return Invitation.objects.select_related("team").filter(token_hash=token_hash).first()


def refusal(invitation: Invitation) -> str | None:
    """Why this invitation can no longer be used, in one line; None if it can."""
    status = invitation.status
    if status == "accepted":
        return "This invitation link has already been used; sign in instead."
    if status == "revoked":
        return "This invitation was withdrawn or replaced by a newer one; use the newest email."
    if status == "expired":
        return "This invitation has expired; ask a portal admin to invite you again."
    return None


def accept(*, token: str, password: str, ip: str | None = None):
    """Open the account the invitation is for: set its password, join the team (and
    take the approver role if the invitation gives it). Returns the new user."""
    return accept_by_hash(token_hash=hash_link_token(token or ""), password=password, ip=ip)


@transaction.atomic
def accept_by_hash(*, token_hash: str, password: str, ip: str | None = None):
    """``accept`` for the page, which keeps only the link's hash in the session."""
    invitation = (
        Invitation.objects.select_for_update()
        .select_related("team")
        .filter(token_hash=token_hash)
        .first()
    )
    if invitation is None:
        raise ServiceError("This invitation link is not valid; check that you copied all of it.")
    why = refusal(invitation)
    if why:
        raise ServiceError(why)
    if find_account(invitation.email) is not None:
        raise ServiceError(f"{invitation.email} already has an account; sign in instead.")
    User = get_user_model()
    user = User(username=invitation.email, email=invitation.email)
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ServiceError(" ".join(exc.messages)) from None
    # Guarded: of two simultaneous uses, one wins; the other finds the link used.
    if not Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True).update(
        accepted_at=timezone.now()
    ):
        raise ServiceError("This invitation link has already been used; sign in instead.")
    user.set_password(password)
    user.save()
    Invitation.objects.filter(pk=invitation.pk).update(accepted_by=user)
    # allauth signs in by verified email; the link proved the address.
    EmailAddress.objects.create(user=user, email=invitation.email, primary=True, verified=True)
    _join_invited_team(invitation, user, ip=ip)
    return user


def pending_invitation_for(email: str) -> Invitation | None:
    """The newest usable invitation to ``email`` (any case), or None."""
    now = timezone.now()
    return (
        Invitation.objects.select_related("team")
        .filter(
            email__iexact=email,
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=now,
        )
        .first()  # newest first (Meta.ordering); a newer one revokes the older anyway
    )


@transaction.atomic
def accept_through_provider(*, user, email: str, ip: str | None = None) -> Invitation | None:
    """Use up the pending invitation to ``email`` for ``user``, a new account the identity
    provider vouched for with that (verified) address: the same as following the link,
    without a password. Returns the invitation, or None if there was none."""
    invitation = pending_invitation_for(email)
    if invitation is None:
        return None
    # Guarded, like the link: of two simultaneous uses, one wins.
    if not Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True).update(
        accepted_at=timezone.now(), accepted_by=user
    ):
        return None
    _join_invited_team(invitation, user, ip=ip, through="single sign-on")
    return invitation


def _join_invited_team(invitation: Invitation, user, *, ip: str | None, **how: str) -> None:
    """What accepting an invitation gives, however it was accepted: the team, the
    approver role if the invitation carried it, and the audit entry."""
    Membership.objects.get_or_create(team=invitation.team, user=user)
    if invitation.approver:
        user.groups.add(Group.objects.get_or_create(name=roles.APPROVER)[0])
    audit.record(
        actor=user,
        action="person.accept_invitation",
        target=invitation,
        before={"status": "pending"},
        after={
            "user": user.email,
            "team": invitation.team.slug,
            "roles": _roles_of(user),
            **how,
        },
        ip=ip,
    )


@transaction.atomic
def revoke_invitation(*, actor, invitation: Invitation, ip: str | None = None) -> bool:
    """Withdraw a pending invitation: its link stops working. Twice is not an error."""
    _require_admin(actor)
    changed = Invitation.objects.filter(
        pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=timezone.now())
    if changed:
        audit.record(
            actor=actor,
            action="person.revoke_invitation",
            target=invitation,
            before={"status": "pending"},
            after={"status": "revoked"},
            ip=ip,
        )
    return bool(changed)


# --- Membership, roles, deactivation --------------------------------------------------


@transaction.atomic
def add_member(*, actor, user, team: Team, ip: str | None = None) -> bool:
    """Put ``user`` in ``team``; already a member is not an error (returns False)."""
    _require_admin(actor)
    before = _teams_of(user)
    _, created = Membership.objects.get_or_create(team=team, user=user)
    if created:
        audit.record(
            actor=actor,
            action="person.add_to_team",
            target=user,
            object_repr=user.email,
            before={"teams": before},
            after={"teams": _teams_of(user)},
            ip=ip,
        )
    return created


@transaction.atomic
def remove_member(*, actor, user, team: Team, ip: str | None = None) -> bool:
    """Take ``user`` out of ``team``. Their environments stay (the team still owns and
    pays for them); their team tokens for it stop working (access.tokens)."""
    _require_admin(actor)
    before = _teams_of(user)
    deleted, _ = Membership.objects.filter(team=team, user=user).delete()
    if deleted:
        audit.record(
            actor=actor,
            action="person.remove_from_team",
            target=user,
            object_repr=user.email,
            before={"teams": before},
            after={"teams": _teams_of(user)},
            ip=ip,
        )
    return bool(deleted)


TEAM_ROLES = ("lead", "approver")


@transaction.atomic
def set_team_role(
    *, actor, user, team: Team, role: str, value: bool, ip: str | None = None
) -> bool:
    """Make ``user`` a lead of ``team`` (changes teammates' environments) or an approver
    for ``team`` only (approves its requests), or take that back. Returns whether it
    changed. The approver role (``set_approver``) approves for every team."""
    _require_admin(actor)
    if role not in TEAM_ROLES:
        raise ServiceError(f"No team role {role!r}; choose lead or approver.")
    membership = Membership.objects.select_for_update().filter(team=team, user=user).first()
    if membership is None:
        raise ServiceError(f"{user.email} is not in team {team.name}; add them first.")
    if getattr(membership, role) == value:
        return False
    setattr(membership, role, value)
    membership.save(update_fields=[role])
    audit.record(
        actor=actor,
        action=f"person.{'grant' if value else 'revoke'}_team_{role}",
        target=user,
        object_repr=user.email,
        before={"team": team.name, role: not value},
        after={"team": team.name, role: value},
        ip=ip,
    )
    return True


@transaction.atomic
def set_approver(*, actor, user, approver: bool, ip: str | None = None) -> bool:
    """Give (``approver=True``) or take the approver role. Returns whether it changed.

    Admins approve through their admin role whatever this says."""
    _require_admin(actor)
    group, _ = Group.objects.get_or_create(name=roles.APPROVER)
    before = _roles_of(user)
    has = roles.APPROVER in before
    if has == approver:
        return False
    if approver:
        user.groups.add(group)
    else:
        user.groups.remove(group)
    user.__dict__.pop("_ephemera_roles", None)
    audit.record(
        actor=actor,
        action="person.grant_approver" if approver else "person.revoke_approver",
        target=user,
        object_repr=user.email,
        before={"roles": before},
        after={"roles": _roles_of(user)},
        ip=ip,
    )
    return True


@transaction.atomic
def deactivate(*, actor, user, ip: str | None = None) -> bool:
    """Stop ``user`` from signing in: sessions end at their next request (Django does
    not authenticate inactive users) and their API tokens are revoked."""
    _require_admin(actor)
    if user.pk == actor.pk:
        raise ServiceError("You cannot deactivate yourself; ask another portal admin.")
    if user.is_superuser and not actor.is_superuser:
        raise PermissionDenied("Only a superuser can deactivate a superuser.")
    User = get_user_model()
    if not User.objects.filter(pk=user.pk, is_active=True).update(is_active=False):
        return False
    user.is_active = False
    revoked = ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    # Their kubeconfigs too: the worker deletes their identity in every namespace.
    queue.enqueue_access_on_commit("person", user.pk)
    audit.record(
        actor=actor,
        action="person.deactivate",
        target=user,
        object_repr=user.email,
        before={"active": True},
        after={"active": False, "tokens_revoked": revoked},
        ip=ip,
    )
    return True


@transaction.atomic
def reactivate(*, actor, user, ip: str | None = None) -> bool:
    """Let a deactivated person sign in again (their old API tokens stay revoked)."""
    _require_admin(actor)
    User = get_user_model()
    if not User.objects.filter(pk=user.pk, is_active=False).update(is_active=True):
        return False
    user.is_active = True
    queue.enqueue_access_on_commit("person", user.pk)
    audit.record(
        actor=actor,
        action="person.reactivate",
        target=user,
        object_repr=user.email,
        before={"active": False},
        after={"active": True},
        ip=ip,
    )
    return True


# --- Profile --------------------------------------------------------------------------


@functools.cache
def time_zone_names() -> list[str]:
    """Every IANA zone name, sorted (read from disk once per process)."""
    return sorted(zoneinfo.available_timezones() - {"localtime", "Factory"})


@functools.cache
def _zone_set() -> frozenset[str]:
    return frozenset(time_zone_names())


def valid_time_zone(name: str) -> bool:
    return bool(name) and name in _zone_set()


def time_zone_of(user) -> str:
    """The zone ``user`` chose in their profile; "" means the browser's."""
    if not getattr(user, "is_authenticated", False):
        return ""
    cached = getattr(user, "_ephemera_time_zone", None)
    if cached is None:
        cached = (
            Profile.objects.filter(user_id=user.pk).values_list("time_zone", flat=True).first()
            or ""
        )
        user._ephemera_time_zone = cached
    return cached


@transaction.atomic
def set_time_zone(*, user, time_zone: str, ip: str | None = None) -> Profile:
    """Show times to ``user`` in ``time_zone`` ("" for their browser's zone)."""
    time_zone = (time_zone or "").strip()
    if time_zone and not valid_time_zone(time_zone):
        raise ServiceError(f"“{time_zone}” is not a time zone, such as Europe/Amsterdam.")
    profile, _ = Profile.objects.select_for_update().get_or_create(user=user)
    before = profile.time_zone
    if before != time_zone:
        profile.time_zone = time_zone
        profile.save(update_fields=["time_zone", "updated_at"])
        audit.record(
            actor=user,
            action="profile.update",
            target=profile,
            object_repr=user.email,
            before={"time_zone": before or "browser"},
            after={"time_zone": time_zone or "browser"},
            ip=ip,
        )
    user._ephemera_time_zone = time_zone
    return profile
