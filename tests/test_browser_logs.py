"""Logs on the environment page, in a real browser, on the real local cluster.

A real RQ worker and watcher provision a shop-demo environment on the local control
plane, where kwok serves simulated container logs. The page shows each component's
recent lines once the environment is ready, and follows new ones without a reload.
"""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import expect

from environments.lifecycle import services
from tests.browser import sign_in
from tests.test_logs import append_log_line

pytestmark = [
    pytest.mark.browser,
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
]


def test_it_shows_and_follows_component_logs_on_the_environment_page(
    live_server, new_page, owner, teammate, sample_blueprints, worker, output_dir
):
    environment = services.request_environment(user=owner, version=sample_blueprints["shop-demo"])
    marker = f"browser logs {uuid.uuid4().hex[:8]} (simulated)"
    append_log_line(marker)

    page = new_page()
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server.url}{environment.get_absolute_url()}")
    page.evaluate("window.__stillHere = true")  # a reload would wipe it out
    expect(page.locator("#env-status .badge").first).to_have_text("Ready", timeout=60_000)
    for component in ("web", "api", "cache"):
        panel = page.locator(f"#logs-{component}")
        expect(panel.get_by_role("heading", name=component)).to_be_visible()
        expect(panel.locator("pre.log")).to_contain_text(marker, timeout=15_000)
    expect(page.locator("#logs-web")).to_contain_text("Following")

    # A line printed while the page is open appears without a reload.
    later = f"browser logs {uuid.uuid4().hex[:8]} later (simulated)"
    append_log_line(later)
    expect(page.locator("#logs-web pre.log")).to_contain_text(later, timeout=15_000)
    assert page.evaluate("window.__stillHere") is True
    page.locator("#logs-h").scroll_into_view_if_needed()
    page.screenshot(path=output_dir / "environment-logs.png", full_page=True)

    # Fewer lines on request (htmx swaps the panel in place).
    page.get_by_label("Last").first.select_option(label="50 lines")
    expect(page.locator("#logs-web pre.log")).to_contain_text(later)
    assert page.evaluate("window.__stillHere") is True

    # A teammate reads the same logs.
    other = new_page()
    sign_in(other, live_server, teammate.email)
    other.goto(f"{live_server.url}{environment.get_absolute_url()}")
    expect(other.locator("#logs-api pre.log")).to_contain_text(later, timeout=15_000)
