"""The environment state machine. This module owns every state transition.

Each transition is one guarded UPDATE: ``filter(pk=..., state__in=FROM).update(state=TO)``.
Exactly one caller wins a race (two workers, a double click); the loser sees ``False``
and does nothing, which is not an error (healthchecks' ``sendalerts`` claims work the
same way).

::

    requested -> pending_approval -> approved -> provisioning -> ready -> tearing_down -> deleted
         |             |                ^   |          |           |           ^
         |             v                |   |          v           v           |
         +------->  rejected            |   +----->  failed ---- (retry) ------+
         +-------------------> approved |                          (any live state may be torn down)
"""

from __future__ import annotations

from django.db import models, transaction
from django.utils import timezone


class State(models.TextChoices):
    REQUESTED = "requested", "Requested"
    PENDING_APPROVAL = "pending_approval", "Pending approval"
    APPROVED = "approved", "Approved"
    PROVISIONING = "provisioning", "Provisioning"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"
    TEARING_DOWN = "tearing_down", "Tearing down"
    DELETED = "deleted", "Deleted"
    REJECTED = "rejected", "Rejected"


# Allowed moves: FROM -> {TO}. Anything not listed is forbidden.
TRANSITIONS: dict[str, frozenset[str]] = {
    State.REQUESTED: frozenset({State.PENDING_APPROVAL, State.APPROVED, State.REJECTED}),
    State.PENDING_APPROVAL: frozenset({State.APPROVED, State.REJECTED, State.TEARING_DOWN}),
    State.APPROVED: frozenset({State.PROVISIONING, State.TEARING_DOWN}),
    State.PROVISIONING: frozenset({State.READY, State.FAILED, State.TEARING_DOWN}),
    # ready -> provisioning: an update (new parameters, e.g. a pull request's new commit).
    State.READY: frozenset({State.PROVISIONING, State.TEARING_DOWN, State.FAILED}),
    # Retry goes back through "approved" so the provision job claims it as usual.
    State.FAILED: frozenset({State.APPROVED, State.TEARING_DOWN}),
    State.TEARING_DOWN: frozenset({State.DELETED}),
    State.DELETED: frozenset(),
    State.REJECTED: frozenset(),
}

# States in which an environment holds (or may soon hold) cluster resources and quota.
LIVE_STATES = frozenset(
    {
        State.REQUESTED,
        State.PENDING_APPROVAL,
        State.APPROVED,
        State.PROVISIONING,
        State.READY,
        State.FAILED,
        State.TEARING_DOWN,
    }
)
# States in which nothing will change without a person or a schedule acting: pages stop
# polling. A pending request is not settled for its requester, who waits to see the
# approver's decision; it is polled, but slowly (see Environment.poll_seconds).
SETTLED_STATES = frozenset({State.READY, State.FAILED, State.DELETED, State.REJECTED})


class TransitionError(ValueError):
    """A transition that the state machine forbids (a programming error, not a race)."""


def can_transition(from_state: str, to_state: str) -> bool:
    return to_state in TRANSITIONS.get(from_state, frozenset())


def transition(
    environment_id,
    *,
    from_states: str | frozenset[str] | set[str] | tuple[str, ...],
    to_state: str,
    message: str = "",
    actor=None,
    **fields,
) -> bool:
    """Move one environment from any of ``from_states`` to ``to_state``.

    Returns True if this call made the move, False if the row was not in one of
    ``from_states`` (someone else moved it first, or it never was). Also records an
    EnvironmentEvent for the move. ``fields`` are updated in the same statement.
    """
    from environments.models import Environment, EnvironmentEvent

    if isinstance(from_states, str):
        from_states = (from_states,)
    for from_state in from_states:
        if not can_transition(from_state, to_state):
            raise TransitionError(f"{from_state} -> {to_state} is not an allowed transition")
    now = timezone.now()
    with transaction.atomic():
        changed = Environment.objects.filter(pk=environment_id, state__in=list(from_states)).update(
            state=to_state, state_changed_at=now, updated_at=now, **fields
        )
        if changed:
            EnvironmentEvent.objects.create(
                environment_id=environment_id,
                kind=EnvironmentEvent.Kind.STATE,
                state=to_state,
                message=message or f"Now {State(to_state).label.lower()}.",
                actor=actor,
            )
    return bool(changed)
