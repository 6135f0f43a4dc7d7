"""People in a real browser: an admin invites someone by email (read back from a real
SMTP server), the person follows the link, sets a password, lands in their team and
requests an environment; the link does not work twice. Times follow the browser's zone."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from environments.models import Environment, Membership
from tests.browser import sign_in
from tests.conftest import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LINK = re.compile(r"http://\S+/invitations/[A-Za-z0-9_-]+/")
EMAIL = "dana@example.com"
PASSWORD = "a-long-new-password-42"


def test_it_invites_a_person_who_joins_their_team_and_requests_an_environment(
    settings, live_server, new_page, smtp_server, portal_admin, team, other_team, shop, output_dir
):
    settings.SIGNUP_OPEN = False  # invite-only: the invitation is the way in
    settings.SITE_URL = live_server.url
    admin = new_page()
    sign_in(admin, live_server, portal_admin.email)
    admin.get_by_role("link", name="People").click()
    expect(admin.get_by_role("heading", name="People", exact=True)).to_be_visible()
    admin.get_by_label("Email").fill(EMAIL)
    admin.get_by_label("Team", exact=True).select_option(label="Sales")
    admin.get_by_role("button", name="Send invitation").click()
    expect(admin.locator("#messages")).to_contain_text(f"Invitation sent to {EMAIL}")
    expect(admin.locator("#invitations")).to_contain_text(EMAIL)
    admin.screenshot(path=output_dir / "people.png", full_page=True)

    messages = wait_for(lambda: smtp_server.to(EMAIL), timeout=15)
    link = LINK.search(messages[0].get_content()).group(0)

    person = new_page()
    person.goto(link)
    expect(person.get_by_role("heading", name="Join Ephemera")).to_be_visible()
    expect(person.get_by_text("team Sales")).to_be_visible()
    person.screenshot(path=output_dir / "invitation.png", full_page=True)
    person.get_by_label("Password", exact=True).fill(PASSWORD)
    person.get_by_label("Password again").fill(PASSWORD)
    person.get_by_role("button", name="Set password and join").click()
    person.wait_for_url(f"{live_server.url}/")
    expect(person.locator("#messages")).to_contain_text("You are in team Sales")

    person.get_by_role("link", name="Request Webshop sales demo").click()
    person.get_by_label("Customer name").fill("initech")
    person.get_by_role("button", name="Request environment").click()
    person.wait_for_url(re.compile(r"/environments/[0-9a-f-]{36}/$"))
    environment = Environment.objects.get(owner__email=EMAIL)
    assert environment.team == team
    assert Membership.objects.filter(user__email=EMAIL, team=team).count() == 1

    # The link works once.
    again = new_page()
    response = again.goto(link)
    assert response.status == 410
    expect(again.get_by_role("alert")).to_have_text(
        "This invitation link has already been used; sign in instead."
    )
    again.screenshot(path=output_dir / "invitation-used.png", full_page=True)


def test_it_shows_times_in_the_browser_zone_with_utc_on_hover(
    live_server, new_page, owner, env, output_dir
):
    page = new_page(timezone_id="Asia/Tokyo")
    sign_in(page, live_server, owner.email)  # the first page sets the zone cookie
    page.goto(f"{live_server.url}{env.get_absolute_url()}")
    requested = page.locator("dt:has-text('Requested') + dd time")
    expect(requested).to_contain_text("JST")
    assert requested.get_attribute("title").endswith(" UTC")
    page.goto(f"{live_server.url}/profile/")
    expect(page.get_by_label("Time zone")).to_contain_text("Your browser’s zone (Asia/Tokyo)")
    page.screenshot(path=output_dir / "profile.png", full_page=True)
