"""Provisioning, teardown and reconciliation against the real local control plane.

Jobs run in a real RQ worker (burst mode, or a separate worker process for the
kill -9 test); the watcher's decisions run as one synchronous pass at a time
(``settle``), or as a real watcher process. Nothing of the Kubernetes client is mocked.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from datetime import timedelta

import django_rq
import psutil
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from environments.catalog.publishing import publish_blueprint
from environments.kube import cluster, reflector
from environments.kube.objects import MANAGED_BY
from environments.lifecycle import services
from environments.lifecycle.provisioning import provision, teardown
from environments.lifecycle.states import State
from environments.lifecycle.upkeep import reap_expired, reconcile
from environments.lifecycle.watcher import Watcher, reconcile_once
from environments.models import Environment
from tests.conftest import ROOT, hold, start_watcher, start_worker, stop_worker, wait_for

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("on_cluster"),
]

THREE_COMPONENTS = "shop-demo"


def run_worker() -> None:
    """A real RQ worker, burst mode: runs every queued job, then returns."""
    worker = django_rq.get_worker("provision", "teardown", "default")
    worker.work(burst=True)


def run_worker_and_watcher(timeout: float = 120) -> None:
    """What a worker and the watcher do together: run every queued job and watcher
    passes until no environment is in flight (approved, provisioning, tearing down)."""

    def idle():
        run_worker()
        reconcile_once()
        return not Environment.objects.filter(
            state__in=[State.APPROVED, State.PROVISIONING, State.TEARING_DOWN]
        ).exists()

    wait_for(idle, timeout, interval=0.2)


def settle(*environments, states=(State.READY, State.FAILED, State.DELETED), timeout=120):
    """Run queued jobs and watcher passes until every environment is in ``states``."""
    ids = [e.pk for e in environments]

    def settled():
        run_worker()
        reconcile_once()
        return not Environment.objects.filter(pk__in=ids).exclude(state__in=states).exists()

    wait_for(settled, timeout, interval=0.2)
    for environment in environments:
        environment.refresh_from_db()


def slow_blueprint(sample_blueprints, delay: str):
    """shop-demo whose web pods become ready ``delay`` after they start (a kwok stage
    delay), so a test can act reliably in the middle of provisioning."""
    source = sample_blueprints[THREE_COMPONENTS].source.replace(
        "    expose: true\n  - name: api",
        f'    expose: true\n    annotations: {{pod-ready.stage.kwok.x-k8s.io/delay: "{delay}"}}\n'
        "  - name: api",
    )
    assert "annotations" in source
    version, _ = publish_blueprint(source=source)
    return version


def restart_cluster(launcher, attempts: int = 3) -> None:
    """Bring the control plane back after a test stopped part of it. The API server comes
    back with a new watch cache, so the controller-manager is started afresh too: one
    whose informers outlived the restart has kept a ReplicaSet from making pods for
    minutes ("read version ... is not as new as written version")."""
    for attempt in range(attempts):
        try:
            launcher.ensure_running()
            launcher._stop_components(["kube-controller-manager"], timeout=10)
            launcher.ensure_running()
            return
        except launcher.ClusterError:
            if attempt == attempts - 1:
                raise
            time.sleep(3)


def provision_in_thread(environment) -> tuple[threading.Thread, dict]:
    """Run the provision job (real code, in process) while the test acts on the side."""
    django_rq.get_queue("provision").empty()  # the job runs here, not in a worker
    outcome: dict[str, str] = {}

    def run():
        try:
            outcome["result"] = provision(str(environment.pk))
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def settled_versions(namespace: str, timeout: float = 60.0) -> dict[str, str]:
    """The namespace's resourceVersions once they stayed the same for a second.

    Controllers may still write status just after an environment is ready. Fails (rather
    than returning a moving snapshot, which a strict comparison would then trip over at
    random) if they never settle, naming the objects that kept changing."""
    deadline = time.monotonic() + timeout
    previous = cluster.resource_versions(namespace)
    while True:
        hold(1)  # the interval that defines "settled"
        current = cluster.resource_versions(namespace)
        if current == previous:
            return current
        if time.monotonic() > deadline:
            changing = sorted(
                name
                for name in set(current) | set(previous)
                if current.get(name) != previous.get(name)
            )
            pytest.fail(
                f"resourceVersions in {namespace} did not settle within {timeout:.0f}s; "
                f"still changing: {', '.join(changing)}",
                pytrace=False,
            )
        previous = current


def request(owner, version, **kwargs) -> Environment:
    return services.request_environment(user=owner, version=version, **kwargs)


def test_it_provisions_a_three_component_blueprint_and_is_idempotent(
    owner, sample_blueprints, kube_client
):
    version = sample_blueprints[THREE_COMPONENTS]
    assert len(version.components) == 3
    environment = request(owner, version)
    assert environment.state == State.APPROVED
    settle(environment)
    assert environment.state == State.READY, environment.last_error
    assert environment.urls == {
        "web": f"https://web-{environment.name}.{settings.BASE_DOMAIN}/",
        "api": f"https://api-{environment.name}.{settings.BASE_DOMAIN}/",
    }
    # Every recorded object exists, with the Ephemera labels.
    kinds = sorted(m["kind"] for m in environment.manifests)
    assert kinds == sorted(
        ["Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy"]
        + ["ServiceAccount"] * 3  # workload, kubeconfig, generated-credentials reader
        + ["RoleBinding"] * 2
        + ["Service"] * 3
        + ["Deployment"] * 3
        + ["Ingress"]
    )
    for manifest in environment.manifests:
        live = cluster.get(manifest)
        assert live is not None, manifest["metadata"]
        labels = live["metadata"]["labels"]
        assert labels[MANAGED_BY] == "ephemera"
        assert labels["ephemera.io/environment"] == str(environment.pk)
        assert labels["ephemera.io/team"] == environment.team.slug
        assert labels["ephemera.io/blueprint"] == "shop-demo"
    namespace = cluster.get(cluster.namespace_manifest(environment.namespace))
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "ephemera.io/expires-at" in namespace["metadata"]["annotations"]

    # Running provision again changes nothing on the cluster.
    # Controllers may still write status (Deployments, ResourceQuota) just after ready:
    # compare from a snapshot that stayed the same for a second.
    before = settled_versions(environment.namespace)
    assert len(before) == len(environment.manifests)
    Environment.objects.filter(pk=environment.pk).update(state=State.PROVISIONING, lease_until=None)
    assert provision(str(environment.pk)) == "applied"
    assert reconcile_once()["ready"] == 1
    assert cluster.resource_versions(environment.namespace) == before


def test_it_tears_down_completely_and_twice_is_fine(owner, sample_blueprints):
    environment = request(owner, sample_blueprints["pr-preview"])
    settle(environment)
    assert environment.state == State.READY
    assert environment.urls and environment.component_status

    assert services.delete_environment(environment=environment, user=owner) is True
    assert services.delete_environment(environment=environment, user=owner) is False
    settle(environment)
    assert environment.state == State.DELETED
    assert not cluster.namespace_exists(environment.namespace)
    # Nothing of it is shown as reachable or ready any more.
    assert environment.urls == {} and environment.component_status == {}
    assert teardown(str(environment.pk)) == "already deleted"


def test_it_tears_down_from_the_recorded_manifests(owner, sample_blueprints):
    environment = request(owner, sample_blueprints["pr-preview"])
    settle(environment)
    recorded = environment.manifests
    # A new blueprint version does not change what teardown deletes.
    publish_blueprint(
        source=environment.blueprint_version.source.replace("port: 9898", "port: 9999")
    )
    services.delete_environment(environment=environment, user=owner)
    settle(environment)
    assert environment.state == State.DELETED
    assert environment.manifests == recorded


def test_it_fails_with_a_readable_reason_when_a_component_cannot_be_scheduled(
    owner, sample_blueprints
):
    source = (ROOT / "deploy" / "blueprints" / "pr-preview.yaml").read_text()
    source = (
        source.replace("name: pr-preview", "name: too-big")
        .replace("cpu: 100m", "cpu: '5000'")
        .replace('quota: {cpu: 500m, memory: 512Mi, pods: "2"}', "")
    )
    version, _ = publish_blueprint(source=source)
    environment = request(owner, version)
    settle(environment)
    assert environment.state == State.FAILED
    assert "app cannot be scheduled" in environment.last_error
    assert "Insufficient cpu" in environment.last_error
    messages = list(environment.events.values_list("message", flat=True))
    assert any("cannot be scheduled" in m for m in messages)

    # The owner can retry; it fails the same way, cleanly.
    services.retry_environment(environment=environment, user=owner)
    settle(environment)
    assert environment.state == State.FAILED
    assert environment.attempts == 2


def test_it_deletes_orphans_but_never_unlabelled_namespaces(settings, kube_client):
    from kubernetes import client

    settings.ORPHAN_GRACE_SECONDS = 0
    core = client.CoreV1Api(kube_client)
    suffix = str(int(time.time() * 1000))[-8:]
    orphan = f"eph-orphan-{suffix}"
    plain = f"plain-{suffix}"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=orphan, labels={MANAGED_BY: "ephemera"})
        )
    )
    # A finalizer of our own keeps the unlabelled namespace Terminating if anything
    # deletes it, so "left alone" below cannot be fooled by a deletion still under way.
    hold = "ephemera.test/hold"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=plain, finalizers=[hold]))
    )
    try:
        counts = reconcile()
        assert counts["orphans"] >= 1
        assert cluster.wait_namespace_gone(orphan, timeout=60)
        live = cluster.get(cluster.namespace_manifest(plain))
        assert live is not None, "the unlabelled namespace was deleted"
        assert not live["metadata"].get("deletionTimestamp"), (
            f"the unlabelled namespace is being deleted: {live['metadata']}"
        )
        assert live["metadata"].get("finalizers") == [hold]
    finally:
        core.patch_namespace(plain, {"metadata": {"finalizers": None}})
        cluster.delete(cluster.namespace_manifest(plain))


def test_it_fails_a_ready_environment_whose_namespace_vanished(owner, sample_blueprints):
    environment = request(owner, sample_blueprints["pr-preview"])
    settle(environment)
    assert environment.state == State.READY
    cluster.delete(cluster.namespace_manifest(environment.namespace))
    assert cluster.wait_namespace_gone(environment.namespace, timeout=60)

    reconcile()
    environment.refresh_from_db()
    assert environment.state == State.FAILED
    assert environment.events.filter(message__contains="disappeared").exists()


def test_it_reaps_an_expired_environment_within_one_cycle(owner, sample_blueprints):
    environment = request(owner, sample_blueprints["pr-preview"])
    settle(environment)
    Environment.objects.filter(pk=environment.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert reap_expired() == 1
    settle(environment)
    assert environment.state == State.DELETED
    assert not cluster.namespace_exists(environment.namespace)
    assert environment.events.filter(message="Expired.").exists()


def test_it_starts_deleting_a_whole_batch_of_expired_environments_at_once(owner, sample_blueprints):
    environments = [request(owner, sample_blueprints["pr-preview"]) for _ in range(3)]
    settle(*environments)
    Environment.objects.filter(pk__in=[e.pk for e in environments]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    django_rq.get_queue("teardown").empty()  # no teardown job runs before we look
    assert reap_expired() == 3

    # Every namespace is already on its way out, so the namespace controller's waits
    # overlap instead of queueing behind one worker each.
    for environment in environments:
        live = cluster.get(cluster.namespace_manifest(environment.namespace))
        assert live is None or live["metadata"].get("deletionTimestamp"), live["metadata"]
    settle(*environments)
    for environment in environments:
        assert environment.state == State.DELETED
        assert not cluster.namespace_exists(environment.namespace)


def test_it_finishes_after_the_worker_is_killed_mid_provisioning(
    owner, sample_blueprints, kube_config, tmp_path
):
    environment = request(owner, slow_blueprint(sample_blueprints, "4s"))
    worker = start_worker(
        kube_config, tmp_path / "worker.log", queues=("provision",), PROVISION_LEASE_SECONDS="5"
    )
    try:
        # Kill it once it has started applying objects, before it is ready.
        wait_for(
            lambda: (
                Environment.objects.get(pk=environment.pk).state == State.PROVISIONING
                and cluster.namespace_exists(environment.namespace)
            ),
            timeout=60,
            interval=0.05,
        )
        # kill -9 the worker and its work horse (RQ forks one per job, in its own
        # session), as when the machine or the pod running them dies.
        for process in [*psutil.Process(worker.pid).children(recursive=True)]:
            process.send_signal(signal.SIGKILL)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    environment.refresh_from_db()
    assert environment.state == State.PROVISIONING
    killed_mid_apply = environment.lease_owner is not None

    # A new worker and the watcher: the watcher enqueues the job again once the dead
    # job's lease runs out (if it died holding it), and sees the Deployments available.
    worker = start_worker(kube_config, tmp_path / "worker2.log", PROVISION_LEASE_SECONDS="5")
    watcher = start_watcher(kube_config, tmp_path / "watcher.log")
    try:
        wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.READY, 60)
    finally:
        stop_worker(watcher)
        stop_worker(worker)
    environment.refresh_from_db()
    assert environment.state == State.READY, environment.last_error
    deployments = cluster.list_deployments(environment.namespace)["items"]
    assert sorted(d["metadata"]["name"] for d in deployments) == ["api", "cache", "web"]
    # No duplicates: one ReplicaSet per Deployment, the replicas asked for.
    from kubernetes import client

    apps = client.AppsV1Api(cluster.api_client())
    replica_sets = apps.list_namespaced_replica_set(environment.namespace).items
    assert sorted(rs.metadata.owner_references[0].name for rs in replica_sets) == [
        "api",
        "cache",
        "web",
    ]
    assert environment.attempts == (2 if killed_mid_apply else 1)
    assert environment.events.filter(state=State.READY).count() == 1


def test_a_job_whose_lease_was_taken_over_stops_and_leaves_the_work_to_the_new_one(
    owner, sample_blueprints, monkeypatch
):
    # A job that only looked dead (a long GC pause, a partitioned worker) must not fight
    # the job that took its lease over, nor fail the environment under it.
    environment = request(owner, sample_blueprints[THREE_COMPONENTS])
    django_rq.get_queue("provision").empty()
    real_apply = cluster.apply
    applied = []

    def apply_then_lose_the_lease(manifest):
        applied.append(manifest["kind"])
        if len(applied) == 3:
            # Another job takes the lease over (what _claim does once a lease ran out).
            Environment.objects.filter(pk=environment.pk).update(
                lease_owner=uuid.uuid4(), lease_until=timezone.now() + timedelta(seconds=60)
            )
        return real_apply(manifest)  # the real call: only the timing is arranged

    monkeypatch.setattr(cluster, "apply", apply_then_lose_the_lease)
    assert provision(str(environment.pk)).startswith("stopped")
    assert len(applied) == 3  # it stopped before its next apply
    monkeypatch.setattr(cluster, "apply", real_apply)
    environment.refresh_from_db()
    assert environment.state == State.PROVISIONING  # left alone, not failed

    # The new job (its lease now run out too, as if it had died) is replaced and finishes.
    assert provision(str(environment.pk)) == "another worker holds the lease"
    Environment.objects.filter(pk=environment.pk).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert provision(str(environment.pk)) == "applied"
    settle(environment)
    assert environment.state == State.READY, environment.last_error
    assert environment.lease_owner is None
    assert not environment.events.filter(state=State.FAILED).exists()


def test_it_records_pod_problems_as_plain_words(owner, sample_blueprints):
    problem = cluster._explain_event(
        {
            "metadata": {"uid": "1"},
            "reason": "FailedCreate",
            "message": 'pods "web-1" is forbidden: exceeded quota: ephemera-quota',
            "involvedObject": {"name": "web-5d8f7"},
        },
        ["web", "api"],
    )
    assert problem.message.startswith("web would exceed the environment's resource quota")
    problem = cluster._explain_event(
        {
            "metadata": {"uid": "2"},
            "reason": "FailedCreate",
            "message": 'pods "x" is forbidden: violates PodSecurity "restricted:v1.33"',
            "involvedObject": {"name": "api-77"},
        },
        ["web", "api"],
    )
    assert problem.message.startswith("api was rejected by Pod Security")


def test_it_rides_out_the_api_server_stopping_for_20_seconds(
    owner, sample_blueprints, settings, caplog
):
    # 20 s down, plus stopping and restarting it on a slow machine: retry well past that.
    settings.KUBE_RETRY_SECONDS = 240
    from tests.kubecluster import load_launcher

    caplog.set_level(logging.WARNING, logger="environments.kube.cluster")
    launcher = load_launcher()
    environment = request(owner, slow_blueprint(sample_blueprints, "3s"))
    thread = None
    outcome: dict = {}
    try:
        assert launcher.component_pid("kube-apiserver")
        # The launcher's own stop: SIGTERM, SIGKILL if it lingers, until it is gone.
        stopping_at = time.time()
        launcher._stop_components(["kube-apiserver"], timeout=5)
        stopped_at = time.time()
        assert launcher.component_pid("kube-apiserver") is None
        assert not launcher.apiserver_ready()
        # The job starts while the server is down (applying takes a fraction of a
        # second, so starting it earlier would race the stop): every call it makes
        # fails and is retried until the server is back.
        thread, outcome = provision_in_thread(environment)
        wait_for(
            lambda: retries_since(caplog, stopping_at) or not thread.is_alive(),
            timeout=60,
            interval=0.1,
        )
        assert retries_since(caplog, stopping_at), f"no retry during the outage: {outcome}"
        assert thread.is_alive(), outcome
        # Down for 20 s in all.
        wait_for(lambda: time.time() >= stopped_at + 20, timeout=60, interval=0.2)
        assert launcher.component_pid("kube-apiserver") is None
    finally:
        restart_cluster(launcher)
    restarted_at = time.time()
    assert thread is not None
    thread.join(timeout=300)
    assert not thread.is_alive(), "provisioning did not finish"
    environment.refresh_from_db()
    # It retried through the outage and finished applying (the alternative, a clean
    # failure, would say so in last_error); the watcher then sees it ready.
    assert outcome["result"] == "applied", environment.last_error
    during = [r for r in retries_since(caplog, stopping_at) if r.created <= restarted_at]
    assert during, "no retry was logged while the API server was down"
    settle(environment)
    assert environment.state == State.READY, environment.last_error


def retries_since(caplog, since: float) -> list[logging.LogRecord]:
    """The cluster module's retry warnings (failed call, or interrupted watch) since then."""
    return [
        r
        for r in caplog.records
        if r.name == "environments.kube.cluster"
        and r.levelno == logging.WARNING
        and r.created >= since
        and ("retrying" in r.getMessage() or "re-listing" in r.getMessage())
    ]


