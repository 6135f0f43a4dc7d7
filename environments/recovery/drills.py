"""Restore drills (issue 15): a snapshot restored into a scratch environment with no
public URLs, waited for, checked, timed and torn down, on a schedule and on demand.

The flow, in the house style (jobs never wait on Kubernetes):

1. ``start_drill`` (the Recovery page, the API, or ``run_due`` from the schedule)
   verifies the snapshot's digest and signature; a refused snapshot fails the drill at
   once, with the check that failed. Otherwise it creates the scratch environment from
   the snapshot's manifests (retargeted like a restore, the Ingress left out, so no
   public URL), starts a ``RecoveryRecord`` (kind drill) and queues the provision job.
2. The watcher marks the scratch environment ready as any other (``restore.finish``
   records the recovery time), then calls ``environment_ready`` here, which queues
   ``check_drill``; a scratch environment that fails calls ``environment_failed``; a
   drill not ready by its RTO is failed by ``fail_overdue`` (each watcher pass).
3. ``check_drill`` (a job) compares what is on the cluster with the snapshot's
   inventory, records passed or failed with the reason, and tears the scratch
   environment down. A failed drill notifies the blueprint's owners.

The blueprint's owners are the people who published its versions; they and admins
may run drills and see the Recovery page.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from environments.access.roles import is_admin
from environments.catalog.spec import BlueprintSpec
from environments.governance import audit
from environments.integrations import notifications
from environments.kube import cluster
from environments.lib.durations import format_duration
from environments.lib.errors import ServiceError
from environments.lifecycle.queue import enqueue_drill_check_on_commit, enqueue_on_commit
from environments.lifecycle.services import delete_environment
from environments.lifecycle.states import State
from environments.lifecycle.transitions import transition
from environments.models import (
    Blueprint,
    BlueprintVersion,
    Drill,
    Environment,
    EnvironmentEvent,
    RecoveryRecord,
    Snapshot,
)
from environments.recovery.restore import retarget
from environments.recovery.snapshots import SnapshotInvalid, inventory_of, latest_snapshot, verify
from environments.recovery.volumes import restored_manifests

log = logging.getLogger(__name__)

# A scratch environment lives at most this long (torn down by the drill long before;
# the reaper's backstop if everything else failed).
SCRATCH_TTL = timedelta(hours=1)
MAX_KEY = 150
# Left out of a drill: no public URLs.
PUBLIC_KINDS = frozenset({"Ingress"})


# --- who -------------------------------------------------------------------------------


def blueprint_owners(blueprint: str) -> list:
    """The people who published a version of ``blueprint`` (active ones)."""
    ids = BlueprintVersion.objects.filter(
        blueprint__name=blueprint, published_by__isnull=False
    ).values_list("published_by", flat=True)
    return list(get_user_model().objects.filter(pk__in=ids, is_active=True).order_by("pk"))


def owned_blueprints(user) -> list[str]:
    """The blueprints ``user`` may drill and see on the Recovery page (all for admins)."""
    if not getattr(user, "is_authenticated", False):
        return []
    names = Blueprint.objects.order_by("name")
    if not is_admin(user):
        names = names.filter(versions__published_by=user).distinct()
    return list(names.values_list("name", flat=True))


def may_drill(user, blueprint: str) -> bool:
    return blueprint in owned_blueprints(user)


# --- objectives --------------------------------------------------------------------------


def rto_seconds(spec: BlueprintSpec) -> int:
    """The blueprint's recovery time objective (``recovery.rto``, or its default)."""
    return spec.recovery_objectives.rto


def current_spec(blueprint: str) -> BlueprintSpec | None:
    row = Blueprint.objects.filter(name=blueprint).first()
    version = row.latest_version() if row else None
    return version.blueprint_spec if version else None


# --- choosing what to drill ------------------------------------------------------------------


def scratch_environments():
    """Environments made by drills (left out of snapshots kept, costs, and choices)."""
    return Environment.objects.filter(drill_run__isnull=False)


def pick_snapshot(blueprint: str, environment: Environment | None = None) -> Snapshot | None:
    """The latest snapshot of ``environment``, or of the blueprint's most recently
    snapshotted ready environment (any environment of it, if none is ready)."""
    if environment is not None:
        return latest_snapshot(environment.pk)
    snapshots = Snapshot.objects.filter(blueprint=blueprint, environment__drill_run__isnull=True)
    ready = snapshots.filter(environment__state=State.READY).order_by("-created_at").first()
    return ready or snapshots.order_by("-created_at").first()


# --- starting -------------------------------------------------------------------------------


