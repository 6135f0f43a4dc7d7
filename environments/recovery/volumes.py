"""Data volumes in snapshots and restores (issue 15).

A component's ``volume`` is a PersistentVolumeClaim (``kube.objects``). Where the
cluster serves snapshot.storage.k8s.io/v1 (API discovery, looked up once), each
environment snapshot takes a VolumeSnapshot of every claim whose volume says
``snapshot: true`` and records it in the snapshot's ``volumes``:
``{component, pvc, volume_snapshot, namespace, size, content}``. ``content`` is the
VolumeSnapshotContent the snapshot controller cuts it into (``snapcontent-<uid>``), so
a restore into another namespace, or after the namespace was lost, can bind a new
VolumeSnapshot of the same name to it. Nothing here waits on Kubernetes: the
VolumeSnapshot is created and the snapshot recorded; the claims made from it bind when
the storage is ready.

Where the cluster does not serve VolumeSnapshots, snapshots hold the manifests only
(``manifests_only``), and the pages say so.
"""

from __future__ import annotations

import logging

from django.conf import settings

from environments.catalog.spec import BlueprintSpec
from environments.kube import cluster
from environments.kube.objects import (
    COMPONENT_LABEL,
    SNAPSHOT_LABEL,
    restored_claims,
    volume_snapshot,
    volume_snapshot_from_content,
    volume_snapshot_name,
)
from environments.models import Environment, Snapshot

log = logging.getLogger(__name__)


def snapshotted_components(spec: BlueprintSpec) -> list[str]:
    """The components whose volume is taken with each snapshot."""
    return [c.name for c in spec.components if c.volume is not None and c.volume.snapshot]


def snapshot_volumes(environment: Environment, snapshot_id: str) -> list[dict]:
    """Take a VolumeSnapshot of each claim to snapshot; what to record. [] when there
    is none, or the cluster serves no VolumeSnapshots. Raises ``ClusterError``."""
    wanted = set(snapshotted_components(environment.blueprint_version.blueprint_spec))
    claims = [
        m
        for m in environment.manifests
        if m["kind"] == "PersistentVolumeClaim"
        and m["metadata"].get("labels", {}).get(COMPONENT_LABEL) in wanted
    ]
    if not claims or not cluster.serves_volume_snapshots():
        return []
    volumes = []
    for claim in claims:
        name = volume_snapshot_name(claim["metadata"]["name"], str(snapshot_id))
        made = cluster.create_or_get(
            volume_snapshot(
                claim,
                name=name,
                snapshot_id=str(snapshot_id),
                snapshot_class=settings.VOLUME_SNAPSHOT_CLASS,
            )
        )
        volumes.append(
            {
                "component": claim["metadata"]["labels"][COMPONENT_LABEL],
                "pvc": claim["metadata"]["name"],
                "volume_snapshot": name,
                "namespace": claim["metadata"]["namespace"],
                "size": claim["spec"]["resources"]["requests"]["storage"],
                # The name the snapshot controller gives the content it cuts.
                "content": f"snapcontent-{made['metadata']['uid']}",
            }
        )
    return volumes


def manifests_only(snapshot: Snapshot, spec: BlueprintSpec) -> bool:
    """The blueprint asks for volume snapshots but this snapshot holds none (the
    cluster did not serve snapshot.storage.k8s.io/v1 when it was taken)."""
    return bool(snapshotted_components(spec)) and not snapshot.volumes


def restored_manifests(snapshot: Snapshot, manifests: list[dict]) -> list[dict]:
    """The (retargeted) manifests a restore of ``snapshot`` applies: each recorded
    volume's VolumeSnapshot in the target namespace, bound to the recorded content
    (created only if missing: in place of a namespace that still stands, it is the
    original), and each claim made from it (``dataSource``). A previous restore's
    VolumeSnapshots in the manifests are left out; the rest is unchanged."""
    if not snapshot.volumes:
        return manifests
    kept = [m for m in manifests if m["kind"] != "VolumeSnapshot"]
    claims = {m["metadata"]["name"]: m for m in kept if m["kind"] == "PersistentVolumeClaim"}
    made = []
    for volume in snapshot.volumes:
        claim = claims.get(volume["pvc"])
        if claim is None:
            continue
        made.append(
            volume_snapshot_from_content(
                namespace=claim["metadata"]["namespace"],
                name=volume["volume_snapshot"],
                content=volume["content"],
                labels={**claim["metadata"].get("labels", {}), SNAPSHOT_LABEL: str(snapshot.pk)},
            )
        )
    sources = {v["pvc"]: v["volume_snapshot"] for v in snapshot.volumes if v["pvc"] in claims}
    first = 1 if kept and kept[0]["kind"] == "Namespace" else 0
    return restored_claims([*kept[:first], *made, *kept[first:]], sources)
