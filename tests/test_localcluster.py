"""Acceptance tests for the Kubernetes control plane (deploy/localcluster, or $KUBECONFIG).

Uses the fixtures of tests/kubecluster.py. Pods never run real containers: on the local
cluster kwok marks them Running/Ready on the fake node.
"""

from __future__ import annotations

import time
import uuid

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.cluster

DEADLINE = 60  # seconds, per wait
PAUSE = "registry.k8s.io/pause:3.10"


def wait_for(what, fn, timeout=DEADLINE, interval=0.1):
    """Poll fn() until it returns a truthy value; fail with `what` after timeout."""
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def deployment(name: str, replicas: int = 1) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="main", image=PAUSE)]),
            ),
        ),
    )


def pod(name: str, *, privileged: bool = False, restricted: bool = False, cpu: str | None = None):
    sc = None
    pod_sc = None
    if privileged:
        sc = client.V1SecurityContext(privileged=True)
    elif restricted:
        sc = client.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
            run_as_non_root=True,
            run_as_user=65532,
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        )
        pod_sc = client.V1PodSecurityContext(
            run_as_non_root=True, seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault")
        )
    resources = None
    if cpu:
        resources = client.V1ResourceRequirements(requests={"cpu": cpu}, limits={"cpu": cpu})
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            security_context=pod_sc,
            containers=[
                client.V1Container(
                    name="main", image=PAUSE, security_context=sc, resources=resources
                )
            ],
        ),
    )


def status_of(fn, *args, **kwargs) -> int:
    """HTTP status of an API call: 200 if it succeeds, else the ApiException status."""
    try:
        fn(*args, **kwargs)
        return 200
    except ApiException as e:
        return e.status


def test_it_deployment_becomes_available(kube_client, kube_namespace):
    apps = client.AppsV1Api(kube_client)
    apps.create_namespaced_deployment(kube_namespace, deployment("web", replicas=2))

    def available():
        st = apps.read_namespaced_deployment_status("web", kube_namespace).status
        return st.available_replicas == 2 and st.replicas == 2

    wait_for("deployment web availableReplicas == replicas == 2", available)
    pods = client.CoreV1Api(kube_client).list_namespaced_pod(
        kube_namespace, label_selector="app=web"
    )
    assert len(pods.items) == 2
    assert all(p.status.phase == "Running" and p.spec.node_name for p in pods.items)


def test_it_namespace_delete_completes(kube_client):
    core = client.CoreV1Api(kube_client)
    name = f"t-del-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm"), data={"k": "v"})
    )
    core.delete_namespace(name)
    # the namespace controller must empty it and remove the `kubernetes` finalizer
    wait_for(
        f"namespace {name} to be gone (404)",
        lambda: status_of(core.read_namespace, name) == 404,
        interval=0.2,
    )


def test_it_pod_security_restricted(kube_client, kube_namespace):
    core = client.CoreV1Api(kube_client)
    core.patch_namespace(
        kube_namespace,
        {
            "metadata": {
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                }
            }
        },
    )

    # Pod Security admission reads namespace labels from an informer cache: wait until it
    # has seen the new labels (a dry run creates nothing), then check the real refusal.
    def refused():
        try:
            core.create_namespaced_pod(kube_namespace, pod("bad", privileged=True), dry_run="All")
        except ApiException as e:
            return e.status == 403
        return False

    wait_for("Pod Security to see the namespace labels", refused)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(kube_namespace, pod("bad", privileged=True))
    assert err.value.status == 403, err.value.body
    assert "PodSecurity" in err.value.body
    created = core.create_namespaced_pod(kube_namespace, pod("good", restricted=True))
    assert created.metadata.name == "good"


def test_it_resource_quota_rejects_pod_over_quota(kube_client, kube_namespace):
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_resource_quota(
        kube_namespace,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="q"),
            spec=client.V1ResourceQuotaSpec(
                hard={"requests.cpu": "100m", "limits.cpu": "100m", "pods": "5"}
            ),
        ),
    )
    # admission refuses everything until the quota controller has computed status.hard
    wait_for(
        "quota status",
        lambda: (
            (
                core.read_namespaced_resource_quota("q", kube_namespace).status
                or client.V1ResourceQuotaStatus()
            ).hard
        ),
    )
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(kube_namespace, pod("big", cpu="200m"))
    assert err.value.status == 403, err.value.body
    assert "exceeded quota" in err.value.body
    core.create_namespaced_pod(kube_namespace, pod("small", cpu="50m"))


def test_it_service_account_token_rbac(kube_client, kube_namespace):
    core = client.CoreV1Api(kube_client)
    rbac = client.RbacAuthorizationV1Api(kube_client)
    ns = kube_namespace
    core.create_namespaced_service_account(
        ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    rbac.create_namespaced_role(
        ns,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="pod-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        ns,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader-pods"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=ns)],
        ),
    )
    tr = core.create_namespaced_service_account_token(
        "reader",
        ns,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    )
    token = tr.status.token
    assert token

    cfg = client.Configuration()
    cfg.host = kube_client.configuration.host
    cfg.ssl_ca_cert = kube_client.configuration.ssl_ca_cert
    cfg.verify_ssl = kube_client.configuration.verify_ssl
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    with client.ApiClient(cfg) as sa_client:
        sa_core = client.CoreV1Api(sa_client)
        # the RBAC authorizer sees the new binding through an informer: allow a moment
        wait_for(
            "pods list allowed for the service account",
            lambda: status_of(sa_core.list_namespaced_pod, ns) == 200,
        )
        assert status_of(sa_core.list_namespaced_pod, "default") == 403
        assert status_of(sa_core.list_namespaced_secret, ns) == 403
        assert status_of(sa_core.read_namespaced_secret, "anything", ns) == 403
        who = client.AuthenticationV1Api(sa_client).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert who.status.user_info.username == f"system:serviceaccount:{ns}:reader"


