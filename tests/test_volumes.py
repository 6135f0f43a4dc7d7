"""Data volumes (issue 15): the blueprint field, the claim and its mount, the quota, and
the VolumeSnapshot and restored-claim builders (dict comparisons; the cluster side is in
tests/test_recovery_volumes.py)."""

from __future__ import annotations

import textwrap

import pytest

from environments.catalog.rendering import spec_digest
from environments.catalog.spec import BlueprintInvalid, load_blueprint, parse_blueprint
from environments.kube import objects

BLUEPRINT = textwrap.dedent(
    """\
    name: notes
    title: Notes
    purpose: demo
    ttl: {default: 4h, max: 3d}
    drill: {every: 7d}
    components:
      - name: web
        image: nginxinc/nginx-unprivileged:1.27
        port: 8080
        resources: {cpu: 100m, memory: 128Mi}
        volume: {size: 1Gi, path: /var/lib/data/, snapshot: true}
      - name: cache
        image: redis:7
        resources: {cpu: 100m, memory: 128Mi}
    """
)


def errors_of(text: str) -> list[str]:
    with pytest.raises(BlueprintInvalid) as caught:
        parse_blueprint(text)
    return [f"{path}: {reason}" for path, reason in caught.value.errors]


def test_it_reads_a_volume_and_a_drill():
    spec = load_blueprint(BLUEPRINT)
    web, cache = spec.components
    assert web.volume is not None
    assert (web.volume.size, web.volume.path, web.volume.snapshot) == ("1Gi", "/var/lib/data", True)
    assert cache.volume is None
    assert spec.drill is not None and spec.drill.every == 7 * 86400
    stored = spec.to_dict()
    assert stored["components"][0]["volume"] == {
        "size": "1Gi",
        "path": "/var/lib/data",
        "snapshot": True,
    }
    assert "volume" not in stored["components"][1]
    assert stored["drill"] == {"every": 604800}


def test_it_keeps_the_digest_of_blueprints_without_volumes_or_drills():
    text = "".join(
        line
        for line in BLUEPRINT.splitlines(keepends=True)
        if "drill:" not in line and "volume:" not in line
    )
    stored = parse_blueprint(text)
    assert "drill" not in stored
    assert all("volume" not in c for c in stored["components"])
    # What an earlier release stored (no volume/drill keys) still loads and hashes alike.
    assert spec_digest(stored) == spec_digest(load_blueprint(text))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("size: 1Gi", "size: lots"),
            "components[0].volume.size: 'lots' is not a valid Kubernetes quantity (such as 250m or 1Gi)",
        ),
        (("size: 1Gi", "size: 0"), "components[0].volume.size: '0' must be greater than zero"),
        (
            ("path: /var/lib/data/", "path: var/lib"),
            "components[0].volume.path: 'var/lib' is not an absolute path such as /var/lib/data",
        ),
        (
            ("path: /var/lib/data/", "path: /data/../etc"),
            "components[0].volume.path: '/data/../etc' must not contain '..'",
        ),
        (
            ("path: /var/lib/data/", "path: /"),
            "components[0].volume.path: must not be / (mount the volume on a directory)",
        ),
        (
            ("snapshot: true", "snapshot: sometimes"),
            "components[0].volume.snapshot: must be true or false",
        ),
        (("size: 1Gi, ", ""), "components[0].volume.size: missing required field"),
        (
            (", snapshot: true", ", snapshots: true"),
            "components[0].volume.snapshots: unknown field",
        ),
        (
            ("volume: {size: 1Gi, path: /var/lib/data/, snapshot: true}", "volume: /data"),
            "components[0].volume: must be a mapping, got a string",
        ),
        (
            ("drill: {every: 7d}", "drill: {every: 30m}"),
            "drill.every: '30m' is too often: at most one drill an hour (1h)",
        ),
        (
            ("drill: {every: 7d}", "drill: {every: weekly}"),
            "drill.every: 'weekly' is not a duration like 30m, 4h or 3d",
        ),
        (("drill: {every: 7d}", "drill: {}"), "drill.every: missing required field"),
    ],
)
def test_it_refuses_a_bad_volume_or_drill_in_one_line(change, expected):
    old, new = change
    assert old in BLUEPRINT
    assert errors_of(BLUEPRINT.replace(old, new)) == [expected]


