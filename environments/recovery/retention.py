"""Retention: the scheduled prune of snapshots, per blueprint (``retention`` in the
blueprint: ``keep`` the last N of each environment, for at most ``max_age``).

One exception, so that automatic restore always has something to restore: the newest
snapshot of an environment that is not deleted yet is kept whatever its age. Each
deleted snapshot leaves an audit entry (``snapshot.prune``) saying which and why.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from environments.governance import audit
from environments.lib.durations import format_duration
from environments.lifecycle.states import FINAL_STATES
from environments.models import Environment, Snapshot

log = logging.getLogger(__name__)


def doomed(environment: Environment, now=None) -> list[tuple[Snapshot, str]]:
    """The snapshots of ``environment`` its blueprint's retention does not keep, and why."""
    now = now or timezone.now()
    rule = environment.blueprint_version.blueprint_spec.snapshot_retention
    snapshots = list(environment.snapshots.order_by("-number"))
    protected = snapshots[0].pk if snapshots and environment.state not in FINAL_STATES else None
    found = []
    for position, snapshot in enumerate(snapshots):
        if snapshot.pk == protected:
            continue
        if position >= rule.keep:
            found.append((snapshot, f"beyond the last {rule.keep} kept"))
        elif rule.max_age is not None and now - snapshot.created_at > timedelta(
            seconds=rule.max_age
        ):
            found.append((snapshot, f"older than {format_duration(rule.max_age)}"))
    return found


def prune(now=None) -> int:
    """Delete every snapshot past its blueprint's retention; returns how many."""
    now = now or timezone.now()
    pruned = 0
    environments = (
        Environment.objects.filter(snapshots__isnull=False)
        .distinct()
        .select_related("blueprint_version__blueprint")
    )
    for environment in environments:
        for snapshot, why in doomed(environment, now):
            with transaction.atomic():
                deleted, _ = Snapshot.objects.filter(pk=snapshot.pk).delete()
                if not deleted:
                    continue  # another run pruned it first
                audit.record(
                    actor=None,
                    action="snapshot.prune",
                    object_type="snapshot",
                    object_id=str(snapshot.pk),
                    object_repr=f"snapshot {snapshot.number} of "
                    f"{environment.display_name or environment.name}",
                    before={
                        "environment": str(environment.pk),
                        "number": snapshot.number,
                        "created_at": snapshot.created_at.isoformat(),
                        "digest": snapshot.digest,
                    },
                    after={"reason": why},
                )
            pruned += 1
    if pruned:
        log.info("pruned %d snapshots", pruned)
    return pruned
