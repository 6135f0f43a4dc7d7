"""Smaller security points: SSRF through IPv6 forms of IPv4, webhook URLs in logs and
the audit log, the reaper against a concurrent extension, TRUNCATE of the audit log,
the session idle timeout, and which namespaces the orphan cleanup may delete."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError
from django.utils import timezone

from environments.lib.egress import masked_url, refused_address
from environments.lifecycle import services, upkeep
from environments.lifecycle.states import State
from environments.models import AuditEvent, Environment, Webhook, WebhookDelivery
from tests.conftest import client_for

# --- SSRF: IPv4 inside IPv6 -----------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254 (cloud metadata)
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "::10.0.0.1",  # IPv4-compatible
        "::127.0.0.1",
        "::ffff:10.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
    ],
)
def test_ipv6_forms_of_internal_ipv4_addresses_are_refused(address, settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    assert refused_address(address), address


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "8.8.8.8"])
def test_ipv6_forms_of_public_ipv4_addresses_are_allowed(address, settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    assert refused_address(address) is None


# --- webhook URLs are credentials -------------------------------------------------------

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX"


def test_masked_url_keeps_only_scheme_and_host():
    assert masked_url(SLACK) == "https://hooks.slack.com/…"
    assert masked_url("https://relay.example.com:8443") == "https://relay.example.com:8443"
    assert "secret" not in masked_url("https://user:secret@example.com/x?token=secret")


@pytest.mark.django_db
def test_webhook_urls_are_masked_in_the_audit_log(portal_admin, team):
    portal_admin.is_staff = portal_admin.is_superuser = True
    portal_admin.save()
    client = client_for(portal_admin)
    response = client.post(
        "/admin/environments/webhook/add/",
        {"team": team.pk, "url": SLACK, "secret": "signing-secret", "events": "[]", "active": "on"},
    )
    assert response.status_code == 302, response.content[:2000]
    hook = Webhook.objects.get()
    assert hook.url == SLACK  # stored whole, it is needed to deliver
    entry = AuditEvent.objects.get(action="webhook.add")
    assert "XXXXsecretXXXX" not in str(entry.after)
    assert "XXXXsecretXXXX" not in entry.object_repr
    assert entry.after["url"] == "https://hooks.slack.com/…"


@pytest.mark.django_db
def test_webhook_urls_are_masked_in_logs_and_errors(team, caplog, settings):
    from environments.integrations import notifications

    settings.WEBHOOK_ALLOWED_NETWORKS = []
    hook = Webhook.objects.create(team=team, url="http://10.1.2.3/services/T0/B0/XXXXsecretXXXX")
    delivery = WebhookDelivery.objects.create(webhook=hook, event="ready", payload={})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(notifications.WebhookFailed) as caught:
        notifications.send_webhook(delivery.pk)
    assert "XXXXsecretXXXX" not in str(caught.value)
    assert "XXXXsecretXXXX" not in caplog.text
    delivery.refresh_from_db()
    assert "XXXXsecretXXXX" not in delivery.last_error
    assert "XXXXsecretXXXX" not in str(delivery)
    assert "XXXXsecretXXXX" not in str(hook)


# --- the reaper and a concurrent extension --------------------------------------------


@pytest.mark.django_db
def test_an_extension_between_the_reapers_query_and_its_teardown_wins(env, owner, monkeypatch):
    Environment.objects.filter(pk=env.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    real_delete = services.delete_environment
    extended = []

    def extend_then_delete(**kwargs):
        # The owner's extension commits after the reaper picked the row, before it moves it.
        services.extend_environment(
            environment=Environment.objects.get(pk=env.pk),
            user=owner,
            seconds=3600,
            reason="the demo runs late",
        )
        extended.append(True)
        return real_delete(**kwargs)

    monkeypatch.setattr(services, "delete_environment", extend_then_delete)
    assert upkeep.reap_expired() == 0
    assert extended == [True]
    env.refresh_from_db()
    assert env.state == State.READY
    assert env.expires_at > timezone.now()
    # Without the extension the same reaper tears it down.
    monkeypatch.setattr(services, "delete_environment", real_delete)
    Environment.objects.filter(pk=env.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert upkeep.reap_expired() == 1
    env.refresh_from_db()
    assert env.state == State.TEARING_DOWN


# --- the audit log refuses TRUNCATE ---------------------------------------------------------


@pytest.mark.django_db
def test_the_audit_log_refuses_truncate(owner):
    from environments.governance import audit

    audit.record(actor=owner, action="test.action", object_type="thing", object_id="1")
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("TRUNCATE environments_auditevent")
    assert AuditEvent.objects.filter(action="test.action").exists()


# --- session idle timeout ------------------------------------------------------------------


@pytest.mark.django_db
def test_an_idle_session_is_signed_out(owner, settings):
    settings.SESSION_IDLE_MINUTES = 30
    client = client_for(owner)
    assert client.get("/").status_code == 200
    session = client.session
    session["last_activity"] = time.time() - 31 * 60
    session.save()
    response = client.get("/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_an_active_session_stays_signed_in(owner, settings):
    settings.SESSION_IDLE_MINUTES = 30
    client = client_for(owner)
    session = client.session
    session["last_activity"] = time.time() - 29 * 60
    session.save()
    assert client.get("/").status_code == 200
    # The request counted as activity: the clock starts again.
    assert client.session["last_activity"] > time.time() - 60
    assert client.get("/").status_code == 200


# --- orphan cleanup only touches eph- namespaces -----------------------------------------


@pytest.mark.cluster
@pytest.mark.django_db
def test_orphan_cleanup_needs_the_eph_prefix_as_well_as_the_label(on_cluster, settings):
    from environments.kube import cluster

    name = f"not-eph-{uuid.uuid4().hex[:8]}"
    labels = {"app.kubernetes.io/managed-by": "ephemera"}
    labels["ephemera.io/instance"] = settings.EPHEMERA_INSTANCE
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    }
    cluster.apply(manifest)
    try:
        listed = {ns.name for ns in cluster.list_managed_namespaces()}
        assert name not in listed
    finally:
        cluster.delete(manifest)
