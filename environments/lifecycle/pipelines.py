"""What CI pipelines need on top of the services: create-or-update by an external key,
a parameter change, and a bounded wait for an environment to settle.

A pipeline runs again on every push. With an external key (``org/repo#12``) its request
updates the environment it made last time instead of making another; the key is unique
among a team's active environments (the database constraint
``environment_one_live_per_external_key``), so two concurrent runs still make one.
"""

from __future__ import annotations

import hashlib
import threading
import time
from contextlib import contextmanager

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from environments.access.teams import team_for
from environments.lib.errors import ServiceError
from environments.lifecycle import services
from environments.lifecycle.states import ACTIVE_STATES, SETTLED_STATES
from environments.models import BlueprintVersion, Environment, Team

KEY_CONSTRAINT = "environment_one_live_per_external_key"


def active_with_key(team: Team, external_key: str) -> Environment | None:
    """The team's active environment with this key, if any (at most one: a constraint)."""
    return (
        Environment.objects.select_related("blueprint_version__blueprint")
        .filter(team=team, external_key=external_key, state__in=ACTIVE_STATES)
        .first()
    )


def _lock_key(team: Team, external_key: str) -> None:
    """Serialise requests for one team's key until the transaction ends.

    The unique constraint alone would keep the key unique, but two requests racing on
    it can deadlock: one updates the winner's row (a new index entry for the key) while
    the other inserts its own, and each waits for the other's transaction. A
    transaction-level advisory lock makes the second wait for the first to commit,
    then find its environment and update it.
    """
    digest = hashlib.blake2b(f"external-key:{team.pk}:{external_key}".encode(), digest_size=8)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s)",
            [int.from_bytes(digest.digest(), "big", signed=True)],
        )


@transaction.atomic
def request_or_update(
    *,
    user,
    version: BlueprintVersion,
    external_key: str,
    parameters: dict | None = None,
    ttl_seconds: int | None = None,
    team: Team | None = None,
    reason: str = "",
    display_name: str = "",
    ip: str | None = None,
) -> tuple[Environment, bool]:
    """Create an environment with ``external_key``, or update the team's active one with
    that key and blueprint; returns it and whether it was created.

    On update only ``parameters`` change (a partial override, as with a PATCH: checked
    against the blueprint, then provisioned again); the time to live, reason and name
    are the first request's. The same key on another blueprint is refused.
    """
    team = team_for(user, team)
    _lock_key(team, external_key)
    existing = active_with_key(team, external_key)
    if existing is None:
        try:
            with transaction.atomic():  # a savepoint: the constraint is the backstop
                created = services.request_environment(
                    user=user,
                    version=version,
                    parameters=parameters,
                    ttl_seconds=ttl_seconds,
                    team=team,
                    reason=reason,
                    display_name=display_name,
                    ip=ip,
                    external_key=external_key,
                )
            return created, True
        except IntegrityError as exc:
            if KEY_CONSTRAINT not in str(exc):
                raise
        # A concurrent request with the same key committed first: update that one.
        existing = active_with_key(team, external_key)
        if existing is None:
            raise ServiceError(
                f"Another request with the key '{external_key}' is in progress; try again."
            )
    blueprint = existing.blueprint_version.blueprint
    if blueprint.pk != version.blueprint_id:
        raise ServiceError(
            f"The key '{external_key}' belongs to environment {existing.name} of blueprint "
            f"{blueprint.name}; tear it down or use another key."
        )
    updated = services.update_environment(
        environment=existing, user=user, parameters=parameters or {}, ip=ip
    )
    return updated, False


@transaction.atomic
def change_environment(
    *,
    environment: Environment,
    user,
    display_name: str | None = None,
    parameters: dict | None = None,
    ip: str | None = None,
) -> Environment:
    """A PATCH: rename and/or change parameters, all or nothing.

    Parameters are a partial override of the current ones, checked with the blueprint's
    rules (``services.update_environment``), and the environment is provisioned again.
    Quotas and budget need no new decision for a running environment: what it holds
    (CPU, memory, price) comes from its blueprint version, not its parameters; a failed
    one counts again and is checked as for a retry.
    """
    if display_name is not None:
        environment = services.rename_environment(
            environment=environment, user=user, display_name=display_name, ip=ip
        )
    if parameters is not None:
        environment = services.update_environment(
            environment=environment, user=user, parameters=parameters, ip=ip
        )
    return environment


# --- Waiting ----------------------------------------------------------------------------

# Each waiting request holds one web worker thread for up to API_WAIT_MAX_SECONDS, so
# at most API_WAIT_MAX_CONCURRENT of them wait at once in each web process; the others
# answer at once (the client polls). No transaction is held while waiting: each look is
# one short SELECT in autocommit.
_waiting = threading.BoundedSemaphore(max(1, getattr(settings, "API_WAIT_MAX_CONCURRENT", 4)))
_FIRST_LOOK = 0.1  # s; then 1.5 times longer each time, up to _LONGEST_LOOK
_LONGEST_LOOK = 1.0


@contextmanager
def wait_slot():
    """True if this request may wait now (a slot is free), False if it must not."""
    taken = _waiting.acquire(blocking=False)
    try:
        yield taken
    finally:
        if taken:
            _waiting.release()


def wait_until_settled(environment_id, seconds: float) -> str | None:
    """Look at the environment's state with a short backoff until it is settled
    (``SETTLED_STATES``) or ``seconds`` (capped by ``API_WAIT_MAX_SECONDS``) have
    passed; returns the last state seen (None if the row is gone)."""
    limit = min(float(seconds), float(settings.API_WAIT_MAX_SECONDS))
    if limit <= 0:
        return Environment.objects.filter(pk=environment_id).values_list("state", flat=True).first()
    if transaction.get_connection().in_atomic_block:
        # Waiting inside a transaction would hold its locks and see a frozen snapshot.
        raise RuntimeError("wait_until_settled must not run inside a transaction")
    deadline = time.monotonic() + limit
    pause = _FIRST_LOOK
    idle = threading.Event()  # never set: a pause that is not a busy loop
    while True:
        state = (
            Environment.objects.filter(pk=environment_id).values_list("state", flat=True).first()
        )
        left = deadline - time.monotonic()
        if state is None or state in SETTLED_STATES or left <= 0:
            return state
        idle.wait(min(pause, left))
        pause = min(pause * 1.5, _LONGEST_LOOK)
