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
from tests.conftest import wait_for
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
    # The owner and the team's leads may; the worker makes their access as it provisions.
    teammate.memberships.update(lead=True)
    environment = request(owner, sample_blueprints["pr-preview"])
    run_worker()
    environment.refresh_from_db()
    assert environment.state == State.READY

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


def refused_with_401(core, namespace: str, timeout: float = 30) -> None:
    """The token is refused outright (401), not merely denied (403): once its bound
    identity is deleted, the API server no longer accepts it. Asked until the API server's
    cache catches up (a few seconds at most)."""

    def status() -> int:
        try:
            core.list_namespaced_pod(namespace)
        except ApiException as exc:
            return exc.status
        return 200

    wait_for(lambda: status() == 401, timeout)


def test_a_kubeconfig_stops_working_when_its_holder_leaves_the_team_or_is_deactivated(
    owner, teammate, portal_admin, sample_blueprints
):
    from environments.access import people

    # The owner and the team's leads may; the worker makes their access as it provisions.
    teammate.memberships.update(lead=True)
    environment = request(owner, sample_blueprints["pr-preview"])
    run_worker()
    environment.refresh_from_db()
    assert environment.state == State.READY

    leaver = client.CoreV1Api(api_for(kubeconfig_for(environment=environment, user=teammate)))
    kept = client.CoreV1Api(api_for(kubeconfig_for(environment=environment, user=owner)))
    assert leaver.list_namespaced_pod(environment.namespace).items
    assert kept.list_namespaced_pod(environment.namespace).items

    # The teammate leaves the team: their token dies, the owner's keeps working.
    people.remove_member(actor=portal_admin, user=teammate, team=environment.team)
    run_worker()
    refused_with_401(leaver, environment.namespace)
    assert kept.list_namespaced_pod(environment.namespace).items

    # The owner is deactivated: theirs dies too.
    people.deactivate(actor=portal_admin, user=owner)
    run_worker()
    refused_with_401(kept, environment.namespace)

    # Back in the team (and leading it again), the teammate gets a new kubeconfig.
    people.add_member(actor=portal_admin, user=teammate, team=environment.team)
    teammate.memberships.update(lead=True)
    run_worker()
    again = client.CoreV1Api(api_for(kubeconfig_for(environment=environment, user=teammate)))
    assert again.list_namespaced_pod(environment.namespace).items
    services.delete_environment(environment=environment, user=portal_admin)
    run_worker()


def test_an_owner_who_leaves_the_team_may_no_longer_hold_a_kubeconfig(owner, portal_admin, env):
    from environments.access import people
    from environments.access.credentials import may_hold

    assert may_hold(owner, env)
    people.remove_member(actor=portal_admin, user=owner, team=env.team)
    assert not may_hold(owner, env)
    with pytest.raises(services.PermissionDenied):
        kubeconfig_for(environment=env, user=owner)
    assert may_hold(portal_admin, env)  # admins need no membership