def test_a_view_that_has_not_seen_an_update_yet_does_not_make_it_ready(owner, sample_blueprints):
    """The watcher's view can lag behind an apply. After an update of a ready
    environment, the old Deployments are still available in a stale view; that must
    not make the update ready before the new version has rolled out."""
    environment = request(owner, sample_blueprints[THREE_COMPONENTS])
    settle(environment)
    assert environment.state == State.READY, environment.last_error
    stale = reflector.snapshot(str(settings.EPHEMERA_INSTANCE))  # before the update
    services.update_environment(
        environment=environment, user=owner, parameters={"customer": "globex"}
    )
    django_rq.get_queue("provision").empty()  # the job runs here, not in a worker
    assert provision(str(environment.pk)) == "applied"
    Watcher(stale, "stale").run_pass()
    environment.refresh_from_db()
    assert environment.state == State.PROVISIONING
    assert environment.applied_generations["web"] >= 2
    settle(environment)  # a fresh view: ready once the new version is available
    assert environment.state == State.READY, environment.last_error


def test_it_applies_new_parameters_that_arrive_mid_provisioning(owner, sample_blueprints):
    environment = request(owner, slow_blueprint(sample_blueprints, "3s"))
    thread, outcome = provision_in_thread(environment)
    wait_for(
        lambda: (
            Environment.objects.get(pk=environment.pk).state == State.PROVISIONING
            and Environment.objects.get(pk=environment.pk).manifests
        ),
        timeout=30,
        interval=0.05,
    )
    services.update_environment(
        environment=environment, user=owner, parameters={"customer": "globex"}
    )
    thread.join(timeout=120)
    assert not thread.is_alive(), "provisioning did not finish"
    assert outcome["result"] == "applied", outcome
    # If the job had finished before the update, the watcher enqueues it again.
    settle(environment)
    assert environment.state == State.READY, environment.last_error
    assert environment.parameters["customer"] == "globex"
    web = next(
        m
        for m in environment.manifests
        if m["kind"] == "Deployment" and m["metadata"]["name"] == "web"
    )
    live = cluster.get(web)
    env_vars = {
        e["name"]: e.get("value") for e in live["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env_vars["CUSTOMER"] == "globex"
