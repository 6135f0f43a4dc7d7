"""The ephemera CLI end to end: a live server, a real RQ worker process, the cluster."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest

from environments.catalog.publishing import publish_blueprint
from environments.kube import cluster
from environments.lifecycle import services
from environments.lifecycle.states import State
from environments.models import Environment
from tests.conftest import ROOT, cli_runner, wait_for

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("on_cluster"),
]


@pytest.fixture
def cli(live_server, owner, tmp_path):
    return cli_runner(live_server.url, owner, tmp_path)


def test_it_brings_an_environment_up_lists_extends_and_tears_it_down(
    cli, worker, sample_blueprints, tmp_path
):
    listed = cli("blueprints")
    assert listed.returncode == 0, listed.stderr
    assert "pr-preview" in listed.stdout

    up = cli("up", "pr-preview", "--param", "head_sha=abc1234", "--ttl", "2h", "--wait")
    assert up.returncode == 0, up.stdout + up.stderr
    environment = Environment.objects.get()
    assert environment.state == State.READY
    assert environment.parameters["head_sha"] == "abc1234"
    assert int(environment.ttl.total_seconds()) == 7200
    assert f"Requested {environment.name}" in up.stdout
    assert f"{environment.name}: ready" in up.stdout
    assert environment.urls["app"] in up.stdout

    ls = cli("ls")
    assert ls.returncode == 0
    assert environment.name in ls.stdout and "ready" in ls.stdout

    status = cli("status", environment.name)
    assert status.returncode == 0
    assert str(environment.pk) in status.stdout and "head_sha=abc1234" in status.stdout

    extend = cli("extend", environment.name, "1h")
    assert extend.returncode == 0, extend.stderr
    environment.refresh_from_db()
    assert int(environment.ttl.total_seconds()) == 3 * 3600

    kubeconfig_path = tmp_path / "env.kubeconfig"
    kc = cli("kubeconfig", environment.name, "-o", str(kubeconfig_path))
    assert kc.returncode == 0, kc.stderr
    assert kubeconfig_path.stat().st_mode & 0o777 == 0o600
    from kubernetes import client as kube_client
    from kubernetes import config as kube_config_loader

    api = kube_config_loader.new_client_from_config(config_file=str(kubeconfig_path))
    pods = kube_client.CoreV1Api(api).list_namespaced_pod(environment.namespace).items
    assert len(pods) == 1

    down = cli("down", str(environment.pk))
    assert down.returncode == 0, down.stderr
    assert "tearing_down" in down.stdout
    wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.DELETED)
    assert not cluster.namespace_exists(environment.namespace)


def test_it_explains_api_errors_with_distinct_exit_codes(cli, sample_blueprints):
    result = cli("up", "no-such-blueprint")
    assert result.returncode == 1
    assert result.stderr.startswith("ephemera: ")
    assert "HTTP 404" in result.stderr

    result = cli("up", "pr-preview", "--param", "head_sha=NOT-HEX")
    assert result.returncode == 4  # refused
    assert "head_sha" in result.stderr

    result = cli("up", "pr-preview", "--ttl", "soon")
    assert result.returncode == 2  # usage
    assert "not a duration" in result.stderr

    result = cli("status", "deadbeef")
    assert result.returncode == 1
    assert "HTTP 404" in result.stderr

    result = cli("status", "nope")  # says what it wants, not the API's regular expression
    assert result.returncode == 2
    assert "'nope' is not an environment: give its name" in result.stderr
    assert "pattern" not in result.stderr

    result = cli("ls", EPHEMERA_TOKEN="eph_00000000_wrong")
    assert result.returncode == 4
    assert "invalid, expired or revoked" in result.stderr
    assert not Environment.objects.exists()


def test_it_saves_the_login_readable_only_by_you(cli, live_server, tmp_path):
    result = cli("login", "--url", live_server.url, "--token", cli.token, EPHEMERA_URL="")
    assert result.returncode == 0, result.stderr
    path = tmp_path / ".config" / "ephemera" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The saved login is used when no environment variables are set.
    assert cli("ls", EPHEMERA_URL="", EPHEMERA_TOKEN="").returncode == 0

    result = cli("login", "--url", live_server.url, "--token", "eph_00000000_bad")
    assert result.returncode == 4


def test_it_exits_3_with_the_reason_when_the_environment_fails(cli, worker, sample_blueprints):

    source = (ROOT / "deploy" / "blueprints" / "pr-preview.yaml").read_text()
    publish_blueprint(
        source=source.replace("name: pr-preview", "name: too-big")
        .replace("cpu: 100m", "cpu: '5000'")
        .replace('quota: {cpu: 500m, memory: 512Mi, pods: "2"}', "")
    )
    up = cli("up", "too-big", "--wait", timeout=300)
    assert up.returncode == 3, up.stdout + up.stderr
    environment = Environment.objects.get()
    assert environment.state == State.FAILED
    assert f"{environment.name}: failed" in up.stdout
    assert "cannot be scheduled" in up.stderr

    assert cli("down", environment.name).returncode == 0
    wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.DELETED)


def test_it_names_lists_and_renames_with_the_same_rules_as_the_portal(cli, sample_blueprints):
    # No worker: the environments stay approved; naming needs only the API.
    up = cli("up", "shop-demo", "--param", "customer=globex", "--name", "Globex demo")
    assert up.returncode == 0, up.stderr
    assert "'Globex demo'" in up.stdout
    environment = Environment.objects.get(display_name="Globex demo")

    again = cli("up", "shop-demo", "--name", "globex demo")
    assert again.returncode == 4
    assert "You already have an environment named 'globex demo'." in again.stderr

    ls = cli("ls")
    assert ls.returncode == 0
    line = next(row for row in ls.stdout.splitlines() if row.startswith(environment.name))
    assert "Globex demo customer=globex" in line

    renamed = cli("rename", environment.name, "Globex renewal")
    assert renamed.returncode == 0, renamed.stderr
    environment.refresh_from_db()
    assert environment.display_name == "Globex renewal"
    assert "Name:        Globex renewal" in cli("status", environment.name).stdout


def test_an_extension_past_what_is_approved_automatically_waits_for_an_approver(cli, owner, team):
    # Issue 14, finding 2: the same rule as the portal and the API.
    from tests.factories import make_environment
    from tests.test_blueprints import GOOD

    version, _ = publish_blueprint(
        source=GOOD.replace("purpose: demo", "purpose: demo\napproval: required\n")
    )
    environment = make_environment(owner=owner, team=team, version=version, ttl_hours=2)
    expires = environment.expires_at
    extend = cli("extend", environment.name, "10h", "--reason", "Overnight test")
    assert extend.returncode == 0, extend.stderr
    assert f"Extension of {environment.name} requested: it needs an approver" in extend.stdout
    environment.refresh_from_db()
    assert environment.expires_at == expires
    assert environment.extension_requests.filter(state="pending").count() == 1


def test_up_wait_exits_5_while_the_request_waits_for_an_approver(cli, owner, team, approver):
    # Issue 17: `up --wait` exited 0 here, and the pipeline carried on with nothing running.
    from tests.test_blueprints import GOOD

    publish_blueprint(source=GOOD.replace("purpose: demo", "purpose: demo\napproval: required\n"))
    up = cli("up", "shop", "--wait", "--timeout", "60")
    assert up.returncode == 5, up.stdout + up.stderr
    environment = Environment.objects.get()
    assert environment.state == State.PENDING_APPROVAL
    assert f"{environment.name} is waiting for an approver." in up.stderr

    # wait: the same code; with --through-approval it keeps waiting, then times out (6).
    assert cli("wait", environment.name).returncode == 5
    waited = cli("wait", environment.name, "--through-approval", "--timeout", "3", "--json")
    assert waited.returncode == 6, waited.stderr
    assert "still pending_approval after 3s" in waited.stderr
    assert json.loads(waited.stdout)["state"] == "pending_approval"

    events = cli("events", environment.name, "--json")
    assert events.returncode == 0, events.stderr
    assert [e["state"] for e in json.loads(events.stdout)][-1] == "pending_approval"
    assert "pending_approval" in cli("events", environment.name).stdout

    # events --follow prints what happens next (one JSON object a line) until it is final.
    follow = subprocess.Popen(
        [sys.executable, "-m", "ephemera_cli", "events", environment.name, "--follow", "--json"],
        cwd=ROOT,
        env={**cli.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        services.reject_environment(environment=environment, approver=approver, reason="No.")
        out, err = follow.communicate(timeout=60)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["state"] == "rejected"
    assert cli("wait", environment.name).returncode == 4  # rejected: refused


def test_every_command_answers_json_and_ls_filters(cli, owner, team, sample_blueprints):
    # No worker: the environments stay approved; this needs only the API.
    first = cli("up", "shop-demo", "--external-key", "acme/shop#1", "--json")
    assert first.returncode == 0, first.stderr
    created = json.loads(first.stdout)
    assert created["external_key"] == "acme/shop#1"
    cli("up", "pr-preview", "--json")

    # The same key again: the same environment (updated), not a second one.
    again = cli("up", "shop-demo", "--external-key", "acme/shop#1", "--param", "customer=initech")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"Updated {created['name']}")
    assert Environment.objects.count() == 2

    listed = json.loads(cli("ls", "--json", "--blueprint", "shop-demo").stdout)
    assert [row["id"] for row in listed] == [created["id"]]
    assert (
        json.loads(cli("--json", "ls", "--external-key", "acme/shop#1").stdout)[0]["id"]
        == (created["id"])
    )
    assert json.loads(cli("ls", "--json", "--state", "ready").stdout) == []
    assert len(json.loads(cli("ls", "--json", "--state", "approved,ready").stdout)) == 2

    status = json.loads(cli("status", "--external-key", "acme/shop#1", "--json").stdout)
    assert status["parameters"]["customer"] == "initech"
    assert {row["name"] for row in json.loads(cli("blueprints", "--json").stdout)} >= {"shop-demo"}
    renamed = json.loads(cli("rename", created["name"], "Acme", "--json").stdout)
    assert renamed["display_name"] == "Acme"
    down = cli("down", "--external-key", "acme/shop#1", "--json")
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["state"] == "tearing_down"

    failed = cli("status", "deadbeef", "--json")
    assert failed.returncode == 1
    assert json.loads(failed.stdout) == {
        "error": failed.stderr.removeprefix("ephemera: ").strip(),
        "exit_code": 1,
        "http_status": 404,
    }
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("ephemera ")


def test_a_retried_up_with_the_same_idempotency_key_creates_nothing_new(cli, sample_blueprints):
    ci = {"GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_JOB": "e2e",
          "GITHUB_REPOSITORY": "acme/shop"}  # fmt: skip
    first = cli("up", "shop-demo", "--json", **ci)
    assert first.returncode == 0, first.stderr
    retried = cli("up", "shop-demo", "--json", **ci)
    assert retried.returncode == 0, retried.stderr
    assert "replayed" in retried.stderr
    assert json.loads(retried.stdout)["id"] == json.loads(first.stdout)["id"]
    assert Environment.objects.count() == 1
    # A re-run (a new attempt) is a new request; so is an explicit other key.
    assert cli("up", "shop-demo", **{**ci, "GITHUB_RUN_ATTEMPT": "2"}).returncode == 0
    assert cli("up", "shop-demo", "--idempotency-key", "k-1").returncode == 0
    assert "replayed" in cli("up", "shop-demo", "--idempotency-key", "k-1").stdout
    assert Environment.objects.count() == 3
