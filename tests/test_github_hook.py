"""GitHub pull_request webhook: signed, idempotent, one preview per pull request."""

from __future__ import annotations

import json
import uuid

import django_rq
import pytest

from environments.kube import cluster
from environments.lib.signing import sign as signature_for
from environments.lifecycle.states import State
from environments.models import Environment, EnvironmentEvent, HookDelivery, RepositoryHook

URL = "/api/v1/hooks/github/"
REPO = "acme/shop"
SECRET = "s3cret-for-tests"
SHA_1 = "1111111aaaaaaa"
SHA_2 = "2222222bbbbbbb"


@pytest.fixture
def hook(owner, team, sample_blueprints):
    return RepositoryHook.objects.create(
        repository=REPO,
        secret=SECRET,
        blueprint=sample_blueprints["pr-preview"].blueprint,
        sha_parameter="head_sha",
        team=team,
        owner=owner,
    )


def pull_request(action: str, sha: str = SHA_1, number: int = 42) -> dict:
    return {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"sha": sha, "repo": {"full_name": REPO}},
            "state": "closed" if action == "closed" else "open",
        },
        "repository": {"full_name": REPO},
    }


def deliver(
    client, payload: dict, *, event="pull_request", delivery=None, secret=SECRET, sign=True
):
    body = json.dumps(payload).encode()
    headers = {
        "HTTP_X_GITHUB_EVENT": event,
        "HTTP_X_GITHUB_DELIVERY": delivery or str(uuid.uuid4()),
    }
    if sign:
        headers["HTTP_X_HUB_SIGNATURE_256"] = signature_for(secret, body)
    return client.post(URL, body, content_type="application/json", **headers)


@pytest.mark.django_db
def test_it_refuses_a_missing_or_bad_signature(client, hook):
    response = deliver(client, pull_request("opened"), sign=False)
    assert response.status_code == 401
    assert "X-Hub-Signature-256" in response.json()["detail"]
    response = deliver(client, pull_request("opened"), secret="wrong")
    assert response.status_code == 401
    payload = pull_request("opened")
    payload["repository"]["full_name"] = "someone/else"
    assert deliver(client, payload).status_code == 401
    assert not Environment.objects.exists()
    assert not HookDelivery.objects.exists()


@pytest.mark.django_db
def test_it_answers_a_ping(client, hook):
    response = deliver(
        client, {"zen": "Keep it simple.", "repository": {"full_name": REPO}}, event="ping"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "pong"


@pytest.mark.django_db
def test_it_ignores_a_replayed_delivery(client, hook):
    first = deliver(client, pull_request("opened"), delivery="delivery-1")
    assert first.status_code == 200, first.json()
    assert first.json()["status"] == "created"
    again = deliver(client, pull_request("opened", sha=SHA_2), delivery="delivery-1")
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "environment": None, "urls": {}, "state": None}
    environment = Environment.objects.get()
    assert environment.parameters["head_sha"] == SHA_1
    assert environment.external_key == f"github:{REPO}#42"
    assert environment.events.filter(kind=EnvironmentEvent.Kind.INFO).count() == 1


@pytest.mark.django_db
def test_it_treats_a_second_opened_as_synchronize(client, hook):
    deliver(client, pull_request("opened"))
    response = deliver(client, pull_request("reopened", sha=SHA_2))
    assert response.json()["status"] == "updated"
    environment = Environment.objects.get()
    assert environment.parameters["head_sha"] == SHA_2


@pytest.mark.django_db
def test_it_rejects_a_bad_sha_with_the_field_named(client, hook):
    response = deliver(client, pull_request("opened", sha="not a sha"))
    assert response.status_code == 422
    assert "head_sha" in response.json()["errors"]
    # Nothing recorded, so GitHub's "redeliver" can try again after a fix.
    assert not HookDelivery.objects.exists()


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_it_opens_updates_and_closes_a_preview_on_the_cluster(client, hook, settings, kube_config):
    settings.KUBECONFIG = kube_config
    cluster.reset_client()
    for name in ("default", "provision", "teardown"):
        django_rq.get_queue(name).empty()

    from tests.test_provisioning import run_worker_and_watcher as run_worker

    try:
        opened = deliver(client, pull_request("opened"))
        assert opened.status_code == 200, opened.json()
        body = opened.json()
        assert body["status"] == "created"
        environment = Environment.objects.get(pk=body["environment"])
        assert body["urls"]["app"].startswith("http")
        assert environment.name in body["urls"]["app"]
        run_worker()
        environment.refresh_from_db()
        assert environment.state == State.READY, environment.last_error
        assert cluster.namespace_exists(environment.namespace)
        note = environment.events.get(kind=EnvironmentEvent.Kind.INFO)
        assert body["urls"]["app"] in note.message and "#42" in note.message

        synchronized = deliver(client, pull_request("synchronize", sha=SHA_2))
        assert synchronized.status_code == 200, synchronized.json()
        assert synchronized.json()["environment"] == str(environment.pk)
        run_worker()
        environment.refresh_from_db()
        assert environment.state == State.READY, environment.last_error
        assert environment.parameters["head_sha"] == SHA_2
        deployment = cluster.list_deployments(environment.namespace)["items"][0]
        env_vars = {
            e["name"]: e.get("value")
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env_vars["GIT_SHA"] == SHA_2

        closed = deliver(client, pull_request("closed", sha=SHA_2))
        assert closed.status_code == 200, closed.json()
        assert closed.json()["status"] == "deleted"
        run_worker()
        environment.refresh_from_db()
        assert environment.state == State.DELETED
        assert not cluster.namespace_exists(environment.namespace)
        assert Environment.objects.count() == 1

        # A late or repeated close finds nothing to delete.
        assert deliver(client, pull_request("closed")).json()["status"] == "nothing to delete"
    finally:
        cluster.reset_client()


@pytest.mark.django_db
def test_it_answers_401_to_a_non_ascii_signature(client, hook):
    body = json.dumps(pull_request("opened")).encode()
    response = client.post(
        URL,
        body,
        content_type="application/json",
        HTTP_X_GITHUB_EVENT="pull_request",
        HTTP_X_GITHUB_DELIVERY=str(uuid.uuid4()),
        HTTP_X_HUB_SIGNATURE_256="sha256=é" * 3,
    )
    assert response.status_code == 401
