"""Pull-request previews end to end with a real forge: Gitea (tests/gitea.py).

Repositories, branches, commits and pull requests are made through Gitea's API; Gitea's
own webhook delivers to the portal under test (pytest-django's live server); a real
worker and watcher make the environment on the local cluster; what Ephemera posted
back (the commit status and its one comment) is read back through Gitea's API.
"""

from __future__ import annotations

import base64
import secrets

import pytest

from environments.integrations.forges.feedback import CONTEXT, MARKER
from environments.kube import cluster
from environments.lifecycle.states import State
from environments.models import Environment, HookEvent, RepositoryHook
from tests.conftest import start_watcher, start_worker, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

SECRET = "gitea-webhook-secret-for-tests"
PASSWORD = "gitea-pw-for-tests-1"


@pytest.fixture(autouse=True)
def _live_server_closes_its_connections():
    """Gitea keeps its HTTP connections to the live server open (keep-alive), so a request
    thread, and with CONN_MAX_AGE its database connection, outlives the test: the test
    database could then not be dropped at the end of the session. Each database
    connection opened meanwhile closes at the end of its request instead."""
    from django.db import connections

    database = connections.settings["default"]  # the dict every new connection reads
    before = database["CONN_MAX_AGE"]
    database["CONN_MAX_AGE"] = 0
    yield
    database["CONN_MAX_AGE"] = before


class Repo:
    """A Gitea repository made for one test, and the calls a test makes on it."""

    def __init__(self, gitea, owner: str, name: str):
        self.gitea, self.owner, self.name = gitea, owner, name
        self.full_name = f"{owner}/{name}"

    def api(self, method: str, path: str, **kwargs):
        return self.gitea.api(method, f"/repos/{self.full_name}{path}", **kwargs)

    def commit_file(self, path: str, text: str, *, branch: str, new_branch: str = "", sudo=None):
        body = {
            "content": base64.b64encode(text.encode()).decode(),
            "message": f"Add {path}",
            "branch": branch,
        }
        if new_branch:
            body["new_branch"] = new_branch
        answer = self.api("POST", f"/contents/{path}", json=body, sudo=sudo)
        return answer["commit"]["sha"]

    def statuses(self, sha: str) -> list[dict]:
        # Newest first by index: the default order (created second) ties within a second.
        # Gitea's sort names are inverted: "leastindex" is ORDER BY index DESC.
        statuses = self.api("GET", f"/statuses/{sha}", params={"sort": "leastindex"})
        return [s for s in statuses if s["context"] == CONTEXT]

    def our_comments(self, number: int) -> list[dict]:
        return [c for c in self.api("GET", f"/issues/{number}/comments") if MARKER in c["body"]]


def new_repo(gitea, live_server) -> Repo:
    owner = f"maker{secrets.token_hex(3)}"
    gitea.create_user(owner, f"{owner}@example.com", PASSWORD)
    gitea.api(
        "POST",
        f"/admin/users/{owner}/repos",
        json={"name": "shop", "auto_init": True, "default_branch": "main", "private": False},
    )
    repo = Repo(gitea, owner, "shop")
    repo.api(
        "POST",
        "/hooks",
        json={
            "type": "gitea",
            "active": True,
            "events": ["pull_request"],
            "config": {
                "url": f"{live_server.url}/api/v1/hooks/gitea/",
                "content_type": "json",
                "secret": SECRET,
            },
        },
    )
    return repo


@pytest.fixture
def forge_hook(gitea, live_server, owner, team, sample_blueprints, settings):
    def make(**fields) -> tuple[Repo, RepositoryHook]:
        repo = new_repo(gitea, live_server)
        hook = RepositoryHook.objects.create(
            forge="gitea",
            repository=repo.full_name,
            secret=SECRET,
            blueprint=sample_blueprints["pr-preview"].blueprint,
            sha_parameter="head_sha",
            team=team,
            owner=owner,
            api_url=gitea.url,
            token=gitea.token,
            **fields,
        )
        return repo, hook

    return make


def settled(predicate, environment, repo, sha, logs):
    """wait_for, and on a timeout say where it stood (state, statuses, hook events, logs)."""
    try:
        return wait_for(predicate, timeout=240, interval=1)
    except AssertionError as exc:
        environment.refresh_from_db()
        events = list(HookEvent.objects.values_list("kind", "message"))
        tails = {p.name: p.read_text()[-1500:] for p in logs.glob("*.log")}
        raise AssertionError(
            f"{exc}: state {environment.state} ({environment.last_error}), statuses "
            f"{repo.statuses(sha)}, hook events {events}, logs {tails}"
        ) from None


def latest(statuses: list[dict]) -> dict | None:
    return statuses[0] if statuses else None


