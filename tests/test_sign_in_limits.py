"""Sign-in limits: the Django admin's login is limited like allauth's, by the client's address.

Behind a proxy (TRUSTED_PROXY_COUNT), the address that counts, for the limit and for
the audit log, is the client's from X-Forwarded-For, not the proxy's.
"""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client, RequestFactory

from environments.governance import audit
from tests.conftest import make_user

ADMIN_LOGIN = "/admin/login/"
TOO_MANY = b"Too many failed login attempts"


@pytest.fixture
def staff(db):
    user = make_user("boss@example.com")
    user.is_staff = user.is_superuser = True
    user.save()
    return user


def admin_login(client: Client, password: str, **headers):
    return client.post(
        ADMIN_LOGIN,
        {"username": "boss@example.com", "password": password, "next": "/admin/"},
        **headers,
    )


def test_admin_login_is_rate_limited_per_account(staff):
    client = Client()
    for _ in range(5):
        response = admin_login(client, "wrong")
        assert response.status_code == 200
        assert TOO_MANY not in response.content
    # The counter lives in the Redis cache, like allauth's.
    assert any(b"login_failed" in key for key in cache._cache.get_client().keys("*"))
    # The right password is refused too until the window passes.
    response = admin_login(client, "pw-for-tests-1")
    assert TOO_MANY in response.content
    assert "_auth_user_id" not in client.session
    cache.clear()
    response = admin_login(client, "pw-for-tests-1")
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(staff.pk)


def test_admin_login_is_rate_limited_per_address(staff, settings):
    settings.ACCOUNT_RATE_LIMITS = {**settings.ACCOUNT_RATE_LIMITS, "login_failed": "3/m/ip"}
    client = Client()
    for n in range(3):
        response = client.post(ADMIN_LOGIN, {"username": f"x{n}@example.com", "password": "x"})
        assert TOO_MANY not in response.content
    response = admin_login(client, "pw-for-tests-1")
    assert TOO_MANY in response.content


def test_behind_a_proxy_the_limit_counts_the_client_address(staff, settings):
    settings.ACCOUNT_RATE_LIMITS = {**settings.ACCOUNT_RATE_LIMITS, "login_failed": "3/m/ip"}
    settings.TRUSTED_PROXY_COUNT = 1
    client = Client()  # every request arrives from the proxy's address, 127.0.0.1
    for n in range(3):
        response = client.post(
            "/accounts/login/",
            {"login": f"x{n}@example.com", "password": "x"},
            HTTP_X_FORWARDED_FOR="203.0.113.7",
        )
        assert TOO_MANY not in response.content
    # The attacker at 203.0.113.7 is limited ...
    response = client.post(
        "/accounts/login/",
        {"login": "y@example.com", "password": "x"},
        HTTP_X_FORWARDED_FOR="203.0.113.7",
    )
    assert TOO_MANY in response.content
    # ... and someone else behind the same proxy is not, on either sign-in page.
    response = client.post(
        "/accounts/login/",
        {"login": "boss@example.com", "password": "pw-for-tests-1"},
        HTTP_X_FORWARDED_FOR="198.51.100.2",
    )
    assert response.status_code == 302
    client.logout()
    response = admin_login(client, "pw-for-tests-1", HTTP_X_FORWARDED_FOR="198.51.100.3")
    assert response.status_code == 302


def test_behind_a_proxy_the_audit_log_records_the_client_address(settings):
    factory = RequestFactory()
    request = factory.get("/", HTTP_X_FORWARDED_FOR="203.0.113.7, 10.0.0.5")
    settings.TRUSTED_PROXY_COUNT = 0
    assert audit.client_ip(request) == "127.0.0.1"  # no proxy trusted: the peer
    settings.TRUSTED_PROXY_COUNT = 1
    assert audit.client_ip(request) == "10.0.0.5"  # the address our one proxy saw
    settings.TRUSTED_PROXY_COUNT = 2
    assert audit.client_ip(request) == "203.0.113.7"
    # A header with fewer hops than trusted proxies is not believed (nor a 500).
    settings.TRUSTED_PROXY_COUNT = 3
    assert audit.client_ip(request) == "127.0.0.1"
    # Garbage is not an address.
    request = factory.get("/", HTTP_X_FORWARDED_FOR="not-an-ip")
    settings.TRUSTED_PROXY_COUNT = 1
    assert audit.client_ip(request) == "127.0.0.1"
