"""Enqueueing background work by dotted path, after the caller's transaction commits.

Nothing here imports the job functions: a job is named by its path in
``environments.tasks``, so services and the watcher stay below the entry points.

The rule when Redis is down: the row is the request. A request whose transaction
committed is accepted even if its job cannot be queued: the environment shows that it
will start when the queue is back, and the reconciler (``lifecycle.upkeep``) queues it
then; ``enqueue`` is idempotent by job id, so that never runs a job twice. Callers ask
``deferred(environment_id)`` to tell the person so. An error before the commit (the
database, a refused request) means nothing was created.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from datetime import timedelta

import django_rq
import redis.exceptions
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from environments.models import AuditEvent, EnvironmentEvent

log = logging.getLogger(__name__)

QUEUE_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
WAITING_FOR_QUEUE = (
    "The job queue is unavailable right now: this will start automatically when it is back."
)

# The RQ entry point of each action; each action has its own queue.
TASKS = {
    "provision": "environments.tasks.provision",
    "teardown": "environments.tasks.teardown",
}


def job_id(action: str, environment_id) -> str:
    return f"{action}-{environment_id}"


def enqueue(action: str, environment_id, *, replace_started: bool = False) -> bool:
    """Enqueue ``action`` for one environment unless the same job is already waiting.

    The job id is unique to the action and the environment; a job marked queued that is
    in no queue any more (its worker died as it took it) counts as lost. ``replace_started``
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
    if status == JobStatus.QUEUED and queue.connection.lpos(queue.key, ident) is None:
        # Marked queued but in no queue: a worker took it (BLPOP) and died before marking
        # it started (kill -9, or its forked scheduler kept the socket open). Lost.
        status = None
    if status in {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}:
        return False
    if status == JobStatus.STARTED and not replace_started:
        return False
    if existing is not None:
        _delete(queue, existing)
    queue.enqueue(
        TASKS[action],
        str(environment_id),
        job_id=ident,
        job_timeout=settings.PROVISION_DEADLINE_SECONDS + 120,
        result_ttl=3600,
        failure_ttl=7 * 86400,
    )
    return True


def _delete(queue, job: Job) -> None:
    """Delete a job, even one whose worker died long ago.

    RQ keeps a started job's executions in a set, each with its own hash that expires.
    When the hash expired first (the worker died 90-150 s ago), ``Job.delete()`` raises
    ``ValueError: Execution ... not found in Redis`` half-way. Remove what is left by
    key instead: the job, its executions, its entries in the queue and the registries.
    """
    try:
        job.delete()
        return
    except ValueError as exc:
        if "not found in Redis" not in str(exc):
            raise
    redis = queue.connection
    prefix = f"{job.id}:".encode()
    for registry in (queue.started_job_registry, queue.failed_job_registry):
        for entry in redis.zrange(registry.key, 0, -1):
            if entry == job.id.encode() or entry.startswith(prefix):
                redis.zrem(registry.key, entry)
    queue.remove(job.id)
    redis.delete(job.key, job.dependents_key, job.dependencies_key, job.execution_registry.key)


SNAPSHOT_TASK = "environments.tasks.snapshot_after_ready"


def enqueue_snapshot_on_commit(environment_id, revision: str) -> None:
    """After the caller commits: the job that snapshots an environment that became ready
    (recovery). Its id names the revision, so each revision is snapshotted once however
    often this is called; the job is idempotent too (one snapshot per ``revision``)."""

    ident = f"snapshot-{environment_id}-{hashlib.sha256(revision.encode()).hexdigest()[:16]}"
    _enqueue_unique_on_commit(
        SNAPSHOT_TASK,
        str(environment_id),
        revision,
        job_id=ident,
        failed=f"could not queue the snapshot of {environment_id}",
    )


def _enqueue_unique_on_commit(task: str, *args: str, job_id: str, failed: str) -> None:
    """After the caller commits: enqueue ``task`` once under ``job_id`` (a job of that id
    already queued is enough); if Redis is down, log ``failed`` with the reason."""

    def send() -> None:
        try:
            django_rq.get_queue("default").enqueue(
                task,
                *args,
                job_id=job_id,
                unique=True,
                result_ttl=3600,
                failure_ttl=7 * 86400,
            )
        except DuplicateJobError:
            pass
        except QUEUE_DOWN as exc:
            log.warning("%s: %s", failed, exc)

    transaction.on_commit(send)


DRILL_CHECK_TASK = "environments.tasks.check_drill"


def enqueue_drill_check_on_commit(drill_id) -> None:
    """After the caller commits: the job that checks a restore drill whose scratch
    environment became ready (recovery.drills). One job per drill (its id names it);
    the job is idempotent too (it acts only on a running drill)."""
    _enqueue_unique_on_commit(
        DRILL_CHECK_TASK,
        str(drill_id),
        job_id=f"drill-check-{drill_id}",
        failed=f"could not queue the check of drill {drill_id}",
    )


def enqueue_on_commit(action: str, environment_id) -> None:
    """Enqueue once the caller's transaction commits (never a job for a rolled-back row).

    If Redis is down then, the committed request stands: see the module docstring."""
    transaction.on_commit(lambda: _enqueue_or_defer(action, environment_id))


# Environments whose job could not be queued during this thread's current request.
_deferred = threading.local()


