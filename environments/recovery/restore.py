"""Restore: an environment from a snapshot, a new one or in place of one that was lost.

Deterministic: the provision job applies the snapshot's manifests, never a new
rendering (``provisioning._render_once`` applies what is recorded on the row, and a
restore records the snapshot's there). Only the names that must differ are changed,
by ``retarget``: the namespace, the environment's id and name in labels and hosts, the
owner label and the expiry annotation.

Checked before anything is applied: the snapshot's digest and signature
(``snapshots.verify``), the permission, and the quotas and budget (``governance``).
Idempotent: a request key seen before answers with the environment it made. Audited.
Jobs never wait on Kubernetes: the normal provision job applies, and the watcher marks
the environment ready and finishes the ``RecoveryRecord`` (``finish``).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from environments.access.teams import can_change, team_for
from environments.governance import audit, quotas
from environments.governance.billing import accrue
from environments.kube.objects import EXPIRES_ANNOTATION
from environments.lib.durations import format_duration
from environments.lib.errors import ServiceError
from environments.lib.naming import namespace_for
from environments.lifecycle.queue import enqueue_on_commit
from environments.lifecycle.states import State
from environments.lifecycle.transitions import transition
from environments.models import (
    Environment,
    EnvironmentEvent,
    RecoveryRecord,
    RestoreRequest,
    Snapshot,
)
from environments.recovery.snapshots import SnapshotInvalid, verify
from environments.recovery.volumes import restored_manifests

log = logging.getLogger(__name__)

MAX_REQUEST_KEY = 150
OWNER_LABEL = "ephemera.io/owner"
TEAM_LABEL = "ephemera.io/team"


# --- names that must differ --------------------------------------------------------------


def retarget(
    value: Any,
    *,
    old_id: str,
    new_id: str,
    old_name: str,
    new_name: str,
    owner_id: str | None = None,
    team: str | None = None,
    expires_at: str | None = None,
) -> Any:
    """``value`` (manifests, URLs) for another environment: its id, its namespace and
    host names, and, when given, the owner and team labels and the expiry annotation.
    Nothing else changes, so a restore applies what the snapshot recorded."""
    old_ns, new_ns = namespace_for(old_name), namespace_for(new_name)

    def walk(item: Any, key: str = "") -> Any:
        if isinstance(item, dict):
            return {k: walk(v, k) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, key) for v in item]
        if not isinstance(item, str):
            return item
        if key == OWNER_LABEL and owner_id is not None:
            return owner_id
        if key == TEAM_LABEL and team is not None:
            return team
        if key == EXPIRES_ANNOTATION and expires_at is not None:
            return expires_at
        if item == old_id:
            return new_id
        if old_name != new_name:
            item = item.replace(old_ns, new_ns).replace(f"-{old_name}.", f"-{new_name}.")
        return item

    return walk(value)


# --- the measured recovery ----------------------------------------------------------------


def _start_record(
    *, kind: str, snapshot: Snapshot, environment: Environment, started_at: datetime
) -> RecoveryRecord:
    # An unfinished record of the same environment is replaced: only one restore runs.
    RecoveryRecord.objects.filter(environment=environment, ok__isnull=True).update(
        ok=False, reason="Superseded by another restore."
    )
    return RecoveryRecord.objects.create(
        kind=kind,
        blueprint=snapshot.blueprint,
        environment=environment,
        snapshot=snapshot,
        started_at=started_at,
    )


def finish(environment_id, *, ok: bool, reason: str = "") -> RecoveryRecord | None:
    """The watcher's call when a restored environment became ready (or failed): records
    the recovery time and says so on the timeline. None when no restore was running."""
    record = (
        RecoveryRecord.objects.filter(environment_id=environment_id, ok__isnull=True)
        .order_by("-started_at")
        .first()
    )
    if record is None:
        return None
    now = timezone.now()
    seconds = (now - record.started_at).total_seconds()
    if not RecoveryRecord.objects.filter(pk=record.pk, ok__isnull=True).update(
        ok=ok, ready_at=now if ok else None, seconds=seconds if ok else None, reason=reason
    ):
        return None  # another watcher finished it first
    number = record.snapshot.number if record.snapshot else "?"
    if ok:
        message = f"Restored from snapshot {number}: ready {seconds:.1f} s after the restore began."
    else:
        message = f"The restore from snapshot {number} failed after {seconds:.1f} s: {reason}"
    EnvironmentEvent.objects.create(
        environment_id=environment_id,
        kind=EnvironmentEvent.Kind.INFO if ok else EnvironmentEvent.Kind.ERROR,
        message=message,
    )
    record.refresh_from_db()
    return record


def settle_unfinished() -> int:
    """The reconciler's backstop: close the records of restores the watcher did not see
    end (the provision job failed on its own, the environment was deleted meanwhile, a
    watcher died between the move and the record). Returns how many it closed."""
    closed = 0
    for record in RecoveryRecord.objects.filter(ok__isnull=True).select_related("environment"):
        environment = record.environment
        if environment is None or environment.state in {State.TEARING_DOWN, State.DELETED}:
            closed += RecoveryRecord.objects.filter(pk=record.pk, ok__isnull=True).update(
                ok=False, reason="The environment was deleted before it was ready."
            )
        elif environment.state == State.FAILED:
            closed += bool(
                finish(environment.pk, ok=False, reason=environment.last_error or "It failed.")
            )
        elif (
            environment.state == State.READY
            and environment.ready_at is not None
            and environment.ready_at >= record.started_at
        ):
            closed += RecoveryRecord.objects.filter(pk=record.pk, ok__isnull=True).update(
                ok=True,
                ready_at=environment.ready_at,
                seconds=(environment.ready_at - record.started_at).total_seconds(),
            )
    return closed


# --- restore ------------------------------------------------------------------------------


def stored_key(actor, request_key: str) -> str:
    who = f"user:{actor.pk}" if getattr(actor, "is_authenticated", False) else "system"
    return f"{who}:{request_key}"


def _replayed(key: str, snapshot: Snapshot) -> Environment | None:
    seen = RestoreRequest.objects.select_related("environment").filter(key=key).first()
    if seen is None:
        return None
    if seen.snapshot_id not in (None, snapshot.pk):
        raise ServiceError(
            "This request key was already used to restore another snapshot; use a new key."
        )
    return seen.environment


def _refuse(snapshot: Snapshot, actor, exc: SnapshotInvalid, ip: str | None) -> None:
    """Record the refusal in its own transaction (the caller's rolls back)."""
    with transaction.atomic():
        audit.record(
            actor=actor,
            action="snapshot.restore_refused",
            target=snapshot,
            object_repr=f"snapshot {snapshot.number} of {snapshot.environment_id}",
            after={"check": exc.check, "reason": str(exc)},
            ip=ip,
        )
        EnvironmentEvent.objects.create(
            environment_id=snapshot.environment_id,
            kind=EnvironmentEvent.Kind.ERROR,
            message=f"Restore refused: {exc}",
        )


def restore(
    snapshot: Snapshot,
    *,
    actor,
    request_key: str,
    in_place_of: Environment | None = None,
    kind: str = RecoveryRecord.Kind.RESTORE,
    started_at: datetime | None = None,
    ip: str | None = None,
) -> Environment:
    """Restore ``snapshot``: a new environment owned by ``actor``, or, with
    ``in_place_of`` (the snapshot's own environment, lost), that environment again.

    ``actor`` None is the system (automatic restore). The same ``request_key`` twice
    returns the same environment. Raises ``SnapshotInvalid`` (naming the failed check)
    for a tampered snapshot, ``PermissionDenied`` for someone who may not change the
    snapshot's environment, ``ServiceError`` for anything else a person can fix.
    """
    request_key = (request_key or "").strip()
    if not request_key:
        raise ServiceError("A restore needs a request key (the Idempotency-Key header).")
    if len(request_key) > MAX_REQUEST_KEY:
        raise ServiceError(f"A request key has at most {MAX_REQUEST_KEY} characters.")
    snapshot = Snapshot.objects.select_related(
        "environment__team", "blueprint_version__blueprint"
    ).get(pk=snapshot.pk)
    source = snapshot.environment
    if actor is not None and not can_change(actor, source):
        raise PermissionDenied("You cannot restore this environment's snapshots.")
    key = stored_key(actor, request_key)
    replayed = _replayed(key, snapshot)
    if replayed is not None:
        return replayed
    try:
        verify(snapshot)
    except SnapshotInvalid as exc:
        _refuse(snapshot, actor, exc, ip)
        raise
    started_at = started_at or timezone.now()
    try:
        with transaction.atomic():
            if in_place_of is not None:
                environment = _in_place(snapshot, in_place_of, actor=actor)
            else:
                environment = _as_new(snapshot, actor=actor)
            RestoreRequest.objects.create(
                key=key,
                snapshot=snapshot,
                environment=environment,
                requested_by=actor if getattr(actor, "is_authenticated", False) else None,
            )
            _start_record(
                kind=kind, snapshot=snapshot, environment=environment, started_at=started_at
            )
            audit.record(
                actor=actor,
                action="snapshot.restore",
                target=environment,
                before={"state": in_place_of.state} if in_place_of is not None else None,
                after={
                    "snapshot": str(snapshot.pk),
                    "number": snapshot.number,
                    "from_environment": str(source.pk),
                    "digest": snapshot.digest,
                    "in_place": in_place_of is not None,
                    "kind": kind,
                },
                ip=ip,
            )
    except IntegrityError:
        replayed = _replayed(key, snapshot)  # the same key at the same moment
        if replayed is None:
            raise
        return replayed
    environment.refresh_from_db()
    return environment


def _as_new(snapshot: Snapshot, *, actor) -> Environment:
    if actor is None:
        raise ServiceError("Only a person can restore into a new environment.")
    source = snapshot.environment
    version = snapshot.blueprint_version
    try:  # the snapshot's team, where the restorer may request (a member, an admin)
        team = team_for(actor, source.team)
    except PermissionDenied:
        team = team_for(actor, None)
    seconds = int(source.ttl.total_seconds())
    demand = quotas.demand_for(version, seconds)
    quotas.lock(team=team, user=actor)
    outcome = quotas.decide(team=team, user=actor, version=version, demand=demand)
    if outcome.refused:
        raise ServiceError(outcome.message)
    if outcome.needs_approval:
        raise ServiceError(
            f"Restoring this snapshot needs an approver ({outcome.because}); "
            "request a new environment instead, or ask for the limit to be raised."
        )
    environment = Environment.objects.create(
        owner=actor,
        team=team,
        blueprint_version=version,
        parameters=snapshot.parameters,
        purpose=source.purpose,
        reason=f"Restored from snapshot {snapshot.number} of {source.display_name or source.name}.",
        ttl=timedelta(seconds=seconds),
        hourly_price=version.hourly_price,
        cpu_millicores=version.cpu_millicores,
        memory_bytes=version.memory_bytes,
    )
    now = timezone.now()
    expires_at = now + timedelta(seconds=seconds)
    names = {
        "old_id": str(source.pk),
        "new_id": str(environment.pk),
        "old_name": source.name,
        "new_name": environment.name,
        "owner_id": str(actor.pk),
        "team": team.slug,
        "expires_at": expires_at.isoformat(),
    }
    EnvironmentEvent.objects.create(
        environment=environment,
        kind=EnvironmentEvent.Kind.STATE,
        state=State.REQUESTED,
        message=f"Restore of snapshot {snapshot.number} of {source.display_name or source.name} "
        f"requested by {audit.who(actor)} for {format_duration(seconds)}.",
        actor=actor,
    )
    if not transition(
        environment.pk,
        from_states=State.REQUESTED,
        to_state=State.APPROVED,
        message=f"Approved automatically: restoring the manifests of snapshot {snapshot.number} "
        f"(digest and signature verified).",
        actor=actor,
        approved_at=now,
        expires_at=expires_at,
        manifests=restored_manifests(snapshot, retarget(snapshot.manifests, **names)),
        urls=retarget(snapshot.urls, **names),
    ):
        raise ServiceError("This restore was already started.")
    enqueue_on_commit("provision", environment.pk)
    return environment


def _in_place(snapshot: Snapshot, environment: Environment, *, actor) -> Environment:
    environment = (
        Environment.objects.select_for_update()
        .select_related("blueprint_version", "team", "owner")
        .get(pk=environment.pk)
    )
    if environment.pk != snapshot.environment_id:
        raise ServiceError("A snapshot restores in place only of the environment it was taken of.")
    manifests = restored_manifests(
        snapshot,
        retarget(
            snapshot.manifests,
            old_id=str(environment.pk),
            new_id=str(environment.pk),
            old_name=environment.name,
            new_name=environment.name,
            expires_at=environment.expires_at.isoformat() if environment.expires_at else None,
        ),
    )
    now = timezone.now()
    common: dict[str, Any] = {
        "manifests": manifests,
        "urls": snapshot.urls,
        "parameters": snapshot.parameters,
        "component_status": {},
        "applied_generations": {},
        "last_error": "",
        "failed_unreachable": False,
    }
    how = "automatically" if actor is None else f"by {audit.who(actor)}"
    message = f"Restoring in place from snapshot {snapshot.number} ({how})."
    if environment.state == State.READY:
        accrue(environment.pk)  # bill up to the loss; resumes when ready again
        # An expired lease owned by nobody: the provision job (enqueued below, and the
        # watcher's restart of lost jobs as a backstop) claims it at once.
        moved = transition(
            environment.pk,
            from_states=State.READY,
            to_state=State.PROVISIONING,
            message=message,
            actor=actor,
            provision_started_at=now,
            lease_owner=uuid.uuid4(),
            lease_until=now,
            **common,
        )
    elif environment.state == State.FAILED:
        if environment.expires_at is None or environment.expires_at <= now:
            raise ServiceError("This environment has expired; restore the snapshot as a new one.")
        remaining = int((environment.expires_at - now).total_seconds())
        quotas.require(
            team=environment.team,
            user=environment.owner,
            demand=quotas.demand_for(environment.blueprint_version, remaining),
            exclude=environment,
        )
        moved = transition(
            environment.pk,
            from_states=State.FAILED,
            to_state=State.APPROVED,
            message=message,
            actor=actor,
            provision_started_at=None,
            lease_owner=None,
            lease_until=None,
            **common,
        )
    else:
        raise ServiceError(
            f"This environment is {environment.get_state_display().lower()}; a snapshot is "
            "restored in place only of a ready environment that was lost, or a failed one."
        )
    if not moved:
        raise ServiceError("This environment changed meanwhile; try again.")
    enqueue_on_commit("provision", environment.pk)
    return environment