def _stored_key(actor, key: str) -> str:
    who = f"user:{actor.pk}" if getattr(actor, "is_authenticated", False) else "system"
    return f"{who}:{key}"


def start_drill(
    *,
    blueprint: str,
    actor,
    key: str,
    environment: Environment | None = None,
    snapshot: Snapshot | None = None,
    trigger: str = Drill.Trigger.MANUAL,
    ip: str | None = None,
) -> Drill:
    """Start a drill of ``blueprint`` (``snapshot``, or the latest of ``environment``,
    or of the blueprint's most recent ready environment) and return it.

    ``actor`` None is the schedule. The same ``key`` twice returns the same drill.
    Raises ``PermissionDenied`` for someone who is neither an admin nor an owner of the
    blueprint, ``ServiceError`` when there is nothing to drill. A snapshot that fails
    its checks is not an error: the drill is recorded as failed, and the owners told.
    """
    key = (key or "").strip()
    if not key or len(key) > MAX_KEY:
        raise ServiceError(f"A drill needs a request key of 1 to {MAX_KEY} characters.")
    if actor is not None and not may_drill(actor, blueprint):
        raise PermissionDenied("You cannot run drills of this blueprint.")
    stored = _stored_key(actor, key)
    existing = Drill.objects.filter(key=stored).first()
    if existing is not None:
        return existing
    if environment is not None and environment.blueprint_version.blueprint.name != blueprint:
        raise ServiceError("That environment is not of this blueprint.")
    if snapshot is not None and snapshot.blueprint != blueprint:
        raise ServiceError("That snapshot is not of this blueprint.")
    snapshot = snapshot or pick_snapshot(blueprint, environment)
    if snapshot is None:
        raise ServiceError(
            f"There is no snapshot of a {blueprint} environment to drill yet: snapshots "
            "are taken when an environment becomes ready, or on demand."
        )
    spec = snapshot.blueprint_version.blueprint_spec
    try:
        with transaction.atomic():
            drill = Drill.objects.create(
                blueprint=blueprint,
                source_environment_id=snapshot.environment_id,
                snapshot=snapshot,
                snapshot_number=snapshot.number,
                trigger=trigger,
                requested_by=actor if getattr(actor, "is_authenticated", False) else None,
                key=stored,
                rto_seconds=rto_seconds(spec),
            )
            audit.record(
                actor=actor,
                action="drill.start",
                target=drill,
                object_repr=f"drill of {blueprint} (snapshot {snapshot.number})",
                after={"snapshot": str(snapshot.pk), "number": snapshot.number, "trigger": trigger},
                ip=ip,
            )
    except IntegrityError:  # the same key at the same moment
        return Drill.objects.get(key=stored)
    try:
        verify(snapshot)
    except SnapshotInvalid as exc:
        _finish(drill.pk, passed=False, reason=f"The snapshot was refused before restoring: {exc}")
        return Drill.objects.get(pk=drill.pk)
    with transaction.atomic():
        scratch = _scratch_environment(snapshot, drill)
        record = RecoveryRecord.objects.create(
            kind=RecoveryRecord.Kind.DRILL,
            blueprint=blueprint,
            environment=scratch,
            snapshot=snapshot,
            started_at=drill.started_at,
        )
        Drill.objects.filter(pk=drill.pk).update(environment=scratch, recovery=record)
        enqueue_on_commit("provision", scratch.pk)
    return Drill.objects.get(pk=drill.pk)


def _scratch_environment(snapshot: Snapshot, drill: Drill) -> Environment:
    """The environment a drill restores into: the snapshot's manifests, retargeted like
    a restore, without public URLs; owned like the snapshot's environment."""
    source = snapshot.environment
    version = snapshot.blueprint_version
    environment = Environment.objects.create(
        owner=source.owner,
        team=source.team,
        blueprint_version=version,
        parameters=snapshot.parameters,
        purpose=source.purpose,
        reason=f"Restore drill of snapshot {snapshot.number} of {source.display_name or source.name}.",
        ttl=SCRATCH_TTL,
        hourly_price=version.hourly_price,
        cpu_millicores=version.cpu_millicores,
        memory_bytes=version.memory_bytes,
    )
    Drill.objects.filter(pk=drill.pk).update(environment=environment)  # before any event
    now = timezone.now()
    names = {
        "old_id": str(source.pk),
        "new_id": str(environment.pk),
        "old_name": source.name,
        "new_name": environment.name,
        "expires_at": (now + SCRATCH_TTL).isoformat(),
    }
    manifests = [
        m
        for m in restored_manifests(snapshot, retarget(snapshot.manifests, **names))
        if m["kind"] not in PUBLIC_KINDS
    ]
    EnvironmentEvent.objects.create(
        environment=environment,
        kind=EnvironmentEvent.Kind.STATE,
        state=State.REQUESTED,
        message=f"Restore drill of snapshot {snapshot.number} of "
        f"{source.display_name or source.name} ({drill.get_trigger_display().lower()}).",
    )
    if not transition(
        environment.pk,
        from_states=State.REQUESTED,
        to_state=State.APPROVED,
        message="Approved automatically: a restore drill (digest and signature verified; "
        "no public URLs).",
        approved_at=now,
        expires_at=now + SCRATCH_TTL,
        manifests=manifests,
        urls={},
    ):
        raise ServiceError("This drill was already started.")
    return environment


