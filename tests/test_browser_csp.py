"""The Content-Security-Policy holds on the main pages: no violation in Chromium's console,
and the pages (htmx included) still work under it."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from environments.models import Membership, Quota
from tests.browser import sign_in
from tests.conftest import make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Kept by the page itself: Chromium fires this event for each blocked script, style,
# attribute or connection (the console says the same in words).
LISTEN = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.fixture
def boss(team):
    user = make_user("boss@example.com", roles=("admin", "approver"))
    user.is_staff = user.is_superuser = True
    user.save()
    Membership.objects.create(team=team, user=user)
    Quota.objects.create(team=team, monthly_budget=Decimal("500"))
    return user


def test_the_main_pages_raise_no_csp_violation(
    live_server, new_page, boss, env, sample_blueprints, output_dir
):
    page = new_page()
    console: list[str] = []
    page.on(
        "console",
        lambda m: console.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.add_init_script(LISTEN)

    response = page.goto(f"{live_server.url}/accounts/login/")
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy, policy
    assert "unsafe-inline" not in policy
    sign_in(page, live_server, boss.email)

    pages = [
        "/",
        "/blueprints/shop-demo/request/",
        "/environments/",
        "/environments/team/",
        env.get_absolute_url(),
        "/approvals/",
        "/admin-portal/environments/",
        "/admin-portal/people/",
        "/admin-portal/quotas/",
        "/admin-portal/spend/",
        "/admin-portal/blueprints/",
        "/admin-portal/audit/",
        "/tokens/",
        "/profile/",
        "/admin/",
        "/admin/environments/environment/",
        f"/admin/environments/environment/{env.pk}/change/",
        "/api/v1/docs",
    ]
    for path in pages:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        assert response.headers.get("content-security-policy"), path
        page.wait_for_load_state("networkidle")
        assert page.evaluate("window.__cspViolations") == [], path
    assert console == []

    # htmx works under the policy: the estimate follows the TTL.
    page.goto(f"{live_server.url}/blueprints/shop-demo/request/")
    page.get_by_label("Time to live").select_option(label="8h")
    page.locator("#estimate", has_text="for 8h").wait_for()
    # The dashboard's budget bar has its width without a style attribute.
    page.goto(f"{live_server.url}/environments/team/")
    bar = page.locator(".meter").first
    expect(bar).to_be_visible()
    # The quota-by-email form works with and without the script (the server redirects).
    page.goto(f"{live_server.url}/admin-portal/quotas/")
    page.get_by_label("A person’s quota, by email").fill(boss.email)
    page.get_by_role("button", name="Edit").click()
    page.wait_for_url(re.compile(r"/admin-portal/quotas/user/"))
    assert page.evaluate("window.__cspViolations") == []
    assert console == []
    page.screenshot(path=output_dir / "csp-quota.png", full_page=True)