def test_it_watch_sees_deployment_become_available(kube_client, kube_namespace):
    apps = client.AppsV1Api(kube_client)
    created = apps.create_namespaced_deployment(kube_namespace, deployment("watched", replicas=1))
    w = watch.Watch()
    seen = []
    end = time.monotonic() + DEADLINE
    rv = created.metadata.resource_version  # every change after the create
    while time.monotonic() < end and not (seen and seen[-1] == 1):
        for ev in w.stream(
            apps.list_namespaced_deployment,
            kube_namespace,
            field_selector="metadata.name=watched",
            resource_version=rv,
            timeout_seconds=max(1, int(end - time.monotonic())),
        ):
            obj = ev["object"]
            rv = obj.metadata.resource_version
            seen.append(obj.status.available_replicas)
            if obj.status.available_replicas == 1:
                w.stop()
                break
    assert seen and seen[-1] == 1, f"watch saw availableReplicas {seen}"
    assert any(a != 1 for a in seen[:-1]), f"no change seen, only {seen}"

    # A watch with bookmarks and no resourceVersion gets the current state first. Guards
    # the local cluster's etcd 3.5.1 + WatchList quirk (docs/localcluster.md): with the
    # WatchList gate on, such a watch fails at once with "RequestWatchProgress is disabled".
    first = None
    for ev in watch.Watch().stream(
        apps.list_namespaced_deployment,
        kube_namespace,
        allow_watch_bookmarks=True,
        timeout_seconds=10,
    ):
        first = ev
        break
    assert first and first["type"] == "ADDED", first
    assert first["object"].status.available_replicas == 1


def test_it_serves_simulated_pod_logs_like_a_kubelet(kube_client, kube_namespace):
    """kube-apiserver fetches a pod's log from kwok's fake-kubelet server, which serves
    the simulated container log (docs/localcluster.md, "Pod logs")."""
    import os
    from datetime import UTC, datetime

    from tests.kubecluster import load_launcher

    if os.environ.get("KUBECONFIG"):
        pytest.skip("simulated logs exist only on the local control plane")
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_pod(kube_namespace, pod("talker"))
    wait_for(
        "pod talker Running",
        lambda: core.read_namespaced_pod_status("talker", kube_namespace).status.phase == "Running",
    )
    marker = f"localcluster logs {uuid.uuid4().hex[:8]}"
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with load_launcher().simulated_log_file().open("a") as log:
        log.write(f"{stamp} stdout F {marker}\n")
    text = core.read_namespaced_pod_log("talker", kube_namespace, tail_lines=3, timestamps=True)
    lines = text.splitlines()
    assert len(lines) == 3, text
    # Another test session may append its own line at the same moment: not the last one.
    (line,) = [line for line in lines if line.endswith(f" {marker}")]
    assert line.startswith(stamp[:19]), text  # the kubelet's timestamp


def test_it_node_offers_ephemeral_storage(kube_client):
    """Environments' containers request scratch disk; the fake node must have some, or
    their pods never schedule."""
    node = client.CoreV1Api(kube_client).read_node("kwok-node-0")
    assert "ephemeral-storage" in node.status.allocatable


def test_it_simulates_storage_and_volume_snapshots(kube_client, kube_namespace):
    """A claim binds (the PV controller, to a pool volume), a VolumeSnapshot of it
    becomes readyToUse (the kwok-storage stage), a claim made from the snapshot binds,
    and a deleted claim's volume goes back to the pool (Available)."""
    core = client.CoreV1Api(kube_client)
    snapshots = client.CustomObjectsApi(kube_client)

    def claim(name: str, source: str | None = None) -> dict:
        spec: dict = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        }
        if source:
            spec["dataSource"] = {
                "apiGroup": "snapshot.storage.k8s.io",
                "kind": "VolumeSnapshot",
                "name": source,
            }
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": spec,
        }

    def bound(name: str):
        found = core.read_namespaced_persistent_volume_claim(name, kube_namespace)
        return found.spec.volume_name if found.status.phase == "Bound" else None

    core.create_namespaced_persistent_volume_claim(kube_namespace, claim("data"))
    volume = wait_for("the claim to bind", lambda: bound("data"))
    snapshots.create_namespaced_custom_object(
        "snapshot.storage.k8s.io",
        "v1",
        kube_namespace,
        "volumesnapshots",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": "snap"},
            "spec": {"source": {"persistentVolumeClaimName": "data"}},
        },
    )
    wait_for(
        "the VolumeSnapshot to be readyToUse",
        lambda: (
            snapshots.get_namespaced_custom_object(
                "snapshot.storage.k8s.io", "v1", kube_namespace, "volumesnapshots", "snap"
            )
            .get("status", {})
            .get("readyToUse")
        ),
    )
    core.create_namespaced_persistent_volume_claim(kube_namespace, claim("copy", source="snap"))
    wait_for("the claim made from the snapshot to bind", lambda: bound("copy"))
    core.delete_namespaced_persistent_volume_claim("data", kube_namespace)
    wait_for(
        "the volume to go back to the pool",
        lambda: core.read_persistent_volume(volume).status.phase == "Available",
    )