# --- what the watcher sees -------------------------------------------------------------------


def running_drill_of(environment_id) -> Drill | None:
    return Drill.objects.filter(environment_id=environment_id, result=Drill.Result.RUNNING).first()


def environment_ready(environment_id) -> bool:
    """The watcher saw a scratch environment ready: note when, and queue its check."""
    drill = running_drill_of(environment_id)
    if drill is None or drill.ready_at is not None:
        return False
    now = timezone.now()
    record = (
        RecoveryRecord.objects.filter(pk=drill.recovery_id).first() if drill.recovery_id else None
    )
    seconds = (
        record.seconds
        if record is not None and record.seconds is not None
        else (now - drill.started_at).total_seconds()
    )
    with transaction.atomic():
        if not Drill.objects.filter(pk=drill.pk, ready_at__isnull=True).update(
            ready_at=now, seconds=seconds
        ):
            return False
        enqueue_drill_check_on_commit(drill.pk)
    return True


def environment_failed(environment_id, reason: str) -> bool:
    drill = running_drill_of(environment_id)
    if drill is None:
        return False
    return _finish(drill.pk, passed=False, reason=f"The restored environment failed: {reason}")


def fail_overdue(now: datetime | None = None) -> int:
    """Fail the running drills not ready within their RTO (each watcher pass)."""
    now = now or timezone.now()
    failed = 0
    for drill in Drill.objects.filter(result=Drill.Result.RUNNING, ready_at__isnull=True):
        if drill.environment_id is None:
            continue
        if drill.started_at + timedelta(seconds=drill.rto_seconds) > now:
            continue
        reason = (
            f"Not ready within the recovery time objective ({format_duration(drill.rto_seconds)}"
            f" = {drill.rto_seconds} s)."
        )
        RecoveryRecord.objects.filter(drill__pk=drill.pk, ok__isnull=True).update(
            ok=False, reason=reason
        )
        failed += _finish(drill.pk, passed=False, reason=reason)
    return failed


# --- the check (a job) ---------------------------------------------------------------------


def inventory_problems(drill: Drill, scratch: Environment) -> list[str]:
    """How the restored environment's objects differ from the snapshot's inventory
    (public objects excepted), and whether each volume was made from its snapshot."""
    snapshot = drill.snapshot
    if snapshot is None:
        return ["the snapshot was deleted during the drill"]
    # The names that must differ (the namespace), as the restore changed them.
    inventory = retarget(
        snapshot.inventory,
        old_id=str(snapshot.environment_id),
        new_id=str(scratch.pk),
        old_name=snapshot.environment.name,
        new_name=scratch.name,
    )
    expected = {
        (item["kind"], item["name"]) for item in inventory if item["kind"] not in PUBLIC_KINDS
    }
    live = {
        (item["kind"], item["name"])
        for item in inventory_of(scratch.manifests)
        if item["uid"] and item["kind"] != "VolumeSnapshot"
    }
    problems = [f"{kind} {name} is missing" for kind, name in sorted(expected - live)]
    problems += [f"{kind} {name} is not in the snapshot" for kind, name in sorted(live - expected)]
    for volume in snapshot.volumes:
        claim = next(
            (
                m
                for m in scratch.manifests
                if m["kind"] == "PersistentVolumeClaim" and m["metadata"]["name"] == volume["pvc"]
            ),
            None,
        )
        found = cluster.get(claim) if claim is not None else None
        source = ((found or {}).get("spec") or {}).get("dataSource") or {}
        if source.get("name") != volume["volume_snapshot"]:
            problems.append(
                f"the claim {volume['pvc']} was not made from VolumeSnapshot "
                f"{volume['volume_snapshot']}"
            )
    return problems


