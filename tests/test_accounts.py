"""Sign-in with django-allauth, invite-only sign-up, rate limits, roles and teams."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.urls import reverse

from environments.models import Membership, Team
from tests.conftest import make_user


@pytest.fixture(autouse=True)
def _clear_rate_limits():
    cache.clear()
    yield
    cache.clear()


def test_it_serves_the_login_page(client, db):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="login"' in response.content
    assert b"portal.css" in response.content  # the portal's look


def test_it_sends_anonymous_people_to_the_login_page(client, db):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_it_signs_in_with_email_and_shows_the_catalogue(client, owner, sample_blueprints):
    response = client.post(
        "/accounts/login/", {"login": "owner@example.com", "password": "pw-for-tests-1"}
    )
    assert response.status_code == 302
    page = client.get(reverse("catalogue"))
    assert page.status_code == 200
    assert b"Webshop sales demo" in page.content


def test_it_is_invite_only_by_default(client, db):
    response = client.post(
        "/accounts/signup/",
        {"email": "new@example.com", "password1": "Long-pass-1234", "password2": "Long-pass-1234"},
    )
    from django.contrib.auth import get_user_model

    assert not get_user_model().objects.filter(email="new@example.com").exists()
    assert response.status_code == 200
    assert b"closed" in response.content.lower()
    # The sign-in page does not send people to a closed sign-up.
    page = client.get("/accounts/login/").content.decode()
    assert "ask a portal admin to invite you" in page
    assert "/accounts/signup/" not in page


def test_it_allows_sign_up_when_the_setting_opens_it(client, db, settings):
    settings.SIGNUP_OPEN = True
    assert "/accounts/signup/" in client.get("/accounts/login/").content.decode()
    client.post(
        "/accounts/signup/",
        {"email": "new@example.com", "password1": "Long-pass-1234", "password2": "Long-pass-1234"},
    )
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(email="new@example.com")
    assert list(user.groups.values_list("name", flat=True)) == ["requester"]


def test_it_rate_limits_failed_logins_in_redis(client, owner):
    for _ in range(5):
        response = client.post(
            "/accounts/login/", {"login": "owner@example.com", "password": "wrong"}
        )
        assert b"Too many failed login attempts" not in response.content
    # The counter lives in the Redis cache.
    assert any(b"rl:" in key for key in cache._cache.get_client().keys("*"))
    # Now even the right password is refused until the window passes.
    response = client.post(
        "/accounts/login/", {"login": "owner@example.com", "password": "pw-for-tests-1"}
    )
    assert b"Too many failed login attempts" in response.content
    assert "_auth_user_id" not in client.session

    # Clearing the cache (the limit's window passing) lets the person in again.
    cache.clear()
    response = client.post(
        "/accounts/login/", {"login": "owner@example.com", "password": "pw-for-tests-1"}
    )
    assert response.status_code == 302


def test_it_gives_new_users_the_requester_role(db):
    user = make_user("x@example.com")
    assert set(user.groups.values_list("name", flat=True)) == {"requester"}


def test_it_keeps_team_membership(owner, teammate, team):
    assert set(Membership.objects.filter(team=team).values_list("user__email", flat=True)) == {
        "owner@example.com",
        "teammate@example.com",
    }
    assert list(owner.teams.all()) == [team]


def test_it_creates_the_first_admin_once(db, monkeypatch, capsys):
    monkeypatch.setenv("EPHEMERA_ADMIN_EMAIL", "boss@example.com")
    monkeypatch.delenv("EPHEMERA_ADMIN_PASSWORD", raising=False)
    call_command("bootstrap_admin")
    out = capsys.readouterr().out
    assert "Password (shown once):" in out
    password = out.split("Password (shown once):")[1].split()[0]
    call_command("bootstrap_admin")
    assert "already exists" in capsys.readouterr().out

    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.get(email="boss@example.com")
    assert admin.is_superuser and admin.check_password(password)
    assert {"requester", "approver", "admin"} <= set(admin.groups.values_list("name", flat=True))
    assert Team.objects.filter(memberships__user=admin).exists()


def test_it_offers_single_sign_on_when_oidc_is_configured(client, db, settings):
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "APPS": [
                {
                    "provider_id": "sso",
                    "name": "Acme SSO",
                    "client_id": "ephemera",
                    "secret": "s",
                    "settings": {"server_url": "https://idp.example.com"},
                }
            ]
        }
    }
    page = client.get("/accounts/login/").content.decode()
    assert "Acme SSO" in page
    assert "/accounts/oidc/sso/login/" in page


def test_it_serves_every_script_and_stylesheet_itself(client, owner):
    import re

    client.force_login(owner)
    for url in ("/", "/accounts/login/", "/api/v1/docs"):
        page = client.get(url).content.decode()
        for ref in re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page):
            assert ref.startswith("/static/"), (url, ref)
