"""The approval queue: what approvers see, approve, reject, and who may not."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from environments.catalog.pricing import money
from environments.lifecycle.states import State
from environments.models import Quota
from tests.conftest import client_for
from tests.factories import make_environment

pytestmark = pytest.mark.django_db


@pytest.fixture
def pending(owner, team, sample_blueprints):
    return make_environment(
        owner=owner,
        team=team,
        version=sample_blueprints["benchmark"],
        state=State.PENDING_APPROVAL,
        expires_at=None,
        reason="load test for release 7",
    )


def test_it_lists_pending_requests_for_approvers(approver, pending):
    response = client_for(approver).get(reverse("approvals"))
    assert response.status_code == 200
    body = response.content.decode()
    assert pending.namespace in body
    assert "load test for release 7" in body
    assert "This blueprint always needs approval; it is within every limit." in body
    assert "Approval will be refused" not in body


def test_it_tells_approvers_what_approving_would_exceed(approver, team, pending):
    Quota.objects.create(team=team, monthly_budget=Decimal("0.01"))
    body = client_for(approver).get(reverse("approvals")).content.decode()
    assert pending.blueprint_version.spec["approval"] == "required"
    cost = money(pending.projected_cost)
    assert f"Approval will be refused: costs {cost}; the team has $0.01 of $0.01 left" in body


def test_it_shows_an_empty_approval_queue(approver, shop):
    response = client_for(approver).get(reverse("approvals"))
    assert "No requests are waiting" in response.content.decode()


@pytest.mark.parametrize("user_fixture", ["outsider", "owner"])
def test_it_refuses_the_approval_queue_to_non_approvers(request, user_fixture, pending):
    client = client_for(request.getfixturevalue(user_fixture))
    assert client.get(reverse("approvals")).status_code == 403
    assert client.post(reverse("approve", args=[pending.pk])).status_code == 403
    assert client.post(reverse("reject", args=[pending.pk]), {"reason": "no"}).status_code == 403
    pending.refresh_from_db()
    assert pending.state == State.PENDING_APPROVAL


def test_it_approves_a_request(approver, pending):
    response = client_for(approver).post(reverse("approve", args=[pending.pk]))
    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.state == State.APPROVED
    assert pending.approved_by == approver


def test_it_needs_a_reason_to_reject(approver, pending):
    client = client_for(approver)
    response = client.post(reverse("reject", args=[pending.pk]), {"reason": ""}, follow=True)
    assert "Say why" in response.content.decode()
    pending.refresh_from_db()
    assert pending.state == State.PENDING_APPROVAL
    client.post(reverse("reject", args=[pending.pk]), {"reason": "Use the staging rig"})
    pending.refresh_from_db()
    assert pending.state == State.REJECTED


def test_it_explains_why_an_approver_cannot_approve_their_own_request(approver, shop, team):
    environment = make_environment(
        owner=approver, team=team, version=shop, state=State.PENDING_APPROVAL
    )
    response = client_for(approver).post(reverse("approve", args=[environment.pk]), follow=True)
    assert response.status_code == 200
    assert "your own request" in response.content.decode()
    environment.refresh_from_db()
    assert environment.state == State.PENDING_APPROVAL


def test_it_shows_the_approvals_link_only_to_approvers(approver, owner, shop):
    assert reverse("approvals") in client_for(approver).get(reverse("catalogue")).content.decode()
    assert reverse("approvals") not in client_for(owner).get(reverse("catalogue")).content.decode()


# --- why each request waits, limit by limit (issue 12, items 4 and 5) ---


def test_it_names_the_exact_limit_each_request_waits_for(approver, owner, team, sample_blueprints):
    lab = sample_blueprints["training-lab"]  # over-quota, auto-approve up to 1d, 1 CPU
    long_one = make_environment(
        owner=owner,
        team=team,
        version=lab,
        state=State.PENDING_APPROVAL,
        ttl_hours=48,
        expires_at=None,
    )
    Quota.objects.create(team=team, max_cpu_millicores=1400)
    make_environment(owner=owner, team=team, version=lab, state=State.READY, cpu_millicores=600)
    body = client_for(approver).get(reverse("approvals")).content.decode()
    card = body[body.index(f'id="approval-{long_one.pk}"') :]
    card = card[: card.index("</article>")]
    assert "2d is over the 1d auto-approve time." in card
    # 1.4 CPU less 0.6 running leaves 0.8; this one needs 1.
    assert "Needs 1 CPU; the team has 0.8 left." in card
    assert "Over what is approved automatically" not in body  # the old catch-all


def test_it_splits_quota_use_into_running_approved_and_pending(
    approver, owner, team, sample_blueprints
):
    lab = sample_blueprints["training-lab"]
    waiting = make_environment(
        owner=owner,
        team=team,
        version=lab,
        state=State.PENDING_APPROVAL,
        expires_at=None,
        cpu_millicores=1000,
    )
    make_environment(owner=owner, team=team, version=lab, state=State.READY, cpu_millicores=600)
    make_environment(owner=owner, team=team, version=lab, state=State.APPROVED, cpu_millicores=500)
    make_environment(
        owner=owner,
        team=team,
        version=lab,
        state=State.PENDING_APPROVAL,
        cpu_millicores=3000,
        expires_at=None,
    )
    Quota.objects.create(team=team, max_cpu_millicores=5000)
    body = client_for(approver).get(reverse("approvals")).content.decode()
    card = body[body.index(f'id="approval-{waiting.pk}"') :]
    card = card[: card.index("</article>")]
    assert (
        "Team Sales CPU: 0.6 running, 0.5 approved but not ready, 3 pending approval, of 5; "
        "approving this uses 1 more (5.1 of 5)." in card
    )
