"""API tokens: hashed at rest, refused when expired, revoked or read-only; the token UI."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from environments.access import tokens
from environments.lifecycle.states import State
from environments.models import ApiToken, AuditEvent, Environment, EnvironmentEvent
from tests.factories import make_environment

pytestmark = pytest.mark.django_db


def bearer(plaintext: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}


def test_it_stores_only_the_hash(owner):
    token, plaintext = tokens.create_token(user=owner, name="ci", scope="write", days=30)
    assert plaintext.startswith(f"eph_{token.prefix}_")
    assert token.token_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    secret = plaintext.split("_", 2)[2]
    for row in ApiToken.objects.values():
        assert all(secret not in str(value) for value in row.values())
    assert AuditEvent.objects.filter(action="token.create", object_id=str(token.pk)).exists()


def test_it_authenticates_an_active_token_and_records_last_use(owner):
    token, plaintext = tokens.create_token(user=owner, name="ci", scope="read", days=1)
    found = tokens.authenticate(plaintext)
    assert found == token
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert tokens.authenticate(plaintext + "x") is None
    assert tokens.authenticate("") is None
    assert tokens.authenticate("not-a-token") is None


def test_it_refuses_expired_and_revoked_tokens(client, owner):
    expired, expired_text = tokens.create_token(user=owner, name="old", scope="write", days=1)
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(1))
    revoked, revoked_text = tokens.create_token(user=owner, name="gone", scope="write", days=1)
    assert tokens.revoke_token(token=revoked, user=owner) is True
    assert tokens.revoke_token(token=revoked, user=owner) is False  # twice is fine
    assert AuditEvent.objects.filter(action="token.revoke").count() == 1

    for plaintext in (expired_text, revoked_text, "eph_00000000_nonsense"):
        assert tokens.authenticate(plaintext) is None
        response = client.get("/api/v1/environments", **bearer(plaintext))
        assert response.status_code == 401
        assert "invalid, expired or revoked" in response.json()["detail"]
    response = client.get("/api/v1/environments")
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["detail"]


def test_it_refuses_writes_with_a_read_only_token(client, owner, sample_blueprints):
    _, plaintext = tokens.create_token(user=owner, name="ro", scope="read", days=1)
    assert client.get("/api/v1/blueprints", **bearer(plaintext)).status_code == 200
    response = client.post(
        "/api/v1/environments",
        {"blueprint": "pr-preview"},
        content_type="application/json",
        **bearer(plaintext),
    )
    assert response.status_code == 403
    assert "read-only" in response.json()["detail"]


def database_state() -> dict:
    """Everything an API write could change, to compare before and after."""
    return {
        "environments": list(Environment.objects.order_by("pk").values()),
        "events": EnvironmentEvent.objects.count(),
        "audit": list(AuditEvent.objects.order_by("pk").values_list("action", flat=True)),
    }


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/environments", {"blueprint": "pr-preview"}),
        ("post", "/api/v1/environments/{ref}/extend", {"seconds": 3600, "reason": "x"}),
        ("delete", "/api/v1/environments/{ref}", None),
        ("post", "/api/v1/environments/{ref}/kubeconfig", None),
    ],
    ids=["create", "extend", "delete", "kubeconfig"],
)
def test_it_refuses_every_write_endpoint_to_a_read_only_token(
    client, owner, team, sample_blueprints, method, path, body
):
    environment = make_environment(
        owner=owner, team=team, version=sample_blueprints["pr-preview"], state=State.READY
    )
    _, plaintext = tokens.create_token(user=owner, name="ro", scope="read", days=1)
    ref = str(environment.pk)
    assert client.get(f"/api/v1/environments/{ref}", **bearer(plaintext)).status_code == 200
    before = database_state()
    response = getattr(client, method)(
        path.format(ref=ref),
        body if body is not None else "",
        content_type="application/json",
        **bearer(plaintext),
    )
    assert response.status_code == 403, response.content
    assert "read-only" in response.json()["detail"]
    assert "kubeconfig" not in response.json()
    assert database_state() == before


def test_it_lets_only_the_owner_revoke(owner, teammate):
    token, _ = tokens.create_token(user=owner, name="mine", scope="read", days=1)
    with pytest.raises(tokens.TokenError):
        tokens.revoke_token(token=token, user=teammate)


def test_it_refuses_a_team_token_for_a_team_you_are_not_in(owner, other_team):
    with pytest.raises(tokens.TokenError):
        tokens.create_token(user=owner, name="x", scope="read", days=1, team=other_team)


def test_it_checks_name_scope_and_days(owner):
    for kwargs in (
        {"name": " ", "scope": "read", "days": 1},
        {"name": "x", "scope": "admin", "days": 1},
        {"name": "x", "scope": "read", "days": 0},
        {"name": "x", "scope": "read", "days": 1000},
    ):
        with pytest.raises(tokens.TokenError):
            tokens.create_token(user=owner, **kwargs)


# --- The token pages --------------------------------------------------------------------


def test_it_shows_the_plaintext_once_and_lists_own_tokens_only(client, owner, teammate):
    tokens.create_token(user=teammate, name="teammate-token", scope="read", days=1)
    client.force_login(owner)
    response = client.post(
        "/tokens/new/", {"name": "laptop", "scope": "write", "days": "30", "team": ""}
    )
    assert response.status_code == 200
    token = ApiToken.objects.get(user=owner)
    plaintext = re.search(r"eph_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}", response.content.decode())[0]
    assert tokens.authenticate(plaintext) == token
    listing = client.get("/tokens/").content.decode()
    assert "laptop" in listing
    assert "teammate-token" not in listing
    assert plaintext not in listing


def test_it_asks_before_revoking_and_revokes_by_post(client, owner):
    token, _ = tokens.create_token(user=owner, name="laptop", scope="read", days=1)
    client.force_login(owner)
    confirm = client.get(f"/tokens/{token.pk}/revoke/")
    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert "Revoke laptop?" in page
    assert f'action="/tokens/{token.pk}/revoke/"' in page and ">Revoke laptop</button>" in page
    token.refresh_from_db()
    assert token.revoked_at is None  # asking changes nothing
    response = client.post(f"/tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_it_answers_404_for_someone_elses_token(client, owner, outsider):
    token, _ = tokens.create_token(user=owner, name="laptop", scope="read", days=1)
    client.force_login(outsider)
    assert client.get(f"/tokens/{token.pk}/revoke/").status_code == 404
    assert client.post(f"/tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_it_requires_login(client):
    response = client.get("/tokens/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_it_shows_form_errors(client, owner):
    client.force_login(owner)
    response = client.post("/tokens/new/", {"name": "", "scope": "write", "days": "30"})
    assert response.status_code == 200
    assert ApiToken.objects.count() == 0


def test_it_stops_a_team_token_when_its_owner_leaves_the_team(owner, team):
    from environments.models import Membership

    token, plaintext = tokens.create_token(user=owner, name="ci", scope="write", days=30, team=team)
    assert tokens.authenticate(plaintext) is not None
    Membership.objects.filter(team=team, user=owner).delete()
    assert tokens.authenticate(plaintext) is None
