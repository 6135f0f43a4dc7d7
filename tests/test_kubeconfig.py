"""The downloadable kubeconfig: namespace-scoped, short-lived, never stored."""

from __future__ import annotations

import base64
import time

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from environments.access.kubeconfig import kubeconfig_for
from environments.lib.errors import ServiceError
from environments.lifecycle import services
from environments.lifecycle.states import State
from environments.models import AuditEvent, Environment
from tests.test_provisioning import request
from tests.test_provisioning import run_worker_and_watcher as run_worker

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("on_cluster"),
]


def api_for(kubeconfig_text: str) -> client.ApiClient:
    return config.new_client_from_config_dict(yaml.safe_load(kubeconfig_text))


def test_it_gives_a_namespace_scoped_token_that_dies_with_the_environment(
    owner, teammate, outsider, sample_blueprints, kube_namespace
):
    environment = request(owner, sample_blueprints["pr-preview"])
    run_worker()
    environment.refresh_from_db()
    assert environment.state == State.READY

    teammate.memberships.update(lead=True)  # the owner and the team's leads may
    text = kubeconfig_for(environment=environment, user=teammate)
    assert environment.namespace in text
    core = client.CoreV1Api(api_for(text))
    pods = core.list_namespaced_pod(environment.namespace).items
    assert [p.metadata.labels["ephemera.io/component"] for p in pods] == ["app"]
    # Not another namespace, not Secrets, not the cluster.
    for forbidden in (
        lambda: core.list_namespaced_pod(kube_namespace),
        lambda: core.list_namespaced_secret(environment.namespace),
        lambda: core.list_namespace(),
    ):
        with pytest.raises(ApiException) as excinfo:
            forbidden()
        assert excinfo.value.status == 403

    # The token is not kept anywhere; the audit entry says it was issued, not what.
    token = yaml.safe_load(text)["users"][0]["user"]["token"]
    entry = AuditEvent.objects.get(action="environment.kubeconfig")
    assert token not in str(entry.after) and token not in str(Environment.objects.get().__dict__)

    with pytest.raises(services.PermissionDenied):
        kubeconfig_for(environment=environment, user=outsider)

    # When the environment ends (expiry or deletion), the token stops working: at once
    # it may do nothing (403: its RoleBinding is gone), and as soon as the API server's
    # ServiceAccount cache catches up it is not even accepted (401).
    services.delete_environment(environment=environment, user=owner)
    run_worker()
    deadline = time.monotonic() + 30
    while True:
        with pytest.raises(ApiException) as excinfo:
            core.list_namespaced_pod(environment.namespace)
        assert excinfo.value.status in (401, 403)
        if excinfo.value.status == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert excinfo.value.status == 401


def test_it_refuses_a_kubeconfig_before_the_environment_is_ready(owner, sample_blueprints):
    environment = request(owner, sample_blueprints["pr-preview"])
    with pytest.raises(ServiceError, match="once the environment is ready"):
        kubeconfig_for(environment=environment, user=owner)


def test_it_points_people_at_the_public_api_server_when_one_is_set(settings, on_cluster, tmp_path):
    """In a cluster the portal reaches kubernetes.default.svc, which no laptop can:
    KUBE_PUBLIC_SERVER (and its CA) go into the downloaded kubeconfig instead."""
    from environments.kube import cluster

    own = cluster.kubeconfig(namespace="eph-x", token="t", name="x")["clusters"][0]["cluster"]
    assert own["server"].startswith("https://127.0.0.1:")

    ca = tmp_path / "public-ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\npublic\n-----END CERTIFICATE-----\n")
    settings.KUBE_PUBLIC_SERVER = "https://k8s.example.com:6443"
    settings.KUBE_PUBLIC_CA_FILE = str(ca)
    entry = cluster.kubeconfig(namespace="eph-x", token="t", name="x")["clusters"][0]["cluster"]
    assert entry["server"] == "https://k8s.example.com:6443"
    assert base64.b64decode(entry["certificate-authority-data"]) == ca.read_bytes()