def check_drill(drill_id) -> str:
    """The job queued when a drill's scratch environment became ready: compare, record
    passed or failed, tear down. Idempotent (only a running drill is checked)."""
    drill = (
        Drill.objects.select_related("snapshot", "environment")
        .filter(pk=drill_id, result=Drill.Result.RUNNING)
        .first()
    )
    if drill is None:
        return "nothing to do"
    scratch = drill.environment
    if scratch is None or scratch.state != State.READY:
        return f"not ready: {scratch.state if scratch else 'no environment'}"
    try:
        problems = inventory_problems(drill, scratch)
    except cluster.ClusterError as exc:
        raise RuntimeError(f"the cluster could not be read: {exc}") from exc  # RQ retries
    seconds = drill.seconds or 0.0
    if problems:
        reason = "The inventory does not match the snapshot's: " + "; ".join(problems) + "."
        _finish(drill.pk, passed=False, reason=reason)
        return "failed"
    if seconds > drill.rto_seconds:
        _finish(
            drill.pk,
            passed=False,
            reason=f"Ready after {seconds:.1f} s, past the recovery time objective "
            f"({drill.rto_seconds} s).",
        )
        return "failed"
    snapshot = drill.snapshot
    assert snapshot is not None  # inventory_problems said so otherwise
    count = len([i for i in snapshot.inventory if i["kind"] not in PUBLIC_KINDS])
    _finish(
        drill.pk,
        passed=True,
        reason=f"Ready in {seconds:.1f} s (objective {format_duration(drill.rto_seconds)}); "
        f"all {count} objects of the snapshot's inventory restored"
        + (f", {len(snapshot.volumes)} volumes from their snapshots" if snapshot.volumes else "")
        + ".",
    )
    return "passed"


def _finish(drill_id, *, passed: bool, reason: str) -> bool:
    """Record the result (once), tear the scratch environment down, tell the owners of a
    failure."""
    now = timezone.now()
    result = Drill.Result.PASSED if passed else Drill.Result.FAILED
    with transaction.atomic():
        if not Drill.objects.filter(pk=drill_id, result=Drill.Result.RUNNING).update(
            result=result, reason=reason, finished_at=now
        ):
            return False
        drill = Drill.objects.select_related("environment").get(pk=drill_id)
        audit.record(
            actor=None,
            action="drill.passed" if passed else "drill.failed",
            target=drill,
            object_repr=f"drill of {drill.blueprint} (snapshot {drill.snapshot_number})",
            after={"result": result, "reason": reason, "seconds": drill.seconds},
        )
        if drill.source_environment_id is not None:
            EnvironmentEvent.objects.create(
                environment_id=drill.source_environment_id,
                kind=EnvironmentEvent.Kind.INFO if passed else EnvironmentEvent.Kind.ERROR,
                message=f"Restore drill of snapshot {drill.snapshot_number} "
                f"{'passed' if passed else 'failed'}: {reason}",
            )
        scratch = drill.environment
        if scratch is not None and scratch.state not in (State.TEARING_DOWN, State.DELETED):
            try:
                delete_environment(
                    environment=scratch,
                    user=None,
                    message=f"Restore drill {'passed' if passed else 'failed'}: torn down.",
                )
            except ServiceError as exc:
                log.warning("could not tear down drill environment %s: %s", scratch.pk, exc)
        if not passed:
            notifications.send_drill_failed(drill.pk)
    return True


# --- the schedule ------------------------------------------------------------------------------


def run_due(now: datetime | None = None) -> list[str]:
    """Start the drills due by each blueprint's ``drill.every`` (the scheduled job).
    A period's drill has its own key, so two schedulers, or the job run twice, start
    it once. Blueprints with nothing to drill yet are skipped."""
    now = now or timezone.now()
    started = []
    for blueprint in Blueprint.objects.order_by("name"):
        version = blueprint.latest_version()
        spec = version.blueprint_spec if version else None
        if spec is None or spec.drill is None:
            continue
        every = spec.drill.every
        last = Drill.objects.filter(blueprint=blueprint.name).order_by("-started_at").first()
        if last is not None and last.started_at + timedelta(seconds=every) > now:
            continue
        period = math.floor(now.timestamp() / every)
        try:
            drill = start_drill(
                blueprint=blueprint.name,
                actor=None,
                key=f"scheduled:{blueprint.name}:{period}",
                trigger=Drill.Trigger.SCHEDULED,
            )
        except ServiceError as exc:
            log.info("no drill of %s: %s", blueprint.name, exc)
            continue
        started.append(str(drill.pk))
    return started
