"""Snapshots without worker processes: taking, immutability, verification (digest and
signature), restore's checks and idempotency, retention, the blueprint fields, and the
API's permissions. The cluster is real (snapshots read the objects' uids from it)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.db.utils import DatabaseError
from django.utils import timezone

from environments.access import tokens
from environments.catalog.publishing import publish_blueprint
from environments.catalog.spec import BlueprintInvalid, load_blueprint
from environments.kube.objects import build_manifests, urls
from environments.lib.errors import ServiceError
from environments.lifecycle.provisioning import environment_spec
from environments.lifecycle.states import State
from environments.models import AuditEvent, Environment, RecoveryRecord, Snapshot
from environments.recovery import retention
from environments.recovery.restore import restore, retarget
from environments.recovery.snapshots import (
    SnapshotInvalid,
    canonical,
    take_snapshot,
    verify,
)
from tests.conftest import BLUEPRINTS, cli_runner
from tests.factories import make_environment

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("on_cluster"),
]


def ready_environment(owner, team, version) -> Environment:
    """A ready environment with rendered manifests (rows only: nothing applied)."""
    from environments.catalog.rendering import resolve_parameters

    environment = make_environment(
        owner=owner,
        team=team,
        version=version,
        state=State.READY,
        parameters=resolve_parameters(version.blueprint_spec, {}),
    )
    spec = environment_spec(environment)
    Environment.objects.filter(pk=environment.pk).update(
        manifests=build_manifests(spec), urls=urls(spec), ready_at=timezone.now()
    )
    environment.refresh_from_db()
    return environment


@pytest.fixture
def preview(sample_blueprints):
    return sample_blueprints["pr-preview"]


def tamper(sql: str, params) -> None:
    """Edit a stored snapshot the way a person with database access could: past the
    immutability trigger (triggers do not fire for a superuser in replica mode)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)


def test_it_takes_numbered_snapshots_with_a_digest_and_a_signature(owner, team, preview):
    environment = ready_environment(owner, team, preview)
    first = take_snapshot(environment.pk, reason="manual", actor=owner)
    second = take_snapshot(environment.pk, reason="manual", actor=owner)
    assert (first.number, second.number) == (1, 2)
    assert first.blueprint == "pr-preview" and first.blueprint_version_number == preview.number
    assert first.manifests == environment.manifests
    assert first.images == ["ghcr.io/stefanprodan/podinfo:6.7.1"]
    assert {(item["kind"], item["name"]) for item in first.inventory} >= {
        ("Namespace", environment.namespace),
        ("Deployment", "app"),
    }
    assert all(len(item["spec_sha256"]) == 64 for item in first.inventory)
    assert first.volumes == []
    assert first.size_bytes == len(canonical(first.content())) > 1000
    assert first.signature_algorithm == "hmac-sha256" and len(first.signature) == 64
    assert first.storage_cost >= 0
    verify(first)
    verify(second)
    assert AuditEvent.objects.filter(action="snapshot.take").count() == 2
    assert environment.events.filter(message__startswith="Snapshot 2 taken").exists()


def test_the_same_revision_is_snapshotted_once(owner, team, preview):
    environment = ready_environment(owner, team, preview)
    key = f"ready:{environment.ready_at.isoformat()}"
    first = take_snapshot(environment.pk, reason="ready", source_key=key)
    again = take_snapshot(environment.pk, reason="ready", source_key=key)
    assert first.pk == again.pk
    assert Snapshot.objects.filter(environment=environment).count() == 1


def test_only_a_ready_environment_is_snapshotted(owner, team, preview):
    environment = make_environment(owner=owner, team=team, version=preview, state=State.FAILED)
    with pytest.raises(ServiceError, match="Only a ready environment"):
        take_snapshot(environment.pk, reason="manual", actor=owner)


