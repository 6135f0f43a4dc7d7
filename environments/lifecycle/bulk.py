"""Bulk actions (issue 16): extend or delete several environments at once.

Each environment goes through the same service as a single action, in its own
transaction, with its own permission check and its own audit entry; one that the actor
may not see or change is refused and named, the others go ahead. The dashboard, the
API's bulk endpoint, the CLI and a class page all call ``extend_many`` / ``delete_many``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied

from environments.lib.durations import format_duration
from environments.lib.errors import ServiceError
from environments.lifecycle import services
from environments.models import Environment

MAX_BULK = 100  # environments in one bulk action
# An id (a UUID) or a short name (8 hex digits); anything else names no environment.
REF = re.compile(r"[0-9a-fA-F-]{8,36}")


@dataclass(frozen=True)
class Outcome:
    """What happened to one environment: done, or refused and why."""

    ref: str  # as the actor named it (id or short name)
    label: str  # as people read it
    done: bool
    message: str
    environment_id: str | None = None


@dataclass
class BulkResult:
    action: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def done(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.done]

    @property
    def refused(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.done]

    @property
    def summary(self) -> str:
        verb = {"extend": "Extended", "delete": "Deleting"}[self.action]
        text = f"{verb} {len(self.done)} of {len(self.outcomes)} environments."
        if self.refused:
            text += " Not changed: " + "; ".join(f"{o.label}: {o.message}" for o in self.refused)
        return text


def _refs(ids) -> list[str]:
    refs = list(dict.fromkeys(str(i).strip()[:40] for i in ids if str(i).strip()))
    if not refs:
        raise ServiceError("Select at least one environment.")
    if len(refs) > MAX_BULK:
        raise ServiceError(
            f"Select at most {MAX_BULK} environments at once; you chose {len(refs)}."
        )
    return refs


def _find(actor, ref: str, team_id=None) -> Environment | None:
    """By id or short name, among what ``actor`` may see (others: None, named as given);
    with ``team_id`` (a team's API token), among that team's only."""
    rows = Environment.objects.visible_to(actor).select_related(
        "owner", "team", "blueprint_version__blueprint"
    )
    if team_id is not None:
        rows = rows.filter(team_id=team_id)
    if not REF.fullmatch(ref):
        return None
    try:
        return rows.filter(pk=uuid.UUID(ref)).first()
    except ValueError:
        return rows.filter(name=ref.lower()).first() if len(ref) <= 8 else None


def _label(environment: Environment) -> str:
    return environment.display_name or environment.name


NOT_FOUND = "no such environment, or you may not see it"


def targets(actor, ids, *, team_id=None) -> list[tuple[str, Environment | None]]:
    """What a bulk action would touch, for the confirmation page: (ref, environment)."""
    return [(ref, _find(actor, ref, team_id)) for ref in _refs(ids)]


def _each(action: str, actor, ids, team_id, do: Callable[[Environment], str]) -> BulkResult:
    """Run ``do`` on each environment named in ``ids``, one by one: its message when done;
    one not found, or refused by the service (PermissionDenied, ServiceError), is named
    with the reason and the others go ahead."""
    result = BulkResult(action)
    for ref, environment in targets(actor, ids, team_id=team_id):
        if environment is None:
            result.outcomes.append(Outcome(ref, ref, False, NOT_FOUND))
            continue
        label = _label(environment)
        try:
            message = do(environment)
        except (PermissionDenied, ServiceError) as exc:
            result.outcomes.append(Outcome(ref, label, False, str(exc), str(environment.pk)))
            continue
        result.outcomes.append(Outcome(ref, label, True, message, str(environment.pk)))
    return result


def extend_many(
    actor, ids, seconds: int, *, reason: str = "", ip: str | None = None, team_id=None
) -> BulkResult:
    """Extend each environment by ``seconds``: the single extension's rules, one by one
    (an extension needing approval is queued for an approver, as for one)."""

    def extend(environment: Environment) -> str:
        extended = services.extend_environment(
            environment=environment, user=actor, seconds=seconds, reason=reason, ip=ip
        )
        if getattr(extended, "queued_extension", None) is not None:
            return "the extension waits for an approver"
        return f"extended by {format_duration(seconds)}"

    return _each("extend", actor, ids, team_id, extend)


def delete_many(actor, ids, *, ip: str | None = None, team_id=None) -> BulkResult:
    """Start the teardown of each environment the actor may delete."""

    def delete(environment: Environment) -> str:
        started = services.delete_environment(environment=environment, user=actor, ip=ip)
        return "deleting" if started else "already being deleted"

    return _each("delete", actor, ids, team_id, delete)
