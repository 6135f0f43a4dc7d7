"""The REST API: same services and rules as the UI, JSON errors with a detail."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from environments.access import tokens
from environments.lifecycle.states import State
from environments.models import AuditEvent, Environment
from tests.factories import make_environment

pytestmark = pytest.mark.django_db

API = "/api/v1"


@pytest.fixture
def write_token(owner):
    return tokens.create_token(user=owner, name="ci", scope="write", days=1)[1]


@pytest.fixture
def api(client, write_token):
    """A client that sends the owner's write token."""

    class Api:
        def __init__(self, token):
            self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

        def get(self, path, **params):
            return client.get(API + path, params, **self.headers)

        def post(self, path, body=None):
            return client.post(
                API + path, body or {}, content_type="application/json", **self.headers
            )

        def delete(self, path):
            return client.delete(API + path, **self.headers)

        def as_(self, token):
            return Api(token)

    return Api(write_token)


def test_it_lists_current_blueprints_with_prices(api, sample_blueprints):
    response = api.get("/blueprints")
    assert response.status_code == 200
    rows = {row["name"]: row for row in response.json()}
    assert set(rows) == {v.blueprint.name for v in sample_blueprints.values()}
    preview = rows["pr-preview"]
    assert preview["version"] == sample_blueprints["pr-preview"].number
    assert preview["ttl_default_seconds"] == 86400
    assert preview["ttl_max_seconds"] == 7 * 86400
    assert preview["approval"] == "auto"
    assert isinstance(preview["hourly_price"], str)
    assert [p["name"] for p in preview["parameters"]] == ["head_sha", "image_tag"]


def test_it_creates_gets_lists_extends_and_deletes(api, owner, sample_blueprints):
    response = api.post(
        "/environments",
        {"blueprint": "pr-preview", "parameters": {"head_sha": "abc1234"}, "ttl_seconds": 3600},
    )
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["state"] == State.APPROVED
    assert created["parameters"]["head_sha"] == "abc1234"
    assert created["blueprint"] == "pr-preview"
    assert created["namespace"] == f"eph-{created['name']}"
    assert 3500 < created["time_left_seconds"] <= 3600
    environment = Environment.objects.get(pk=created["id"])
    assert environment.owner == owner
    assert AuditEvent.objects.filter(action="environment.request").exists()

    for ref in (created["id"], created["name"]):
        got = api.get(f"/environments/{ref}")
        assert got.status_code == 200
        assert got.json()["id"] == created["id"]
    assert [e["id"] for e in api.get("/environments").json()] == [created["id"]]
    assert [e["id"] for e in api.get("/environments", scope="team").json()] == [created["id"]]
    events = api.get(f"/environments/{created['id']}/events").json()
    assert [e["state"] for e in events if e["kind"] == "state"][-1] == State.APPROVED

    extended = api.post(f"/environments/{created['id']}/extend", {"seconds": 1800})
    assert extended.status_code == 200, extended.json()
    assert extended.json()["time_left_seconds"] > 5000

    deleted = api.delete(f"/environments/{created['id']}")
    assert deleted.status_code == 202
    assert deleted.json()["state"] == State.TEARING_DOWN
    # A second delete is not an error: it is already on its way.
    assert api.delete(f"/environments/{created['id']}").status_code == 202


def test_it_pages_the_environment_list(api, owner, team, sample_blueprints):
    made = [
        make_environment(owner=owner, team=team, version=sample_blueprints["pr-preview"])
        for _ in range(5)
    ]
    first = api.get("/environments", limit=2)
    assert first.status_code == 200
    assert first["X-Total-Count"] == "5"
    assert 'rel="next"' in first["Link"] and "offset=2" in first["Link"]
    seen = [e["id"] for e in first.json()]
    for offset in (2, 4):
        page = api.get("/environments", limit=2, offset=offset)
        seen += [e["id"] for e in page.json()]
    assert "Link" not in page  # the last page
    # Every environment once, newest first.
    newest_first = sorted(made, key=lambda e: (e.created_at, e.pk), reverse=True)
    assert seen == [str(e.pk) for e in newest_first]
    assert api.get("/environments", limit=501).status_code == 422
    assert api.get("/environments", offset=-1).status_code == 422


def test_it_refuses_a_boolean_or_tiny_ttl(api, sample_blueprints):
    for ttl in (True, False, 1, 299, 3600.5):
        response = api.post("/environments", {"blueprint": "pr-preview", "ttl_seconds": ttl})
        assert response.status_code == 422, (ttl, response.json())
        assert "ttl_seconds" in response.json()["detail"]
    assert not Environment.objects.exists()


def test_it_limits_the_call_rate_per_token(api, owner, settings, monkeypatch):
    # The window is fixed: hold the clock mid-window so no boundary falls between calls.
    monkeypatch.setattr("environments.api.app.time", SimpleNamespace(time=lambda: 1_800_000_030.0))
    settings.API_RATE_LIMIT = (3, 60)
    for _ in range(3):
        assert api.get("/environments").status_code == 200
    refused = api.get("/environments")
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("Too many requests: this token may make 3 calls")
    assert 1 <= int(refused["Retry-After"]) <= 60
    # The limit is per token: another token of the same user still works.
    other = tokens.create_token(user=owner, name="other", scope="read", days=1)[1]
    assert api.as_(other).get("/environments").status_code == 200


