"""Reads for the recovery parts of the pages: the environment page's snapshots, and the
Recovery page (issue 15): per blueprint, the recovery time objective against the
measured p50 and p95 of recent drills and restores, the recovery point objective against
the age of the latest snapshot, the last drill, and the snapshots kept with their
storage cost."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.http import Http404
from django.utils import timezone

from environments.access.teams import can_change
from environments.catalog.spec import BlueprintSpec
from environments.lifecycle.states import State
from environments.models import Drill, Environment, RecoveryRecord, Snapshot
from environments.recovery.drills import current_spec, owned_blueprints, rto_seconds
from environments.recovery.volumes import manifests_only, snapshotted_components


def snapshot_for(*, user, pk) -> Snapshot:
    """A snapshot whose environment ``user`` may see; 404 otherwise (no IDOR)."""
    found = (
        Snapshot.objects.select_related("environment", "created_by")
        .filter(pk=pk, environment__in=Environment.objects.visible_to(user).values("pk"))
        .first()
    )
    if found is None:
        raise Http404("No such snapshot.")
    return found


def environment_panel(*, user, environment: Environment) -> dict:
    """The environment page's snapshot list and buttons."""
    may_change = can_change(user, environment)
    rows = list(environment.snapshots.select_related("created_by").order_by("-number")[:20])
    spec = environment.blueprint_version.blueprint_spec
    return {
        "snapshots": rows,
        "snapshot_count": environment.snapshots.count(),
        "can_snapshot": may_change and environment.state == State.READY,
        "can_restore": may_change,
        "can_restore_in_place": may_change and environment.state in {State.READY, State.FAILED},
        "recovery": spec.recovery_objectives,
        "recovery_declared": spec.recovery is not None,
        "retention": spec.snapshot_retention,
        # A fresh key per page view: a double-clicked restore makes one environment.
        "restore_key": str(uuid.uuid4()),
    }


# How many recent recoveries the percentiles are over.
RECENT = 50


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (``share`` 0.5 for the median); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass
class BlueprintRecovery:
    name: str
    title: str
    rto: int
    rpo: int
    auto: bool
    drill_every: int | None
    p50: float | None
    p95: float | None
    measured: int
    latest_snapshot_at: datetime | None
    snapshot_age: float | None
    snapshots_kept: int
    snapshot_bytes: int
    storage_cost: Decimal
    last_drill: Drill | None
    volumes: str  # "none", "snapshots" or "manifests-only"
    drills: list[Drill] = field(default_factory=list)
    environments: list[Environment] = field(default_factory=list)

    @property
    def rto_met(self) -> bool | None:
        return None if self.p95 is None else self.p95 <= self.rto

    @property
    def rpo_met(self) -> bool | None:
        return None if self.snapshot_age is None else self.snapshot_age <= self.rpo


def _volumes_mode(spec: BlueprintSpec, latest: Snapshot | None) -> str:
    """What the blueprint's snapshots hold of its volumes, from the latest snapshot (the
    web reads no cluster): "none" to snapshot, "snapshots" (VolumeSnapshots),
    "manifests-only" (the cluster served no VolumeSnapshots), "unknown" (no snapshot yet)."""
    if not snapshotted_components(spec):
        return "none"
    if latest is None:
        return "unknown"
    return "manifests-only" if manifests_only(latest, spec) else "snapshots"


def blueprint_recovery(name: str, *, now: datetime | None = None) -> BlueprintRecovery | None:
    spec = current_spec(name)
    if spec is None:
        return None
    now = now or timezone.now()
    seconds = [
        value
        for value in RecoveryRecord.objects.filter(blueprint=name, ok=True, seconds__isnull=False)
        .order_by("-started_at")
        .values_list("seconds", flat=True)[:RECENT]
        if value is not None
    ]
    kept = Snapshot.objects.filter(blueprint=name, environment__drill_run__isnull=True)
    snapshots = list(kept.only("size_bytes", "volumes", "created_at"))
    newest = max(snapshots, key=lambda s: s.created_at, default=None)
    latest = newest.created_at if newest else None
    drills = list(Drill.objects.filter(blueprint=name).order_by("-started_at")[:10])
    objectives = spec.recovery_objectives
    return BlueprintRecovery(
        name=name,
        title=spec.title,
        rto=rto_seconds(spec),
        rpo=objectives.rpo,
        auto=objectives.auto,
        drill_every=spec.drill.every if spec.drill else None,
        p50=percentile(seconds, 0.5),
        p95=percentile(seconds, 0.95),
        measured=len(seconds),
        latest_snapshot_at=latest,
        snapshot_age=(now - latest).total_seconds() if latest else None,
        snapshots_kept=len(snapshots),
        snapshot_bytes=sum(s.size_bytes + s.volume_bytes for s in snapshots),
        storage_cost=sum((s.storage_cost for s in snapshots), Decimal(0)),
        last_drill=next((d for d in drills if d.result != Drill.Result.RUNNING), None),
        volumes=_volumes_mode(spec, newest),
        drills=drills,
        environments=list(
            Environment.objects.filter(
                blueprint_version__blueprint__name=name,
                snapshots__isnull=False,
                drill_run__isnull=True,
            )
            .distinct()
            .order_by("-created_at")[:20]
        ),
    )


def recovery_overview(user) -> list[BlueprintRecovery]:
    """What the Recovery page shows ``user``: every blueprint they own (all for admins)."""
    rows = [blueprint_recovery(name) for name in owned_blueprints(user)]
    return [row for row in rows if row is not None]
