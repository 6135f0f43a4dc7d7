"""Pages that never show a stale state (issue 12, defect 1), in a real browser.

An environment's page and the dashboard stay open, never reloaded, while the
environment expires (the scheduler's reaper, a real worker and the watcher on the local
control plane) or while a teammate deletes it from another session: both pages show
the change within 10 s. Ready is not the end of polling; only final states are.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from environments.lifecycle import services, upkeep
from environments.lifecycle.states import State
from environments.models import Environment
from tests.browser import sign_in
from tests.conftest import wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
]

# The acceptance bound: a change shows on an open page within this many seconds.
CHANGE_SHOWS_WITHIN_MS = 10_000
GONE = re.compile(r"Tearing down|Deleted")


def _ready_environment(owner, shop) -> Environment:
    environment = services.request_environment(user=owner, version=shop)
    wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.READY, timeout=120)
    environment.refresh_from_db()
    return environment


def _open_both(new_page, live_server, user, environment):
    """The environment's page and the dashboard, each with a marker a reload would wipe."""
    detail = new_page()
    sign_in(detail, live_server, user.email)
    detail.goto(f"{live_server.url}{environment.get_absolute_url()}")
    dashboard = new_page()
    sign_in(dashboard, live_server, user.email)
    dashboard.goto(f"{live_server.url}/environments/")
    for page in (detail, dashboard):
        page.evaluate("window.__stillHere = true")
    expect(detail.locator("#env-status .badge").first).to_have_text("Ready")
    expect(dashboard.locator(f"#env-{environment.pk} .badge")).to_have_text("Ready")
    return detail, dashboard


def _row(dashboard, environment):
    return dashboard.locator(f"#env-{environment.pk}")


def test_it_shows_expiry_on_open_pages_without_reloading(
    live_server, new_page, owner, shop, worker, output_dir
):
    environment = _ready_environment(owner, shop)
    detail, dashboard = _open_both(new_page, live_server, owner, environment)

    # The clock runs out (as if its 5-minute TTL were up): the countdowns say so by
    # themselves, before any poll or the reaper.
    soon = timezone.now() + timedelta(seconds=3)
    Environment.objects.filter(pk=environment.pk).update(expires_at=soon, updated_at=timezone.now())
    expect(detail.locator("#env-status .countdown")).to_have_text(
        "Expired", timeout=CHANGE_SHOWS_WITHIN_MS
    )
    expect(_row(dashboard, environment).locator(".countdown")).to_have_text(
        "Expired", timeout=CHANGE_SHOWS_WITHIN_MS
    )

    # The scheduler's job reaps it; the worker tears it down, the watcher sees it go.
    assert upkeep.reap_expired() == 1
    expect(detail.locator("#env-status .badge").first).to_have_text(
        GONE, timeout=CHANGE_SHOWS_WITHIN_MS
    )
    expect(_row(dashboard, environment).locator(".badge")).to_have_text(
        GONE, timeout=CHANGE_SHOWS_WITHIN_MS
    )
    # What a live environment offers is gone too: its Delete link and button.
    expect(
        _row(dashboard, environment).get_by_role("link", name=re.compile("Delete"))
    ).to_have_count(0)
    expect(detail.get_by_role("link", name="Delete…")).to_have_count(0)

    expect(detail.locator("#env-status .badge").first).to_have_text("Deleted", timeout=90_000)
    expect(_row(dashboard, environment).locator(".badge")).to_have_text(
        "Deleted", timeout=CHANGE_SHOWS_WITHIN_MS
    )
    for page in (detail, dashboard):
        assert page.evaluate("window.__stillHere") is True
    dashboard.screenshot(path=output_dir / "dashboard-after-expiry.png", full_page=True)
    detail.screenshot(path=output_dir / "detail-after-expiry.png", full_page=True)


def test_it_shows_a_teammates_delete_on_open_pages_without_reloading(
    live_server, new_page, owner, teammate, shop, worker
):
    environment = _ready_environment(owner, shop)
    detail, dashboard = _open_both(new_page, live_server, owner, environment)

    # The teammate (a team lead: they may) deletes it from their own browser session.
    teammate.memberships.update(lead=True)
    theirs = new_page()
    sign_in(theirs, live_server, teammate.email)
    theirs.goto(f"{live_server.url}{environment.get_absolute_url()}")
    theirs.get_by_role("link", name="Delete…").click()
    theirs.get_by_role("button", name=f"Delete {environment.namespace}").click()
    theirs.wait_for_url(re.compile(r"/environments/[0-9a-f-]{36}/$"))

    expect(detail.locator("#env-status .badge").first).to_have_text(
        GONE, timeout=CHANGE_SHOWS_WITHIN_MS
    )
    expect(_row(dashboard, environment).locator(".badge")).to_have_text(
        GONE, timeout=CHANGE_SHOWS_WITHIN_MS
    )
    expect(
        _row(dashboard, environment).get_by_role("link", name=re.compile("Delete"))
    ).to_have_count(0)
    for page in (detail, dashboard):
        assert page.evaluate("window.__stillHere") is True
