"""Pull-request hooks from GitHub, GitLab and Gitea/Forgejo: who gets an environment,
closed pull requests, limits, the feedback posted back, and the hook's admin page.

GitHub's and GitLab's deliveries are replayed from recorded payloads (tests/payloads/),
and their API calls go to a local server that records them (tests/forgeserver.py):
their real servers cannot be reached from here. Gitea runs for real in
tests/test_forge_gitea.py.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import ipaddress
import json
import uuid
from pathlib import Path

import pytest

from environments.integrations.forges import feedback
from environments.integrations.forges.base import ForgeCallFailed
from environments.lib.signing import sign
from environments.lifecycle import transitions
from environments.lifecycle.states import State
from environments.models import (
    AuditEvent,
    Environment,
    HookDelivery,
    HookEvent,
    PullRequest,
    RepositoryHook,
)
from tests import forgeserver
from tests.conftest import make_user

PAYLOADS = Path(__file__).parent / "payloads"
SECRET = "a-webhook-secret-for-tests"
TOKEN = "forge-token-for-tests"
SHA_2 = "2222222222222222222222222222222222222222"


def recorded(name: str) -> dict:
    return json.loads((PAYLOADS / name).read_text())


@pytest.fixture
def forge_api(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]
    forge = forgeserver.RecordingForge()
    server = forgeserver.start(forge)
    yield forge
    server.shutdown()
    server.server_close()


def make_hook(owner, team, sample_blueprints, **fields) -> RepositoryHook:
    defaults = dict(
        forge="github",
        repository="acme/shop",
        secret=SECRET,
        blueprint=sample_blueprints["pr-preview"].blueprint,
        sha_parameter="head_sha",
        team=team,
        owner=owner,
    )
    return RepositoryHook.objects.create(**{**defaults, **fields})


def github(client, payload: dict, *, event="pull_request", secret=SECRET):
    body = json.dumps(payload).encode()
    return client.post(
        "/api/v1/hooks/github/",
        body,
        content_type="application/json",
        HTTP_X_GITHUB_EVENT=event,
        HTTP_X_GITHUB_DELIVERY=str(uuid.uuid4()),
        HTTP_X_HUB_SIGNATURE_256=sign(secret, body),
    )


def gitlab(client, payload: dict, *, token=SECRET, delivery=None):
    return client.post(
        "/api/v1/hooks/gitlab/",
        json.dumps(payload).encode(),
        content_type="application/json",
        HTTP_X_GITLAB_EVENT="Merge Request Hook",
        HTTP_X_GITLAB_EVENT_UUID=delivery or str(uuid.uuid4()),
        HTTP_X_GITLAB_TOKEN=token,
    )


def gitea(client, payload: dict, *, secret=SECRET, header="X-Gitea-Signature"):
    body = json.dumps(payload).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    prefix = header.split("-")[1]  # Gitea or Forgejo
    return client.post(
        "/api/v1/hooks/gitea/",
        body,
        content_type="application/json",
        **{
            f"HTTP_X_{prefix.upper()}_EVENT": "pull_request",
            f"HTTP_X_{prefix.upper()}_DELIVERY": str(uuid.uuid4()),
            "HTTP_" + header.upper().replace("-", "_"): signature,
        },
    )


def with_action(payload: dict, action: str, *, sha: str | None = None, state=None) -> dict:
    payload = copy.deepcopy(payload)
    payload["action"] = action
    if sha:
        payload["pull_request"]["head"]["sha"] = sha
    if state:
        payload["pull_request"]["state"] = state
    return payload


# --- defects of the GitHub hook (each failed before this change) ---------------------


def test_it_creates_nothing_for_a_synchronize_delivered_after_closed(
    client, owner, team, sample_blueprints
):
    make_hook(owner, team, sample_blueprints)
    opened = recorded("github/pull_request.opened.json")
    assert github(client, opened).json()["status"] == "created"
    closed = with_action(opened, "closed", state="closed")
    assert github(client, closed).json()["status"] == "deleted"

    # GitHub's own late delivery says the pull request is closed...
    late = with_action(opened, "synchronize", sha=SHA_2, state="closed")
    assert github(client, late).json()["status"] == "ignored: pull request #42 is closed"
    # ...and a redelivery of an older one still says open: Ephemera remembers the close.
    redelivered = with_action(opened, "synchronize", sha=SHA_2)
    assert github(client, redelivered).json()["status"] == "ignored: pull request #42 was closed"
    assert Environment.objects.count() == 1
    assert Environment.objects.get().state == State.TEARING_DOWN

    # Reopening is the one way back.
    assert github(client, with_action(opened, "reopened")).json()["status"] == "created"
    assert Environment.objects.count() == 2


def test_it_gives_a_fork_nothing_under_the_default_policy_and_says_why(
    client, owner, team, sample_blueprints
):
    hook = make_hook(owner, team, sample_blueprints)
    response = github(client, recorded("github/pull_request.fork-opened.json"))
    assert response.status_code == 200
    assert response.json()["status"].startswith("refused: it comes from a fork")
    assert not Environment.objects.exists()
    event = HookEvent.objects.get(hook=hook)
    assert event.kind == HookEvent.Kind.REFUSED and event.number == 77
    assert "fork" in event.message and "same repository" in event.message


def test_it_gives_a_fork_an_environment_when_the_policy_allows_forks(
    client, owner, team, sample_blueprints
):
    make_hook(owner, team, sample_blueprints, policy=RepositoryHook.Policy.FORKS)
    response = github(client, recorded("github/pull_request.fork-opened.json"))
    assert response.json()["status"] == "created"


def test_it_waits_for_the_label_under_the_label_policy(client, owner, team, sample_blueprints):
    make_hook(owner, team, sample_blueprints, policy=RepositoryHook.Policy.LABEL)
    fork = recorded("github/pull_request.fork-opened.json")
    assert github(client, fork).json()["status"].startswith("refused: it does not have the label")
    labelled = with_action(fork, "labeled")
    labelled["pull_request"]["labels"] = [{"name": "preview"}]
    labelled["label"] = {"name": "preview"}
    assert github(client, labelled).json()["status"] == "created"
    unlabelled = with_action(fork, "unlabeled")
    assert github(client, unlabelled).json()["status"] == "deleted"


def test_it_checks_the_author_association_under_that_policy(client, owner, team, sample_blueprints):
    make_hook(owner, team, sample_blueprints, policy=RepositoryHook.Policy.ASSOCIATION)
    fork = recorded("github/pull_request.fork-opened.json")
    refused = github(client, fork).json()["status"]
    assert "first time contributor" in refused and "stranger" in refused
    member = recorded("github/pull_request.opened.json")  # author_association MEMBER
    assert github(client, member).json()["status"] == "created"


def test_it_bounds_the_environments_per_repository_and_posts_the_refusal(
    client, owner, team, sample_blueprints, forge_api
):
    hook = make_hook(
        owner, team, sample_blueprints, max_environments=1, api_url=forge_api.url, token=TOKEN
    )
    first = recorded("github/pull_request.opened.json")
    assert github(client, first).json()["status"] == "created"
    second = copy.deepcopy(first)
    second["number"] = second["pull_request"]["number"] = 43
    response = github(client, second)
    assert response.json()["status"] == "refused: the repository's limit of environments is reached"
    assert Environment.objects.count() == 1
    refused = PullRequest.objects.get(hook=hook, number=43)
    assert "already has 1 pull-request environment, its limit" in refused.refusal

    assert feedback.post(str(refused.pk)) == "status failure, comment created"
    status, comment = forge_api.calls
    assert status.path == f"/repos/acme/shop/statuses/{first['pull_request']['head']['sha']}"
    assert status.body["state"] == "failure" and "its limit" in status.body["description"]
    assert comment.path == "/repos/acme/shop/issues/43/comments"
    assert "its limit" in comment.body["body"]


# --- feedback on the pull request (GitHub's API shapes) -------------------------------


def test_it_posts_one_status_per_change_and_edits_its_one_comment(
    client, owner, team, sample_blueprints, forge_api
):
    hook = make_hook(owner, team, sample_blueprints, api_url=forge_api.url, token=TOKEN)
    opened = recorded("github/pull_request.opened.json")
    sha = opened["pull_request"]["head"]["sha"]
    github(client, opened)
    pull_request = PullRequest.objects.get(hook=hook, number=42)
    environment = pull_request.environment

    assert feedback.post(str(pull_request.pk)) == "status pending, comment created"
    status, comment = forge_api.calls
    assert (status.method, status.path) == ("POST", f"/repos/acme/shop/statuses/{sha}")
    assert status.headers["authorization"] == f"Bearer {TOKEN}"
    assert status.headers["x-github-api-version"] == "2022-11-28"
    assert status.body["state"] == "pending"
    assert status.body["context"] == "ephemera/preview"
    assert status.body["target_url"].endswith(f"/environments/{environment.pk}/")
    assert comment.path == "/repos/acme/shop/issues/42/comments"
    assert feedback.post(str(pull_request.pk)) == "unchanged"  # nothing new, nothing sent

    # Ready (the watcher's move): success with the environment's link; the same comment.
    transitions.transition(
        environment.pk, from_states=environment.state, to_state=State.PROVISIONING
    )
    Environment.objects.filter(pk=environment.pk).update(urls={"app": "https://app.example"})
    transitions.transition(environment.pk, from_states=State.PROVISIONING, to_state=State.READY)
    assert feedback.post(str(pull_request.pk)) == "status success, comment edited"
    status, edit = forge_api.calls[2:]
    assert status.body["state"] == "success"
    assert status.body["target_url"] == "https://app.example"
    assert (edit.method, edit.path) == ("PATCH", "/repos/acme/shop/issues/comments/1002")
    assert "https://app.example" in edit.body["body"]
    assert len(forge_api.paths("POST")) == 3  # two statuses, one comment: never a second


def test_it_retries_a_failed_post_without_a_second_comment_and_shows_the_failure(
    client, owner, team, sample_blueprints, forge_api
):
    hook = make_hook(owner, team, sample_blueprints, api_url=forge_api.url, token=TOKEN)
    github(client, recorded("github/pull_request.opened.json"))
    pull_request = PullRequest.objects.get(hook=hook)

    forge_api.fail_next = 1  # the status call fails
    with pytest.raises(ForgeCallFailed, match="HTTP 502"):
        feedback.post(str(pull_request.pk))
    failure = HookEvent.objects.get(hook=hook, kind=HookEvent.Kind.FAILED)
    assert "GitHub answered HTTP 502" in failure.message and "Bad gateway" in failure.message
    assert TOKEN not in failure.message
    assert forge_api.calls == []

    assert feedback.post(str(pull_request.pk)) == "status pending, comment created"
    forge_api.fail_next = 1
    Environment.objects.filter(pk=pull_request.environment_id).update(state=State.FAILED)
    with pytest.raises(ForgeCallFailed):
        feedback.post(str(pull_request.pk))
    assert feedback.post(str(pull_request.pk)) == "status failure, comment edited"
    assert [c.method for c in forge_api.calls].count("POST") == 3  # 2 statuses, 1 comment


def test_the_environment_never_waits_for_the_forge(
    client, owner, team, sample_blueprints, settings
):
    # The forge's address answers nothing: the hook still creates the environment.
    settings.WEBHOOK_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]
    make_hook(owner, team, sample_blueprints, api_url="http://127.0.0.1:9", token=TOKEN)
    response = github(client, recorded("github/pull_request.opened.json"))
    assert response.json()["status"] == "created"
    pull_request = PullRequest.objects.get()
    with pytest.raises(ForgeCallFailed, match="could not reach"):
        feedback.post(str(pull_request.pk))
    assert Environment.objects.get().state == State.APPROVED


# --- GitLab merge requests (recorded payloads, checked token) ------------------------


def test_it_drives_a_merge_request_through_open_update_and_merge(
    client, owner, team, sample_blueprints, forge_api
):
    hook = make_hook(
        owner,
        team,
        sample_blueprints,
        forge="gitlab",
        repository="acme/web/shop",
        api_url=forge_api.url,
        token=TOKEN,
    )
    opened = recorded("gitlab/merge_request.open.json")
    assert gitlab(client, opened, token="wrong-token-entirely").status_code == 401
    assert gitlab(client, opened, token="").status_code == 401
    assert not Environment.objects.exists()

    response = gitlab(client, opened)
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "created"
    environment = Environment.objects.get()
    assert environment.external_key == "gitlab:acme/web/shop#1"
    assert environment.parameters["head_sha"] == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"

    pull_request = PullRequest.objects.get(hook=hook, number=1)
    feedback.post(str(pull_request.pk))
    status, note = forge_api.calls
    assert status.path == (
        "/api/v4/projects/acme%2Fweb%2Fshop/statuses/da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    )
    assert status.headers["private-token"] == TOKEN
    assert status.body["state"] == "pending" and status.body["name"] == "ephemera/preview"
    assert note.path == "/api/v4/projects/acme%2Fweb%2Fshop/merge_requests/1/notes"

    updated = gitlab(client, recorded("gitlab/merge_request.update.json"))
    assert updated.json()["status"] == "updated"
    environment.refresh_from_db()
    assert environment.parameters["head_sha"] == "b83d6e391c22777fca1ed3012fce84f633d7fed0"
    Environment.objects.filter(pk=environment.pk).update(state=State.FAILED, last_error="boom")
    feedback.post(str(pull_request.pk))
    status, edit = forge_api.calls[2:]
    assert status.path.endswith("/statuses/b83d6e391c22777fca1ed3012fce84f633d7fed0")
    assert status.body["state"] == "failed" and "boom" in status.body["description"]
    assert (edit.method, edit.path) == (
        "PUT",
        "/api/v4/projects/acme%2Fweb%2Fshop/merge_requests/1/notes/1002",
    )

    Environment.objects.filter(pk=environment.pk).update(state=State.READY)
    merged = gitlab(client, recorded("gitlab/merge_request.merge.json"))
    assert merged.json()["status"] == "deleted"
    assert PullRequest.objects.get(pk=pull_request.pk).state == PullRequest.State.CLOSED
    # A late update after the merge creates nothing.
    assert gitlab(client, recorded("gitlab/merge_request.update.json")).json()["status"] == (
        "ignored: pull request #1 was closed"
    )
    assert Environment.objects.count() == 1


def test_it_tears_down_a_closed_merge_request_and_ignores_a_replay(
    client, owner, team, sample_blueprints
):
    make_hook(owner, team, sample_blueprints, forge="gitlab", repository="acme/web/shop")
    gitlab(client, recorded("gitlab/merge_request.open.json"))
    close = recorded("gitlab/merge_request.close.json")
    assert gitlab(client, close, delivery="close-1").json()["status"] == "deleted"
    assert gitlab(client, close, delivery="close-1").json()["status"] == "duplicate"
    assert HookDelivery.objects.filter(delivery_id="gitlab:close-1").count() == 1
    assert Environment.objects.get().state == State.TEARING_DOWN


def test_it_refuses_a_gitlab_fork_under_the_default_policy(client, owner, team, sample_blueprints):
    hook = make_hook(owner, team, sample_blueprints, forge="gitlab", repository="acme/web/shop")
    fork = recorded("gitlab/merge_request.open.json")
    fork["object_attributes"]["source_project_id"] = 99
    assert gitlab(client, fork).json()["status"].startswith("refused: it comes from a fork")
    assert HookEvent.objects.filter(hook=hook, kind=HookEvent.Kind.REFUSED).exists()


# --- Gitea and Forgejo signatures -----------------------------------------------------


def gitea_payload(action: str, *, fork=False) -> dict:
    return {
        "action": action,
        "number": 3,
        "pull_request": {
            "number": 3,
            "state": "open",
            "labels": [],
            "user": {"login": "alice"},
            "head": {"sha": "3" * 40, "repo_id": 8 if fork else 5},
            "base": {"sha": "0" * 40, "repo_id": 5},
        },
        "repository": {"full_name": "acme/shop"},
    }


@pytest.mark.parametrize("header", ["X-Gitea-Signature", "X-Forgejo-Signature"])
def test_it_checks_gitea_and_forgejo_signatures(client, owner, team, sample_blueprints, header):
    make_hook(owner, team, sample_blueprints, forge="gitea")
    assert gitea(client, gitea_payload("opened"), secret="not-the-secret-at-all",
                 header=header).status_code == 401  # fmt: skip
    assert gitea(client, gitea_payload("opened"), header=header).json()["status"] == "created"
    synchronized = gitea_payload("synchronized")
    synchronized["pull_request"]["head"]["sha"] = "4" * 40
    assert gitea(client, synchronized, header=header).json()["status"] == "updated"
    assert Environment.objects.get().parameters["head_sha"] == "4" * 40


def test_a_github_hook_does_not_accept_a_gitea_delivery(client, owner, team, sample_blueprints):
    # Gitea also sends X-Hub-Signature-256; a GitHub hook's endpoint still refuses it
    # unless the hook is a GitHub hook: hooks are looked up per forge.
    make_hook(owner, team, sample_blueprints, forge="gitea")
    response = github(client, gitea_payload("opened"))
    assert response.status_code == 401


# --- the hook's admin page ------------------------------------------------------------


@pytest.fixture
def admin_client(client, django_user_model):
    root = django_user_model.objects.create_superuser("root@example.com", "root@example.com", "pw")
    client.force_login(root)
    return client


def form(hook_fields: dict) -> dict:
    return {
        "forge": "github",
        "repository": "acme/shop",
        "secret": SECRET,
        "sha_parameter": "head_sha",
        "policy": "same_repository",
        "label": "preview",
        "max_environments": 5,
        "api_url": "",
        "token": "",
        **hook_fields,
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha_parameter": "commit"}, "Blueprint pr-preview has no parameter &#x27;commit&#x27;"),
        ({"owner": "outsider"}, "The owner is not a member of the team"),
        ({"repository": "https://github.com/acme/shop"}, "is not a repository name"),
        ({"repository": "acme"}, "is not a repository name"),
        ({"secret": "x"}, "The secret is too short: use at least 16 characters"),
        ({"forge": "gitea", "policy": "association"}, "Gitea does not say how an author"),
    ],
)
def test_the_admin_refuses_a_hook_that_can_never_work(
    admin_client, owner, outsider, team, sample_blueprints, change, message
):
    people = {"owner": owner.pk, "outsider": outsider.pk}
    data = form(
        {
            "blueprint": sample_blueprints["pr-preview"].blueprint.pk,
            "team": team.pk,
            "owner": people[change.pop("owner", "owner")],
            **change,
        }
    )
    response = admin_client.post("/admin/environments/repositoryhook/add/", data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not RepositoryHook.objects.exists()


def test_the_admin_never_shows_the_secret_or_the_token(
    admin_client, owner, team, sample_blueprints
):
    data = form(
        {
            "blueprint": sample_blueprints["pr-preview"].blueprint.pk,
            "team": team.pk,
            "owner": owner.pk,
            "token": TOKEN,
        }
    )
    response = admin_client.post("/admin/environments/repositoryhook/add/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    hook = RepositoryHook.objects.get()
    assert (hook.secret, hook.token) == (SECRET, TOKEN)
    page = admin_client.get(f"/admin/environments/repositoryhook/{hook.pk}/change/")
    html = page.content.decode()
    assert SECRET not in html and TOKEN not in html
    assert "stored (not shown)" in html
    # Encrypted at rest, and kept out of the audit log.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT secret, token FROM environments_repositoryhook WHERE id = %s", [hook.pk]
        )
        stored = cursor.fetchone()
    assert all(v.startswith("fernet:") for v in stored)
    assert SECRET not in "".join(stored) and TOKEN not in "".join(stored)
    entry = AuditEvent.objects.get(action="repositoryhook.add")
    assert entry.after["secret"] == entry.after["token"] == "(secret)"

    # Saving without typing them again keeps both.
    data.update(secret="", token="", max_environments=2)
    response = admin_client.post(f"/admin/environments/repositoryhook/{hook.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    hook.refresh_from_db()
    assert (hook.secret, hook.token, hook.max_environments) == (SECRET, TOKEN, 2)


def test_the_hook_page_lists_refusals_and_failures(
    admin_client, client, owner, team, sample_blueprints
):
    hook = make_hook(owner, team, sample_blueprints)
    HookEvent.objects.create(hook=hook, kind="failed", number=5, message="#5: could not post")
    HookEvent.objects.create(hook=hook, kind="refused", number=6, message="#6 not started: fork")
    html = admin_client.get(f"/admin/environments/repositoryhook/{hook.pk}/change/").content
    assert b"#5: could not post" in html and b"#6 not started: fork" in html


def test_an_outsider_cannot_open_the_hook_page(client, owner, team, sample_blueprints):
    hook = make_hook(owner, team, sample_blueprints)
    client.force_login(make_user("nobody@example.com"))
    response = client.get(f"/admin/environments/repositoryhook/{hook.pk}/change/")
    assert response.status_code == 302  # to the admin's sign-in


def test_a_transition_queues_the_feedback_job_with_retries(
    client, owner, team, sample_blueprints, env, django_capture_on_commit_callbacks
):
    import django_rq

    from environments.lifecycle.forge_feedback import RETRY_INTERVALS, TASK

    queue = django_rq.get_queue("default")
    queue.empty()
    hook = make_hook(owner, team, sample_blueprints)
    github(client, recorded("github/pull_request.opened.json"))
    pull_request = PullRequest.objects.get(hook=hook)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            transitions.transition(
                pull_request.environment_id, from_states=State.APPROVED, to_state=State.PROVISIONING
            )
            # An environment that serves no pull request queues nothing for the forge.
            transitions.transition(env.pk, from_states=State.READY, to_state=State.TEARING_DOWN)
        jobs = [job for job in queue.jobs if job.func_name == TASK]
        assert [job.args for job in jobs] == [(str(pull_request.pk),)]
        assert jobs[0].retries_left == len(RETRY_INTERVALS)
        assert jobs[0].retry_intervals == RETRY_INTERVALS
    finally:
        queue.empty()
