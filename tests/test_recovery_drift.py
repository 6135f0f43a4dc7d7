"""Self-healing: an object of a ready environment deleted or changed by hand is put back
from the recorded manifests, with events. Real worker and watcher processes, the real
local control plane, kubectl as a person would run it."""

from __future__ import annotations

import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from kubernetes import client

from environments.kube.drift import describe_drift, differences, drift
from environments.lifecycle import services
from environments.lifecycle.states import State
from environments.models import Environment
from environments.recovery.drift import DRIFT_PREFIX, REPAIR_PREFIX
from tests.conftest import start_watcher, start_worker, stop_worker, wait_for

KUBECTL = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "kubectl")


def deployment_manifest() -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "app", "namespace": "eph-x", "labels": {"a": "b"}},
        "spec": {
            "replicas": 1,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "podinfo:6.7.1",
                            "ports": [{"name": "http", "containerPort": 9898}],
                            "env": [{"name": "GIT_SHA", "value": "0000000"}],
                            "resources": {"limits": {"memory": "64Mi", "cpu": "100m"}},
                        }
                    ]
                }
            },
        },
    }


def test_it_ignores_what_kubernetes_adds_and_names_what_a_person_changed():
    desired = deployment_manifest()
    live = deployment_manifest()
    # What the API server and controllers add: defaults, status, labels of their own.
    live["metadata"]["labels"]["pod-template-hash"] = "x"
    live["spec"]["revisionHistoryLimit"] = 10
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["ports"][0]["protocol"] = "TCP"
    container["terminationMessagePath"] = "/dev/termination-log"
    live["status"] = {"availableReplicas": 1}
    assert drift(desired, live) is None
    # A quota written back in canonical form is the same quantity.
    assert (
        differences(
            {"hard": {"requests.memory": "268435456"}}, {"hard": {"requests.memory": "256Mi"}}
        )
        == []
    )
    assert differences({"hard": {"pods": "2"}}, {"hard": {"pods": "3"}}) == ["hard.pods"]

    live["spec"]["replicas"] = 5  # kubectl scale
    container["image"] = "podinfo:evil"  # kubectl set image
    container["env"][0]["value"] = "1234567"  # an edited env var
    del live["metadata"]["labels"]["a"]  # a removed label
    changed = drift(desired, live)
    assert changed == [
        "spec.replicas",
        "spec.template.spec.containers[app].image",
        "spec.template.spec.containers[app].env[GIT_SHA].value",
        "metadata.labels.a",
    ]
    assert drift(desired, None) == []
    assert describe_drift("Deployment", "app", []) == "Deployment app was deleted"
    assert "spec.replicas" in describe_drift("Deployment", "app", changed)


