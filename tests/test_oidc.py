"""Single sign-on through a real OpenID Connect provider: Gitea (tests/gitea.py), in
Chromium, from the portal's "Single sign-on" button through Gitea's sign-in and consent
pages back to a signed-in dashboard; and who may come in that way."""

from __future__ import annotations

import secrets

import pytest
from allauth.socialaccount.models import SocialAccount
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from environments.access import people
from environments.models import AuditEvent, Membership
from tests.conftest import make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "gitea-pw-for-tests-1"


@pytest.fixture
def provider(gitea, live_server, settings):
    """An OAuth2 application in Gitea with the portal's callback, and the portal's OIDC
    provider set to it (allauth reads SOCIALACCOUNT_PROVIDERS at request time, and the
    live server runs in this process)."""
    callback = f"{live_server.url}/accounts/oidc/sso/login/callback/"
    app = gitea.create_oauth2_application(f"ephemera-{secrets.token_hex(4)}", [callback])
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "OAUTH_PKCE_ENABLED": True,
            "APPS": [
                {
                    "provider_id": "sso",
                    "name": "Single sign-on",
                    "client_id": app["client_id"],
                    "secret": app["client_secret"],
                    "settings": {"server_url": gitea.url},
                }
            ],
        }
    }
    yield app
    gitea.api("DELETE", f"/user/applications/oauth2/{app['id']}")


@pytest.fixture
def person(gitea):
    """Someone with an account at the provider (not yet in the portal)."""
    name = f"dana{secrets.token_hex(3)}"
    email = f"{name}@example.com"
    gitea.create_user(name, email, PASSWORD)
    return {"username": name, "email": email}


def sign_in_through_gitea(page, live_server, gitea, person) -> None:
    """The portal's button, Gitea's sign-in form, Gitea's consent page."""
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_role("link", name="Single sign-on").click()
    # allauth asks before leaving the site (a POST, so no link can start a sign-in).
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{gitea.url}/user/login**")
    page.locator("#user_name").fill(person["username"])
    page.locator("#password").fill(PASSWORD)
    page.locator("form:has(#user_name) button.primary").click()
    page.wait_for_url(f"{gitea.url}/login/oauth/authorize**")
    page.locator("#authorize-app").click()  # "Authorize Application"
    page.wait_for_url(f"{live_server.url}/**")


def test_it_signs_in_through_the_identity_provider(
    settings, live_server, new_page, gitea, provider, person, sample_blueprints
):
    settings.SIGNUP_OPEN = False
    settings.OIDC_SIGNUP_OPEN = True  # the provider is the gate
    page = new_page()
    sign_in_through_gitea(page, live_server, gitea, person)

    page.wait_for_url(f"{live_server.url}/")
    expect(page.get_by_role("link", name="Request Webshop sales demo")).to_be_visible()
    expect(page.locator("body")).to_contain_text(person["email"])
    user = get_user_model().objects.get(email=person["email"])
    account = SocialAccount.objects.get(user=user)
    assert account.provider == "sso"
    assert account.extra_data["id_token"]["iss"].rstrip("/") == gitea.url
    assert user.emailaddress_set.get().verified  # Gitea says so (email_verified)
    # Signed in for real: the session reaches a page that needs it.
    page.goto(f"{live_server.url}/tokens/")
    assert "/accounts/login/" not in page.url


def test_it_refuses_a_vouched_person_without_an_account_when_sign_up_is_closed(
    settings, live_server, new_page, gitea, provider, person
):
    settings.SIGNUP_OPEN = False
    settings.OIDC_SIGNUP_OPEN = False
    page = new_page()
    sign_in_through_gitea(page, live_server, gitea, person)

    expect(page.get_by_role("heading", name="Sign-up is closed")).to_be_visible()
    expect(page.locator("body")).to_contain_text("ask a portal admin to invite you")
    assert not get_user_model().objects.filter(email__iexact=person["email"]).exists()
    assert not SocialAccount.objects.exists()
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url  # not signed in


def test_it_signs_in_an_existing_account_through_the_provider_when_sign_up_is_closed(
    settings, live_server, new_page, gitea, provider, person, team
):
    settings.SIGNUP_OPEN = False
    settings.OIDC_SIGNUP_OPEN = False
    # Invited earlier (or added by an admin): an account with the same, verified email.
    user = make_user(person["email"])
    Membership.objects.create(team=team, user=user)
    users = get_user_model().objects.count()
    page = new_page()
    sign_in_through_gitea(page, live_server, gitea, person)

    page.wait_for_url(f"{live_server.url}/")
    expect(page.locator("body")).to_contain_text(person["email"])
    assert get_user_model().objects.count() == users
    assert SocialAccount.objects.get().user == user  # linked: next time by its identity
    user.refresh_from_db()
    assert user.check_password("pw-for-tests-1")  # the password still works too


def test_it_lets_an_invited_person_join_their_team_through_the_provider(
    settings, live_server, new_page, gitea, provider, person, team, portal_admin
):
    settings.SIGNUP_OPEN = False
    settings.OIDC_SIGNUP_OPEN = False
    # Invited, and signs in with the button instead of following the email's link.
    invitation = people.invite(actor=portal_admin, email=person["email"].upper(), team=team)
    page = new_page()
    sign_in_through_gitea(page, live_server, gitea, person)

    page.wait_for_url(f"{live_server.url}/")
    user = get_user_model().objects.get(email__iexact=person["email"])
    assert Membership.objects.filter(user=user, team=team).exists()
    invitation.refresh_from_db()
    assert invitation.status == "accepted" and invitation.accepted_by == user
    entry = AuditEvent.objects.get(action="person.accept_invitation")
    assert entry.after["through"] == "single sign-on" and entry.after["team"] == team.slug
    assert SocialAccount.objects.get().user == user
    # Used up: a second provider identity with the same invitation gets nothing.
    assert people.pending_invitation_for(person["email"]) is None


def test_it_refuses_a_deactivated_person_through_the_provider(
    settings, live_server, new_page, gitea, provider, person, team
):
    settings.OIDC_SIGNUP_OPEN = True
    user = make_user(person["email"])
    Membership.objects.create(team=team, user=user)
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    page = new_page()
    sign_in_through_gitea(page, live_server, gitea, person)

    expect(page.locator("body")).to_contain_text("inactive")
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url  # not signed in
    assert get_user_model().objects.filter(email__iexact=person["email"]).count() == 1
