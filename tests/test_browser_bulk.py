"""Bulk actions in a real browser (issue 16): tick several environments on the dashboard,
extend them by an hour, confirm once; each is extended and audited. Only the database
is needed (rows only: nothing is provisioned)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from environments.models import AuditEvent
from tests.browser import sign_in
from tests.factories import make_environment

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


def test_it_selects_several_environments_and_extends_them(
    live_server, new_page, owner, team, sample_blueprints, output_dir
):
    shop = sample_blueprints["shop-demo"]
    picked = [
        make_environment(owner=owner, team=team, version=shop, ttl_hours=1, display_name=name)
        for name in ("Acme demo", "Globex demo")
    ]
    left = make_environment(
        owner=owner, team=team, version=shop, ttl_hours=1, display_name="Initech"
    )
    before = {e.pk: e.expires_at for e in [*picked, left]}
    page = new_page()
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server.url}/environments/")
    for environment in picked:
        page.get_by_label(f"Select {environment.namespace}").check()
    # The rows refresh themselves (htmx polls them): the ticks survive a refresh.
    with page.expect_response(lambda r: "/environments/rows/" in r.url, timeout=20_000):
        pass
    for environment in picked:
        expect(page.get_by_label(f"Select {environment.namespace}")).to_be_checked()
    expect(page.get_by_label(f"Select {left.namespace}")).not_to_be_checked()
    page.get_by_label("With the selected:").select_option("extend")
    page.get_by_label("Extend by").select_option(label="1h")
    page.screenshot(path=output_dir / "bulk-select.png", full_page=True)
    page.get_by_role("button", name="Review…").click()

    expect(page.locator("h1")).to_have_text("Extend 2 environments by 1h?")
    rows = page.locator("#bulk-targets tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Extended by 1h")
    page.screenshot(path=output_dir / "bulk-confirm.png", full_page=True)
    page.get_by_role("button", name="Extend 2 by 1h").click()

    page.wait_for_url(f"{live_server.url}/environments/")
    expect(page.locator("#messages")).to_contain_text("Extended 2 of 2")
    for environment in picked:
        environment.refresh_from_db()
        assert (environment.expires_at - before[environment.pk]).total_seconds() == 3600
        assert (
            AuditEvent.objects.filter(action="environment.extend", object_id=environment.pk).count()
            == 1
        )
    left.refresh_from_db()
    assert left.expires_at == before[left.pk]
