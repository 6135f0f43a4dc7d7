"""Background jobs on django-rq. Thin and idempotent (STYLE.md rules 7-9).

Each job receives an id, re-reads the row, checks the state and claims its work with
a guarded UPDATE, so running it twice, or two workers at once, is safe. A provision
job holds a lease it renews as it goes; if its worker dies (even ``kill -9``), the
lease runs out and ``reconcile`` starts the job again, which re-applies the recorded
manifests (server-side apply, a no-op for what already exists) and carries on.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import django_rq
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from environments.kube import cluster
from environments.kube.objects import EnvironmentSpec, build_manifests, urls
from environments.models import CostEntry, Environment, EnvironmentEvent
from environments.states import State, transition

log = logging.getLogger(__name__)


def job_id(action: str, environment_id) -> str:
    return f"{action}-{environment_id}"


def enqueue(action: str, environment_id, *, replace_started: bool = False) -> bool:
    """Enqueue ``action`` for one environment unless the same job is already waiting.

    The job id is unique to the action and the environment. ``replace_started``
    replaces a job marked as started (its worker died: the reconciler decided so from
    the expired lease). Returns True if a job was enqueued.
    """
    queue = django_rq.get_queue(action)  # each action has its own queue
    ident = job_id(action, environment_id)
    try:
        existing = Job.fetch(ident, connection=queue.connection)
        status = existing.get_status(refresh=True)
    except NoSuchJobError:
        existing, status = None, None
    if status in {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}:
        return False
    if status == JobStatus.STARTED and not replace_started:
        return False
    if existing is not None:
        existing.delete()
    function = {"provision": provision, "teardown": teardown}[action]
    queue.enqueue(
        function,
        str(environment_id),
        job_id=ident,
        job_timeout=settings.PROVISION_DEADLINE_SECONDS + 120,
        result_ttl=3600,
        failure_ttl=7 * 86400,
    )
    return True


def enqueue_on_commit(action: str, environment_id) -> None:
    """Enqueue once the caller's transaction commits (never a job for a rolled-back row)."""
    transaction.on_commit(lambda: enqueue(action, environment_id))


# --- provision ------------------------------------------------------------------------


def environment_spec(environment: Environment) -> EnvironmentSpec:
    from environments.blueprints import render_components

    version = environment.blueprint_version
    return EnvironmentSpec(
        environment_id=str(environment.pk),
        name=environment.name,
        owner_id=str(environment.owner_id),
        team=environment.team.slug,
        blueprint=version.blueprint.name,
        expires_at=(environment.expires_at or timezone.now()).isoformat(),
        components=render_components(version.spec, environment.parameters),
        quota=version.spec.get("quota", {}),
        base_domain=settings.BASE_DOMAIN,
        ingress_namespace=settings.INGRESS_NAMESPACE,
        ingress_class=settings.INGRESS_CLASS,
        instance=settings.EPHEMERA_INSTANCE,
        kube_access=version.spec.get("kube_access", "view"),
    )


class LeaseLost(Exception):
    """This job's provisioning lease was taken over (or the environment left provisioning)."""


def _claim(environment_id) -> uuid.UUID | None:
    """Take the provisioning lease: approved -> provisioning, or an expired lease.

    Returns this job's lease token, or None if another job holds a live lease.
    """
    now = timezone.now()
    lease = now + timedelta(seconds=settings.PROVISION_LEASE_SECONDS)
    token = uuid.uuid4()
    if transition(
        environment_id,
        from_states=State.APPROVED,
        to_state=State.PROVISIONING,
        message="Provisioning started.",
        lease_until=lease,
        lease_owner=token,
        provision_started_at=now,
        attempts=F("attempts") + 1,
    ):
        return token
    taken = (
        Environment.objects.filter(pk=environment_id, state=State.PROVISIONING)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_until=lease, lease_owner=token, attempts=F("attempts") + 1, updated_at=now)
    )
    return token if taken else None


def _renew_lease(environment_id, token: uuid.UUID) -> None:
    """Renew this job's lease, or raise LeaseLost: deleted meanwhile, or taken over."""
    now = timezone.now()
    renewed = Environment.objects.filter(
        pk=environment_id, state=State.PROVISIONING, lease_owner=token
    ).update(lease_until=now + timedelta(seconds=settings.PROVISION_LEASE_SECONDS))
    if not renewed:
        raise LeaseLost


def record_problem(environment_id, problem: cluster.Problem) -> None:
    """One EnvironmentEvent per distinct problem (the unique source_key drops repeats)."""
    EnvironmentEvent.objects.get_or_create(
        environment_id=environment_id,
        source_key=problem.key[:200],
        defaults={"kind": EnvironmentEvent.Kind.KUBE, "message": problem.message},
    )


