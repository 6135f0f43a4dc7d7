"""People in a real browser: an admin invites someone by email (read back from a real
SMTP server), the person follows the link, sets a password, lands in their team and
requests an environment; the link does not work twice. Times follow the browser's zone."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from environments.models import AuditEvent, Environment, Membership
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


def test_it_manages_a_person_from_their_page(
    live_server, new_page, portal_admin, teammate, team, other_team, output_dir
):
    page = new_page()
    sign_in(page, live_server, portal_admin.email)
    page.goto(f"{live_server.url}/admin-portal/people/")
    page.get_by_role("link", name=teammate.email).click()
    expect(page.get_by_role("heading", name=teammate.email)).to_be_visible()

    page.get_by_label("Add to team").select_option(label="Research")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator("#messages")).to_contain_text("is now in team Research")
    expect(page.locator("#teams")).to_contain_text("Research")

    page.get_by_role("button", name="Make approver").click()
    expect(page.locator("#messages")).to_contain_text("may now approve requests")

    page.once("dialog", lambda dialog: dialog.accept())  # "Remove … from team Sales?"
    page.get_by_role("button", name="Remove from team Sales").click()
    expect(page.locator("#messages")).to_contain_text("no longer in team Sales")

    page.once("dialog", lambda dialog: dialog.accept())  # "Deactivate …?"
    page.get_by_role("button", name="Deactivate").click()
    expect(page.locator("#messages")).to_contain_text("is deactivated")
    expect(page.get_by_role("button", name="Reactivate")).to_be_visible()
    page.screenshot(path=output_dir / "person.png", full_page=True)

    teammate.refresh_from_db()
    assert not teammate.is_active
    assert list(teammate.teams.values_list("slug", flat=True)) == ["research"]
    actions = set(
        AuditEvent.objects.filter(object_id=str(teammate.pk)).values_list("action", flat=True)
    )
    assert {
        "person.add_to_team",
        "person.grant_approver",
        "person.remove_from_team",
        "person.deactivate",
    } <= actions

    # They cannot sign in any more.
    person = new_page()
    person.goto(f"{live_server.url}/accounts/login/")
    person.fill("input[name=login]", teammate.email)
    person.fill("input[name=password]", "pw-for-tests-1")
    person.locator("form button[type=submit]").last.click()
    person.wait_for_load_state()
    assert "/accounts/login/" in person.url or "/accounts/inactive/" in person.url
    person.goto(f"{live_server.url}/environments/")
    expect(person).to_have_url(re.compile(r"/accounts/login/"))
