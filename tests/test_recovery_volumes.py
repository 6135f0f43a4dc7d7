"""Data volumes on the local control plane (issue 15): a blueprint with a volume makes
a bound claim its pods mount; a snapshot takes a VolumeSnapshot of it (readyToUse, set
by the simulated storage data plane); a restore makes the claim from it (dataSource)."""

from __future__ import annotations

import textwrap

import pytest
from kubernetes import client

from environments.catalog.publishing import publish_blueprint
from environments.kube import cluster
from environments.lifecycle import services
from environments.lifecycle.states import State
from environments.models import Environment
from environments.recovery.restore import restore
from environments.recovery.snapshots import take_snapshot
from tests.conftest import wait_for
from tests.test_provisioning import settle

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("on_cluster"),
]

NOTES = textwrap.dedent(
    """\
    name: notes
    title: Notes with data
    purpose: demo
    ttl: {default: 1h, max: 4h}
    components:
      - name: web
        image: nginxinc/nginx-unprivileged:1.27
        port: 8080
        resources: {cpu: 50m, memory: 64Mi}
        volume: {size: 1Gi, path: /var/lib/notes, snapshot: true}
      - name: cache
        image: redis:7
        resources: {cpu: 50m, memory: 64Mi}
        volume: {size: 256Mi, path: /data}
    """
)


@pytest.fixture
def notes(db):
    version, _ = publish_blueprint(source=NOTES)
    return version


def claim(kube_client, namespace: str, name: str):
    return client.CoreV1Api(kube_client).read_namespaced_persistent_volume_claim(name, namespace)


def volume_snapshot(kube_client, namespace: str, name: str) -> dict:
    return client.CustomObjectsApi(kube_client).get_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", namespace, "volumesnapshots", name
    )


def test_it_snapshots_a_volume_and_restores_the_claim_from_it(owner, team, notes, kube_client):
    environment = services.request_environment(user=owner, version=notes, team=team)
    settle(environment)
    assert environment.state == State.READY, environment.last_error
    namespace = environment.namespace
    try:
        # The claims, bound (the PV controller, from the simulated pool), mounted at path.
        for name in ("web-data", "cache-data"):
            wait_for(lambda name=name: claim(kube_client, namespace, name).status.phase == "Bound")
        web = client.AppsV1Api(kube_client).read_namespaced_deployment("web", namespace)
        assert web.spec.template.spec.volumes[0].persistent_volume_claim.claim_name == "web-data"
        assert web.spec.template.spec.containers[0].volume_mounts[0].mount_path == "/var/lib/notes"

        assert cluster.serves_volume_snapshots()
        snapshot = take_snapshot(environment.pk, reason="manual", actor=owner)
        # Only the volume that asks for it.
        assert [v["pvc"] for v in snapshot.volumes] == ["web-data"]
        recorded = snapshot.volumes[0]
        live = volume_snapshot(kube_client, namespace, recorded["volume_snapshot"])
        assert live["spec"]["source"] == {"persistentVolumeClaimName": "web-data"}
        wait_for(
            lambda: (
                volume_snapshot(kube_client, namespace, recorded["volume_snapshot"])
                .get("status", {})
                .get("readyToUse")
            )
        )
        assert recorded["content"] == f"snapcontent-{live['metadata']['uid']}"
        assert recorded["size"] == "1Gi"

        restored = restore(snapshot, actor=owner, request_key="volumes-1")
        settle(restored)
        assert restored.state == State.READY, restored.last_error
        # The restored claim is made from the snapshot's VolumeSnapshot (same name, in
        # the new namespace, bound to the same content), and is bound.
        made = claim(kube_client, restored.namespace, "web-data")
        assert made.spec.data_source.kind == "VolumeSnapshot"
        assert made.spec.data_source.api_group == "snapshot.storage.k8s.io"
        assert made.spec.data_source.name == recorded["volume_snapshot"]
        wait_for(lambda: claim(kube_client, restored.namespace, "web-data").status.phase == "Bound")
        copy = volume_snapshot(kube_client, restored.namespace, recorded["volume_snapshot"])
        assert copy["spec"]["source"] == {"volumeSnapshotContentName": recorded["content"]}
        # The volume that is not snapshotted starts empty.
        assert claim(kube_client, restored.namespace, "cache-data").spec.data_source is None
        # Restoring the same snapshot with the same key gives the same environment.
        assert restore(snapshot, actor=owner, request_key="volumes-1").pk == restored.pk
    finally:
        for row in Environment.objects.exclude(state__in=[State.DELETED]):
            services.delete_environment(environment=row, user=None)
        settle(*Environment.objects.all(), states=(State.DELETED,))