def _enqueue_or_defer(action: str, environment_id) -> None:
    try:
        enqueue(action, environment_id)
    except QUEUE_DOWN as exc:
        log.warning(
            "could not queue %s for %s (%s); the reconciler will queue it when Redis is back",
            action,
            environment_id,
            type(exc).__name__,
        )
        if not hasattr(_deferred, "ids"):
            _deferred.ids = set()
        _deferred.ids.add(str(environment_id))
        try:
            EnvironmentEvent.objects.create(
                environment_id=environment_id,
                kind=EnvironmentEvent.Kind.INFO,
                message=WAITING_FOR_QUEUE,
            )
        except DatabaseError:
            log.warning("could not record the queue outage on %s", environment_id)


def forget_deferred() -> None:
    """Start a request with a clean slate (a thread serves many requests)."""
    _deferred.ids = set()


def deferred(environment_id) -> bool:
    """True if this thread could not queue ``environment_id``'s job just now (asked once:
    the answer is forgotten after it is given)."""
    ids: set[str] = getattr(_deferred, "ids", set())
    if str(environment_id) in ids:
        ids.discard(str(environment_id))
        return True
    return False


# --- Per-person credentials (issue 14, finding 4) --------------------------------------
# Grants and revocations of kubeconfig identities (access.credentials), on the default
# queue. Each enqueue is a new job: the jobs read the current state when they run and
# are idempotent, so a change made while one runs is never lost to de-duplication.

ACCESS_TASKS = {
    "environment": "environments.tasks.grant_environment_access",
    "person": "environments.tasks.sync_person_access",
    "grant": "environments.tasks.grant_person_access",
}


def enqueue_access(kind: str, *args) -> None:
    queue = django_rq.get_queue("default")
    queue.enqueue(
        ACCESS_TASKS[kind],
        *[str(a) for a in args],
        job_id=f"access-{kind}-{'-'.join(str(a) for a in args)}-{uuid.uuid4().hex[:8]}",
        job_timeout=settings.PROVISION_DEADLINE_SECONDS + 120,
        result_ttl=3600,
        failure_ttl=7 * 86400,
    )


def enqueue_access_on_commit(kind: str, *args) -> None:
    """Queue an access job once the caller's transaction commits. A Redis outage then
    is logged as a warning; ``requeue_revocations`` (the reconciler) queues revocations
    again later."""

    def run() -> None:
        try:
            enqueue_access(kind, *args)
        except QUEUE_DOWN as exc:
            log.warning("could not queue the %s access job (%s)", kind, type(exc).__name__)

    transaction.on_commit(run)


# Actions in the audit log after which a person's kubeconfig identities must go.
REVOKING_ACTIONS = ("person.deactivate", "person.remove_from_team")
REVOCATION_BACKSTOP_HOURS = 24


def requeue_revocations() -> int:
    """The reconciler's backstop for revocations whose job could not be queued (Redis
    down at commit time): each deactivation or team removal of the last day queues one
    sync job, once (a Redis key per audit entry remembers it). Returns how many."""
    since = timezone.now() - timedelta(hours=REVOCATION_BACKSTOP_HOURS)
    connection = django_rq.get_connection("default")
    queued = 0
    for entry_id, person_id in AuditEvent.objects.filter(
        action__in=REVOKING_ACTIONS, created_at__gte=since
    ).values_list("pk", "object_id"):
        key = f"ephemera:{settings.EPHEMERA_INSTANCE}:access-resynced:{entry_id}"
        if connection.set(key, 1, nx=True, ex=2 * REVOCATION_BACKSTOP_HOURS * 3600):
            enqueue_access("person", person_id)
            queued += 1
    return queued


# --- Recovery (issue 15): drift repair and teardown receipts -----------------------------
# On the default queue, one job per environment and kind at a time: while one waits or
# runs, asking again does nothing (the watcher asks on every pass while drift lasts).

RECOVERY_TASKS = {
    "repair": "environments.tasks.repair_drift",
    "verify_teardown": "environments.tasks.verify_teardown",
}


def enqueue_recovery(kind: str, environment_id, *args) -> bool:
    """Queue a recovery job for one environment unless the same kind is already waiting
    or running for it. Returns True if a job was queued."""
    queue = django_rq.get_queue("default")
    ident = f"{kind}-{environment_id}"
    try:
        existing = Job.fetch(ident, connection=queue.connection)
        status = existing.get_status(refresh=True)
    except NoSuchJobError:
        existing, status = None, None
    if status == JobStatus.QUEUED and queue.connection.lpos(queue.key, ident) is None:
        status = None  # taken by a worker that died: lost
    if status in {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED}:
        return False
    if existing is not None:
        _delete(queue, existing)  # finished, failed or lost: make room
    queue.enqueue(
        RECOVERY_TASKS[kind],
        str(environment_id),
        *args,
        job_id=ident,
        job_timeout=settings.KUBE_RETRY_SECONDS * 4 + 120,
        result_ttl=600,
        failure_ttl=7 * 86400,
    )
    return True


def enqueue_recovery_on_commit(kind: str, environment_id, *args) -> None:
    """``enqueue_recovery`` once the caller's transaction commits; a Redis outage then is
    a warning (the reconciler's sweep reports what a lost receipt would have)."""

    def run() -> None:
        try:
            enqueue_recovery(kind, environment_id, *args)
        except QUEUE_DOWN as exc:
            log.warning("could not queue %s for %s (%s)", kind, environment_id, type(exc).__name__)

    transaction.on_commit(run)