def test_it_answers_404_for_another_teams_environment(api, outsider, other_team, sample_blueprints):
    theirs = make_environment(
        owner=outsider, team=other_team, version=sample_blueprints["pr-preview"]
    )
    for path in (f"/environments/{theirs.pk}", f"/environments/{theirs.name}/events"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json()["detail"]
    assert api.post(f"/environments/{theirs.pk}/extend", {"seconds": 60}).status_code == 404
    assert api.delete(f"/environments/{theirs.pk}").status_code == 404
    assert api.get("/environments", scope="team").json() == []
    theirs.refresh_from_db()
    assert theirs.state == State.READY


def test_it_lets_a_teammate_see_and_change_team_environments(
    api, teammate, team, sample_blueprints
):
    ours = make_environment(owner=teammate, team=team, version=sample_blueprints["pr-preview"])
    assert api.get("/environments").json() == []
    assert [e["id"] for e in api.get("/environments", scope="team").json()] == [str(ours.pk)]
    assert api.get(f"/environments/{ours.pk}").status_code == 200


def test_it_gives_field_errors_for_bad_parameters(api, sample_blueprints):
    response = api.post(
        "/environments", {"blueprint": "pr-preview", "parameters": {"head_sha": "NOT-A-SHA"}}
    )
    assert response.status_code == 422
    body = response.json()
    assert "head_sha" in body["errors"]
    assert "head_sha" in body["detail"]
    assert not Environment.objects.exists()


def test_it_answers_404_for_an_unknown_blueprint(api, sample_blueprints):
    response = api.post("/environments", {"blueprint": "nope"})
    assert response.status_code == 404
    assert response.json()["detail"]


def test_it_answers_409_with_the_services_message(api, sample_blueprints):
    response = api.post("/environments", {"blueprint": "pr-preview", "ttl_seconds": 30 * 86400})
    assert response.status_code == 409
    assert "at most" in response.json()["detail"]


def test_it_answers_403_for_a_team_you_are_not_in(api, other_team, sample_blueprints):
    response = api.post("/environments", {"blueprint": "pr-preview", "team": "research"})
    assert response.status_code == 403
    assert "not a member" in response.json()["detail"]
    response = api.post("/environments", {"blueprint": "pr-preview", "team": "no-such-team"})
    assert response.status_code == 404


def test_it_validates_input_without_a_500(api, client, write_token, sample_blueprints):
    assert api.get("/environments/not-a-uuid!").status_code in (404, 422)
    assert api.get(f"/environments/{uuid.uuid4()}").status_code == 404
    assert api.get("/environments/zzzzzzzz").status_code == 422
    assert api.get("/environments", scope="everyone").status_code == 422
    for body in (
        {"blueprint": 5},
        {"blueprint": "pr-preview", "ttl_seconds": -1},
        {},
        {"blueprint": "\x00pr"},
        {"blueprint": "pr-preview", "reason": "nul \x00"},
        {"blueprint": "pr-preview", "parameters": {"head_sha": "abc\x00"}},
    ):
        response = api.post("/environments", body)
        assert response.status_code == 422, body
        assert response.json()["detail"].startswith("Invalid request")
    # Messages name the field as sent, in one sentence each.
    detail = api.post("/environments", {}).json()["detail"]
    assert detail == "Invalid request: blueprint: Field required"
    detail = api.post(
        "/environments", {"blueprint": "pr-preview", "parameters": {"head_sha": [1, 2]}}
    ).json()["detail"]
    assert detail == (
        "Invalid request: parameters.head_sha: must be a string, a number, true/false or null"
    )
    empty = client.post(
        f"{API}/environments",
        "",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {write_token}",
    )
    assert empty.status_code in (400, 422)
    assert "payload" not in empty.json()["detail"], empty.json()
    response = client.post(
        f"{API}/environments",
        "{not json",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {write_token}",
    )
    assert 400 <= response.status_code < 500
    assert response.json()["detail"]


def test_it_refuses_to_extend_past_the_maximum(api, owner, team, sample_blueprints):
    mine = make_environment(owner=owner, team=team, version=sample_blueprints["pr-preview"])
    response = api.post(f"/environments/{mine.pk}/extend", {"seconds": 400 * 86400})
    assert response.status_code == 422  # beyond what the schema allows at all
    response = api.post(f"/environments/{mine.pk}/extend", {"seconds": 7 * 86400})
    assert response.status_code == 409
    assert "at most" in response.json()["detail"]


def test_it_lets_a_team_token_act_for_the_team(client, owner, teammate, team, sample_blueprints):
    _, plaintext = tokens.create_token(user=owner, name="ci", scope="write", days=1, team=team)
    response = client.post(
        f"{API}/environments",
        {"blueprint": "pr-preview"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {plaintext}",
    )
    assert response.status_code == 201
    assert response.json()["team"] == "sales"
    ours = make_environment(owner=teammate, team=team, version=sample_blueprints["pr-preview"])
    response = client.get(f"{API}/environments/{ours.pk}", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert response.status_code == 200


def test_it_serves_the_openapi_document(client):
    response = client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "Ephemera API"
    assert "/api/v1/environments/{ref}/extend" in document["paths"]
    assert client.get(f"{API}/docs").status_code == 200
