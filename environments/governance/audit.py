"""Writing the append-only audit log."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.db import models

from environments.models import AuditEvent


def client_ip(request) -> str | None:
    """The caller's address: the peer's, or behind ``TRUSTED_PROXY_COUNT`` proxies the
    one the first of them saw (X-Forwarded-For, counted from the right).

    The sign-in rate limits use this too (``access.accounts``). A header with fewer hops
    than trusted proxies, or an entry that is not an IP address, is not believed.
    """
    if request is None:
        return None
    peer = request.META.get("REMOTE_ADDR") or None
    trusted = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if trusted <= 0 or not forwarded:
        return peer
    hops = [hop.strip() for hop in forwarded.split(",")]
    if len(hops) < trusted:
        return peer
    try:
        return str(ipaddress.ip_address(hops[-trusted].strip("[]")))
    except ValueError:
        return peer


def who(user) -> str:
    """How a person is named everywhere (timelines, audit log): their email address."""
    return user.email or user.get_username()


def record(
    *,
    actor,
    action: str,
    target: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    before: Any = None,
    after: Any = None,
    ip: str | None = None,
) -> AuditEvent:
    """Append one entry. ``actor`` may be None for the system (scheduler, reconciler)."""
    if target is not None:
        object_type = object_type or target._meta.model_name or ""
        object_id = object_id or str(target.pk)
        object_repr = object_repr or str(target)[:200]
    is_person = actor is not None and getattr(actor, "is_authenticated", False)
    return AuditEvent.objects.create(
        actor_id=actor.pk if is_person else None,
        actor=(who(actor) if is_person else "system"),
        action=action,
        object_type=object_type,
        object_id=object_id,
        object_repr=object_repr,
        before=before,
        after=after,
        ip=ip,
    )
