"""Issue 12, defect 8's smaller points where they are on the page, in a real browser:
the format under a field and the same words in its error, the TTL menu's shortest
choice, "being set up" leaving once the environment is ready, clone's reason, a deleted
environment's page, labels, the phone menu and wide tables, and the approver's own
request. Only the database is needed: state changes are made the way the watcher makes
them (lifecycle.transitions)."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from environments.lib.durations import MIN_TTL_SECONDS
from environments.lifecycle.states import State
from environments.lifecycle.transitions import transition
from environments.models import Environment
from tests.browser import sign_in
from tests.factories import make_environment

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


def test_it_shows_formats_the_shortest_ttl_and_drops_set_up_news_once_ready(
    live_server, new_page, owner, team, sample_blueprints, output_dir
):
    page = new_page()
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server.url}/blueprints/shop-demo/request/")

    # The format, in words, before anything is submitted; the error says the same.
    customer = page.get_by_label("Customer name")
    expect(customer).to_have_accessible_description(
        re.compile("Format: lowercase letters, digits and dashes, up to 30.")
    )
    # The shortest time to live offered is the service's minimum.
    first = page.get_by_label("Time to live").locator("option").first
    expect(first).to_have_attribute("value", str(MIN_TTL_SECONDS))
    expect(first).to_have_text("5m")
    customer.fill("Bad Name!")
    page.get_by_role("button", name="Request environment").click()
    error = page.locator("#id_param_customer_error")
    expect(error).to_have_text(
        "'Bad Name!' is not in the right format: lowercase letters, digits and dashes, up to 30"
    )
    page.screenshot(path=output_dir / "request-form-format.png", full_page=True)

    # Requested: "being set up" shows until the environment is ready, then goes.
    page.get_by_label("Customer name").fill("globex")
    page.get_by_role("button", name="Request environment").click()
    page.wait_for_url(re.compile(r"/environments/[0-9a-f-]{36}/$"))
    news = page.locator(".messages", has_text="It is being set up now.")
    expect(news).to_be_visible()
    environment = Environment.objects.get(owner=owner)
    transition(environment.pk, from_states=State.APPROVED, to_state=State.PROVISIONING)
    expect(news).to_be_visible()  # still true while it is being set up
    transition(environment.pk, from_states=State.PROVISIONING, to_state=State.READY)
    expect(page.locator("#env-status .badge", has_text="Ready").first).to_be_visible(timeout=10_000)
    expect(news).to_have_count(0, timeout=10_000)


def test_it_clones_with_the_reason_and_shows_labels_and_a_deleted_environment(
    live_server, new_page, owner, team, sample_blueprints, output_dir
):
    shop = sample_blueprints["shop-demo"]
    source = make_environment(
        owner=owner,
        team=team,
        version=shop,
        parameters={"customer": "globex", "theme": "dark"},
        reason="Globex call on Tuesday",
    )
    page = new_page()
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server.url}{source.get_absolute_url()}")
    # Parameters by their labels.
    parameters = page.locator("section", has=page.locator("#params-h"))
    expect(parameters.locator("dt")).to_have_text(["Customer name", "Theme"])
    page.get_by_role("link", name="Clone…").click()
    expect(page.get_by_label("Reason")).to_have_value("Globex call on Tuesday")

    gone = make_environment(
        owner=owner,
        team=team,
        version=shop,
        state=State.DELETED,
        deleted_at=timezone.now(),
        parameters={"customer": "acme", "theme": "light"},
    )
    page.goto(f"{live_server.url}{gone.get_absolute_url()}")
    facts = page.locator("dl.facts.wide")
    expect(facts).to_contain_text("Deleted at")
    expect(facts).not_to_contain_text("Expires")
    readiness = page.locator("ul.readiness")
    expect(readiness).not_to_contain_text("Not started")
    expect(readiness.locator(".badge", has_text="Deleted")).to_have_count(len(shop.components))
    page.screenshot(path=output_dir / "deleted-environment.png", full_page=True)


def test_the_phone_menu_shows_every_item_whole_and_tables_fit(
    live_server, new_page, portal_admin, sample_blueprints, output_dir
):
    page = new_page(viewport={"width": 390, "height": 844})
    sign_in(page, live_server, portal_admin.email)
    for path in ("/admin-portal/blueprints/", "/admin-portal/audit/", "/admin-portal/quotas/"):
        page.goto(f"{live_server.url}{path}")
        links = page.locator("header.top nav a")
        assert links.count() >= 10
        for i in range(links.count()):
            link = links.nth(i)
            box = link.bounding_box()
            assert box is not None
            # Whole, on screen, on one line: nothing cut off at the edge or mid-word.
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, link.inner_text()
            assert link.evaluate("a => a.scrollWidth <= a.clientWidth + 1"), link.inner_text()
            assert box["height"] < 40, link.inner_text()
        # No sideways scrolling: not the menu, not the page, not the tables.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert page.locator("header.top nav").evaluate("n => n.scrollWidth <= n.clientWidth + 1")
        # Tables stack into a card per row, each value labelled with its column.
        for wrap in page.locator(".table-wrap").all():
            assert wrap.evaluate("w => w.scrollWidth <= w.clientWidth + 1"), path
        if path == "/admin-portal/audit/":
            expect(page.locator("table.table td[data-label='Who']").first).to_be_visible()
            page.screenshot(path=output_dir / "phone-audit-log.png", full_page=True)
    page.goto(f"{live_server.url}/admin-portal/blueprints/")
    page.screenshot(path=output_dir / "phone-menu.png", full_page=False)


def test_the_approvers_own_request_shows_no_approve_button(
    live_server, new_page, approver, owner, team, sample_blueprints
):
    shop = sample_blueprints["shop-demo"]
    own = make_environment(owner=approver, team=team, version=shop, state=State.PENDING_APPROVAL)
    theirs = make_environment(owner=owner, team=team, version=shop, state=State.PENDING_APPROVAL)
    page = new_page()
    sign_in(page, live_server, approver.email)
    page.goto(f"{live_server.url}/approvals/")
    mine = page.locator(f"#approval-{own.pk}")
    expect(mine).to_contain_text("Your own request: another approver decides it.")
    expect(mine.get_by_role("button")).to_have_count(0)
    expect(
        page.locator(f"#approval-{theirs.pk}").get_by_role("button", name=re.compile("Approve"))
    ).to_be_visible()
