"""Enqueueing background work by dotted path, after the caller's transaction commits.

Nothing here imports the job functions: a job is named by its path in
``environments.tasks``, so services and the watcher stay below the entry points.
"""

from __future__ import annotations

import django_rq
from django.conf import settings
from django.db import transaction
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

# The RQ entry point of each action; each action has its own queue.
TASKS = {
    "provision": "environments.tasks.provision",
    "teardown": "environments.tasks.teardown",
}


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
    queue.enqueue(
        TASKS[action],
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
