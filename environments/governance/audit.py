"""Writing the append-only audit log."""

from __future__ import annotations

from typing import Any

from django.db import models

from environments.models import AuditEvent


def client_ip(request) -> str | None:
    """The caller's address. Behind a proxy, REMOTE_ADDR is set by the WSGI server."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


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