def test_a_snapshot_cannot_be_changed_by_the_model_or_by_sql(owner, team, preview):
    snapshot = take_snapshot(ready_environment(owner, team, preview).pk, reason="manual")
    snapshot.reason = "other"
    with pytest.raises(PermissionError):
        snapshot.save()
    with pytest.raises(PermissionError):
        Snapshot.objects.filter(pk=snapshot.pk).update(reason="other")
    with (
        pytest.raises(DatabaseError, match="immutable"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "UPDATE environments_snapshot SET manifests = '[]'::jsonb WHERE id = %s",
            [snapshot.pk],
        )
    verify(snapshot)  # unchanged


@pytest.mark.parametrize(
    ("sql", "check"),
    [
        (
            "UPDATE environments_snapshot SET manifests = jsonb_set(manifests, "
            "'{0,metadata,labels,evil}', '\"yes\"') WHERE id = %s",
            "digest",
        ),
        ("UPDATE environments_snapshot SET signature = repeat('0', 64) WHERE id = %s", "signature"),
    ],
)
def test_a_tampered_snapshot_is_refused_naming_the_check(owner, team, preview, sql, check):
    environment = ready_environment(owner, team, preview)
    snapshot = take_snapshot(environment.pk, reason="manual")
    tamper(sql, [snapshot.pk])
    with pytest.raises(SnapshotInvalid, match=f"failed its {check} check") as refused:
        verify(snapshot)
    assert refused.value.check == check
    before = Environment.objects.count()
    with pytest.raises(SnapshotInvalid, match=f"failed its {check} check"):
        restore(snapshot, actor=owner, request_key="k1")
    assert Environment.objects.count() == before  # nothing created, nothing applied
    refusal = AuditEvent.objects.get(action="snapshot.restore_refused")
    assert refusal.after["check"] == check
    assert environment.events.filter(message__startswith="Restore refused").exists()


def test_a_snapshot_signed_with_another_key_is_refused(owner, team, preview, settings):
    snapshot = take_snapshot(ready_environment(owner, team, preview).pk, reason="manual")
    settings.SNAPSHOT_SIGNING_KEY = "another-key-another-key-another-key-1234"
    with pytest.raises(SnapshotInvalid, match="signature check"):
        verify(snapshot)


def test_restore_twice_with_one_key_gives_one_environment_with_the_snapshots_manifests(
    owner, team, preview
):
    source = ready_environment(owner, team, preview)
    snapshot = take_snapshot(source.pk, reason="manual", actor=owner)
    first = restore(snapshot, actor=owner, request_key="same-key")
    again = restore(snapshot, actor=owner, request_key="same-key")
    assert first.pk == again.pk
    assert Environment.objects.exclude(pk=source.pk).count() == 1
    assert first.state == State.APPROVED
    assert first.manifests == retarget(
        snapshot.manifests,
        old_id=str(source.pk),
        new_id=str(first.pk),
        old_name=source.name,
        new_name=first.name,
        owner_id=str(owner.pk),
        team=source.team.slug,
        expires_at=first.expires_at.isoformat(),
    )
    # Only names differ: the old environment's name and id appear nowhere.
    text = canonical(first.manifests).decode()
    assert source.name not in text and str(source.pk) not in text
    assert first.manifests[0]["metadata"]["name"] == first.namespace
    assert [m["kind"] for m in first.manifests] == [m["kind"] for m in snapshot.manifests]
    assert AuditEvent.objects.filter(action="snapshot.restore").count() == 1
    record = RecoveryRecord.objects.get()
    assert (record.kind, record.ok, record.snapshot_id) == ("restore", None, snapshot.pk)
    # Another key is another restore; a key reused for another snapshot is refused.
    other = restore(snapshot, actor=owner, request_key="other-key")
    assert other.pk != first.pk
    second = take_snapshot(source.pk, reason="manual", actor=owner)
    with pytest.raises(ServiceError, match="already used"):
        restore(second, actor=owner, request_key="same-key")


def test_restore_checks_quota_before_anything(owner, team, preview):
    from environments.models import Quota

    source = ready_environment(owner, team, preview)
    snapshot = take_snapshot(source.pk, reason="manual", actor=owner)
    Quota.objects.create(team=team, max_environments=1)
    with pytest.raises(ServiceError):
        restore(snapshot, actor=owner, request_key="q")
    assert Environment.objects.count() == 1


def test_only_who_may_change_the_environment_restores(owner, teammate, outsider, team, preview):
    from django.core.exceptions import PermissionDenied

    snapshot = take_snapshot(ready_environment(owner, team, preview).pk, reason="manual")
    for person in (teammate, outsider):
        with pytest.raises(PermissionDenied):
            restore(snapshot, actor=person, request_key="x")
        with pytest.raises(PermissionDenied):
            take_snapshot(snapshot.environment_id, reason="manual", actor=person)


def with_retention(sample_blueprints, retention_yaml: str):
    source = sample_blueprints["pr-preview"].source + retention_yaml
    version, _ = publish_blueprint(source=source)
    return version


def test_pruning_keeps_exactly_the_configured_snapshots(owner, team, sample_blueprints):
    version = with_retention(sample_blueprints, "retention: {keep: 3, max_age: 1h}\n")
    assert version.blueprint_spec.snapshot_retention.keep == 3
    environment = ready_environment(owner, team, version)
    now = timezone.now()
    ages = [timedelta(hours=h) for h in (5, 4, 3, 0.5, 0.4, 2)]  # numbers 1..6
    made = {}
    for number, age in enumerate(ages, start=1):
        template = take_snapshot(environment.pk, reason="manual")
        tamper(
            "UPDATE environments_snapshot SET created_at = %s WHERE id = %s",
            [now - age, template.pk],
        )
        made[number] = template.pk
    # Kept: among the last 3 (6, 5, 4) those younger than 1 h (5, 4), and always the
    # newest of a live environment (6, 2 h old).
    assert retention.prune(now) == 3
    assert sorted(environment.snapshots.values_list("number", flat=True)) == [4, 5, 6]
    pruned = AuditEvent.objects.filter(action="snapshot.prune")
    assert sorted(e.before["number"] for e in pruned) == [1, 2, 3]
    assert {e.after["reason"] for e in pruned} == {"beyond the last 3 kept"}
    assert retention.prune(now) == 0  # nothing more: exact, and idempotent

    # Once the environment is deleted, its newest is no longer protected from age.
    Environment.objects.filter(pk=environment.pk).update(state=State.DELETED)
    assert retention.prune(now) == 1
    assert sorted(environment.snapshots.values_list("number", flat=True)) == [4, 5]


@pytest.mark.parametrize(
    ("yaml", "problem"),
    [
        ("retention: {keep: 0}", "retention.keep: 0 is not a whole number from 1 to 1000"),
        ("retention: {keep: 3, max_age: soon}", "retention.max_age:"),
        ("retention: {keep: 3, forever: true}", "retention.forever:"),
        ("recovery: {auto: yes please}", "recovery.auto: 'yes please' is not true or false"),
        ("recovery: {auto: true, rto: fast}", "recovery.rto:"),
        ("recovery: [auto]", "recovery:"),
    ],
)
def test_the_recovery_fields_are_checked_with_one_line_errors(yaml, problem):
    source = (BLUEPRINTS / "pr-preview.yaml").read_text() + yaml + "\n"
    with pytest.raises(BlueprintInvalid) as invalid:
        load_blueprint(source)
    lines = str(invalid.value).splitlines()
    assert any(line.startswith(problem) for line in lines), lines


def test_the_recovery_fields_load_with_defaults_and_keep_old_digests(sample_blueprints):
    spec = load_blueprint(
        (BLUEPRINTS / "pr-preview.yaml").read_text()
        + "recovery: {auto: true, rto: 2m, rpo: 1h}\nretention: {keep: 5, max_age: 30d}\n"
    )
    assert (spec.recovery_objectives.auto, spec.recovery_objectives.rto) == (True, 120)
    assert spec.recovery_objectives.rpo == 3600
    assert (spec.snapshot_retention.keep, spec.snapshot_retention.max_age) == (5, 30 * 86400)
    plain = sample_blueprints["pr-preview"].blueprint_spec
    assert plain.recovery is None and not plain.recovery_objectives.auto
    assert "recovery" not in plain.to_dict() and "retention" not in plain.to_dict()


# --- the API ----------------------------------------------------------------------------


def api(client, method: str, path: str, token: str, **kwargs):
    return getattr(client, method)(
        f"/api/v1{path}",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        content_type="application/json",
        **kwargs,
    )


def test_the_api_takes_lists_reads_and_restores_snapshots(
    client, owner, teammate, outsider, team, preview
):
    environment = ready_environment(owner, team, preview)
    _, mine = tokens.create_token(user=owner, name="t", scope="write", days=1)
    taken = api(client, "post", f"/environments/{environment.name}/snapshots", mine)
    assert taken.status_code == 201, taken.content
    snapshot_id = taken.json()["id"]
    assert taken.json()["number"] == 1 and taken.json()["currency"] == settings.COST_CURRENCY
    listed = api(client, "get", f"/environments/{environment.pk}/snapshots", mine)
    assert [s["id"] for s in listed.json()] == [snapshot_id]
    detail = api(client, "get", f"/snapshots/{snapshot_id}", mine).json()
    assert detail["manifests"] == environment.manifests and detail["inventory"]

    no_key = api(client, "post", f"/snapshots/{snapshot_id}/restore", mine, data={})
    assert no_key.status_code == 422 and "request key" in no_key.json()["detail"]
    key = str(uuid.uuid4())
    first = api(
        client, "post", f"/snapshots/{snapshot_id}/restore", mine, data={}, HTTP_IDEMPOTENCY_KEY=key
    )
    assert first.status_code == 201, first.content
    again = api(
        client, "post", f"/snapshots/{snapshot_id}/restore", mine, data={"request_key": key}
    )
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]

    # Tampered: 409 naming the check.
    tamper(
        'UPDATE environments_snapshot SET parameters = \'{"image_tag": "evil"}\'::jsonb '
        "WHERE id = %s",
        [snapshot_id],
    )
    refused = api(
        client, "post", f"/snapshots/{snapshot_id}/restore", mine, data={"request_key": "new"}
    )
    assert refused.status_code == 409
    assert "digest check" in refused.json()["detail"]

    # Outsiders see nothing (404); a teammate sees but may not change (403).
    _, theirs = tokens.create_token(user=outsider, name="t", scope="write", days=1)
    for method, path in [
        ("get", f"/environments/{environment.pk}/snapshots"),
        ("post", f"/environments/{environment.pk}/snapshots"),
        ("get", f"/snapshots/{snapshot_id}"),
        ("post", f"/snapshots/{snapshot_id}/restore"),
    ]:
        answer = api(client, method, path, theirs, data={"request_key": "x"})
        assert answer.status_code == 404, (method, path, answer.content)
    _, mate = tokens.create_token(user=teammate, name="t", scope="write", days=1)
    assert api(client, "get", f"/snapshots/{snapshot_id}", mate).status_code == 200
    for path in (f"/environments/{environment.pk}/snapshots", f"/snapshots/{snapshot_id}/restore"):
        assert api(client, "post", path, mate, data={"request_key": "y"}).status_code == 403


