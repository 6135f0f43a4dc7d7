"""The one module that moves environments between states.

Each move is one guarded UPDATE: ``filter(pk=..., state__in=FROM).update(state=TO)``.
Exactly one caller wins a race (two workers, a double click); the loser sees ``False``
and does nothing, which is not an error (healthchecks' ``sendalerts`` claims work the
same way). Which moves are allowed is declared in ``lifecycle.states``.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from environments.lifecycle import forge_feedback
from environments.lifecycle.states import State, TransitionError, can_transition
from environments.models import Environment, EnvironmentEvent, ExtensionRequest


def transition(
    environment_id,
    *,
    from_states: str | frozenset[str] | set[str] | tuple[str, ...],
    to_state: str,
    message: str = "",
    actor=None,
    expired_by: datetime | None = None,
    **fields,
) -> bool:
    """Move one environment from any of ``from_states`` to ``to_state``.

    Returns True if this call made the move, False if the row was not in one of
    ``from_states`` (someone else moved it first, or it never was). Also records an
    EnvironmentEvent for the move. ``fields`` are updated in the same statement.

    ``expired_by`` (the reaper's) also requires ``expires_at <= expired_by`` in the same
    guarded UPDATE, so an extension committed after the reaper chose the row wins.
    """
    if isinstance(from_states, str):
        from_states = (from_states,)
    for from_state in from_states:
        if not can_transition(from_state, to_state):
            raise TransitionError(f"{from_state} -> {to_state} is not an allowed transition")
    now = timezone.now()
    with transaction.atomic():
        rows = Environment.objects.filter(pk=environment_id, state__in=list(from_states))
        if expired_by is not None:
            rows = rows.filter(expires_at__lte=expired_by)
        changed = rows.update(state=to_state, state_changed_at=now, updated_at=now, **fields)
        if changed:
            EnvironmentEvent.objects.create(
                environment_id=environment_id,
                kind=EnvironmentEvent.Kind.STATE,
                state=to_state,
                message=message or f"Now {State(to_state).label.lower()}.",
                actor=actor,
            )
            # A pull request's environment: its commit status and comment follow.
            forge_feedback.after_transition(environment_id)
    return bool(changed)


def decide_extension_request(request_id, *, to_state: str, **fields) -> bool:
    """Move one pending extension request to approved, rejected or withdrawn.

    The same guarded UPDATE as ``transition``: of two approvers deciding at once (or an
    approver and the environment's deletion), exactly one wins; the other sees False.
    """
    if to_state == ExtensionRequest.State.PENDING:
        raise TransitionError("an extension request never goes back to pending")
    return bool(
        ExtensionRequest.objects.filter(pk=request_id, state=ExtensionRequest.State.PENDING).update(
            state=to_state, **fields
        )
    )


def withdraw_extension_requests(environment_id) -> int:
    """Withdraw what still waits for an environment that is ending (deleted, expired)."""
    return ExtensionRequest.objects.filter(
        environment_id=environment_id, state=ExtensionRequest.State.PENDING
    ).update(state=ExtensionRequest.State.WITHDRAWN, decided_at=timezone.now())


def claim_pooled(environment_id, *, owner, team, actor=None, message: str = "", **fields) -> bool:
    """Hand one ready, unclaimed pooled environment to ``owner`` (issue 16).

    The same guarded UPDATE as ``transition``: ``WHERE pooled AND state = 'ready'``, so of
    two requests claiming one environment at once exactly one wins; the other sees False
    and takes another (or none). The state stays ready: only the owner changes.
    """
    now = timezone.now()
    with transaction.atomic():
        changed = Environment.objects.filter(
            pk=environment_id, pooled=True, state=State.READY
        ).update(
            pooled=False,
            owner=owner,
            team=team,
            created_at=now,
            updated_at=now,
            expiry_warned_at=None,
            **fields,
        )
        if changed:
            EnvironmentEvent.objects.create(
                environment_id=environment_id,
                kind=EnvironmentEvent.Kind.INFO,
                message=message or "Taken from the warm pool.",
                actor=actor,
            )
    return bool(changed)
