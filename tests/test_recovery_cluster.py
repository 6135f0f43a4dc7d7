"""Recovery on the real local control plane with real worker and watcher processes:
automatic snapshots, a vanished namespace restored within the RTO (or failed with a
clear reason without ``recovery.auto``), and a restore that applies exactly the
snapshot's manifests once however often it is asked for."""

from __future__ import annotations

import time

import pytest

from environments.catalog.publishing import publish_blueprint
from environments.kube import cluster
from environments.lifecycle import services
from environments.lifecycle.states import State
from environments.models import Environment, RecoveryRecord, Snapshot
from environments.recovery.restore import restore, retarget
from tests.conftest import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

RTO_SECONDS = 120


def preview_with(sample_blueprints, extra: str):
    version, _ = publish_blueprint(source=sample_blueprints["pr-preview"].source + extra)
    return version


def ready(environment_id, timeout: float = 120) -> Environment:
    def settled():
        environment = Environment.objects.get(pk=environment_id)
        assert environment.state != State.FAILED, environment.last_error
        return environment if environment.state == State.READY else None

    return wait_for(settled, timeout)


def first_snapshot(environment_id) -> Snapshot:
    # Taken by the job enqueued when it became ready (no one asked for it).
    return wait_for(
        lambda: Snapshot.objects.filter(environment_id=environment_id, number=1).first(), 60
    )


def delete_namespace(environment: Environment) -> None:
    assert cluster.delete(cluster.namespace_manifest(environment.namespace))


def test_a_vanished_namespace_is_restored_in_place_within_its_rto(owner, sample_blueprints, worker):
    version = preview_with(sample_blueprints, "recovery: {auto: true, rto: 2m, rpo: 1h}\n")
    environment = services.request_environment(user=owner, version=version)
    environment = ready(environment.pk)
    snapshot = first_snapshot(environment.pk)
    assert snapshot.reason == "ready"
    first_ready_at = environment.ready_at
    uid_before = cluster.get(cluster.namespace_manifest(environment.namespace))["metadata"]["uid"]

    started = time.monotonic()
    delete_namespace(environment)
    restored = wait_for(
        lambda: Environment.objects.filter(
            pk=environment.pk, state=State.READY, ready_at__gt=first_ready_at
        ).first(),
        RTO_SECONDS,
    )
    elapsed = time.monotonic() - started
    assert elapsed < RTO_SECONDS
    live = cluster.get(cluster.namespace_manifest(environment.namespace))
    assert live is not None and live["metadata"]["uid"] != uid_before  # really new
    assert restored.manifests == snapshot.manifests  # same row, same names
    record = RecoveryRecord.objects.get(environment=environment)
    assert (record.kind, record.ok, record.snapshot_id) == ("auto", True, snapshot.pk)
    assert 0 < record.seconds < elapsed
    messages = list(environment.events.values_list("message", flat=True))
    assert any(m.startswith("Restoring in place from snapshot 1 (automatically)") for m in messages)
    assert any(m.startswith("Restored from snapshot 1: ready") for m in messages)
    print(
        f"\nvanished namespace -> ready: {elapsed:.1f} s (recorded {record.seconds:.1f} s); "
        f"snapshot {snapshot.size_bytes} bytes, {len(snapshot.inventory)} objects"
    )
    # The restored revision is snapshotted too.
    wait_for(lambda: Snapshot.objects.filter(environment=environment, number=2).exists(), 60)


def test_without_recovery_auto_a_vanished_namespace_fails_with_a_clear_reason(
    owner, sample_blueprints, worker
):
    environment = services.request_environment(user=owner, version=sample_blueprints["pr-preview"])
    environment = ready(environment.pk)
    first_snapshot(environment.pk)
    delete_namespace(environment)
    failed = wait_for(
        lambda: Environment.objects.filter(pk=environment.pk, state=State.FAILED).first(), 90
    )
    assert failed.last_error.startswith(f"The namespace {environment.namespace} disappeared")
    assert "recovery.auto" in failed.last_error
    assert not RecoveryRecord.objects.exists()


def test_restoring_twice_with_one_key_makes_one_environment_applying_the_snapshot(
    owner, sample_blueprints, worker
):
    source = services.request_environment(
        user=owner,
        version=sample_blueprints["pr-preview"],
        parameters={"head_sha": "abc1234"},
    )
    source = ready(source.pk)
    snapshot = first_snapshot(source.pk)

    first = restore(snapshot, actor=owner, request_key="restore-1")
    again = restore(snapshot, actor=owner, request_key="restore-1")
    assert first.pk == again.pk
    restored = ready(first.pk)
    assert Environment.objects.filter(pk__in=[first.pk, again.pk]).count() == 1
    assert Environment.objects.count() == 2  # the source and one restored environment

    expected = retarget(
        snapshot.manifests,
        old_id=str(source.pk),
        new_id=str(restored.pk),
        old_name=source.name,
        new_name=restored.name,
        owner_id=str(owner.pk),
        team=source.team.slug,
        expires_at=restored.expires_at.isoformat(),
    )
    assert restored.manifests == expected
    # What is on the cluster is what was applied: every object, its spec as recorded.
    for manifest in expected:
        live = cluster.get(manifest)
        assert live is not None, cluster.describe(manifest)
        for key in ("spec", "data", "roleRef", "subjects"):
            if key in manifest and key != "spec":
                assert live[key] == manifest[key]
        if manifest["kind"] == "Deployment":
            containers = live["spec"]["template"]["spec"]["containers"]
            wanted = manifest["spec"]["template"]["spec"]["containers"]
            assert [c["image"] for c in containers] == [c["image"] for c in wanted]
            assert [c.get("env") for c in containers] == [c.get("env") for c in wanted]
    record = wait_for(lambda: RecoveryRecord.objects.filter(environment=restored, ok=True).first())
    assert record.kind == "restore" and record.seconds > 0
    print(f"\nrestore -> ready: {record.seconds:.1f} s")


def test_a_tampered_snapshot_is_not_restored_automatically(owner, sample_blueprints, worker):
    from django.db import connection, transaction

    version = preview_with(sample_blueprints, "recovery: {auto: true, rto: 2m}\n")
    environment = ready(services.request_environment(user=owner, version=version).pk)
    snapshot = first_snapshot(environment.pk)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            "UPDATE environments_snapshot SET images = '[\"evil:latest\"]'::jsonb WHERE id = %s",
            [snapshot.pk],
        )
    delete_namespace(environment)
    failed = wait_for(
        lambda: Environment.objects.filter(pk=environment.pk, state=State.FAILED).first(), 90
    )
    assert "could not be restored automatically" in failed.last_error
    assert "Snapshot 1 failed its digest check" in failed.last_error
    assert not cluster.namespace_exists(environment.namespace)  # nothing was applied