def test_a_pull_request_gets_an_environment_a_status_and_one_edited_comment(
    gitea, forge_hook, on_cluster, kube_config, processes, tmp_path
):
    allow_loopback = {"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}  # the worker posts to Gitea
    processes.append(start_worker(kube_config, tmp_path / "worker.log", **allow_loopback))
    processes.append(start_watcher(kube_config, tmp_path / "watcher.log"))
    repo, hook = forge_hook()
    created: list[Environment] = []
    try:
        first_sha = repo.commit_file("feature.txt", "one", branch="main", new_branch="feature")
        pull = repo.api(
            "POST", "/pulls", json={"head": "feature", "base": "main", "title": "A feature"}
        )
        number = pull["number"]
        key = f"gitea:{repo.full_name}#{number}"

        environment = wait_for(
            lambda: Environment.objects.filter(external_key=key).first(), timeout=60
        )
        created.append(environment)
        assert environment.parameters["head_sha"] == first_sha

        def ready_and_posted(sha: str):
            environment.refresh_from_db()
            status = latest(repo.statuses(sha))
            if environment.state == State.READY and status and status["status"] == "success":
                return status
            assert environment.state != State.FAILED, environment.last_error
            return None

        status = settled(
            lambda: ready_and_posted(first_sha), environment, repo, first_sha, tmp_path
        )
        assert status["target_url"] == environment.urls["app"]
        assert environment.name in status["description"]
        comments = repo.our_comments(number)
        assert len(comments) == 1, comments
        comment_id = comments[0]["id"]
        assert environment.urls["app"] in comments[0]["body"]
        assert first_sha[:12] in comments[0]["body"]

        # A new commit: the same environment is updated, the same comment edited.
        second_sha = repo.commit_file("more.txt", "two", branch="feature")
        wait_for(
            lambda: Environment.objects.get(pk=environment.pk).parameters["head_sha"] == second_sha,
            timeout=60,
        )
        status = settled(
            lambda: ready_and_posted(second_sha), environment, repo, second_sha, tmp_path
        )
        assert status["target_url"] == environment.urls["app"]
        assert Environment.objects.filter(external_key=key).count() == 1
        deployment = cluster.list_deployments(environment.namespace)["items"][0]
        env_vars = {
            e["name"]: e.get("value")
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env_vars["GIT_SHA"] == second_sha

        def comment_shows(sha: str):
            comments = repo.our_comments(number)
            assert len(comments) == 1, comments  # never a second comment
            return sha[:12] in comments[0]["body"] and comments[0]

        edited = wait_for(lambda: comment_shows(second_sha), timeout=60)
        assert edited["id"] == comment_id

        # Closing tears it down and updates the status.
        repo.api("PATCH", f"/pulls/{number}", json={"state": "closed"})

        def torn_down():
            environment.refresh_from_db()
            status = latest(repo.statuses(second_sha))
            if environment.state == State.DELETED and "Torn down" in status["description"]:
                return status
            return None

        wait_for(torn_down, timeout=180, interval=1)
        assert not cluster.namespace_exists(environment.namespace)
        wait_for(lambda: "deleted" in repo.our_comments(number)[0]["body"], timeout=60)
        assert len(repo.our_comments(number)) == 1
        assert not HookEvent.objects.filter(hook=hook, kind=HookEvent.Kind.FAILED).exists()
    finally:
        for made in created:
            made.refresh_from_db()
            if made.namespace and cluster.namespace_exists(made.namespace):
                cluster.delete(cluster.namespace_manifest(made.namespace))


def test_a_fork_waits_for_the_label(gitea, forge_hook, live_server):
    repo, hook = forge_hook()
    forker = f"forker{secrets.token_hex(3)}"
    gitea.create_user(forker, f"{forker}@example.com", PASSWORD)
    gitea.api("POST", f"/repos/{repo.full_name}/forks", json={}, sudo=forker)
    fork = Repo(gitea, forker, "shop")
    wait_for(lambda: fork.api("GET", "/branches/main"), timeout=60)
    fork.commit_file("typo.txt", "fix", branch="main", new_branch="typo", sudo=forker)
    pull = repo.api(
        "POST",
        "/pulls",
        json={"head": f"{forker}:typo", "base": "main", "title": "Fix a typo"},
        sudo=forker,
    )
    number = pull["number"]

    # The default policy: nothing is created, and the hook's page says why.
    refusal = wait_for(
        lambda: HookEvent.objects.filter(hook=hook, number=number, kind="refused").first(),
        timeout=60,
    )
    assert "fork" in refusal.message
    assert not Environment.objects.exists()

    # The label policy: a maintainer's label starts it.
    RepositoryHook.objects.filter(pk=hook.pk).update(policy=RepositoryHook.Policy.LABEL)
    label = repo.api("POST", "/labels", json={"name": "preview", "color": "#00aabb"})
    repo.api("POST", f"/issues/{number}/labels", json={"labels": [label["id"]]})
    environment = wait_for(
        lambda: Environment.objects.filter(external_key=f"gitea:{repo.full_name}#{number}").first(),
        timeout=60,
    )
    assert environment.state in {State.APPROVED, State.REQUESTED}