def kubectl(kube_config: str, *args: str) -> str:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", kube_config, *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def messages(environment, prefix: str) -> list[str]:
    return list(
        environment.events.filter(source_key__startswith=prefix)
        .order_by("pk")
        .values_list("message", flat=True)
    )


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("on_cluster")
def test_a_deleted_deployment_is_repaired_within_5_s_with_events(
    owner, sample_blueprints, kube_config, kube_client, tmp_path, processes
):
    processes.append(start_worker(kube_config, tmp_path / "worker.log"))
    processes.append(start_watcher(kube_config, tmp_path / "watcher.log"))
    environment = services.request_environment(user=owner, version=sample_blueprints["pr-preview"])
    wait_for(
        lambda: Environment.objects.get(pk=environment.pk).state in {State.READY, State.FAILED},
        timeout=180,
    )
    environment.refresh_from_db()
    assert environment.state == State.READY, environment.last_error
    namespace = environment.namespace
    apps = client.AppsV1Api(kube_client)
    core = client.CoreV1Api(kube_client)
    original = apps.read_namespaced_deployment("app", namespace).metadata.uid
    # Ready a moment: nothing is drift yet (defaults, status, the rollout).
    wait_for(lambda: (time.time() - environment.state_changed_at.timestamp()) > 3, timeout=10)
    assert messages(environment, DRIFT_PREFIX) == []

    def deployment_uid() -> str | None:
        try:
            return apps.read_namespaced_deployment("app", namespace).metadata.uid
        except client.ApiException as exc:
            assert exc.status == 404
            return None

    # kubectl delete deployment: back, as a new object, within 5 s.
    kubectl(kube_config, "-n", namespace, "delete", "deployment", "app", "--wait=false")
    deleted_at = time.monotonic()
    try:
        wait_for(lambda: deployment_uid() not in {None, original}, timeout=30, interval=0.05)
    except AssertionError:
        raise AssertionError(timeline(environment)) from None
    latency = time.monotonic() - deleted_at
    print(f"drift repair latency (deleted Deployment): {latency:.2f} s")
    assert latency <= 5, latency
    wait_for(lambda: messages(environment, REPAIR_PREFIX), timeout=10)
    drifted = messages(environment, DRIFT_PREFIX)
    assert drifted == [
        "Drift: Deployment app was deleted by hand; repairing it from the recorded manifests."
    ]
    [repaired] = messages(environment, REPAIR_PREFIX)
    assert repaired.startswith("Repaired: Deployment app re-applied"), repaired

    # kubectl scale and an edited image: the fields Ephemera set come back.
    kubectl(kube_config, "-n", namespace, "scale", "deployment", "app", "--replicas=2")
    wait_for(
        lambda: (
            apps.read_namespaced_deployment("app", namespace).spec.replicas == 1
            and len(messages(environment, REPAIR_PREFIX)) == 2
        ),
        timeout=30,
        interval=0.1,
    )
    assert "spec.replicas" in messages(environment, DRIFT_PREFIX)[-1]
    kubectl(kube_config, "-n", namespace, "set", "image", "deployment/app", "app=busybox:1")
    wait_for(
        lambda: (
            apps.read_namespaced_deployment("app", namespace)
            .spec.template.spec.containers[0]
            .image.startswith("ghcr.io/stefanprodan/podinfo")
            and len(messages(environment, REPAIR_PREFIX)) == 3
        ),
        timeout=30,
        interval=0.1,
    )
    assert "containers[app].image" in messages(environment, DRIFT_PREFIX)[-1]
    # A deleted Service and ResourceQuota (kinds the watcher now watches) come back too.
    kubectl(kube_config, "-n", namespace, "delete", "service/app", "resourcequota/ephemera-quota")
    wait_for(
        lambda: both_exist(core, namespace) and len(messages(environment, REPAIR_PREFIX)) == 5,
        timeout=30,
    )
    environment.refresh_from_db()
    assert environment.state == State.READY
    # Nothing more: the repaired objects (and their rollouts) are not drift.
    assert len(messages(environment, DRIFT_PREFIX)) == 5, "\n".join(
        messages(environment, DRIFT_PREFIX) + messages(environment, REPAIR_PREFIX)
    )

    # Teardown: nothing is repaired any more, and the receipt is recorded.
    services.delete_environment(environment=environment, user=owner)
    wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.DELETED, 120)
    wait_for(lambda: environment.events.filter(source_key="teardown-receipt").exists(), 30)
    receipt = environment.events.get(source_key="teardown-receipt").message
    assert "0 objects left over" in receipt, receipt
    assert len(messages(environment, DRIFT_PREFIX)) == 5


def timeline(environment) -> str:
    return "\n".join(f"{e.source_key}: {e.message}" for e in environment.events.order_by("pk"))


