"""The faults found by killing processes on a running portal, each with a test that
fails without the watcher (or the fix named in it). Real processes, real cluster.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import django_rq
import pytest
import yaml
from django.utils import timezone
from rq.job import JobStatus

from environments.governance.billing import accrue_cost
from environments.kube import cluster
from environments.lifecycle import services
from environments.lifecycle.provisioning import _claim, provision, start_deleting
from environments.lifecycle.queue import enqueue, job_id
from environments.lifecycle.states import State
from environments.lifecycle.upkeep import reconcile
from environments.lifecycle.watcher import reconcile_once
from environments.models import CostEntry, Environment
from tests.conftest import start_watcher, start_worker, wait_for
from tests.test_provisioning import restart_cluster, run_worker, settle

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("on_cluster"),
]


def test_a_killed_provisioning_job_is_ready_within_a_minute_whatever_its_deadline(
    owner, sample_blueprints, kube_config, tmp_path, processes, settings
):
    environment = services.request_environment(user=owner, version=sample_blueprints["pr-preview"])
    django_rq.get_queue("provision").empty()
    # A job claimed it and died (kill -9) holding its lease, with its 5-minute deadline
    # all but spent: the state a killed worker leaves behind.
    assert _claim(environment.pk) is not None
    deadline = settings.PROVISION_DEADLINE_SECONDS
    Environment.objects.filter(pk=environment.pk).update(
        provision_started_at=timezone.now() - timedelta(seconds=deadline - 10),
        lease_until=timezone.now() + timedelta(seconds=5),
    )
    started = time.monotonic()
    processes.append(start_worker(kube_config, tmp_path / "worker.log"))
    processes.append(start_watcher(kube_config, tmp_path / "watcher.log"))
    wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.READY, 60)
    assert time.monotonic() - started < 60
    environment.refresh_from_db()
    assert environment.attempts == 2
    assert not environment.events.filter(state=State.FAILED).exists()


def test_a_killed_teardown_reaches_deleted_and_billing_stops(
    owner, sample_blueprints, kube_config, tmp_path, processes
):
    environment = services.request_environment(user=owner, version=sample_blueprints["pr-preview"])
    settle(environment)
    assert environment.state == State.READY
    # It has been running for ten minutes, billed up to five minutes ago.
    Environment.objects.filter(pk=environment.pk).update(
        accrued_until=timezone.now() - timedelta(minutes=5)
    )
    assert services.delete_environment(environment=environment, user=owner)
    django_rq.get_queue("teardown").empty()
    # The teardown job issued its delete and was killed: nothing waits for the namespace.
    start_deleting([environment.pk])
    processes.append(start_watcher(kube_config, tmp_path / "watcher.log"))
    wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.DELETED, 60)
    assert not cluster.namespace_exists(environment.namespace)
    environment.refresh_from_db()
    assert environment.deleted_at is not None and environment.urls == {}
    billed = environment.accrued_cost
    assert billed > Decimal(0)  # billed up to the deletion, then stopped
    entries = CostEntry.objects.filter(environment=environment).count()
    accrue_cost()
    environment.refresh_from_db()
    assert environment.accrued_cost == billed
    assert CostEntry.objects.filter(environment=environment).count() == entries


def test_reconcile_survives_rqs_missing_execution_error(owner, sample_blueprints):
    broken = services.request_environment(user=owner, version=sample_blueprints["pr-preview"])
    other = services.request_environment(user=owner, version=sample_blueprints["pr-preview"])
    queue = django_rq.get_queue("provision")
    queue.empty()
    redis = queue.connection
    for environment in (broken, other):
        # Both claimed by a worker that died; their leases have run out.
        assert _claim(environment.pk) is not None
        Environment.objects.filter(pk=environment.pk).update(
            lease_until=timezone.now() - timedelta(seconds=1)
        )
    # RQ still marks the first one's job started, and lists an execution whose own hash
    # already expired (90-150 s after the worker died): Job.delete() raises on it.
    assert enqueue("provision", broken.pk)
    job = queue.fetch_job(job_id("provision", broken.pk))
    job.set_status(JobStatus.STARTED)
    redis.zadd(job.execution_registry.key, {"dead-execution": time.time() + 3600})
    with pytest.raises(ValueError, match="not found in Redis"):
        job.delete()  # what RQ does on its own, before the fix in lifecycle.queue

    redis.zadd(job.execution_registry.key, {"dead-execution": time.time() + 3600})
    counts = reconcile()  # finishes its run
    assert counts["restarted"] == 2
    assert {j.id for j in queue.get_jobs()} == {
        job_id("provision", broken.pk),
        job_id("provision", other.pk),
    }


def test_an_environment_failed_by_an_outage_is_retried_when_the_server_is_back(
    owner, sample_blueprints, settings, kube_config, tmp_path
):
    # An API server that cannot be reached: the same cluster, a port nothing listens on.
    unreachable = tmp_path / "unreachable.yaml"
    config = yaml.safe_load(Path(kube_config).read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = "https://127.0.0.1:1"
    unreachable.write_text(yaml.safe_dump(config))
    settings.OUTAGE_RETRY_LIMIT = 1
    settings.KUBE_RETRY_SECONDS = 1
    environment = services.request_environment(user=owner, version=sample_blueprints["pr-preview"])
    django_rq.get_queue("provision").empty()

    def fail_by_outage():
        settings.KUBECONFIG = str(unreachable)
        cluster.reset_client()
        try:
            assert provision(str(environment.pk)) == "failed"
        finally:
            settings.KUBECONFIG = kube_config
            cluster.reset_client()
        environment.refresh_from_db()
        assert environment.state == State.FAILED and environment.failed_unreachable

    fail_by_outage()
    # The server answers again: the watcher retries it, and says so.
    assert reconcile_once()["retried"] == 1
    environment.refresh_from_db()
    assert environment.state == State.APPROVED
    assert environment.events.filter(message__contains="automatic retry 1 of 1").exists()
    settle(environment)
    assert environment.state == State.READY, environment.last_error

    # With a limit: a second outage failure in a row is not retried again.
    Environment.objects.filter(pk=environment.pk).update(
        state=State.PROVISIONING, manifests=[], lease_until=None, lease_owner=None
    )
    environment.refresh_from_db()
    assert environment.outage_retries == 0  # ready resets the count
    Environment.objects.filter(pk=environment.pk).update(outage_retries=1)
    fail_by_outage()
    assert reconcile_once()["retried"] == 0
    environment.refresh_from_db()
    assert environment.state == State.FAILED and not environment.failed_unreachable
    assert environment.events.filter(message__startswith="Not retried automatically").exists()
    run_worker()


def test_the_launcher_waits_for_an_apiserver_that_is_still_shutting_down():
    from tests.kubecluster import load_launcher

    launcher = load_launcher()
    launcher.ensure_running()
    pid = launcher.component_pid("kube-apiserver")
    assert pid
    os.killpg(pid, signal.SIGTERM)  # what `stop` sends first; it takes a while to exit
    try:
        launcher.start()  # used to fail: "kube-apiserver exited while waiting for /readyz"
    finally:
        restart_cluster(launcher)
    assert launcher.apiserver_ready()
    assert launcher.component_pid("kube-apiserver") not in {None, pid}
