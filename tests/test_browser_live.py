"""The whole life of an environment in a real browser, on the real local cluster.

Headless Debian Chromium (Playwright) drives the portal served by ``live_server``; a
real RQ worker process provisions on the local control plane. The page is never
reloaded while the environment becomes ready: htmx polling updates it.
"""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from playwright.sync_api import expect

from environments.kube import cluster
from environments.lifecycle.states import State
from environments.models import Environment
from tests.browser import sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
]


def test_it_requests_watches_extends_and_deletes_without_reloading(
    live_server, new_page, owner, sample_blueprints, worker, output_dir
):
    page = new_page()
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server.url}/")
    page.get_by_role("link", name="Request Webshop sales demo").click()
    page.get_by_role("button", name="Request environment").click()
    page.wait_for_url(re.compile(r"/environments/[0-9a-f-]{36}/$"))
    environment = Environment.objects.get(owner=owner)

    # A marker that a reload or navigation would wipe out.
    page.evaluate("window.__stillHere = true")
    state_badge = page.locator("#env-status .badge").first
    expect(state_badge).to_have_text("Ready", timeout=60_000)
    assert page.evaluate("window.__stillHere") is True
    environment.refresh_from_db()
    assert environment.state == State.READY
    assert page.get_by_text(environment.urls["web"]).first.is_visible()
    page.screenshot(path=output_dir / "detail-ready.png", full_page=True)

    # Extend by the preselected hour, with a reason (past the usual TTL).
    before = environment.expires_at
    page.get_by_label("Reason").fill("Customer asked for a second session")
    page.get_by_role("button", name="Extend").click()
    page.locator("#messages").get_by_text("Extended").wait_for()
    environment.refresh_from_db()
    assert (environment.expires_at - before).total_seconds() == 3600

    # Delete, through the confirmation page; the page follows teardown live.
    page.get_by_role("link", name="Delete…").click()
    page.get_by_role("button", name=f"Delete {environment.namespace}").click()
    page.wait_for_url(re.compile(r"/environments/[0-9a-f-]{36}/$"))
    page.evaluate("window.__stillHere = true")
    expect(page.locator("#env-status .badge").first).to_have_text("Deleted", timeout=90_000)
    assert page.evaluate("window.__stillHere") is True
    assert not cluster.namespace_exists(environment.namespace)
    assert settings.EPHEMERA_INSTANCE  # the worker used the same instance label
