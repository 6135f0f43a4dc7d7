"""Environments people can tell apart, in a real browser (issue 12, defect 2): name one
when requesting it, rename it on its page, see both demos apart on the dashboard and
the team page. Only the database is needed (no worker: nothing is provisioned)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from environments.models import Environment
from tests.browser import sign_in
from tests.factories import make_environment

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


def test_it_names_and_renames_environments_and_tells_them_apart(
    live_server, new_page, owner, teammate, team, sample_blueprints, output_dir
):
    shop = sample_blueprints["shop-demo"]
    page = new_page()
    sign_in(page, live_server, owner.email)

    # Request one with a name and a customer.
    page.goto(f"{live_server.url}/blueprints/shop-demo/request/")
    page.get_by_label("Customer name").fill("globex")
    page.get_by_label("Name", exact=True).fill("Globex demo")
    page.get_by_role("button", name="Request environment").click()
    page.wait_for_url(re.compile(r"/environments/[0-9a-f-]{36}/$"))
    expect(page.locator("h1")).to_contain_text("Globex demo")
    globex = Environment.objects.get(owner=owner, display_name="Globex demo")

    # A second demo, unnamed, for another customer; then a duplicate name is refused.
    acme = make_environment(owner=owner, team=team, version=shop, parameters={"customer": "acme"})
    page.goto(f"{live_server.url}{acme.get_absolute_url()}")
    page.get_by_label("Name").fill("globex DEMO")
    page.get_by_role("button", name="Save name").click()
    expect(page.get_by_role("alert")).to_have_text(
        "You already have an environment named 'globex DEMO'."
    )
    page.get_by_label("Name").fill("Acme demo")
    page.get_by_role("button", name="Save name").click()
    page.locator("#messages").get_by_text("Renamed").wait_for()
    expect(page.locator("h1")).to_contain_text("Acme demo")

    # The dashboard tells them apart: the names link, the customers show beside them.
    page.goto(f"{live_server.url}/environments/")
    for environment, name, customer in (
        (globex, "Globex demo", "globex"),
        (acme, "Acme demo", "acme"),
    ):
        row = page.locator(f"#env-{environment.pk}")
        expect(row.get_by_role("link", name=name)).to_be_visible()
        expect(row.locator(".listed-parameter")).to_have_text(f"Customer name: {customer}")
    page.screenshot(path=output_dir / "dashboard-named-environments.png", full_page=True)

    # A teammate's team page shows the same, and sees the owner's rename without reloading.
    theirs = new_page()
    sign_in(theirs, live_server, teammate.email)
    theirs.goto(f"{live_server.url}/environments/team/")
    expect(theirs.locator(f"#env-{acme.pk}").get_by_role("link", name="Acme demo")).to_be_visible()
    page.goto(f"{live_server.url}/environments/{acme.pk}/rename/")
    page.get_by_label("Name").fill("Acme renewal demo")
    page.get_by_role("button", name="Save name").click()
    page.locator("#messages").get_by_text("Renamed").wait_for()
    expect(
        theirs.locator(f"#env-{acme.pk}").get_by_role("link", name="Acme renewal demo")
    ).to_be_visible(timeout=10_000)
    theirs.screenshot(path=output_dir / "team-named-environments.png", full_page=True)