def _fail(environment_id, message: str) -> None:
    if transition(
        environment_id,
        from_states=State.PROVISIONING,
        to_state=State.FAILED,
        message=f"Provisioning failed: {message}",
        last_error=message,
        lease_until=None,
        lease_owner=None,
        accrued_until=None,  # failed environments are not billed
    ):
        from environments import notifications

        notifications.send_later(notifications.FAILED, environment_id)


def _apply_and_watch(
    environment: Environment, token: uuid.UUID, deadline: float, fatal: list
) -> tuple | None:
    """Render (once) and apply the manifests, then watch until ready or a fatal problem.

    Returns None when the parameters changed while rendering (an update raced us).
    """
    environment_id = environment.pk
    manifests, parameters = Environment.objects.values_list("manifests", "parameters").get(
        pk=environment_id
    )
    if not manifests:
        # Rendered once and recorded: re-runs and teardown use exactly these. The write
        # is guarded so that parameters changed meanwhile are never overwritten.
        environment.parameters = parameters
        spec = environment_spec(environment)
        manifests = build_manifests(spec)
        written = Environment.objects.filter(
            pk=environment_id, manifests=[], parameters=parameters
        ).update(
            manifests=manifests,
            urls=urls(spec, settings.INGRESS_URL_SCHEME),
            updated_at=timezone.now(),
        )
        if not written:
            return None
    for manifest in manifests:
        _renew_lease(environment_id, token)  # never apply on a lease another job holds
        cluster.apply(manifest)
    components = [m["metadata"]["name"] for m in manifests if m["kind"] == "Deployment"]

    def on_progress(ready: dict) -> None:
        Environment.objects.filter(pk=environment_id).update(component_status=ready)

    def on_tick() -> bool:
        _renew_lease(environment_id, token)  # LeaseLost ends the watch and the job
        for problem in cluster.problems(environment.namespace, components):
            record_problem(environment_id, problem)
            if problem.fatal:
                fatal.append(problem)
        return not fatal

    ready = cluster.watch_until_ready(
        environment.namespace,
        components,
        deadline=deadline,
        on_progress=on_progress,
        on_tick=on_tick,
    )
    return components, ready


def provision(environment_id: str) -> str:
    """Create the environment's objects and wait until every Deployment is available."""
    environment = (
        Environment.objects.select_related("blueprint_version__blueprint", "team")
        .filter(pk=environment_id)
        .first()
    )
    if environment is None:
        return "no such environment"
    if environment.state not in {State.APPROVED, State.PROVISIONING}:
        return f"nothing to do: {environment.state}"
    token = _claim(environment_id)
    if token is None:
        return "another worker holds the lease"
    environment.refresh_from_db()

    started = environment.provision_started_at or timezone.now()
    deadline_at = started + timedelta(seconds=settings.PROVISION_DEADLINE_SECONDS)
    deadline = time.monotonic() + (deadline_at - timezone.now()).total_seconds()

    fatal: list[cluster.Problem] = []
    try:
        # More than one round only when an update (new parameters, e.g. a pull
        # request's new commit) arrives while this job is working: it clears the
        # recorded manifests, and the next round renders and applies the new ones.
        components, ready = [], {}
        while time.monotonic() < deadline:
            result = _apply_and_watch(environment, token, deadline, fatal)
            if result is not None:
                components, ready = result
                updated = Environment.objects.filter(pk=environment_id, manifests=[]).exists()
                if fatal or not updated:
                    break
            if not Environment.objects.filter(pk=environment_id, state=State.PROVISIONING).exists():
                break  # deleted meanwhile
    except LeaseLost:
        return "stopped: the environment left provisioning, or another job took it over"
    except cluster.ClusterError as exc:
        _fail(environment_id, str(exc))
        return "failed"

    if fatal:
        _fail(environment_id, fatal[0].message)
        return "failed"
    applied = Environment.objects.filter(pk=environment_id).exclude(manifests=[]).exists()
    if components and applied and all(ready.get(name, {}).get("ready") for name in components):
        now = timezone.now()
        if transition(
            environment_id,
            from_states=State.PROVISIONING,
            to_state=State.READY,
            message="Ready.",
            ready_at=now,
            # After an update, billing resumes where it paused (the pods kept running).
            accrued_until=Coalesce(F("accrued_until"), Value(now)),
            lease_until=None,
            lease_owner=None,
            component_status=ready,
        ):
            from environments import notifications

            notifications.send_later(notifications.READY, environment_id)
        return "ready"
    if Environment.objects.filter(pk=environment_id, state=State.PROVISIONING).exists():
        waiting = ", ".join(
            f"{name} {info['available']}/{info['replicas']}"
            for name, info in sorted(ready.items())
            if not info["ready"]
        )
        minutes = settings.PROVISION_DEADLINE_SECONDS // 60 or 1
        _fail(
            environment_id,
            f"not ready after {minutes} min (still waiting for {waiting or 'the components'}).",
        )
        return "failed"
    return "stopped: the environment left provisioning"


