"""Issue 14, finding 2: extending cannot side-step approval.

An extension that takes an environment's total time to live past what its blueprint's
approval policy approves by itself becomes an extension request in the approval queue;
the environment keeps its current expiry until an approver decides.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from environments.access import tokens
from environments.catalog.publishing import publish_blueprint
from environments.integrations import notifications
from environments.lifecycle import services
from environments.lifecycle.services import ServiceError
from environments.lifecycle.states import State
from environments.models import AuditEvent, Environment
from tests.conftest import client_for
from tests.factories import make_environment
from tests.test_blueprints import GOOD

API = "/api/v1"
HOUR = 3600


def blueprint(policy: str, ttl: str = "{default: 4h, max: 5d}", extra: str = ""):
    source = GOOD.replace("purpose: demo", f"purpose: demo\napproval: {policy}\n{extra}").replace(
        "ttl: {default: 4h, max: 3d}", f"ttl: {ttl}"
    )
    version, _ = publish_blueprint(source=source)
    return version


def running(environment: Environment) -> Environment:
    """As if the provision job had made it ready (expiry as approved)."""
    Environment.objects.filter(pk=environment.pk).update(state=State.READY)
    return Environment.objects.get(pk=environment.pk)


def pending_of(environment):
    from environments.models import ExtensionRequest

    return ExtensionRequest.objects.get(environment=environment, state="pending")


def test_over_quota_auto_approved_8h_cannot_be_extended_to_5_days_without_an_approver(
    owner, approver
):
    # The finding's case: auto-approves up to 1d, so an 8 h request is approved at once.
    version = blueprint("over-quota", extra="auto_approve_ttl: 1d")
    environment = services.request_environment(user=owner, version=version, ttl_seconds=8 * HOUR)
    assert environment.state == State.APPROVED and environment.approved_by is None
    environment = running(environment)
    expires = environment.expires_at

    result = services.extend_environment(
        environment=environment, user=owner, seconds=5 * 24 * HOUR - 8 * HOUR, reason="Trade fair"
    )

    environment.refresh_from_db()
    assert environment.expires_at == expires  # keeps running until its current expiry
    assert environment.ttl == timedelta(hours=8) and environment.extension_count == 0
    extension = pending_of(environment)
    assert result.queued_extension == extension
    assert extension.requested_by == owner and extension.reason == "Trade fair"
    assert "auto-approve time" in extension.why
    entry = AuditEvent.objects.get(action="environment.extension_request")
    assert entry.after["extended_by_seconds"] == 5 * 24 * HOUR - 8 * HOUR
    assert environment.events.filter(message__contains="waiting for an approver").exists()

    # Approvers are told, like for other approvals.
    subject, body, recipients = notifications.message_for(
        notifications.EXTENSION_REQUESTED, environment
    )
    assert subject.startswith("Extension approval needed") and "Trade fair" in body
    assert approver.email in recipients and owner.email not in recipients

    # A second one while the first waits is refused with one line.
    with pytest.raises(ServiceError, match="already waiting for an approver"):
        services.extend_environment(
            environment=environment, user=owner, seconds=2 * 24 * HOUR, reason="x"
        )

    # The approver approves: now it is extended, and audited.
    services.approve_extension(extension=extension, approver=approver)
    environment.refresh_from_db()
    assert environment.expires_at == expires + timedelta(seconds=extension.seconds)
    assert environment.ttl == timedelta(days=5) and environment.extension_count == 1
    extension.refresh_from_db()
    assert extension.state == "approved" and extension.decided_by == approver
    approved = AuditEvent.objects.get(action="environment.extension_approve")
    assert approved.actor == approver.email and approved.after["requested_by"] == owner.email
    with pytest.raises(ServiceError, match="approved, not waiting"):
        services.approve_extension(extension=extension, approver=approver)


def test_required_approved_for_2h_then_extended_to_12h_needs_an_approver(owner, approver):
    # The benchmark: approved for 2 h by a person, then extended to 12 h.
    version = blueprint("required", ttl="{default: 2h, max: 1d}")
    environment = services.request_environment(user=owner, version=version, ttl_seconds=2 * HOUR)
    services.approve_environment(environment=environment, approver=approver)
    environment = running(environment)
    expires = environment.expires_at

    services.extend_environment(
        environment=environment, user=owner, seconds=10 * HOUR, reason="Overnight test"
    )
    environment.refresh_from_db()
    assert environment.expires_at == expires
    assert environment.ttl == timedelta(hours=2)
    extension = pending_of(environment)
    assert "always needs approval" in extension.why

    # Rejected: it keeps its expiry, and the requester reads why.
    with pytest.raises(ServiceError, match="Say why"):
        services.reject_extension(extension=extension, approver=approver, reason=" ")
    services.reject_extension(extension=extension, approver=approver, reason="Use staging")
    environment.refresh_from_db()
    assert environment.expires_at == expires
    assert environment.events.filter(message__contains="rejected by").exists()
    assert AuditEvent.objects.filter(action="environment.extension_reject").exists()
    subject, body, recipients = notifications.message_for(
        notifications.EXTENSION_REJECTED, environment
    )
    assert "Use staging" in body and recipients == [owner.email]


def test_an_extension_within_what_is_approved_automatically_applies_at_once(owner):
    version = blueprint("over-quota", extra="auto_approve_ttl: 1d")
    environment = running(
        services.request_environment(user=owner, version=version, ttl_seconds=8 * HOUR)
    )
    expires = environment.expires_at
    result = services.extend_environment(
        environment=environment, user=owner, seconds=4 * HOUR, reason="Demo moved"
    )
    assert result.queued_extension is None
    environment.refresh_from_db()
    assert environment.expires_at == expires + timedelta(hours=4)
    assert AuditEvent.objects.filter(action="environment.extend").count() == 1


def test_deleting_the_environment_withdraws_its_extension_request(owner, approver):
    version = blueprint("over-quota", extra="auto_approve_ttl: 1d")
    environment = running(
        services.request_environment(user=owner, version=version, ttl_seconds=8 * HOUR)
    )
    services.extend_environment(environment=environment, user=owner, seconds=2 * 86400, reason="r")
    extension = pending_of(environment)
    services.delete_environment(environment=environment, user=owner)
    extension.refresh_from_db()
    assert extension.state == "withdrawn"
    with pytest.raises(ServiceError, match="withdrawn"):
        services.approve_extension(extension=extension, approver=approver)


def test_the_approvals_page_shows_extension_requests_and_decides_them(owner, approver):
    version = blueprint("over-quota", extra="auto_approve_ttl: 1d")
    environment = running(
        services.request_environment(user=owner, version=version, ttl_seconds=8 * HOUR)
    )
    expires = environment.expires_at
    # The owner's page says it waits; the extension is requested through the form.
    response = client_for(owner).post(
        reverse("environment_extend", args=[environment.pk]),
        {"seconds": 2 * 86400, "reason": "Customer pilot"},
        follow=True,
    )
    assert "Extension requested: it needs an approver" in response.content.decode()
    assert "waiting for an approver" in response.content.decode()
    extension = pending_of(environment)

    page = client_for(approver).get(reverse("approvals")).content.decode()
    assert f'id="extension-{extension.pk}"' in page and "Customer pilot" in page
    client_for(approver).post(reverse("approve_extension", args=[extension.pk]))
    environment.refresh_from_db()
    assert environment.expires_at == expires + timedelta(days=2)


def test_the_api_queues_the_extension_and_approvers_decide_it(client, owner, approver, team):
    version = blueprint("over-quota", extra="auto_approve_ttl: 1d")
    environment = running(
        services.request_environment(user=owner, version=version, ttl_seconds=8 * HOUR)
    )
    expires = environment.expires_at
    mine = tokens.create_token(user=owner, name="ci", scope="write", days=1)[1]
    theirs = tokens.create_token(user=approver, name="ok", scope="write", days=1)[1]

    def call(token, method, path, body=None):
        return getattr(client, method)(
            API + path,
            body if body is not None else {},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )

    answer = call(
        mine, "post", f"/environments/{environment.name}/extend", {"seconds": 86400, "reason": "r"}
    )
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["state"] == "pending" and body["seconds"] == 86400
    environment.refresh_from_db()
    assert environment.expires_at == expires

    listed = client.get(API + "/extension-requests", HTTP_AUTHORIZATION=f"Bearer {theirs}")
    assert [row["id"] for row in listed.json()] == [body["id"]]
    # The requester cannot approve it.
    refused = call(mine, "post", f"/extension-requests/{body['id']}/approve")
    assert refused.status_code == 403, refused.content
    approved = call(theirs, "post", f"/extension-requests/{body['id']}/approve")
    assert approved.status_code == 200, approved.content
    assert approved.json()["state"] == "approved"
    environment.refresh_from_db()
    assert environment.expires_at == expires + timedelta(days=1)


def test_an_outsider_gets_404_for_an_extension_request(client, owner, outsider):
    version = blueprint("required", ttl="{default: 2h, max: 1d}")
    environment = running(
        make_environment(owner=owner, team=owner.memberships.get().team, version=version)
    )
    services.extend_environment(environment=environment, user=owner, seconds=HOUR, reason="r")
    extension = pending_of(environment)
    token = tokens.create_token(user=outsider, name="x", scope="write", days=1)[1]
    answer = client.get(
        f"{API}/extension-requests/{extension.pk}", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert answer.status_code == 404
