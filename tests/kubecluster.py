"""pytest plugin: a Kubernetes API for tests.

Register with ``pytest_plugins = ["tests.kubecluster"]`` (or ``-p tests.kubecluster``).

Fixtures
  kube_config     (session)  kubeconfig path: $KUBECONFIG if set (any real cluster:
                             kind, k3d, minikube, EKS/GKE/AKS), else the local control
                             plane from deploy/localcluster, started if needed.
  kube_client     (session)  kubernetes.client.ApiClient for that kubeconfig.
  kube_namespace  (function) a fresh namespace ``t-<random>``, deleted afterwards
                             (without waiting for it to go away).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

LAUNCHER = Path(__file__).resolve().parent.parent / "deploy" / "localcluster" / "localcluster.py"
BUILD_HINT = "make cluster  (or: bash deploy/localcluster/build.sh)"


def load_launcher():
    """Import deploy/localcluster/localcluster.py by path (deploy/ is not a package)."""
    name = "ephemera_localcluster"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, LAUNCHER)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def apply_user_cluster_roles(kubeconfig: str) -> None:
    """The ClusterRoles environments bind (ephemera-user-view, -edit, -secrets), on any
    cluster."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        for role in load_launcher().user_cluster_roles():
            client.RbacAuthorizationV1Api(api).patch_cluster_role(
                role["metadata"]["name"],
                role,
                field_manager="ephemera-tests",
                force=True,
                _content_type="application/apply-patch+yaml",
            )
    finally:
        api.close()


@pytest.fixture(scope="session")
def kube_config():
    env = os.environ.get("KUBECONFIG")
    if env:
        apply_user_cluster_roles(env)  # the local cluster's launcher does this itself
        yield env
        return
    lc = load_launcher()
    missing = lc.binaries_missing()
    if missing:
        pytest.fail(
            "the local Kubernetes control plane is not built (missing: "
            + ", ".join(Path(m).name for m in missing)
            + f"). Run: {BUILD_HINT}",
            pytrace=False,
        )
    try:
        path = str(lc.ensure_running())
    except lc.ClusterError as e:
        pytest.fail(f"could not start the local Kubernetes cluster: {e}", pytrace=False)
    # A cluster started by an older checkout lacks newer ClusterRoles (ephemera-user-secrets):
    # applying the current ones is idempotent.
    apply_user_cluster_roles(path)
    yield path
    _delete_instance_namespaces(path)


def _delete_instance_namespaces(kubeconfig: str) -> None:
    """At the end of the session, delete (without waiting) the environment namespaces this
    session's instance label made, so runs don't pile them up on the shared local cluster
    (each one holds a service IP out of a small range)."""
    from django.conf import settings
    from kubernetes import client, config

    selector = f"ephemera.io/instance={settings.EPHEMERA_INSTANCE}"
    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        core = client.CoreV1Api(api)
        for namespace in core.list_namespace(label_selector=selector, _request_timeout=10).items:
            core.delete_namespace(namespace.metadata.name, _request_timeout=10)
    except Exception as exc:  # the cluster may be down after an outage test: not a failure
        print(f"\nnot cleaned up ({selector}): {exc}")
    finally:
        api.close()


@pytest.fixture(scope="session")
def kube_client(kube_config):
    from kubernetes import config

    client = config.new_client_from_config(config_file=kube_config)
    yield client
    client.close()


@pytest.fixture
def kube_namespace(kube_client):
    """Create namespace t-<random>; yield its name; delete it (no wait) afterwards.

    Also waits (briefly) for the `default` ServiceAccount, which the controller-manager
    creates, so pods can be created straight away."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(kube_client)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"ephemera-test": "1"}))
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as e:
            if e.status != 404:
                raise
