"""Email and signed, retried team webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail

from environments import notifications, services
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
def receiver():
    made = []

    def make(status=200):
        made.append(Receiver(status))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def environment(owner):
    version, _ = services.publish_blueprint(source=GOOD)
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
    version, _ = services.publish_blueprint(
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