# --- teardown -------------------------------------------------------------------------


def _namespaces_of(environment: Environment) -> list[dict]:
    # Teardown uses what was applied, not the blueprint's current version.
    return [m for m in environment.manifests if m["kind"] == "Namespace"] or [
        cluster.namespace_manifest(environment.namespace)
    ]


def start_deleting(environment_ids) -> None:
    """Issue the namespace deletes for many environments at once, without waiting.

    Kubernetes' namespace controller waits 5 s before it empties a deleted namespace, and
    each teardown job holds a worker until its namespace is gone. Deleting a batch's
    namespaces up front lets those waits overlap: the teardown jobs that follow mostly
    find their namespace already gone. Best effort: the jobs delete again anyway.
    """
    rows = Environment.objects.filter(pk__in=list(environment_ids), state=State.TEARING_DOWN)
    for environment in rows.only("pk", "name", "manifests"):
        for manifest in _namespaces_of(environment):
            try:
                cluster.delete(manifest)
            except cluster.ClusterError as exc:
                log.warning("early delete of %s failed: %s", manifest["metadata"]["name"], exc)


def teardown(environment_id: str) -> str:
    """Delete the namespace recorded at provisioning and wait until it is gone."""
    environment = Environment.objects.filter(pk=environment_id).first()
    if environment is None:
        return "no such environment"
    if environment.state == State.DELETED:
        return "already deleted"
    if environment.state != State.TEARING_DOWN:
        return f"nothing to do: {environment.state}"
    namespaces = _namespaces_of(environment)
    for manifest in namespaces:
        cluster.delete(manifest)
    for manifest in namespaces:
        if not cluster.wait_namespace_gone(
            manifest["metadata"]["name"], timeout=settings.TEARDOWN_TIMEOUT_SECONDS
        ):
            # Left in tearing_down: the reconciler runs teardown again.
            raise cluster.ClusterError(
                f"namespace {manifest['metadata']['name']} still exists after "
                f"{settings.TEARDOWN_TIMEOUT_SECONDS} s"
            )
    accrue(environment_id)
    transition(
        environment_id,
        from_states=State.TEARING_DOWN,
        to_state=State.DELETED,
        message="Deleted: the namespace and everything in it is gone.",
        deleted_at=timezone.now(),
        # Nothing answers there any more: no links, no "Ready" components.
        urls={},
        component_status={},
        lease_until=None,
        lease_owner=None,
    )
    return "deleted"


# --- cost -----------------------------------------------------------------------------


