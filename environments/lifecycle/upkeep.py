"""Scheduled upkeep: expiry, warnings, reminders and the reconciler.

Run by the RQ cron scheduler through ``environments.tasks`` (see ``environments.cron``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from environments.integrations import notifications
from environments.kube import cluster
from environments.lib.naming import namespace_for
from environments.lifecycle import idempotency, services, telemetry
from environments.lifecycle.provisioning import job_lost, start_deleting
from environments.lifecycle.queue import enqueue, requeue_revocations
from environments.lifecycle.states import DELETABLE_STATES, FINAL_STATES, State
from environments.lifecycle.transitions import transition
from environments.models import Environment, EnvironmentEvent
from environments.recovery import healing, restore, teardown_receipt

log = logging.getLogger(__name__)


def reap_expired() -> int:
    """Scheduled every minute: tear down whatever is past its expiry (and forget API
    idempotency keys older than a day)."""
    count = 0
    stale = timezone.now() - timedelta(days=settings.PENDING_APPROVAL_DAYS)
    for environment_id in Environment.objects.filter(
        state=State.PENDING_APPROVAL, state_changed_at__lte=stale
    ).values_list("pk", flat=True):
        reason = f"No approver decided within {settings.PENDING_APPROVAL_DAYS} days."
        if transition(
            environment_id,
            from_states=State.PENDING_APPROVAL,
            to_state=State.REJECTED,
            message=f"Rejected: {reason}",
            last_error=reason,
        ):
            notifications.send_later(notifications.REJECTED, environment_id)
            count += 1
    now = timezone.now()
    expired = Environment.objects.filter(
        state__in=DELETABLE_STATES, expires_at__lte=now
    ).values_list("pk", flat=True)
    reaped = []
    for environment_id in expired:
        environment = Environment.objects.get(pk=environment_id)
        # expired_by: re-checked in the guarded UPDATE, so an extension since wins.
        if services.delete_environment(environment=environment, message="Expired.", expired_by=now):
            notifications.send_later(notifications.EXPIRED, environment_id)
            reaped.append(environment_id)
    if len(reaped) > 1:  # a class or a batch ending together: overlap the waits
        start_deleting(reaped)
    idempotency.prune()  # API Idempotency-Keys older than a day
    return count + len(reaped)


def warn_expiring() -> int:
    """Scheduled: warn owners N minutes before expiry, once per expiry time."""
    soon = timezone.now() + timedelta(minutes=settings.EXPIRY_WARNING_MINUTES)
    count = 0
    for environment_id in Environment.objects.filter(
        state=State.READY, expires_at__lte=soon, expiry_warned_at__isnull=True, pooled=False
    ).values_list("pk", flat=True):
        claimed = Environment.objects.filter(
            pk=environment_id, expiry_warned_at__isnull=True
        ).update(expiry_warned_at=timezone.now())
        if claimed:
            environment = Environment.objects.get(pk=environment_id)
            EnvironmentEvent.objects.create(
                environment_id=environment_id,
                kind=EnvironmentEvent.Kind.INFO,
                message=f"Expires at {timezone.localtime(environment.expires_at):%Y-%m-%d %H:%M}"
                " — extend it if you still need it.",
            )
            notifications.send_later(notifications.EXPIRING, environment_id)
            count += 1
    return count


def remind_approvers() -> int:
    """Scheduled: remind approvers of requests pending longer than the setting."""
    cutoff = timezone.now() - timedelta(minutes=settings.APPROVAL_REMINDER_MINUTES)
    count = 0
    for environment_id in Environment.objects.filter(
        state=State.PENDING_APPROVAL, state_changed_at__lte=cutoff
    ).values_list("pk", flat=True):
        # One reminder per request: the unique source_key makes a second run a no-op.
        _, created = EnvironmentEvent.objects.get_or_create(
            environment_id=environment_id,
            source_key="approval-reminder",
            defaults={"kind": EnvironmentEvent.Kind.INFO, "message": "Approvers were reminded."},
        )
        if created:
            notifications.send_later(notifications.REMINDER, environment_id)
            count += 1
    return count


def reconcile() -> dict[str, int]:
    """Scheduled every 5 minutes: make the cluster and the database agree.

    - managed namespaces with no live environment (orphans) are deleted after a grace
      period; namespaces without the managed-by label are never touched;
    - provisioning whose job died (lease expired) or was lost is enqueued again (the
      watcher does so within seconds; this is the backstop);
    - approved environments whose job was lost are enqueued again;
    - tearing-down environments get their teardown job again;
    - a ready environment whose namespace vanished becomes failed, with an event;
    - failed environments' namespaces are cleaned up after the failure TTL;
    - kubeconfig revocations of the last day are queued once more (``requeue_revocations``).
    """
    now = timezone.now()
    counts = {"orphans": 0, "restarted": 0, "vanished": 0, "cleaned": 0, "teardowns": 0}
    namespaces = {ns.name: ns for ns in cluster.list_managed_namespaces()}
    live = {
        str(pk): (name, state)
        for pk, name, state in Environment.objects.exclude(state__in=FINAL_STATES).values_list(
            "pk", "name", "state"
        )
    }
    grace = timedelta(seconds=settings.ORPHAN_GRACE_SECONDS)
    for ns in namespaces.values():
        if ns.terminating or ns.environment_id in live:
            continue
        created = datetime.fromisoformat(ns.created_at.replace("Z", "+00:00"))
        if now - created >= grace:
            log.info("deleting orphan namespace %s", ns.name)
            cluster.delete(cluster.namespace_manifest(ns.name))
            counts["orphans"] += 1

    def requeue(action: str, environment_id, **kwargs) -> bool:
        # One broken job in Redis must not end the run for every other environment.
        try:
            return enqueue(action, environment_id, **kwargs)
        except Exception:
            log.exception("could not enqueue %s for %s", action, environment_id)
            return False

    for environment_id in Environment.objects.filter(job_lost()).values_list("pk", flat=True):
        if requeue("provision", environment_id, replace_started=True):
            counts["restarted"] += 1
    stale = now - timedelta(seconds=30)
    for environment_id in Environment.objects.filter(
        state=State.APPROVED, state_changed_at__lt=stale
    ).values_list("pk", flat=True):
        if requeue("provision", environment_id):
            counts["restarted"] += 1
    for environment_id in Environment.objects.filter(
        state=State.TEARING_DOWN, state_changed_at__lt=stale
    ).values_list("pk", flat=True):
        if requeue("teardown", environment_id):
            counts["teardowns"] += 1

    for environment_id, name in Environment.objects.filter(state=State.READY).values_list(
        "pk", "name"
    ):
        # The listing above may predate this namespace: ask again before failing it.
        namespace = namespace_for(name)
        if namespace in namespaces or cluster.namespace_exists(namespace):
            continue
        # Restored from its snapshot with recovery.auto, else failed (the watcher does
        # this within seconds; this is the backstop).
        if healing.namespace_lost(environment_id, confirm=False) in {"restored", "failed"}:
            counts["vanished"] += 1

    failure_cutoff = now - timedelta(minutes=settings.FAILURE_TTL_MINUTES)
    for environment_id, name in Environment.objects.filter(
        state=State.FAILED, state_changed_at__lte=failure_cutoff
    ).values_list("pk", "name"):
        leftover = namespaces.get(namespace_for(name))
        if leftover is not None and not leftover.terminating:
            cluster.delete(cluster.namespace_manifest(leftover.name))
            EnvironmentEvent.objects.get_or_create(
                environment_id=environment_id,
                source_key=f"failure-cleanup:{leftover.created_at}",
                defaults={
                    "kind": EnvironmentEvent.Kind.INFO,
                    "message": "The failed environment's namespace was cleaned up; "
                    "retry to provision it again.",
                },
            )
            counts["cleaned"] += 1
    try:  # restores whose end the watcher did not record
        counts["recoveries"] = restore.settle_unfinished()
    except Exception:
        log.exception("could not settle the unfinished restores")
    try:  # verified teardown: anything of a deleted environment still on the cluster
        counts["leftovers"] = teardown_receipt.report_leftovers()
        counts["receipts"] = teardown_receipt.requeue_missing_receipts()
    except cluster.ClusterError as exc:
        log.warning("could not look for leftovers: %s", exc)
    try:  # kubeconfig revocations whose job was lost to a Redis outage
        counts["revocations"] = requeue_revocations()
    except Exception:
        log.exception("could not queue the kubeconfig revocations")
    telemetry.reconciled(vanished=counts["vanished"])
    return counts