# --- the environment page ---------------------------------------------------------------


def test_the_environment_page_takes_lists_and_restores_snapshots(
    owner, teammate, outsider, team, preview
):
    from tests.conftest import client_for

    environment = ready_environment(owner, team, preview)
    page = client_for(owner)
    shown = page.get(f"/environments/{environment.pk}/")
    assert b"Take a snapshot" in shown.content and b"None yet" in shown.content
    taken = page.post(f"/environments/{environment.pk}/snapshots/", follow=True)
    assert b"Snapshot 1 taken." in taken.content
    snapshot = environment.snapshots.get()
    assert snapshot.digest[:12].encode() in taken.content
    assert b"/month" in taken.content  # its storage cost, from the rate card

    key = "page-key-1"
    first = page.post(f"/snapshots/{snapshot.pk}/restore/", {"request_key": key})
    again = page.post(f"/snapshots/{snapshot.pk}/restore/", {"request_key": key})
    assert first.status_code == again.status_code == 302
    assert first["Location"] == again["Location"]
    assert Environment.objects.count() == 2

    for person, status in ((outsider, 404), (teammate, 403)):
        other = client_for(person)
        assert other.post(f"/environments/{environment.pk}/snapshots/").status_code == status
        answer = other.post(f"/snapshots/{snapshot.pk}/restore/", {"request_key": "z"})
        assert answer.status_code == status
    assert environment.snapshots.count() == 1  # the teammate's attempt was refused
    assert (
        b"Take a snapshot"
        not in client_for(teammate).get(f"/environments/{environment.pk}/").content
    )