def both_exist(core, namespace: str) -> bool:
    try:
        core.read_namespaced_resource_quota("ephemera-quota", namespace)
        core.read_namespaced_service("app", namespace)
        return True
    except client.ApiException as exc:
        assert exc.status == 404
        return False


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("on_cluster")
def test_an_environment_being_torn_down_or_just_ready_is_not_repaired(
    owner, sample_blueprints, kube_config, kube_client, tmp_path, processes
):
    """One synchronous pass at a time (``reconcile_once``), no worker: what the watcher
    decides, not what a job does."""
    import django_rq

    from environments.kube import cluster
    from environments.lifecycle.watcher import reconcile_once

    worker = start_worker(kube_config, tmp_path / "worker.log")
    processes.append(worker)
    processes.append(start_watcher(kube_config, tmp_path / "watcher.log"))
    environment = services.request_environment(user=owner, version=sample_blueprints["pr-preview"])
    wait_for(
        lambda: Environment.objects.get(pk=environment.pk).state in {State.READY, State.FAILED},
        timeout=180,
    )
    for process in processes:
        stop_worker(process)
    environment.refresh_from_db()
    assert environment.state == State.READY, environment.last_error
    namespace = environment.namespace
    try:
        client.AppsV1Api(kube_client).delete_namespaced_deployment("app", namespace)
        wait_for(lambda: not app_deployed(kube_client, namespace), timeout=30)
        repairs = django_rq.get_queue("default")

        # Tearing down (the state only: the namespace stays for this test): not drift.
        Environment.objects.filter(pk=environment.pk).update(state=State.TEARING_DOWN)
        reconcile_once()
        assert messages(environment, DRIFT_PREFIX) == []
        # Ready again, but only just: the view may still be catching up; not yet.
        Environment.objects.filter(pk=environment.pk).update(
            state=State.READY, state_changed_at=timezone.now()
        )
        reconcile_once()
        assert messages(environment, DRIFT_PREFIX) == []
        # Ready for a while: the deletion is drift, recorded once, and a repair is queued.
        Environment.objects.filter(pk=environment.pk).update(
            state_changed_at=timezone.now() - timedelta(minutes=1)
        )
        reconcile_once()
        reconcile_once()
        assert messages(environment, DRIFT_PREFIX) == [
            "Drift: Deployment app was deleted by hand; repairing it from the recorded manifests."
        ]
        assert f"repair-{environment.pk}" in repairs.job_ids
    finally:
        cluster.delete(cluster.namespace_manifest(namespace))


def app_deployed(kube_client, namespace: str) -> bool:
    try:
        client.AppsV1Api(kube_client).read_namespaced_deployment("app", namespace)
        return True
    except client.ApiException as exc:
        assert exc.status == 404
        return False


@pytest.mark.django_db(transaction=True)  # django-rq enqueues when the transaction commits
def test_a_receipt_lost_with_its_job_is_queued_again_by_the_reconciler(owner, team, shop):
    import django_rq

    from environments.models import EnvironmentEvent
    from environments.recovery.teardown_receipt import RECEIPT_KEY, requeue_missing_receipts
    from tests.factories import make_environment

    queue = django_rq.get_queue("default")
    queue.empty()
    now = timezone.now()
    lost = make_environment(
        owner=owner,
        team=team,
        version=shop,
        state=State.DELETED,
        deleted_at=now - timedelta(minutes=5),
    )
    verified = make_environment(
        owner=owner,
        team=team,
        version=shop,
        state=State.DELETED,
        deleted_at=now - timedelta(minutes=5),
    )
    EnvironmentEvent.objects.create(
        environment=verified, kind=EnvironmentEvent.Kind.INFO, message="r", source_key=RECEIPT_KEY
    )
    make_environment(owner=owner, team=team, version=shop, state=State.DELETED, deleted_at=now)
    assert requeue_missing_receipts() == 1
    from rq.job import Job

    job = Job.fetch(f"verify_teardown-{lost.pk}", connection=queue.connection)
    assert job.get_status() == "queued", (job.get_status(), job.origin, queue.name, queue.job_ids)
    assert requeue_missing_receipts() == 0  # already waiting
    queue.empty()
