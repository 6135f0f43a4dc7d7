"""The environment state machine: every state, every allowed move, every set of states.

This module declares; ``lifecycle.transitions`` moves (one guarded UPDATE per move).
Every set of states the project uses is declared here, once. The allowed moves, also
listed in docs/architecture.md (a test keeps the two the same)::

    requested         -> pending_approval, approved, rejected
    pending_approval  -> approved, rejected, tearing_down
    approved          -> provisioning, tearing_down
    provisioning      -> ready, failed, tearing_down
    ready             -> provisioning, failed, tearing_down
    failed            -> approved, tearing_down
    tearing_down      -> deleted
    deleted           -> (final)
    rejected          -> (final)

ready -> provisioning is an update (new parameters, a pull request's new commit);
failed -> approved is a retry; ready -> failed is a namespace that vanished.
"""

from __future__ import annotations

from django.db import models


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

# Where an API client waiting for an environment (``?wait=``) stops waiting: it is
# ready, it failed, a person must act (approve) or it is over.
SETTLED_STATES = frozenset(
    {State.READY, State.FAILED, State.PENDING_APPROVAL, State.REJECTED, State.DELETED}
)
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
# Nothing can happen any more: the end of the line. Pages showing an environment poll
# until it is final (286 then), because a person or a schedule (expiry, a teammate's
# delete or extension, a namespace that vanished) can change any other state.
FINAL_STATES = frozenset({State.DELETED, State.REJECTED})
# Something is moving on its own (a job, the watcher): pages poll fast and show a
# spinner. The other live states (pending approval, ready, failed) wait for a person or
# a schedule: pages poll slowly (see Environment.poll_seconds).
POLLED_FAST_STATES = frozenset(
    {State.REQUESTED, State.APPROVED, State.PROVISIONING, State.TEARING_DOWN}
)
# States that hold, or are about to hold, cluster resources and budget (quotas count
# these; a failed environment is not billed and not counted).
COUNTED_STATES = frozenset(
    {State.REQUESTED, State.PENDING_APPROVAL, State.APPROVED, State.PROVISIONING, State.READY}
)
# At most one of these per external key (a pull request): tearing down is past. The
# database constraint ``environment_one_live_per_external_key`` lists the same states.
ACTIVE_STATES = COUNTED_STATES | {State.FAILED}
# States a person (or expiry) may tear down.
DELETABLE_STATES = frozenset(
    {State.PENDING_APPROVAL, State.APPROVED, State.PROVISIONING, State.READY, State.FAILED}
)
# States whose expiry may be pushed back.
EXTENDABLE_STATES = frozenset({State.APPROVED, State.PROVISIONING, State.READY})
# States whose running pods cost money, accrued minute by minute.
BILLED_STATES = frozenset({State.READY, State.TEARING_DOWN})
# States whose namespace may hold pods with logs to read (pages show them).
LOGGED_STATES = frozenset({State.PROVISIONING, State.READY, State.FAILED, State.TEARING_DOWN})


class TransitionError(ValueError):
    """A transition that the state machine forbids (a programming error, not a race)."""


def can_transition(from_state: str, to_state: str) -> bool:
    return to_state in TRANSITIONS.get(from_state, frozenset())
