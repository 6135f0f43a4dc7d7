"""Restore drills on the local control plane (issue 15): a drill run on demand restores
the latest snapshot into a scratch environment without public URLs, records its
recovery time and shows it on the Recovery page; a drill of a tampered snapshot fails
with the check named and tells the blueprint's owners. Jobs run in a burst worker and
the watcher's decisions as synchronous passes (tests/test_provisioning.py)."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import django_rq
import pytest
from django.db import connection, transaction
from django.utils import timezone

from environments.access.tokens import create_token
from environments.catalog.publishing import publish_blueprint
from environments.integrations import notifications
from environments.lifecycle import services
from environments.lifecycle.states import State
from environments.lifecycle.watcher import reconcile_once
from environments.models import ApiToken, Drill, Environment, RecoveryRecord
from environments.recovery import drills
from environments.recovery.snapshots import take_snapshot
from tests.conftest import client_for, make_user, wait_for
from tests.test_provisioning import run_worker, settle

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("on_cluster"),
]

SHOP = textwrap.dedent(
    """\
    name: drilled
    title: Drilled shop
    purpose: demo
    ttl: {default: 1h, max: 4h}
    recovery: {rto: 2m, rpo: 1h}
    drill: {every: 7d}
    components:
      - name: web
        image: nginxinc/nginx-unprivileged:1.27
        port: 8080
        resources: {cpu: 50m, memory: 64Mi}
        expose: true
        volume: {size: 1Gi, path: /var/lib/shop, snapshot: true}
      - name: api
        image: ghcr.io/example/api:1.0
        port: 9000
        resources: {cpu: 50m, memory: 64Mi}
      - name: db
        image: postgres:16
        port: 5432
        resources: {cpu: 50m, memory: 64Mi}
    """
)


@pytest.fixture
def publisher(team):
    from environments.models import Membership

    user = make_user("publisher@example.com")
    Membership.objects.create(team=team, user=user)
    return user


@pytest.fixture
def drilled(publisher):
    version, _ = publish_blueprint(source=SHOP, actor=publisher)
    return version


@pytest.fixture
def snapshotted(owner, team, drilled):
    environment = services.request_environment(user=owner, version=drilled, team=team)
    settle(environment)
    assert environment.state == State.READY, environment.last_error
    snapshot = take_snapshot(environment.pk, reason="manual", actor=owner)
    yield environment, snapshot
    for row in Environment.objects.exclude(state__in=[State.DELETED, State.REJECTED]):
        services.delete_environment(environment=row, user=None)
    settle(*Environment.objects.all(), states=(State.DELETED, State.REJECTED))


def deliver_queued_drill_notifications() -> None:
    """Run the queued drill notifications here (a burst worker forks, and the test's
    mail outbox is this process's)."""
    queue = django_rq.get_queue("default")
    jobs = [j for j in queue.jobs if j.func_name.endswith("deliver_drill_notification")]
    assert jobs, "no drill notification was queued"
    for job in jobs:
        notifications.deliver_drill(*job.args)
        job.delete()


def finished(drill: Drill, timeout: float = 120) -> Drill:
    """Run jobs and watcher passes until the drill has a result."""

    def done():
        run_worker()
        reconcile_once()
        return Drill.objects.exclude(result=Drill.Result.RUNNING).filter(pk=drill.pk).first()

    return wait_for(done, timeout, interval=0.2)


def test_it_runs_a_drill_on_demand_and_shows_its_rto(snapshotted, publisher, kube_client):
    environment, snapshot = snapshotted
    browser = client_for(publisher)
    page = browser.get("/recovery/")
    assert page.status_code == 200
    assert "no drill yet" in page.content.decode()

    answer = browser.post(
        "/recovery/drills/",
        {"blueprint": "drilled", "environment": str(environment.pk), "key": "k1"},
    )
    assert answer.status_code == 302
    drill = Drill.objects.get()
    assert drill.result == Drill.Result.RUNNING
    assert drill.snapshot_id == snapshot.pk
    scratch = drill.environment
    # A scratch environment with no public URLs, its volume made from the snapshot's.
    assert scratch.urls == {}
    assert "Ingress" not in [m["kind"] for m in scratch.manifests]
    assert scratch.namespace != environment.namespace
    # The same request again is the same drill.
    browser.post("/recovery/drills/", {"blueprint": "drilled", "key": "k1"})
    assert Drill.objects.count() == 1

    drill = finished(drill)
    assert drill.result == Drill.Result.PASSED, drill.reason
    assert drill.seconds is not None and 0 < drill.seconds <= drill.rto_seconds == 120
    assert "all 10 objects" in drill.reason or "objects of the snapshot's inventory" in drill.reason
    assert "1 volumes from their snapshots" in drill.reason
    record = RecoveryRecord.objects.get(kind=RecoveryRecord.Kind.DRILL)
    assert record.ok and record.seconds == pytest.approx(drill.seconds, abs=0.5)
    # Torn down afterwards.
    settle(scratch, states=(State.DELETED,))
    # On the Recovery page: the drill's result and the measured p50/p95.
    page = browser.get("/recovery/").content.decode()
    assert "Passed" in page
    assert f"{drill.seconds:.1f} s / {drill.seconds:.1f} s" in page
    assert "VolumeSnapshots" in page


def test_a_drill_of_a_tampered_snapshot_fails_and_tells_the_owners(
    snapshotted, publisher, mailoutbox
):
    environment, snapshot = snapshotted
    with transaction.atomic(), connection.cursor() as cursor:
        # The table refuses updates (a trigger); an attacker with the database does not.
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            "UPDATE environments_snapshot SET manifests = manifests || '[]'::jsonb, "
            "images = '[\"evil.example.com/miner:1\"]'::jsonb WHERE id = %s",
            [snapshot.pk],
        )
    _, secret = create_token(user=publisher, name="ci", scope=ApiToken.Scope.WRITE, days=1)
    from django.test import Client

    answer = Client().post(
        "/api/v1/drills",
        {"blueprint": "drilled"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": "broken-1"},
    )
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["result"] == "failed"
    assert "digest check" in body["reason"]
    drill = Drill.objects.get()
    assert drill.environment is None  # nothing was restored
    deliver_queued_drill_notifications()
    assert [m.to for m in mailoutbox] == [["publisher@example.com"]]
    assert "Restore drill failed: drilled" in mailoutbox[0].subject
    assert "digest check" in mailoutbox[0].body
    page = client_for(publisher).get("/recovery/").content.decode()
    assert "Failed" in page and "digest check" in page


def test_a_drill_not_ready_by_its_rto_fails(snapshotted, publisher, mailoutbox):
    environment, snapshot = snapshotted
    drill = drills.start_drill(blueprint="drilled", actor=publisher, key="late")
    # As if it had started longer ago than its RTO (2m) and is still not ready.
    Drill.objects.filter(pk=drill.pk).update(started_at=timezone.now() - timedelta(minutes=3))
    assert drills.fail_overdue() == 1
    drill.refresh_from_db()
    assert drill.result == Drill.Result.FAILED
    assert "Not ready within the recovery time objective (2m" in drill.reason
    assert Environment.objects.get(pk=drill.environment_id).state == State.TEARING_DOWN
    deliver_queued_drill_notifications()
    assert [m.subject for m in mailoutbox] == ["Restore drill failed: drilled"]
    assert "Not ready within" in mailoutbox[0].body


def test_the_schedule_starts_one_drill_per_period(snapshotted):
    started = drills.run_due()
    assert len(started) == 1
    assert drills.run_due() == []  # the period's drill ran already
    drill = Drill.objects.get()
    assert drill.trigger == Drill.Trigger.SCHEDULED
    assert finished(drill).result == Drill.Result.PASSED


def test_others_get_404(snapshotted, teammate, outsider, portal_admin):
    for user in (teammate, outsider):
        browser = client_for(user)
        assert browser.get("/recovery/").status_code == 404
        assert browser.post("/recovery/drills/", {"blueprint": "drilled"}).status_code == 404
    assert client_for(portal_admin).get("/recovery/").status_code == 200
    assert not Drill.objects.exists()
