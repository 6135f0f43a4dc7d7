"""API tokens: create, revoke, authenticate.

A token reads ``eph_<prefix>_<secret>``. Only the SHA-256 hash of the whole string is
stored, so a database leak gives nobody a working token; the plaintext is shown once,
when the token is created. The prefix is kept in clear so people can tell their tokens
apart in the list.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from environments.governance import audit
from environments.models import ApiToken, Membership, Team

TOKEN_PREFIX = "eph_"
MAX_DAYS = 365


class TokenError(Exception):
    """A token request a user must fix, with a message they can read."""


def hash_token(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


@transaction.atomic
def create_token(
    *,
    user,
    name: str,
    scope: str,
    days: int,
    team: Team | None = None,
    ip: str | None = None,
) -> tuple[ApiToken, str]:
    """Create a token for ``user`` (or for ``team``, acting on its environments).

    Returns ``(token, plaintext)``; the plaintext is never stored and cannot be shown
    again.
    """
    name = (name or "").strip()
    if not name:
        raise TokenError("Give the token a name, so you know later what uses it.")
    if scope not in ApiToken.Scope.values:
        raise TokenError(f"{scope!r} is not a token scope (read or write).")
    if not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise TokenError(f"A token lives between 1 and {MAX_DAYS} days.")
    if team is not None and not Membership.objects.filter(team=team, user=user).exists():
        raise TokenError(f"You are not a member of team {team.name}.")
    prefix = secrets.token_hex(4)
    plaintext = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(
        name=name[:100],
        user=user,
        team=team,
        prefix=prefix,
        token_hash=hash_token(plaintext),
        scope=scope,
        expires_at=timezone.now() + timedelta(days=days),
    )
    audit.record(
        actor=user,
        action="token.create",
        target=token,
        after={"name": token.name, "scope": scope, "team": team.slug if team else None},
        ip=ip,
    )
    return token, plaintext


@transaction.atomic
def revoke_token(*, token: ApiToken, user, ip: str | None = None) -> bool:
    """Revoke ``token``. Only its owner may; revoking twice is not an error."""
    if token.user_id != user.pk:
        raise TokenError("You can only revoke your own tokens.")
    changed = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if changed:
        audit.record(actor=user, action="token.revoke", target=token, ip=ip)
    return bool(changed)


def authenticate(plaintext: str) -> ApiToken | None:
    """The active token for ``plaintext`` (not revoked, not expired), or None."""
    if not plaintext or not plaintext.startswith(TOKEN_PREFIX) or len(plaintext) > 200:
        return None
    now = timezone.now()
    token = (
        ApiToken.objects.select_related("user", "team")
        .filter(token_hash=hash_token(plaintext), revoked_at__isnull=True, expires_at__gt=now)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    # A team token stops working when its owner leaves the team.
    if (
        token.team_id is not None
        and not Membership.objects.filter(team_id=token.team_id, user_id=token.user_id).exists()
    ):
        return None
    # Minute resolution is enough for "last used" and spares a write per request.
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
