"""Snapshots: take one (on demand, or by the job enqueued when an environment becomes
ready), verify one, and the canonical form both use.

A snapshot records what was applied (the environment's recorded manifests, never a new
rendering), the blueprint version and parameters it came from, the images, and the
inventory of the objects on the cluster when it was taken. Its SHA-256 digest covers
the canonical JSON of all of that (sorted keys, no whitespace); its signature
(``recovery.signing``) covers the digest. ``verify`` checks both; a restore calls it
before anything is applied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from environments.access.teams import can_change
from environments.governance import audit
from environments.kube import cluster
from environments.lib.errors import ServiceError
from environments.lib.quantities import format_memory
from environments.lifecycle.states import State
from environments.models import Drill, Environment, EnvironmentEvent, Snapshot
from environments.recovery import signing
from environments.recovery.volumes import manifests_only, snapshot_volumes

log = logging.getLogger(__name__)


class SnapshotInvalid(ServiceError):
    """A snapshot that failed a check; ``check`` names it: "digest" or "signature"."""

    def __init__(self, check: str, message: str):
        super().__init__(message)
        self.check = check


def canonical(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 (what the digest covers)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(snapshot: Snapshot) -> str:
    return hashlib.sha256(canonical(snapshot.content())).hexdigest()


def spec_sha256(manifest: dict) -> str:
    """The hash of an object's desired content: everything but its metadata and status."""
    body = {k: v for k, v in manifest.items() if k not in {"metadata", "status"}}
    return hashlib.sha256(canonical(body)).hexdigest()


def images_of(manifests: list[dict]) -> list[str]:
    """Every container image the manifests run, sorted, once each."""
    found: set[str] = set()
    for manifest in manifests:
        pod = manifest.get("spec", {}).get("template", {}).get("spec", {})
        for key in ("initContainers", "containers"):
            found.update(c["image"] for c in pod.get(key, []) if c.get("image"))
    return sorted(found)


def inventory_of(manifests: list[dict]) -> list[dict]:
    """Each object the environment owns, with its uid on the cluster now ("" if absent)."""
    inventory = []
    for manifest in manifests:
        meta = manifest.get("metadata", {})
        try:
            live = cluster.get(manifest)
        except cluster.ClusterError as exc:
            log.warning("could not read %s for a snapshot: %s", cluster.describe(manifest), exc)
            live = None
        inventory.append(
            {
                "kind": manifest.get("kind", ""),
                "name": meta.get("name", ""),
                "namespace": meta.get("namespace", ""),
                "uid": ((live or {}).get("metadata") or {}).get("uid", ""),
                "spec_sha256": spec_sha256(manifest),
            }
        )
    return inventory


def volume_snapshots(environment: Environment, snapshot_id) -> list[dict]:
    """The volume snapshots of this snapshot (``recovery.volumes``): a VolumeSnapshot of
    each volume that asks for it, where the cluster serves snapshot.storage.k8s.io/v1."""
    return snapshot_volumes(environment, str(snapshot_id))


def _check_may_snapshot(actor, environment: Environment) -> None:
    if actor is not None and not can_change(actor, environment):
        raise PermissionDenied("You cannot snapshot this environment.")
    if environment.state != State.READY:
        raise ServiceError(
            f"Only a ready environment can be snapshotted; this one is "
            f"{environment.get_state_display().lower()}."
        )
    if not environment.manifests:
        raise ServiceError("This environment has nothing applied to snapshot yet.")


