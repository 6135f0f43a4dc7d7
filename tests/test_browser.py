"""The portal in a real browser (headless Debian Chromium), with screenshots.

Flows that need the cluster and a worker (watching an environment become ready)
live with the provisioning tests; these need only the database.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from environments.lifecycle.states import State
from environments.models import Environment, Quota
from tests.browser import sign_in
from tests.factories import make_environment

# DJANGO_ALLOW_ASYNC_UNSAFE (Playwright's event loop in the test thread) is set by the
# ``browser`` fixture only while a browser is open: see tests/browser.py.

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


def seconds_left(countdown: str) -> int:
    """'3h 59m 07s' (portal.js's format below a day) in seconds."""
    hours, minutes, seconds = map(int, re.fullmatch(r"(\d+)h (\d\d)m (\d\d)s", countdown).groups())
    return hours * 3600 + minutes * 60 + seconds


def test_it_requests_an_environment_from_the_catalogue(
    live_server, new_page, owner, sample_blueprints, output_dir
):
    page = new_page()
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server.url}/")
    expect(page.get_by_role("heading", name="Catalogue")).to_be_visible()
    page.screenshot(path=output_dir / "catalogue.png", full_page=True)

    page.get_by_role("link", name="Request Webshop sales demo").click()
    page.wait_for_url(re.compile(r"/blueprints/shop-demo/request/$"))
    # Changing the TTL refreshes the estimate through htmx.
    page.get_by_label("Time to live").select_option(label="8h")
    page.locator("#estimate", has_text="for 8h").wait_for()
    page.get_by_label("Customer name").fill("Bad Name!")
    page.get_by_role("button", name="Request environment").click()
    expect(
        page.locator(
            ".field-error",
            has_text="is not in the right format: lowercase letters, digits and dashes, up to 30",
        )
    ).to_be_visible()
    page.screenshot(path=output_dir / "request-form-error.png", full_page=True)

    page.get_by_label("Customer name").fill("globex")
    page.get_by_label("Reason").fill("Globex demo on Friday")
    page.screenshot(path=output_dir / "request-form.png", full_page=True)
    # Every control has a label a screen reader can announce.
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
              .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                            && !(el.tagName === 'BUTTON' && el.textContent.trim()))
              .map(el => el.outerHTML)"""
    )
    assert unlabelled == []
    page.get_by_role("button", name="Request environment").click()
    page.wait_for_url(re.compile(r"/environments/[0-9a-f-]{36}/$"))
    environment = Environment.objects.get(owner=owner)
    assert environment.parameters["customer"] == "globex"
    expect(page.get_by_text(environment.namespace).first).to_be_visible()
    expect(page.locator("#messages").get_by_text("Requested")).to_be_visible()
    page.screenshot(path=output_dir / "detail-requested.png", full_page=True)


def test_it_shows_a_dashboard_with_environments_in_several_states(
    live_server, new_page, owner, team, sample_blueprints, output_dir
):
    shop = sample_blueprints["shop-demo"]
    ready = make_environment(
        owner=owner,
        team=team,
        version=shop,
        state=State.READY,
        urls={"web": "http://web-demo1.ephemera.test", "api": "http://api-demo1.ephemera.test"},
        component_status={
            c.name: {"ready": True, "available": 1, "replicas": 1} for c in shop.components
        },
        parameters={"customer": "acme", "theme": "light"},
        manifests=[{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "eph-x"}}],
    )
    make_environment(
        owner=owner,
        team=team,
        version=sample_blueprints["training-lab"],
        state=State.PROVISIONING,
        component_status={},
    )
    make_environment(
        owner=owner,
        team=team,
        version=sample_blueprints["benchmark"],
        state=State.PENDING_APPROVAL,
        expires_at=None,
    )
    make_environment(
        owner=owner,
        team=team,
        version=sample_blueprints["hotfix"],
        state=State.FAILED,
        last_error="The image registry.example.com/hotfix:bad could not be pulled.",
    )
    page = new_page()
    sign_in(page, live_server, owner.email)
    loading_from = time.time()
    page.goto(f"{live_server.url}/environments/")
    rows = page.locator("#env-rows tr")
    assert rows.count() == 4
    # The countdown is driven by portal.js from data-expires: it shows the time left
    # however long signing in took, and it ticks.
    countdown = page.locator(f"#env-{ready.pk} .countdown")
    expect(countdown).to_have_text(re.compile(r"^\d+h \d\dm \d\ds$"))
    first = countdown.inner_text()
    # Between what was left when the page started loading and what is left now.
    most = ready.expires_at.timestamp() - loading_from
    least = ready.expires_at.timestamp() - time.time()
    assert least - 1 <= seconds_left(first) <= most, (first, least, most)
    expect(countdown).not_to_have_text(first)
    page.screenshot(path=output_dir / "dashboard.png", full_page=True)

    phone = new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    sign_in(phone, live_server, owner.email)
    phone.goto(f"{live_server.url}/environments/")
    phone.screenshot(path=output_dir / "dashboard-phone.png", full_page=True)
    # On a phone the menu is one sideways-scrolling row: the page starts near the top,
    # and the page itself never scrolls sideways.
    header = phone.evaluate("document.querySelector('header.top').getBoundingClientRect().height")
    assert header < 120, header
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390

    page.goto(f"{live_server.url}/environments/{ready.pk}/")
    expect(page.get_by_text("Admin user")).to_be_visible()
    expect(page.get_by_role("button", name="Show generated credentials")).to_be_visible()
    page.get_by_text("Rendered manifests").click()
    page.screenshot(path=output_dir / "detail-ready.png", full_page=True)


def test_it_lets_an_approver_approve_a_pending_request(
    live_server, new_page, owner, approver, sample_blueprints, output_dir
):
    requester = new_page()
    sign_in(requester, live_server, owner.email)
    requester.goto(f"{live_server.url}/blueprints/benchmark/request/")
    requester.get_by_label("Reason").fill("Load test for release 7")
    requester.get_by_role("button", name="Request environment").click()
    requester.wait_for_url(re.compile(r"/environments/[0-9a-f-]{36}/$"))
    expect(requester.locator("#env-status .badge", has_text="Pending approval")).to_be_visible()
    environment = Environment.objects.get(owner=owner)

    page = new_page()
    sign_in(page, live_server, approver.email)
    page.goto(f"{live_server.url}/approvals/")
    expect(page.get_by_text("Load test for release 7")).to_be_visible()
    page.screenshot(path=output_dir / "approvals.png", full_page=True)
    page.get_by_role("button", name=f"Approve {environment.namespace}").click()
    expect(page.locator("#messages").get_by_text("Approved")).to_be_visible()
    expect(page.get_by_text("No requests are waiting")).to_be_visible()

    # The requester's page shows the decision without a reload (it polls while pending).
    requester.locator("#env-status .badge", has_text="Approved").wait_for(timeout=35_000)
    environment.refresh_from_db()
    assert environment.state == State.APPROVED


def test_it_shows_outsiders_the_404_page(
    live_server, new_page, owner, team, outsider, sample_blueprints, output_dir
):
    environment = make_environment(
        owner=owner, team=team, version=sample_blueprints["shop-demo"], state=State.READY
    )
    page = new_page()
    sign_in(page, live_server, outsider.email)
    response = page.goto(f"{live_server.url}/environments/{environment.pk}/")
    assert response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    page.screenshot(path=output_dir / "not-found.png", full_page=True)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/environments/",
        "/approvals/",
        "/admin-portal/quotas/",
        "/tokens/",
        "/admin-portal/audit/",
    ],
)
def test_no_page_scrolls_sideways_on_a_phone(live_server, new_page, portal_admin, team, path):
    from environments.access import tokens

    tokens.create_token(
        user=portal_admin, name="a-rather-long-token-name-for-ci-" * 3, scope="read", days=1
    )
    Quota.objects.create(team=team, monthly_budget=Decimal("150.00"), max_environments=5)
    phone = new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    sign_in(phone, live_server, portal_admin.email)
    phone.goto(f"{live_server.url}{path}")
    width = phone.evaluate("document.documentElement.scrollWidth")
    wide = phone.evaluate(
        "[...document.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right > 391"
        " && !e.closest('nav') && !e.closest('.table-wrap'))"
        ".map(e => e.tagName + '.' + e.className + '#' + e.id + ' ' + Math.round(e.getBoundingClientRect().right))"
    )
    assert width <= 390, (path, width, wide)


def test_it_shows_the_approval_queue_with_the_exact_reason_each_request_waits(
    live_server, new_page, owner, teammate, approver, team, sample_blueprints, output_dir
):
    lab = sample_blueprints["training-lab"]  # over-quota, auto-approves up to 1d
    Quota.objects.create(team=team, max_cpu_millicores=1400, monthly_budget=Decimal("500"))
    make_environment(owner=teammate, team=team, version=lab, state=State.READY, cpu_millicores=600)
    too_long = make_environment(
        owner=owner,
        team=team,
        version=lab,
        state=State.PENDING_APPROVAL,
        ttl_hours=48,
        expires_at=None,
        reason="Two-day workshop for Globex",
    )
    page = new_page()
    sign_in(page, live_server, approver.email)
    page.goto(f"{live_server.url}/approvals/")
    card = page.locator(f"#approval-{too_long.pk}")
    expect(card.locator(".why-waits")).to_contain_text("2d is over the 1d auto-approve time.")
    expect(card.locator(".why-waits")).to_contain_text("Needs 1 CPU; the team has 0.8 left.")
    expect(card).to_contain_text("Team Sales CPU: 0.6 running, 0 approved but not ready")
    page.screenshot(path=output_dir / "approvals-reasons.png", full_page=True)


def test_it_offers_only_allowed_ttls_and_an_estimate_that_tells_the_truth(
    live_server, new_page, owner, team, sample_blueprints, output_dir
):
    # training-lab allows 5d; the team's limit is 3d; its budget covers about a day.
    Quota.objects.create(team=team, max_ttl=timedelta(days=3), monthly_budget=Decimal("0.50"))
    page = new_page()
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server.url}/blueprints/training-lab/request/")
    ttl = page.get_by_label("Time to live")
    labels = ttl.locator("option").all_inner_texts()
    assert labels[-1] == "3d" and "5d" not in labels and "7d" not in labels
    expect(page.get_by_text("at most 3d: your team's limit.")).to_be_visible()
    ttl.select_option(label="3d")
    outcome = page.locator("#estimate-outcome")
    expect(outcome).to_contain_text(
        "Needs approval: over budget; longer than the auto-approve time."
    )
    expect(page.locator("#estimate")).not_to_contain_text("would be refused")
    page.screenshot(path=output_dir / "request-estimate-needs-approval.png", full_page=True)
