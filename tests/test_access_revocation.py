"""Kubeconfig revocations survive a lost job: the reconciler queues them once more."""

from __future__ import annotations

import django_rq
import pytest

from environments.access import people
from environments.lifecycle.queue import requeue_revocations

# Transactional: django_rq enqueues when the database transaction commits.
pytestmark = pytest.mark.django_db(transaction=True)


def queued_syncs() -> list[tuple]:
    queue = django_rq.get_queue("default")
    return [
        tuple(job.args)
        for job in queue.get_jobs()
        if job.func_name == "environments.tasks.sync_person_access"
    ]


def test_the_reconciler_queues_a_revocation_whose_job_was_lost_once(
    teammate, portal_admin, team, settings
):
    settings.EPHEMERA_INSTANCE = f"{settings.EPHEMERA_INSTANCE}-revocation"
    django_rq.get_queue("default").empty()
    people.remove_member(actor=portal_admin, user=teammate, team=team)
    people.deactivate(actor=portal_admin, user=teammate)
    # Their jobs are lost (as when Redis was down at commit time).
    django_rq.get_queue("default").empty()
    assert queued_syncs() == []
    try:
        assert requeue_revocations() == 2
        assert queued_syncs() == [(str(teammate.pk),), (str(teammate.pk),)]
        assert requeue_revocations() == 0  # once per change
    finally:
        django_rq.get_queue("default").empty()
        connection = django_rq.get_connection("default")
        for key in connection.scan_iter(f"ephemera:{settings.EPHEMERA_INSTANCE}:access-resynced:*"):
            connection.delete(key)
