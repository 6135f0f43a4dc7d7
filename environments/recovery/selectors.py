"""Reads for the Recovery page (issue 15): per blueprint, the recovery time objective
against the measured p50 and p95 of recent drills and restores, the recovery point
objective against the age of the latest snapshot, the last drill, and the snapshots
kept with their storage cost."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from environments.catalog.spec import BlueprintSpec
from environments.kube import cluster
from environments.models import Drill, Environment, RecoveryRecord, Snapshot
from environments.recovery.drills import current_spec, owned_blueprints, rto_seconds
from environments.recovery.volumes import snapshotted_components

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


def _volumes_mode(spec: BlueprintSpec) -> str:
    if not snapshotted_components(spec):
        return "none"
    try:
        return "snapshots" if cluster.serves_volume_snapshots() else "manifests-only"
    except cluster.ClusterError:
        return "unknown"


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
    latest = max((s.created_at for s in snapshots), default=None)
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
        volumes=_volumes_mode(spec),
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
