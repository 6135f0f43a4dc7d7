"""Inventory and verified teardown, on the real local control plane with a real worker
and watcher: what an environment owns (page, JSON, CSV, API), what the portal does not
know (admin page), and the teardown receipt with a left-over cluster-scoped object."""

from __future__ import annotations

import csv
import io
import json
import uuid

import pytest
from django.conf import settings
from kubernetes import client

from environments.access import tokens
from environments.kube.objects import ENV_LABEL, INSTANCE_LABEL, MANAGED_BY
from environments.lifecycle import services, telemetry, upkeep
from environments.lifecycle.states import State
from environments.models import Environment
from environments.recovery import inventory
from tests.conftest import client_for, wait_for

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("worker"),
]


def ready_environment(owner, sample_blueprints) -> Environment:
    environment = services.request_environment(user=owner, version=sample_blueprints["pr-preview"])
    wait_for(
        lambda: Environment.objects.get(pk=environment.pk).state in {State.READY, State.FAILED},
        timeout=180,
    )
    environment.refresh_from_db()
    assert environment.state == State.READY, environment.last_error
    return environment


def test_it_lists_what_an_environment_owns_to_those_who_may_see_it(
    owner, outsider, portal_admin, sample_blueprints, kube_client
):
    environment = ready_environment(owner, sample_blueprints)
    namespace = environment.namespace
    live = client.AppsV1Api(kube_client).read_namespaced_deployment("app", namespace)
    wait_for(lambda: any(o["kind"] == "Deployment" for o in inventory.read(environment.pk)[1]))
    _, objects = inventory.read(environment.pk)
    kinds = {(o["kind"], o["name"]): o for o in objects}
    recorded = {(m["kind"], m["metadata"]["name"]) for m in environment.manifests}
    assert set(kinds) == recorded  # everything it owns, nothing else
    app = kinds[("Deployment", "app")]
    assert app["uid"] == live.metadata.uid
    assert app["namespace"] == namespace and app["status"] == inventory.RECORDED
    assert len(app["spec_hash"]) == 12 and app["created"]
    assert kinds[("Namespace", namespace)]["namespace"] == ""

    page = client_for(owner).get(f"/environments/{environment.pk}/inventory/")
    assert page.status_code == 200
    assert live.metadata.uid in page.content.decode()
    as_json = client_for(owner).get(f"/environments/{environment.pk}/inventory/?format=json")
    assert as_json["Content-Disposition"].endswith('.json"')
    assert json.loads(as_json.content)["objects"] == objects
    as_csv = client_for(owner).get(f"/environments/{environment.pk}/inventory/?format=csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.content.decode())))
    assert {(r["kind"], r["name"], r["uid"]) for r in rows} == {
        (o["kind"], o["name"], o["uid"]) for o in objects
    }
    token = tokens.create_token(user=owner, name="ci", scope="read", days=1)[1]
    answer = client_for(owner).get(
        f"/api/v1/environments/{environment.pk}/inventory", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert answer.status_code == 200 and answer.json()["objects"] == objects

    # Outsiders learn nothing: 404 for the page, the downloads and the API.
    for suffix in ("", "?format=json", "?format=csv"):
        url = f"/environments/{environment.pk}/inventory/{suffix}"
        assert client_for(outsider).get(url).status_code == 404
        assert client_for(outsider).post(url).status_code in {404, 405}
    other = tokens.create_token(user=outsider, name="ci", scope="read", days=1)[1]
    refused = client_for(outsider).get(
        f"/api/v1/environments/{environment.pk}/inventory", HTTP_AUTHORIZATION=f"Bearer {other}"
    )
    assert refused.status_code == 404
    assert client_for(owner).get("/admin-portal/inventory/").status_code == 403

    # A namespace labelled as this portal's that no environment row owns: flagged.
    stray = f"eph-zz{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(kube_client)
    core.create_namespace(
        {
            "metadata": {
                "name": stray,
                "labels": {
                    MANAGED_BY: "ephemera",
                    INSTANCE_LABEL: settings.EPHEMERA_INSTANCE,
                    ENV_LABEL: str(uuid.uuid4()),
                },
            }
        }
    )
    try:
        wait_for(lambda: any(o["name"] == stray for o in inventory.unknown()[1]), timeout=20)
        [flagged] = [o for o in inventory.unknown()[1] if o["name"] == stray]
        assert flagged["why"] == "no environment in the database"
        admin_page = client_for(portal_admin).get("/admin-portal/inventory/").content.decode()
        assert stray in admin_page and "no environment in the database" in admin_page
        assert live.metadata.uid in admin_page  # and every environment's objects
    finally:
        core.delete_namespace(stray)
    services.delete_environment(environment=environment, user=owner)
    wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.DELETED, 120)


def test_the_teardown_receipt_counts_what_was_checked_and_reports_a_leftover_volume(
    owner, portal_admin, sample_blueprints, kube_client
):
    environment = ready_environment(owner, sample_blueprints)
    core = client.CoreV1Api(kube_client)
    volume = f"pv-{uuid.uuid4().hex[:10]}"
    # A volume that outlives its namespace (Retain), labelled for the environment.
    core.create_persistent_volume(
        {
            "metadata": {
                "name": volume,
                "labels": {
                    MANAGED_BY: "ephemera",
                    ENV_LABEL: str(environment.pk),
                    INSTANCE_LABEL: settings.EPHEMERA_INSTANCE,
                },
            },
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": f"/tmp/{volume}"},
            },
        }
    )
    try:
        services.delete_environment(environment=environment, user=owner)
        wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.DELETED, 120)
        wait_for(lambda: environment.events.filter(source_key="teardown-receipt").exists(), 30)
        receipt = environment.events.get(source_key="teardown-receipt").message
        assert "kinds checked" in receipt
        assert f"1 object left over: PersistentVolume {volume}" in receipt, receipt
        assert "ClusterRoleBinding" not in receipt  # counted, not found
        assert environment.events.filter(source_key__startswith="leftover:").count() == 1
        assert inventory.read(environment.pk) == (None, [])

        # The reconciler reports it too: an event (once), the metric, the admin page.
        counts = upkeep.reconcile()
        assert counts["leftovers"] >= 1
        assert telemetry.leftover_count() >= 1
        assert environment.events.filter(source_key__startswith="leftover:").count() == 1
        [entry] = [o for o in inventory.leftovers()[1] if o["name"] == volume]
        assert entry["kind"] == "PersistentVolume" and entry["why"] == "its environment is deleted"
        page = client_for(portal_admin).get("/admin-portal/inventory/").content.decode()
        assert volume in page
        metrics = client_for(portal_admin).get("/metrics").content.decode()
        assert "ephemera_leftover_objects" in metrics
    finally:
        core.delete_persistent_volume(volume)
    assert upkeep.reconcile()["leftovers"] == 0 or volume not in str(inventory.leftovers())


def test_a_clean_teardown_has_a_receipt_with_nothing_left(owner, sample_blueprints):
    environment = ready_environment(owner, sample_blueprints)
    services.delete_environment(environment=environment, user=owner)
    wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.DELETED, 120)
    wait_for(lambda: environment.events.filter(source_key="teardown-receipt").exists(), 30)
    receipt = environment.events.get(source_key="teardown-receipt").message
    assert "0 objects left over" in receipt and "PersistentVolume" in receipt, receipt
    assert "Namespace" in receipt and "ClusterRole" in receipt