def take_snapshot(
    environment_id, *, reason: str, source_key: str = "", actor=None, ip: str | None = None
) -> Snapshot:
    """Take the next snapshot of a ready environment and return it.

    ``source_key`` makes an automatic snapshot idempotent: one per environment revision
    (a second call with the same key returns the first snapshot). ``actor`` None is the
    system (the job after ready). Raises ``ServiceError`` when it is not ready and
    ``PermissionDenied`` for someone who may not change it.
    """
    environment = Environment.objects.select_related("blueprint_version__blueprint").get(
        pk=environment_id
    )
    if source_key:
        existing = Snapshot.objects.filter(environment=environment, source_key=source_key).first()
        if existing is not None:
            return existing
    _check_may_snapshot(actor, environment)
    manifests = environment.manifests
    # Read the cluster before taking any lock: API calls never run inside a transaction.
    inventory = inventory_of(manifests)
    snapshot_id = uuid.uuid4()
    try:
        volumes = volume_snapshots(environment, snapshot_id)
    except cluster.ClusterError as exc:
        raise ServiceError(f"The volumes could not be snapshotted: {exc}") from exc
    try:
        with transaction.atomic():
            locked = Environment.objects.select_for_update().get(pk=environment_id)
            if locked.manifests != manifests:
                raise ServiceError("The environment changed while it was snapshotted; try again.")
            number = (locked.snapshots.aggregate(n=Max("number"))["n"] or 0) + 1
            version = environment.blueprint_version
            snapshot = Snapshot(
                id=snapshot_id,
                environment=locked,
                number=number,
                reason=reason,
                source_key=source_key,
                created_at=timezone.now(),
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
                blueprint_version=version,
                blueprint=version.blueprint.name,
                blueprint_version_number=version.number,
                parameters=locked.parameters,
                manifests=manifests,
                urls=locked.urls,
                images=images_of(manifests),
                inventory=inventory,
                volumes=volumes,
            )
            body = canonical(snapshot.content())
            snapshot.digest = hashlib.sha256(body).hexdigest()
            signer = signing.signer()
            snapshot.signature = signer.sign(snapshot.digest)
            snapshot.signature_algorithm = signer.algorithm
            snapshot.key_id = signer.key_id
            snapshot.size_bytes = len(body)
            snapshot.save()
            EnvironmentEvent.objects.create(
                environment=locked,
                kind=EnvironmentEvent.Kind.INFO,
                message=f"Snapshot {number} taken ({reason}, "
                f"{format_memory(snapshot.size_bytes)}, {len(inventory)} objects"
                + (f", {len(volumes)} volume snapshots" if volumes else "")
                + ")."
                + (
                    " Manifests only: this cluster does not serve VolumeSnapshots "
                    "(snapshot.storage.k8s.io/v1), so the volumes' data is not in it."
                    if manifests_only(snapshot, version.blueprint_spec)
                    else ""
                ),
                actor=snapshot.created_by,
            )
            audit.record(
                actor=actor,
                action="snapshot.take",
                target=snapshot,
                object_repr=f"snapshot {number} of {environment.display_name or environment.name}",
                after={"number": number, "reason": reason, "digest": snapshot.digest},
                ip=ip,
            )
    except IntegrityError:
        # The same revision's job ran twice at once: the other one took it.
        taken = Snapshot.objects.filter(environment_id=environment_id, source_key=source_key)
        if source_key and taken.exists():
            return taken.get()
        raise
    return snapshot


def snapshot_after_ready(environment_id: str, source_key: str) -> str:
    """The job enqueued when an environment becomes ready (``provisioning.mark_ready``):
    one snapshot per revision; nothing to do when it is no longer ready."""
    environment = Environment.objects.filter(pk=environment_id).first()
    if environment is None:
        return "no such environment"
    if Snapshot.objects.filter(environment=environment, source_key=source_key).exists():
        return "already taken"
    if Drill.objects.filter(environment=environment).exists():
        return "a restore drill's scratch environment: not snapshotted"
    if environment.state != State.READY:
        return f"nothing to do: {environment.state}"
    reason = "update" if environment.snapshots.exists() else "ready"
    try:
        snapshot = take_snapshot(environment_id, reason=reason, source_key=source_key)
    except ServiceError as exc:
        return f"not taken: {exc}"
    return f"snapshot {snapshot.number}"


def verify(snapshot: Snapshot) -> None:
    """Check the snapshot's digest, then its signature, from what is stored now.

    Raises ``SnapshotInvalid`` naming the check that failed ("digest" or "signature").
    """
    stored = Snapshot.objects.get(pk=snapshot.pk)  # never trust an object in memory
    label = f"Snapshot {stored.number}"
    if digest_of(stored) != stored.digest:
        raise SnapshotInvalid(
            "digest",
            f"{label} failed its digest check: its content no longer matches the SHA-256 "
            "recorded when it was taken, so it was changed afterwards. It cannot be restored.",
        )
    signer = signing.signer_for(stored.signature_algorithm)
    if signer is None:
        raise SnapshotInvalid(
            "signature",
            f"{label} failed its signature check: it is signed with "
            f"{stored.signature_algorithm!r}, which this portal cannot check.",
        )
    if not signer.verify(stored.digest, stored.signature):
        raise SnapshotInvalid(
            "signature",
            f"{label} failed its signature check: it was not signed with this portal's "
            "snapshot key (SNAPSHOT_SIGNING_KEY), or its digest was replaced. "
            "It cannot be restored.",
        )


def latest_snapshot(environment_id) -> Snapshot | None:
    return Snapshot.objects.filter(environment_id=environment_id).order_by("-number").first()
