"""Email and signed, retried team webhooks."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.db.models import Value

from environments.catalog.publishing import publish_blueprint
from environments.integrations import notifications
from environments.lib import egress
from environments.lifecycle import services
from environments.models import Webhook, WebhookDelivery
from tests.test_blueprints import GOOD


class Receiver:
    """A real HTTP server on loopback that records requests and answers ``status``."""

    def __init__(self, status: int):
        self.status = status
        self.requests: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.status)
                if receiver.status in (301, 302, 307, 308):
                    self.send_header("Location", "http://127.0.0.1:1/internal")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    # The receivers listen on loopback, which webhooks may only reach when allowed.
    settings.WEBHOOK_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]
    made = []

    def make(status=200):
        made.append(Receiver(status))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def environment(owner):
    version, _ = publish_blueprint(source=GOOD)
    return services.request_environment(user=owner, version=version)


def test_it_signs_webhooks_verifiably_with_the_shared_secret(environment, team, receiver):
    server = receiver(200)
    Webhook.objects.create(team=team, url=server.url, secret="s3cret")
    notifications.deliver(notifications.READY, str(environment.pk))
    delivery = WebhookDelivery.objects.get()
    assert notifications.send_webhook(delivery.pk) == "delivered (200)"

    headers, body = server.requests[0]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Ephemera-Signature"] == expected
    payload = json.loads(body)
    assert payload["text"].startswith("Ephemera: Ready:")
    assert payload["event"] == "ready"
    assert payload["environment"]["id"] == str(environment.pk)
    delivery.refresh_from_db()
    assert delivery.delivered_at is not None
    assert mail.outbox[-1].subject.startswith("Ready:")


def test_it_retries_a_failing_receiver_and_shows_the_failure(environment, team, receiver):
    server = receiver(500)
    Webhook.objects.create(team=team, url=server.url)
    notifications.deliver(notifications.FAILED, str(environment.pk))
    delivery = WebhookDelivery.objects.get()
    with pytest.raises(notifications.WebhookFailed):
        notifications.send_webhook(delivery.pk)
    with pytest.raises(notifications.WebhookFailed):
        notifications.send_webhook(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.failed
    assert delivery.attempts == 2
    assert delivery.last_status == 500
    assert "HTTP 500" in delivery.last_error

    # The receiver recovers: the next retry delivers.
    server.status = 204
    notifications.send_webhook(delivery.pk)
    delivery.refresh_from_db()
    assert not delivery.failed and delivery.attempts == 3


def test_it_lists_failed_deliveries_for_admins(
    client, environment, team, receiver, django_user_model
):
    server = receiver(503)
    Webhook.objects.create(team=team, url=server.url)
    notifications.deliver(notifications.EXPIRING, str(environment.pk))
    with pytest.raises(notifications.WebhookFailed):
        notifications.send_webhook(WebhookDelivery.objects.get().pk)
    admin = django_user_model.objects.create_superuser("root@example.com", "root@example.com", "pw")
    client.force_login(admin)
    page = client.get("/admin/environments/webhookdelivery/?outcome=failed")
    assert page.status_code == 200
    assert "HTTP 503" in page.content.decode()


def test_it_emails_approvers_about_new_requests(owner, approver):
    version, _ = publish_blueprint(
        source=GOOD.replace("purpose: demo", "purpose: demo\napproval: required")
    )
    environment = services.request_environment(user=owner, version=version)
    notifications.deliver(notifications.REQUESTED, str(environment.pk))
    message = mail.outbox[-1]
    assert approver.email in message.to
    assert message.subject.startswith("Approval needed:")


def test_it_does_not_follow_a_webhook_redirect(environment, team, receiver):
    server = receiver(302)
    Webhook.objects.create(team=team, url=server.url)
    notifications.deliver(notifications.READY, str(environment.pk))
    delivery = WebhookDelivery.objects.get()
    with pytest.raises(notifications.WebhookFailed):
        notifications.send_webhook(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.last_status == 302
    assert "redirect" in delivery.last_error


# --- Webhooks reach the internet, not the portal's own network (SSRF) -------------------


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.9", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # cloud metadata
        ("100.64.0.1", True),  # carrier-grade NAT
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("::1", True),
        ("fd00::1", True),
        ("fe80::1%eth0", True),
        ("::ffff:10.0.0.1", True),
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_it_refuses_internal_addresses_for_webhooks(address, refused):
    assert (egress.refused_address(address) is not None) is refused


def test_it_allows_internal_networks_an_operator_lists(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = [ipaddress.ip_network("10.20.0.0/16")]
    assert egress.refused_address("10.20.3.4") is None
    assert "10.21.0.1 is an internal address" in egress.refused_address("10.21.0.1")


def test_it_refuses_a_webhook_to_an_internal_address_before_sending(
    environment, team, receiver, settings
):
    server = receiver(200)
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    Webhook.objects.create(team=team, url=server.url)
    notifications.deliver(notifications.READY, str(environment.pk))
    delivery = WebhookDelivery.objects.get()
    with pytest.raises(notifications.WebhookFailed, match="127.0.0.1 is an internal address"):
        notifications.send_webhook(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.failed and delivery.attempts == 1
    assert "internal address" in delivery.last_error
    assert server.requests == []


def test_it_checks_the_address_it_actually_connected_to(receiver, settings):
    # A DNS name passes the URL check; the connection itself is checked after lookup,
    # so a name that resolves to an internal address is refused with nothing sent.
    server = receiver(200)
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    with pytest.raises(OSError, match="refused: 127.0.0.1 is an internal address"):
        egress.opener.open(server.url, data=b"{}", timeout=5)
    assert server.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8000/admin/",
        "http://[::1]/x",
        "ftp://hooks.example.com/x",
    ],
)
def test_it_refuses_an_internal_webhook_url_in_the_admin(client, team, django_user_model, url):
    admin = django_user_model.objects.create_superuser("root@example.com", "root@example.com", "pw")
    client.force_login(admin)
    response = client.post(
        "/admin/environments/webhook/add/",
        {"team": team.pk, "url": url, "secret": "s", "events": "[]", "active": "on"},
    )
    assert response.status_code == 200  # the form again, with the error
    body = response.content.decode()
    assert "Webhooks cannot go to this URL" in body or "Enter a valid URL" in body
    assert not Webhook.objects.exists()


# --- Secrets the portal must read back are encrypted at rest ----------------------------


def _stored_secret(webhook) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM environments_webhook WHERE id = %s", [webhook.pk])
        return cursor.fetchone()[0]


def test_it_encrypts_webhook_secrets_at_rest(team):
    webhook = Webhook.objects.create(team=team, url="https://hooks.example.com/x", secret="s3cret")
    stored = _stored_secret(webhook)
    assert stored.startswith("fernet:")
    assert "s3cret" not in stored
    assert Webhook.objects.get(pk=webhook.pk).secret == "s3cret"


def test_it_reads_a_secret_stored_before_encryption(team):
    webhook = Webhook.objects.create(team=team, url="https://hooks.example.com/x")
    Webhook.objects.filter(pk=webhook.pk).update(secret=Value("legacy-plain"))
    assert Webhook.objects.get(pk=webhook.pk).secret == "legacy-plain"


def test_it_reads_secrets_across_a_secret_key_rotation(team, settings):
    webhook = Webhook.objects.create(team=team, url="https://hooks.example.com/x", secret="s3cret")
    old = settings.SECRET_KEY
    settings.SECRET_KEY = "n" * 20 + "ew-key-with-enough-different-characters-0123456789"
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY_FALLBACKS"):
        Webhook.objects.get(pk=webhook.pk)
    settings.SECRET_KEY_FALLBACKS = [old]
    assert Webhook.objects.get(pk=webhook.pk).secret == "s3cret"


def test_it_queues_each_webhook_delivery_with_its_retry_schedule(
    environment, team, receiver, django_capture_on_commit_callbacks
):
    # RQ retries a failing delivery 4 more times, after 10 s, 1 min, 5 min and 15 min.
    import django_rq

    queue = django_rq.get_queue("default")
    queue.empty()
    Webhook.objects.create(team=team, url=receiver(200).url)
    with django_capture_on_commit_callbacks(execute=True):  # django-rq enqueues on commit
        notifications.deliver(notifications.READY, str(environment.pk))
    delivery = WebhookDelivery.objects.get()
    jobs = [job for job in queue.get_jobs() if job.func_name == "environments.tasks.send_webhook"]
    assert len(jobs) == 1
    job = jobs[0]
    assert job.args == (delivery.pk,)
    assert job.retries_left == 4
    assert job.retry_intervals == [10, 60, 300, 900]
    queue.empty()
