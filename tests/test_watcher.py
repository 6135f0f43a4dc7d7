"""The cluster watcher as real processes: bursts, kill -9, two replicas, an API-server
outage, and teardown that holds no worker. Real RQ worker and watcher processes, the
real local control plane; every wait is on a condition.
"""

from __future__ import annotations

import os
import signal
import time

import django_rq
import pytest
from django.conf import settings
from django.db import connection

from environments.kube import cluster
from environments.lifecycle import services
from environments.lifecycle.states import State
from environments.lifecycle.watcher import acted_key
from environments.models import Environment
from tests.conftest import hold, start_watcher, start_worker, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

ONE_COMPONENT = "pr-preview"


@pytest.fixture(autouse=True)
def fresh_counter(on_cluster):
    """On the cluster, with no changes counted yet for any watcher."""
    django_rq.get_connection("default").delete(acted_key())


def acted() -> dict[str, int]:
    raw = django_rq.get_connection("default").hgetall(acted_key())
    return {k.decode(): int(v) for k, v in raw.items()}


def burst(owner, version, count: int) -> list[str]:
    return [str(services.request_environment(user=owner, version=version).pk) for _ in range(count)]


def count(ids, state) -> int:
    return Environment.objects.filter(pk__in=ids, state=state).count()


def all_in(ids, state) -> bool:
    return count(ids, state) == len(ids)


def assert_ready_once(ids) -> None:
    for environment in Environment.objects.filter(pk__in=ids):
        assert environment.state == State.READY, environment.last_error
        assert environment.events.filter(state=State.READY).count() == 1
        assert environment.component_status["app"]["ready"]


def test_killing_the_watcher_mid_burst_loses_nothing(
    owner, sample_blueprints, kube_config, tmp_path, processes
):
    processes.append(
        start_worker(kube_config, tmp_path / "worker.log", queues=("provision", "teardown"))
    )
    first = start_watcher(kube_config, tmp_path / "watcher1.log", name="first")
    processes.append(first)
    ids = burst(owner, sample_blueprints[ONE_COMPONENT], 20)
    wait_for(lambda: 1 <= count(ids, State.READY) < 20 or all_in(ids, State.READY), 120, 0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    processes.append(start_watcher(kube_config, tmp_path / "watcher2.log", name="second"))
    wait_for(lambda: all_in(ids, State.READY), 120)
    assert_ready_once(ids)
    # None duplicated: one Deployment and one ReplicaSet per environment.
    from kubernetes import client

    apps = client.AppsV1Api(cluster.api_client())
    for environment in Environment.objects.filter(pk__in=ids):
        assert len(apps.list_namespaced_replica_set(environment.namespace).items) == 1
    assert 19 <= sum(acted().values()) <= 20  # a kill may fall between a change and its count


def test_two_watchers_only_the_leader_writes_and_the_other_takes_over(
    owner, sample_blueprints, kube_config, tmp_path, processes
):
    processes.append(
        start_worker(kube_config, tmp_path / "worker.log", queues=("provision", "teardown"))
    )
    leader = start_watcher(kube_config, tmp_path / "a.log", name="watcher-a")
    processes.append(leader)
    wait_for(lambda: "leader" in (tmp_path / "a.log").read_text(), 60)
    processes.append(start_watcher(kube_config, tmp_path / "b.log", name="watcher-b"))
    wait_for(lambda: "standby" in (tmp_path / "b.log").read_text(), 60)
    version = sample_blueprints[ONE_COMPONENT]
    first = burst(owner, version, 10)
    wait_for(lambda: all_in(first, State.READY), 120)
    assert acted() == {"watcher-a": 10}  # only the leader wrote

    second = burst(owner, version, 10)
    wait_for(lambda: count(second, State.READY) >= 1, 120, 0.05)
    os.killpg(leader.pid, signal.SIGKILL)
    leader.wait(timeout=10)
    killed_at = time.monotonic()
    wait_for(lambda: "leader" in (tmp_path / "b.log").read_text(), 15)
    assert time.monotonic() - killed_at < 15
    wait_for(lambda: all_in(second, State.READY), 120)
    assert_ready_once(first + second)
    counts = acted()
    # The leader may die between a transition and its count: at most one uncounted.
    assert counts["watcher-a"] >= 10 and counts["watcher-b"] >= 1
    assert 19 <= counts["watcher-a"] + counts["watcher-b"] <= 20


def test_the_watcher_re_lists_after_the_api_server_stops_for_20_seconds(
    owner, sample_blueprints, kube_config, tmp_path, processes
):
    from tests.kubecluster import load_launcher
    from tests.test_provisioning import restart_cluster, slow_blueprint

    launcher = load_launcher()
    processes.append(
        start_worker(
            kube_config, tmp_path / "worker.log", queues=("provision",), KUBE_RETRY_SECONDS="240"
        )
    )
    processes.append(start_watcher(kube_config, tmp_path / "watcher.log", name="w"))
    ids = burst(owner, slow_blueprint(sample_blueprints, "4s"), 10)
    wait_for(
        lambda: (
            Environment.objects.filter(pk__in=ids, state=State.PROVISIONING)
            .exclude(manifests=[])
            .count()
            >= 5
        ),
        120,
        0.05,
    )
    try:
        launcher._stop_components(["kube-apiserver"], timeout=5)
        assert not launcher.apiserver_ready()
        hold(20)  # the outage itself
    finally:
        restart_cluster(launcher)
    wait_for(
        lambda: (
            Environment.objects.filter(pk__in=ids)
            .exclude(state__in=[State.READY, State.FAILED])
            .count()
            == 0
        ),
        180,
    )
    for environment in Environment.objects.filter(pk__in=ids):
        assert environment.state == State.READY, environment.last_error
    assert "watch on" in (tmp_path / "watcher.log").read_text()  # it noticed and re-listed


def test_fifty_deleted_one_by_one_are_gone_within_15_s_while_the_worker_keeps_provisioning(
    owner, sample_blueprints, kube_config, tmp_path, processes
):
    processes.append(
        start_worker(kube_config, tmp_path / "worker.log", queues=("provision", "teardown"))
    )
    processes.append(start_watcher(kube_config, tmp_path / "watcher.log", name="w"))
    version = sample_blueprints[ONE_COMPONENT]
    ids = burst(owner, version, 50)
    wait_for(lambda: all_in(ids, State.READY), 300)
    newcomers = []
    for index, environment in enumerate(Environment.objects.filter(pk__in=ids)):
        assert services.delete_environment(environment=environment, user=owner)
        if index % 10 == 0:
            newcomers += burst(owner, version, 1)
    last_delete = time.monotonic()
    connection.close()
    wait_for(lambda: all_in(ids, State.DELETED), 60)
    assert time.monotonic() - last_delete <= 15
    # Meanwhile the one worker kept serving new provisions.
    wait_for(lambda: all_in(newcomers, State.READY), 60)
    for environment in Environment.objects.filter(pk__in=ids):
        assert not cluster.namespace_exists(environment.namespace)
    assert settings.EPHEMERA_INSTANCE