# --- the CLI ----------------------------------------------------------------------------


def test_the_cli_snapshots_and_restores_once_per_key(live_server, owner, team, preview):
    environment = ready_environment(owner, team, preview)
    cli = cli_runner(live_server.url, owner, "/nonexistent")

    taken = cli("snapshot", environment.name)
    assert taken.returncode == 0, taken.stderr
    snapshot = environment.snapshots.get()
    assert f"Snapshot 1 of {environment.name}: {snapshot.pk}" in taken.stdout
    first = cli("restore", str(snapshot.pk), "--key", "cli-key")
    again = cli("restore", str(snapshot.pk), "--key", "cli-key")
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert first.stdout.split(" (")[0] == again.stdout.split(" (")[0]  # "Restoring into <name>"
    assert Environment.objects.count() == 2
    bad = cli("restore", "not-a-snapshot")
    assert bad.returncode == 2 and "is not a snapshot id" in bad.stderr  # usage
    tamper(
        "UPDATE environments_snapshot SET signature = repeat('1', 64) WHERE id = %s",
        [snapshot.pk],
    )
    refused = cli("restore", str(snapshot.pk), "--key", "cli-key-2")
    assert refused.returncode == 4 and "failed its signature check" in refused.stderr  # refused


def test_the_reconciler_closes_restores_the_watcher_did_not_see_end(owner, team, preview):
    from environments.recovery.restore import settle_unfinished

    snapshot = take_snapshot(ready_environment(owner, team, preview).pk, reason="manual")
    failed = restore(snapshot, actor=owner, request_key="a")
    ready = restore(snapshot, actor=owner, request_key="b")
    Environment.objects.filter(pk=failed.pk).update(state=State.FAILED, last_error="image pull")
    later = timezone.now() + timedelta(seconds=3)
    Environment.objects.filter(pk=ready.pk).update(state=State.READY, ready_at=later)
    assert settle_unfinished() == 2
    assert settle_unfinished() == 0
    lost = RecoveryRecord.objects.get(environment=failed)
    assert (lost.ok, lost.reason) == (False, "image pull")
    done = RecoveryRecord.objects.get(environment=ready)
    assert done.ok and done.seconds == pytest.approx((later - done.started_at).total_seconds())


def test_a_lost_namespace_is_restored_in_place_or_fails_saying_why(owner, team, sample_blueprints):
    from environments.recovery.healing import namespace_lost

    auto = with_retention(sample_blueprints, "recovery: {auto: true, rto: 2m}\n")
    without_snapshot = ready_environment(owner, team, auto)
    assert namespace_lost(without_snapshot.pk) == "failed"  # asks the cluster: it is gone
    without_snapshot.refresh_from_db()
    assert without_snapshot.state == State.FAILED
    assert without_snapshot.last_error.endswith("It could not be restored: it has no snapshot.")

    lost = ready_environment(owner, team, auto)
    snapshot = take_snapshot(lost.pk, reason="ready")
    assert namespace_lost(lost.pk, confirm=False) == "restored"
    assert namespace_lost(lost.pk, confirm=False) == "not ready"  # once per loss
    lost.refresh_from_db()
    assert lost.state == State.PROVISIONING and lost.manifests == snapshot.manifests
    record = RecoveryRecord.objects.get(environment=lost)
    assert (record.kind, record.ok) == ("auto", None)
    assert AuditEvent.objects.get(action="snapshot.restore").actor == "system"
