"""OIDC_SERVER_URL: https://, or http:// on a loopback address only, else one clear line."""

from __future__ import annotations

import pytest

from portal.settings import oidc_server_url_error
from tests.test_settings import run_manage


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://idp.example.com/realms/main", True),
        ("http://127.0.0.1:3000", True),
        ("http://localhost:3000/", True),
        ("http://[::1]:3000", True),
        ("http://idp.example.com", False),
        ("http://10.0.0.5:3000", False),
        ("idp.example.com", False),
        ("ftp://idp.example.com", False),
        ("https://", False),
        ("", False),
        (None, False),
    ],
)
def test_it_takes_http_for_the_provider_only_on_loopback(url, allowed):
    error = oidc_server_url_error(url)
    assert (error is None) == allowed, error
    if error:
        assert error.startswith("OIDC_SERVER_URL: must be an https:// URL") and "\n" not in error


@pytest.mark.django_db
def test_it_refuses_to_start_with_a_plain_http_provider():
    result = run_manage(
        "check",
        extra_env={
            "DEBUG": "true",
            "OIDC_CLIENT_ID": "ephemera",
            "OIDC_SERVER_URL": "http://idp.example.com",
        },
    )
    assert result.returncode != 0
    assert "OIDC_SERVER_URL: must be an https:// URL (http:// only on a loopback address)" in (
        result.stderr
    )
