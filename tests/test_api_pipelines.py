"""The API for pipelines: strict input, JSON errors everywhere, Idempotency-Key,
create-or-update by external key, PATCH of parameters, list filters and ``?wait=``.

Each of these was a defect found by a CI engineer following the README (issue 17): a
misspelt field silently ignored, a big body answered 500 with a trace, HTML answers
under /api/, no safe retry, one environment per push, no way to change a commit, no
filters, and polling loops that never end.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone

from environments.access import tokens
from environments.kube import cluster
from environments.lifecycle import idempotency
from environments.lifecycle.states import State
from environments.models import Environment, IdempotencyKey
from tests.conftest import hold, wait_for
from tests.factories import make_environment

API = "/api/v1"
SHA_1 = "1111111aaaaaaa"
SHA_2 = "2222222bbbbbbb"


@pytest.fixture
def write_token(owner):
    return tokens.create_token(user=owner, name="ci", scope="write", days=1)[1]


@pytest.fixture
def auth(write_token):
    return {"HTTP_AUTHORIZATION": f"Bearer {write_token}"}


def post(client, auth, path, body, **headers):
    return client.post(
        API + path, json.dumps(body), content_type="application/json", **auth, **headers
    )


def patch(client, auth, path, body):
    return client.patch(API + path, json.dumps(body), content_type="application/json", **auth)


def preview(**fields):
    return {"blueprint": "pr-preview", "parameters": {"head_sha": SHA_1}, **fields}


# --- Strict input -------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"blueprint": "pr-preview", "params": {"head_sha": SHA_1}}, "params"),
        ({"blueprint": "pr-preview", "ttl": 3600}, "ttl"),
        ({"blueprint": "pr-preview", "ttl_seconds": "3600"}, "ttl_seconds"),
        ({"blueprint": "pr-preview", "ttl_seconds": 3600.5}, "ttl_seconds"),
        ({"blueprint": "pr-preview", "ttl_seconds": True}, "ttl_seconds"),
        ({"blueprint": "pr-preview", "reason": 42}, "reason"),
        ({"blueprint": "pr-preview", "external_key": ""}, "external_key"),
        ({"blueprint": "pr-preview", "external_key": "a\nb"}, "external_key"),
    ],
)
def test_it_refuses_unknown_fields_and_wrong_types_naming_them(
    client, auth, sample_blueprints, body, named
):
    response = post(client, auth, "/environments", body)
    assert response.status_code == 422, response.content
    detail = response.json()["detail"]
    assert f"{named}: " in detail
    assert "\n" not in detail
    assert not Environment.objects.exists()


@pytest.mark.django_db
def test_it_suggests_the_field_a_misspelling_meant(client, auth, sample_blueprints):
    detail = post(client, auth, "/environments", {"blueprint": "pr-preview", "params": {}}).json()[
        "detail"
    ]
    assert detail == "Invalid request: params: unknown field; did you mean 'parameters'?"
    detail = post(client, auth, "/environments", {"blueprint": "pr-preview", "ttl": 1}).json()[
        "detail"
    ]
    assert "did you mean 'ttl_seconds'?" in detail
    detail = post(
        client, auth, "/environments", {"blueprint": "pr-preview", "ttl_seconds": "3600"}
    ).json()["detail"]
    assert detail == 'Invalid request: ttl_seconds: must be a whole number (3600, not "3600")'


@pytest.mark.django_db
def test_it_refuses_unknown_fields_on_extend_and_patch(client, auth, owner, team, shop):
    environment = make_environment(owner=owner, team=team, version=shop)
    extended = post(client, auth, f"/environments/{environment.pk}/extend", {"second": 60})
    assert extended.status_code == 422
    assert "second: unknown field; did you mean 'seconds'?" in extended.json()["detail"]
    assert (
        post(
            client, auth, f"/environments/{environment.pk}/extend", {"seconds": "3600"}
        ).status_code
        == 422
    )
    patched = patch(client, auth, f"/environments/{environment.pk}", {"params": {}})
    assert patched.status_code == 422
    assert "params: unknown field" in patched.json()["detail"]


# --- Every error is JSON ------------------------------------------------------------------


@pytest.mark.django_db
def test_it_answers_a_3_mib_body_with_a_json_413(client, auth, sample_blueprints, caplog):
    body = json.dumps(preview(reason="x" * (3 * 1024 * 1024)))
    response = client.post(API + "/environments", body, content_type="application/json", **auth)
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response.json()["detail"].startswith("The request body is larger than the limit")
    assert "Traceback" not in caplog.text
    assert not Environment.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_it_answers_a_big_body_with_a_json_413_on_a_real_server(live_server, write_token):
    request = urllib.request.Request(
        f"{live_server.url}{API}/environments",
        data=json.dumps(preview(reason="x" * (3 * 1024 * 1024))).encode(),
        headers={"Authorization": f"Bearer {write_token}", "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["detail"].startswith("The request body is larger")


@pytest.mark.django_db
def test_it_answers_unknown_paths_and_trailing_slashes_with_json_404(client, auth):
    for path in ("/nothing-here", "/environments/", "/blueprints/", "/hooks/github"):
        response = client.get(API + path, **auth)
        assert response.status_code == 404, path
        assert response["Content-Type"].startswith("application/json"), path
        assert response.json()["detail"].startswith(f"No API endpoint at {API}{path}.")
    assert (
        "without the trailing slash" in client.get(API + "/environments/", **auth).json()["detail"]
    )
    # A POST to a path missing its slash: Django's APPEND_SLASH would raise (a 500).
    hook = client.post(API + "/hooks/github", "{}", content_type="application/json")
    assert hook.status_code == 404
    assert "with a trailing slash" in hook.json()["detail"]
    outside = client.get("/api/v2/environments", **auth)
    assert outside.status_code == 404
    assert outside["Content-Type"].startswith("application/json")


@pytest.mark.django_db
def test_it_answers_unsupported_methods_with_json_405_and_allow(client, auth, owner, team, shop):
    environment = make_environment(owner=owner, team=team, version=shop)
    response = client.put(f"{API}/environments/{environment.pk}", "{}", **auth)
    assert response.status_code == 405
    assert response["Content-Type"].startswith("application/json")
    allowed = {method.strip() for method in response["Allow"].split(",")}
    assert allowed == {"GET", "PATCH", "DELETE"}
    assert response.json()["detail"].startswith("PUT is not allowed")
    assert client.delete(API + "/blueprints", **auth).status_code == 405


@pytest.mark.django_db
def test_it_answers_malformed_json_with_a_json_400(client, auth, sample_blueprints):
    response = client.post(
        API + "/environments", "{not json", content_type="application/json", **auth
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Cannot parse request body")


# --- Idempotency-Key ----------------------------------------------------------------------


@pytest.mark.django_db
def test_it_replays_the_first_answer_for_the_same_idempotency_key(
    client, auth, owner, sample_blueprints
):
    first = post(client, auth, "/environments", preview(), HTTP_IDEMPOTENCY_KEY="run-81-try")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    again = post(client, auth, "/environments", preview(), HTTP_IDEMPOTENCY_KEY="run-81-try")
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Environment.objects.count() == 1

    other = post(
        client,
        auth,
        "/environments",
        preview(parameters={"head_sha": SHA_2}),
        HTTP_IDEMPOTENCY_KEY="run-81-try",
    )
    assert other.status_code == 422
    assert other.json()["detail"] == "Idempotency-Key reused with a different request."
    assert Environment.objects.count() == 1

    # Another key is another request.
    assert (
        post(client, auth, "/environments", preview(), HTTP_IDEMPOTENCY_KEY="run-82").status_code
        == 201
    )
    assert Environment.objects.count() == 2


@pytest.mark.django_db
def test_it_does_not_remember_a_refusal(client, auth, sample_blueprints):
    refused = post(
        client,
        auth,
        "/environments",
        preview(parameters={"head_sha": "XYZ"}),
        HTTP_IDEMPOTENCY_KEY="k1",
    )
    assert refused.status_code == 422
    assert not IdempotencyKey.objects.exists()
    bad = post(client, auth, "/environments", preview(), HTTP_IDEMPOTENCY_KEY="")
    assert bad.status_code == 422
    long = post(client, auth, "/environments", preview(), HTTP_IDEMPOTENCY_KEY="k" * 201)
    assert long.status_code == 422


@pytest.mark.django_db
def test_it_prunes_idempotency_keys_after_a_day(client, auth, sample_blueprints):
    post(client, auth, "/environments", preview(), HTTP_IDEMPOTENCY_KEY="old")
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))
    # An expired key is a new request ...
    again = post(client, auth, "/environments", preview(), HTTP_IDEMPOTENCY_KEY="old")
    assert again.status_code == 201 and "Idempotent-Replayed" not in again
    assert Environment.objects.count() == 2
    # ... and the cron forgets expired keys.
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))
    from environments.lifecycle import upkeep

    upkeep.reap_expired()
    assert not IdempotencyKey.objects.exists()
    assert idempotency.prune() == 0


def _concurrently(live_server, token, body, headers, count=4):
    """``count`` identical POSTs released at the same instant; their (status, body)."""
    start = threading.Barrier(count)
    answers: list = []

    def call():
        request = urllib.request.Request(
            f"{live_server.url}{API}/environments",
            data=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                **headers,
            },
            method="POST",
        )
        start.wait()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answers.append((response.status, json.loads(response.read())))
        except urllib.error.HTTPError as error:
            answers.append((error.code, json.loads(error.read())))

    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    return answers


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_idempotency_key_create_one_environment(
    live_server, write_token, sample_blueprints
):
    answers = _concurrently(live_server, write_token, preview(), {"Idempotency-Key": "twin"})
    assert [status for status, _ in answers] == [201] * 4, answers
    assert len({body["id"] for _, body in answers}) == 1
    assert Environment.objects.count() == 1
    for name in ("default", "provision", "teardown"):
        django_rq.get_queue(name).empty()


# --- Create or update by external key -----------------------------------------------------


@pytest.mark.django_db
def test_it_creates_then_updates_by_external_key(
    client, auth, owner, team, other_team, sample_blueprints
):
    created = post(client, auth, "/environments", preview(external_key="acme/shop#12"))
    assert created.status_code == 201, created.json()
    assert created.json()["external_key"] == "acme/shop#12"
    environment = Environment.objects.get()
    # Ready by now; the next push updates it instead of making another.
    Environment.objects.filter(pk=environment.pk).update(state=State.READY)
    updated = post(
        client,
        auth,
        "/environments",
        preview(external_key="acme/shop#12", parameters={"head_sha": SHA_2}),
    )
    assert updated.status_code == 200, updated.json()
    assert updated.json()["id"] == str(environment.pk)
    assert updated.json()["parameters"]["head_sha"] == SHA_2
    assert updated.json()["state"] == State.PROVISIONING
    assert Environment.objects.count() == 1

    # The same key on another blueprint is refused, with what to do.
    clash = post(
        client, auth, "/environments", {"blueprint": "shop-demo", "external_key": "acme/shop#12"}
    )
    assert clash.status_code == 409
    assert "belongs to environment" in clash.json()["detail"]

    # Once it is torn down, the key makes a new one.
    client.delete(f"{API}/environments/{environment.pk}", **auth)
    fresh = post(client, auth, "/environments", preview(external_key="acme/shop#12"))
    assert fresh.status_code == 201
    assert fresh.json()["id"] != str(environment.pk)


@pytest.mark.django_db
def test_external_keys_are_per_team(owner, team, other_team, sample_blueprints):
    from environments.lifecycle import pipelines

    version = sample_blueprints["pr-preview"]
    make_environment(owner=owner, team=other_team, version=version, external_key="acme/shop#1")
    environment, created = pipelines.request_or_update(
        user=owner, version=version, external_key="acme/shop#1", team=team
    )
    assert created and environment.team == team
    assert Environment.objects.filter(external_key="acme/shop#1").count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_upserts_with_one_external_key_make_one_environment(
    live_server, write_token, sample_blueprints
):
    answers = _concurrently(live_server, write_token, preview(external_key="acme/shop#7"), {})
    statuses = sorted(status for status, _ in answers)
    assert statuses.count(201) == 1, answers
    assert all(status in (200, 201) for status in statuses), answers
    assert len({body["id"] for _, body in answers}) == 1
    assert Environment.objects.count() == 1
    for name in ("default", "provision", "teardown"):
        django_rq.get_queue(name).empty()


# --- PATCH parameters ---------------------------------------------------------------------


@pytest.mark.django_db
def test_it_patches_parameters_checked_by_the_blueprint(
    client, auth, owner, team, sample_blueprints
):
    version = sample_blueprints["pr-preview"]
    environment = make_environment(
        owner=owner,
        team=team,
        version=version,
        parameters={"head_sha": SHA_1, "image_tag": "6.7.1"},
    )
    bad = patch(client, auth, f"/environments/{environment.pk}", {"parameters": {"head_sha": "X"}})
    assert bad.status_code == 422
    assert "head_sha" in bad.json()["detail"]
    unknown = patch(client, auth, f"/environments/{environment.pk}", {"parameters": {"sha": SHA_2}})
    assert unknown.status_code == 422
    assert "sha" in unknown.json()["detail"]

    response = patch(
        client,
        auth,
        f"/environments/{environment.pk}",
        {"parameters": {"head_sha": SHA_2}, "display_name": "pr 12"},
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    # A partial override: image_tag keeps its value.
    assert body["parameters"] == {"head_sha": SHA_2, "image_tag": "6.7.1"}
    assert body["display_name"] == "pr 12"
    assert body["state"] == State.PROVISIONING
    # Renaming alone still works as before.
    renamed = patch(client, auth, f"/environments/{environment.pk}", {"display_name": ""})
    assert renamed.status_code == 200 and renamed.json()["display_name"] == ""


# --- Filters ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_filters_the_list(client, auth, owner, team, sample_blueprints):
    preview_version, shop = sample_blueprints["pr-preview"], sample_blueprints["shop-demo"]
    ready = make_environment(
        owner=owner, team=team, version=preview_version, reason="PR 1", external_key="a#1"
    )
    failed = make_environment(owner=owner, team=team, version=shop, state=State.FAILED)
    pending = make_environment(
        owner=owner, team=team, version=shop, state=State.PENDING_APPROVAL, reason="demo"
    )

    def ids(**params):
        response = client.get(API + "/environments", params, **auth)
        assert response.status_code == 200, response.json()
        return {row["id"] for row in response.json()}

    assert ids(state="ready") == {str(ready.pk)}
    assert ids(state="ready,failed") == {str(ready.pk), str(failed.pk)}
    assert ids(state=["ready", "pending_approval"]) == {str(ready.pk), str(pending.pk)}
    assert ids(blueprint="shop-demo") == {str(failed.pk), str(pending.pk)}
    assert ids(reason="demo") == {str(pending.pk)}
    assert ids(external_key="a#1") == {str(ready.pk)}
    assert ids(external_key="a#2") == set()
    assert ids(blueprint="shop-demo", state="failed") == {str(failed.pk)}
    listed = client.get(API + "/environments", {"state": "ready"}, **auth)
    assert listed["X-Total-Count"] == "1"

    unknown = client.get(API + "/environments", {"state": "running"}, **auth)
    assert unknown.status_code == 422
    detail = unknown.json()["detail"]
    assert "'running'" in detail and "ready" in detail and "pending_approval" in detail


# --- Waiting ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_wait_is_bounded(client, auth, owner, team, sample_blueprints, settings):
    environment = make_environment(
        owner=owner, team=team, version=sample_blueprints["pr-preview"], state=State.APPROVED
    )
    settings.API_WAIT_MAX_SECONDS = 1
    started = time.monotonic()
    response = client.get(f"{API}/environments/{environment.pk}", {"wait": 60}, **auth)
    took = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["state"] == State.APPROVED  # the wait ended first
    assert 1 <= took < 10
    # A settled environment answers at once.
    Environment.objects.filter(pk=environment.pk).update(state=State.PENDING_APPROVAL)
    started = time.monotonic()
    response = client.get(f"{API}/environments/{environment.pk}", {"wait": 60}, **auth)
    assert response.json()["state"] == State.PENDING_APPROVAL
    assert time.monotonic() - started < 1
    assert (
        client.get(f"{API}/environments/{environment.pk}", {"wait": -1}, **auth).status_code == 422
    )
    assert (
        client.get(f"{API}/environments/{environment.pk}", {"wait": "x"}, **auth).status_code == 422
    )


@pytest.mark.django_db(transaction=True)
def test_the_wait_returns_when_another_request_settles_it(client, auth, owner, team, shop):
    environment = make_environment(owner=owner, team=team, version=shop, state=State.PROVISIONING)
    answers = []

    def waiting():
        answers.append(client.get(f"{API}/environments/{environment.pk}", {"wait": 60}, **auth))

    thread = threading.Thread(target=waiting)
    started = time.monotonic()
    thread.start()
    hold(0.5)  # the waiting request is looking by now
    Environment.objects.filter(pk=environment.pk).update(state=State.FAILED)
    thread.join(30)
    took = time.monotonic() - started
    assert answers and answers[0].json()["state"] == State.FAILED
    assert took < 5


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_it_waits_for_ready_and_patches_the_deployment_on_the_cluster(
    client, auth, worker, sample_blueprints
):
    created = client.post(
        f"{API}/environments?wait=90",
        json.dumps(preview(external_key="acme/shop#99")),
        content_type="application/json",
        **auth,
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["state"] == State.READY, body
    assert body["urls"]["app"].startswith("http")
    environment = Environment.objects.get(pk=body["id"])
    try:
        patched = patch(
            client, auth, f"/environments/{environment.pk}", {"parameters": {"head_sha": SHA_2}}
        )
        assert patched.status_code == 200, patched.json()
        assert patched.json()["state"] == State.PROVISIONING
        settled = client.get(f"{API}/environments/{environment.pk}", {"wait": 90}, **auth)
        assert settled.json()["state"] == State.READY, settled.json()

        def git_sha():
            deployment = cluster.list_deployments(environment.namespace)["items"][0]
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            return {e["name"]: e.get("value") for e in container["env"]}.get("GIT_SHA")

        assert git_sha() == SHA_2
        # The pipeline's next push, by external key: the same environment again.
        again = post(
            client,
            auth,
            "/environments?wait=90",
            preview(external_key="acme/shop#99", parameters={"head_sha": SHA_1}),
        )
        assert again.status_code == 200, again.json()
        assert again.json()["id"] == str(environment.pk)
        assert again.json()["state"] == State.READY
        assert git_sha() == SHA_1
        assert Environment.objects.count() == 1
    finally:
        client.delete(f"{API}/environments/{environment.pk}", **auth)
        wait_for(lambda: not cluster.namespace_exists(environment.namespace), timeout=120)


@pytest.mark.django_db(transaction=True)
def test_a_wait_past_the_limit_answers_at_once_and_says_so(
    client, auth, owner, team, shop, monkeypatch
):
    from environments.lifecycle import pipelines

    environment = make_environment(owner=owner, team=team, version=shop, state=State.PROVISIONING)
    full = threading.BoundedSemaphore(1)
    full.acquire()  # every waiting slot of this process is taken
    monkeypatch.setattr(pipelines, "_waiting", full)
    started = time.monotonic()
    response = client.get(f"{API}/environments/{environment.pk}", {"wait": 60}, **auth)
    assert time.monotonic() - started < 5
    assert response.json()["state"] == State.PROVISIONING
    assert "did not wait" in response.json()["notice"]
