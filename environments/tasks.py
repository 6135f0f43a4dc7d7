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
from environments.lifecycle import provisioning, upkeep
from environments.recovery import drift, teardown_receipt


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


def repair_drift(environment_id: str, event_ids: list[int]) -> str:
    """Re-apply the objects of a ready environment that drifted (the watcher saw it)."""
    return drift.repair(environment_id, event_ids)


def verify_teardown(environment_id: str) -> str:
    """After a teardown: record a receipt of what was checked and anything left over."""
    return teardown_receipt.verify(environment_id)
