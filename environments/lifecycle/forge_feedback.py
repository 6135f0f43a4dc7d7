"""Telling the forge: queue the job that posts a pull request's commit status and comment.

Called by ``transitions.transition`` after every state change of an environment made for
a pull request (the watcher makes most of them: ready, failed, deleted) and by the
preview hook. The job (``environments.tasks.post_pull_request_feedback``) is queued after
the transaction commits, by its dotted path, and reads what to post from the rows when
it runs, so several changes in a row post the latest once. Posting never blocks the
environment: a failure is retried by RQ with backoff and shown on the hook's page.
"""

from __future__ import annotations

import logging

import django_rq
import redis.exceptions
from django.db import transaction
from rq import Retry

from environments.models import PullRequest

log = logging.getLogger(__name__)

TASK = "environments.tasks.post_pull_request_feedback"
# Seconds between attempts when the forge cannot be reached or refuses.
RETRY_INTERVALS = [5, 30, 120, 600, 1800]


def tell_forge_on_commit(pull_request_id) -> None:
    def enqueue() -> None:
        try:
            django_rq.get_queue("default").enqueue(
                TASK,
                str(pull_request_id),
                retry=Retry(max=len(RETRY_INTERVALS), interval=RETRY_INTERVALS),
                result_ttl=3600,
                failure_ttl=7 * 86400,
            )
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning(
                "could not queue the feedback for pull request %s: %s",
                pull_request_id,
                type(exc).__name__,
            )

    transaction.on_commit(enqueue)


def after_transition(environment_id) -> None:
    """Queue the feedback of the pull requests this environment serves (usually none)."""
    for pull_request_id in PullRequest.objects.filter(environment_id=environment_id).values_list(
        "pk", flat=True
    ):
        tell_forge_on_commit(pull_request_id)
