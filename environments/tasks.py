"""The RQ entry points: every background job Ephemera runs, by dotted path.

Thin on purpose: each receives ids, calls the domain function that does the work, and
returns its one-line outcome (RQ keeps it as the job's result). Nothing in the project
imports this module except the scheduler (``environments.cron``) and the shim kept for
jobs queued by the previous release (``environments.jobs``); services enqueue these by
path through ``lifecycle.queue``.
"""

from __future__ import annotations

from environments.access import credentials
from environments.governance import billing
from environments.integrations import notifications
from environments.integrations.forges import feedback
from environments.lifecycle import pools, provisioning, upkeep
from environments.recovery import drift, drills, retention, snapshots, teardown_receipt
from environments.scheduling import services as scheduling


def provision(environment_id: str) -> str:
    """Claim, render and apply one environment; the watcher sees it become ready."""
    return provisioning.provision(environment_id)


def teardown(environment_id: str) -> str:
    """Delete one environment's namespace; the watcher marks it deleted once it is gone."""
    return provisioning.teardown(environment_id)


def deliver_notification(event: str, environment_id: str, key: str = "") -> str:
    """Email the people concerned and queue one delivery per subscribed webhook; raises
    on failure so RQ retries it, and ``key`` makes a retry send nothing twice."""
    return notifications.deliver(event, environment_id, key)


def send_webhook(delivery_id: int) -> str:
    """POST one webhook delivery; raises on failure so RQ retries it with backoff."""
    return notifications.send_webhook(delivery_id)


def reap_expired() -> int:
    return upkeep.reap_expired()


def warn_expiring() -> int:
    return upkeep.warn_expiring()


def remind_approvers() -> int:
    return upkeep.remind_approvers()


def reconcile() -> dict[str, int]:
    return upkeep.reconcile()


def accrue_cost() -> int:
    return billing.accrue_cost()


def grant_environment_access(environment_id: str) -> str:
    """After provisioning: a revocable kubeconfig identity for each person who may hold one."""
    return credentials.grant_environment(environment_id)


def grant_person_access(environment_id: str, user_id: str) -> str:
    """One person's kubeconfig identity in one environment (their first download)."""
    return credentials.grant_person(environment_id, int(user_id))


def sync_person_access(user_id: str) -> str:
    """After a membership or activity change: revoke (or grant) that person's identities."""
    return credentials.sync_person(int(user_id))


def refill_pools() -> int:
    """Top up every blueprint's warm pool (issue 16); how many environments it started."""
    return pools.refill_all()


def run_schedule() -> dict[str, int]:
    """Classes and booked demos: warm up what starts within the lead time, remind,
    tear down what is over (environments.scheduling)."""
    return scheduling.tick()


def snapshot_after_ready(environment_id: str, revision: str) -> str:
    """Snapshot an environment that became ready (once per revision)."""
    return snapshots.snapshot_after_ready(environment_id, revision)


def prune_snapshots() -> int:
    """Delete the snapshots past each blueprint's retention (audited)."""
    return retention.prune()


def check_drill(drill_id: str) -> str:
    """A restore drill's scratch environment became ready: check, record, tear down."""
    return drills.check_drill(drill_id)


def run_drills() -> list[str]:
    """Start the restore drills due by each blueprint's ``drill.every``."""
    return drills.run_due()


def deliver_drill_notification(drill_id: str, key: str = "") -> str:
    """Tell a failed drill's blueprint owners."""
    return notifications.deliver_drill(drill_id, key)


def post_pull_request_feedback(pull_request_id: str) -> str:
    """Commit status and comment on a pull request (retried with backoff by RQ)."""
    return feedback.post(pull_request_id)


def repair_drift(environment_id: str, event_ids: list[int]) -> str:
    """Re-apply the objects of a ready environment that drifted (the watcher saw it)."""
    return drift.repair(environment_id, event_ids)


def verify_teardown(environment_id: str) -> str:
    """After a teardown: record a receipt of what was checked and anything left over."""
    return teardown_receipt.verify(environment_id)
