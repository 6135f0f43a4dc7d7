"""Self-healing of a lost namespace: what the watcher (and the reconciler, its backstop)
do when a ready environment's namespace is gone from the cluster.

With ``recovery.auto`` in its blueprint, the environment is restored in place from its
latest snapshot: the same row goes back to provisioning, the provision job applies the
snapshot's manifests, and the watcher marks it ready and records the recovery time
(``restore.finish``). Without it, or with no snapshot to restore, or a snapshot that
fails its checks, the environment fails as before, with the reason in plain words.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.utils import timezone

from environments.governance.billing import accrue
from environments.kube import cluster
from environments.lib.errors import ServiceError
from environments.lib.naming import namespace_for
from environments.lifecycle.states import State
from environments.lifecycle.transitions import transition
from environments.models import Environment, RecoveryRecord
from environments.recovery.restore import restore
from environments.recovery.snapshots import latest_snapshot

log = logging.getLogger(__name__)


def _fail(environment_id, message: str) -> bool:
    accrue(environment_id)  # bill up to now, then stop
    return transition(
        environment_id,
        from_states=State.READY,
        to_state=State.FAILED,
        message=message,
        last_error=message,
        accrued_until=None,
    )


def namespace_lost(
    environment_id, *, confirm: bool = True, lost_since: datetime | None = None
) -> str:
    """A ready environment's namespace is gone: restore it, or fail it. Returns
    "restored", "failed" or why nothing was done (it is there after all, or it moved).

    ``confirm`` asks the API server first (the watcher's view may lag behind a namespace
    that was just created). ``lost_since``: when the namespace was first seen going
    (terminating); the recovery time is measured from then."""
    environment = (
        Environment.objects.select_related("blueprint_version")
        .filter(pk=environment_id, state=State.READY)
        .first()
    )
    if environment is None:
        return "not ready"
    namespace = namespace_for(environment.name)
    if confirm and cluster.namespace_exists(namespace):
        return "still there"
    seen_at = timezone.now()
    gone = f"The namespace {namespace} disappeared from the cluster."
    objectives = environment.blueprint_version.blueprint_spec.recovery_objectives
    if not objectives.auto:
        return (
            "failed"
            if _fail(
                environment_id,
                f"{gone} It was not restored: its blueprint does not ask for automatic "
                "recovery (recovery.auto). Restore a snapshot or retry it.",
            )
            else "moved"
        )
    snapshot = latest_snapshot(environment_id)
    if snapshot is None:
        return (
            "failed"
            if _fail(environment_id, f"{gone} It could not be restored: it has no snapshot.")
            else "moved"
        )
    # One restore per loss: the revision that was ready when it was lost names it.
    revision = environment.ready_at or environment.state_changed_at
    key = f"auto-restore:{environment_id}:{revision.isoformat()}"
    try:
        restore(
            snapshot,
            actor=None,
            request_key=key,
            in_place_of=environment,
            kind=RecoveryRecord.Kind.AUTO,
            started_at=min(lost_since or seen_at, seen_at),
        )
    except ServiceError as exc:  # a tampered snapshot, quota, a race
        log.warning("automatic restore of %s refused: %s", environment_id, exc)
        return (
            "failed"
            if _fail(environment_id, f"{gone} It could not be restored automatically: {exc}")
            else "moved"
        )
    log.info("restoring %s in place from snapshot %s", environment_id, snapshot.number)
    return "restored"