def accrue(environment_id, now=None) -> Decimal:
    """Record cost for whole minutes since ``accrued_until``. Safe to run twice.

    The guarded UPDATE on ``accrued_until`` means a period is recorded once, even if
    two accrual jobs race.
    """
    now = now or timezone.now()
    environment = (
        Environment.objects.select_related("blueprint_version__blueprint")
        .filter(pk=environment_id, accrued_until__isnull=False)
        .first()
    )
    if environment is None or environment.state not in {State.READY, State.TEARING_DOWN}:
        return Decimal(0)
    end = min(now, environment.expires_at or now)
    minutes = int((end - environment.accrued_until).total_seconds() // 60)
    if minutes < 1:
        return Decimal(0)
    start = environment.accrued_until
    period_end = start + timedelta(minutes=minutes)
    amount = (environment.hourly_price * minutes / Decimal(60)).quantize(Decimal("0.0001"))
    with transaction.atomic():
        moved = Environment.objects.filter(pk=environment_id, accrued_until=start).update(
            accrued_until=period_end, accrued_cost=F("accrued_cost") + amount
        )
        if not moved:
            return Decimal(0)
        CostEntry.objects.create(
            environment=environment,
            team_id=environment.team_id,
            owner_id=environment.owner_id,
            blueprint=environment.blueprint_version.blueprint.name,
            period_start=start,
            period_end=period_end,
            amount=amount,
        )
    return amount


def accrue_cost() -> int:
    """Scheduled: accrue every running environment."""
    count = 0
    for environment_id in Environment.objects.filter(
        state__in=[State.READY, State.TEARING_DOWN], accrued_until__isnull=False
    ).values_list("pk", flat=True):
        if accrue(environment_id):
            count += 1
    return count


# --- scheduled --------------------------------------------------------------------------


def reap_expired() -> int:
    """Scheduled every minute: tear down whatever is past its expiry."""
    from environments import notifications, services

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
    expired = Environment.objects.filter(
        state__in=services.DELETABLE, expires_at__lte=timezone.now()
    ).values_list("pk", flat=True)
    reaped = []
    for environment_id in expired:
        environment = Environment.objects.get(pk=environment_id)
        if services.delete_environment(environment=environment, message="Expired."):
            notifications.send_later(notifications.EXPIRED, environment_id)
            reaped.append(environment_id)
    if len(reaped) > 1:  # a class or a batch ending together: overlap the waits
        start_deleting(reaped)
    return count + len(reaped)


def warn_expiring() -> int:
    """Scheduled: warn owners N minutes before expiry, once per expiry time."""
    from environments import notifications

    soon = timezone.now() + timedelta(minutes=settings.EXPIRY_WARNING_MINUTES)
    count = 0
    for environment_id in Environment.objects.filter(
        state=State.READY, expires_at__lte=soon, expiry_warned_at__isnull=True
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
    from environments import notifications

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
    - provisioning whose worker died (lease expired) is started again, or fails once
      past its deadline (the provision job decides);
    - approved environments whose job was lost are enqueued again;
    - tearing-down environments get their teardown job again;
    - a ready environment whose namespace vanished becomes failed, with an event;
    - failed environments' namespaces are cleaned up after the failure TTL.
    """
    now = timezone.now()
    counts = {"orphans": 0, "restarted": 0, "vanished": 0, "cleaned": 0, "teardowns": 0}
    namespaces = {ns.name: ns for ns in cluster.list_managed_namespaces()}
    live = {
        str(pk): (name, state)
        for pk, name, state in Environment.objects.exclude(
            state__in=[State.DELETED, State.REJECTED]
        ).values_list("pk", "name", "state")
    }
    grace = timedelta(seconds=settings.ORPHAN_GRACE_SECONDS)
    for ns in namespaces.values():
        if ns.terminating or ns.environment_id in live:
            continue
        created = timezone.datetime.fromisoformat(ns.created_at.replace("Z", "+00:00"))
        if now - created >= grace:
            log.info("deleting orphan namespace %s", ns.name)
            cluster.delete(cluster.namespace_manifest(ns.name))
            counts["orphans"] += 1

    lease_expired = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    for environment_id in Environment.objects.filter(
        lease_expired, state=State.PROVISIONING
    ).values_list("pk", flat=True):
        if enqueue("provision", environment_id, replace_started=True):
            counts["restarted"] += 1
    stale = now - timedelta(seconds=30)
    for environment_id in Environment.objects.filter(
        state=State.APPROVED, state_changed_at__lt=stale
    ).values_list("pk", flat=True):
        if enqueue("provision", environment_id):
            counts["restarted"] += 1
    for environment_id in Environment.objects.filter(
        state=State.TEARING_DOWN, state_changed_at__lt=stale
    ).values_list("pk", flat=True):
        if enqueue("teardown", environment_id):
            counts["teardowns"] += 1

    for environment_id, name in Environment.objects.filter(state=State.READY).values_list(
        "pk", "name"
    ):
        # The listing above may predate this namespace: ask again before failing it.
        if f"eph-{name}" in namespaces or cluster.namespace_exists(f"eph-{name}"):
            continue
        gone = f"The namespace eph-{name} disappeared from the cluster."
        accrue(environment_id)  # bill up to now, then stop
        if transition(
            environment_id,
            from_states=State.READY,
            to_state=State.FAILED,
            message=gone,
            last_error=gone,
            accrued_until=None,
        ):
            counts["vanished"] += 1

    failure_cutoff = now - timedelta(minutes=settings.FAILURE_TTL_MINUTES)
    for environment_id, name in Environment.objects.filter(
        state=State.FAILED, state_changed_at__lte=failure_cutoff
    ).values_list("pk", "name"):
        ns = namespaces.get(f"eph-{name}")
        if ns is not None and not ns.terminating:
            cluster.delete(cluster.namespace_manifest(ns.name))
            EnvironmentEvent.objects.get_or_create(
                environment_id=environment_id,
                source_key=f"failure-cleanup:{ns.created_at}",
                defaults={
                    "kind": EnvironmentEvent.Kind.INFO,
                    "message": "The failed environment's namespace was cleaned up; "
                    "retry to provision it again.",
                },
            )
            counts["cleaned"] += 1
    return counts