SPEC = objects.EnvironmentSpec(
    environment_id="0b3e8c3e-0000-4000-8000-000000000001",
    name="a1b2c3d4",
    owner_id="7",
    team="sales",
    blueprint="notes",
    expires_at="2026-11-23T18:00:00+00:00",
    components=[c.model_dump() for c in load_blueprint(BLUEPRINT).components],
)
LABELS = {
    "app.kubernetes.io/managed-by": "ephemera",
    "ephemera.io/environment": SPEC.environment_id,
    "ephemera.io/owner": "7",
    "ephemera.io/team": "sales",
    "ephemera.io/blueprint": "notes",
}


def test_it_makes_a_claim_and_mounts_it():
    manifests = objects.build_manifests(SPEC)
    claims = [m for m in manifests if m["kind"] == "PersistentVolumeClaim"]
    assert claims == [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": "web-data",
                "namespace": "eph-a1b2c3d4",
                "labels": {**LABELS, "ephemera.io/component": "web"},
            },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    ]
    kinds = [m["kind"] for m in manifests]
    assert kinds.index("PersistentVolumeClaim") < kinds.index("Deployment")
    web = next(m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == "web")
    pod = web["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "web-data"}}]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "data", "mountPath": "/var/lib/data"}]
    assert web["spec"]["strategy"] == {"type": "Recreate"}
    cache = next(
        m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == "cache"
    )
    assert "volumes" not in cache["spec"]["template"]["spec"]
    assert "strategy" not in cache["spec"]


def test_the_quota_counts_the_claims_and_their_storage():
    hard = objects.resource_quota(SPEC)["spec"]["hard"]
    assert hard["persistentvolumeclaims"] == "1"
    assert hard["requests.storage"] == str(1024**3)
    without = objects.EnvironmentSpec(
        **{**SPEC.__dict__, "components": [{**c, "volume": None} for c in SPEC.components]}
    )
    assert "requests.storage" not in objects.resource_quota(without)["spec"]["hard"]


def test_a_storage_class_is_named_only_when_set():
    spec = objects.EnvironmentSpec(**{**SPEC.__dict__, "storage_class": "fast-ssd"})
    claim = objects.persistent_volume_claim(spec, spec.components[0])
    assert claim is not None and claim["spec"]["storageClassName"] == "fast-ssd"


def test_it_builds_volume_snapshots_and_restored_claims():
    claim = objects.persistent_volume_claim(SPEC, SPEC.components[0])
    assert claim is not None
    snapshot_id = "5c0ffee0-1234-4567-89ab-cdef01234567"
    name = objects.volume_snapshot_name("web-data", snapshot_id)
    assert name == "web-data-5c0ffee01234"
    assert objects.volume_snapshot(claim, name=name, snapshot_id=snapshot_id) == {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": name,
            "namespace": "eph-a1b2c3d4",
            "labels": {
                **LABELS,
                "ephemera.io/component": "web",
                "ephemera.io/snapshot": snapshot_id,
            },
        },
        "spec": {"source": {"persistentVolumeClaimName": "web-data"}},
    }
    restored = objects.restored_claims(objects.build_manifests(SPEC), {"web-data": name})
    claims = [m for m in restored if m["kind"] == "PersistentVolumeClaim"]
    assert claims[0]["spec"]["dataSource"] == {
        "apiGroup": "snapshot.storage.k8s.io",
        "kind": "VolumeSnapshot",
        "name": name,
    }
    others = [m for m in restored if m["kind"] != "PersistentVolumeClaim"]
    assert others == [
        m for m in objects.build_manifests(SPEC) if m["kind"] != "PersistentVolumeClaim"
    ]


def test_a_pod_waiting_for_its_volume_is_not_a_failure():
    """Scheduled before its claim was bound (a loaded cluster): the scheduler tries again
    once it is, so the environment must not fail on it. Other scheduling failures do."""
    from environments.kube.cluster import problems_from

    def event(message: str) -> dict:
        return {
            "metadata": {"uid": message[:8]},
            "reason": "FailedScheduling",
            "message": message,
            "involvedObject": {"name": "web-5d4f7c9b8-abcde"},
        }

    waiting = problems_from(
        [event("0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims.")],
        [],
        ["web"],
    )
    assert [(p.fatal, p.message.split(":")[0]) for p in waiting] == [
        (False, "web is waiting for its volume")
    ]
    stuck = problems_from([event("0/1 nodes are available: 1 Insufficient cpu.")], [], ["web"])
    assert [p.fatal for p in stuck] == [True]
