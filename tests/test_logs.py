"""Logs on the environment page: who may read them, what the panel says before and after
an environment runs, and (on the real local control plane, where kwok serves simulated
container logs) the lines themselves, followed while the page is open."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from environments.kube import cluster
from environments.lifecycle import services
from environments.lifecycle.states import State
from tests.conftest import client_for
from tests.factories import make_environment
from tests.kubecluster import load_launcher
from tests.test_provisioning import request as request_environment
from tests.test_provisioning import settle

HTMX = {"HTTP_HX_REQUEST": "true"}


def logs_url(environment, component: str = "web", **query) -> str:
    url = reverse("environment_logs", args=[environment.pk, component])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def append_log_line(text: str) -> None:
    """One more line in the file kwok serves as every container's log (CRI format)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with load_launcher().simulated_log_file().open("a") as log:
        log.write(f"{stamp} stdout F {text}\n")


# --- Without the cluster ---------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HTMX])
def test_it_returns_404_to_outsiders_for_logs(outsider, env, headers):
    response = client_for(outsider).get(logs_url(env), **headers)
    assert response.status_code == 404


@pytest.mark.django_db
def test_it_returns_404_for_a_component_the_blueprint_does_not_have(owner, env):
    response = client_for(owner).get(logs_url(env, "nope"), **HTMX)
    assert response.status_code == 404


@pytest.mark.django_db
def test_it_puts_a_logs_panel_for_each_component_on_the_environment_page(owner, env):
    body = client_for(owner).get(reverse("environment_detail", args=[env.pk])).content.decode()
    for component in ("web", "api", "cache"):
        assert f'id="logs-{component}"' in body
        assert f'hx-get="{logs_url(env, component)}" hx-trigger="load"' in body


@pytest.mark.django_db
def test_it_says_there_are_no_logs_yet_and_keeps_following_a_pending_request(owner, team, shop):
    environment = make_environment(
        owner=owner, team=team, version=shop, state=State.PENDING_APPROVAL
    )
    response = client_for(owner).get(logs_url(environment), **HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    assert "No logs yet: the request waits for approval." in body
    assert 'hx-trigger="every 5s"' in body


@pytest.mark.django_db
@pytest.mark.parametrize("state", [State.DELETED, State.REJECTED])
def test_it_stops_following_logs_once_the_environment_is_final(owner, team, shop, state):
    environment = make_environment(owner=owner, team=team, version=shop, state=state)
    client = client_for(owner)
    response = client.get(logs_url(environment), **HTMX)
    assert response.status_code == 286
    assert "hx-trigger" not in response.content.decode().split("<form")[0]
    page = client.get(reverse("environment_detail", args=[environment.pk])).content.decode()
    assert "No logs: this environment is gone." in page


@pytest.mark.django_db
def test_it_says_in_plain_words_when_the_cluster_does_not_answer(
    owner, env, settings, tmp_path, monkeypatch
):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    settings.KUBECONFIG = str(kubeconfig)
    monkeypatch.setattr(cluster, "LOG_DEADLINE_SECONDS", 1.0)
    cluster.reset_client()
    try:
        response = client_for(owner).get(logs_url(env), **HTMX)
    finally:
        cluster.reset_client()
    assert response.status_code == 200
    assert "The cluster did not answer in time" in response.content.decode()


# --- On the real local control plane ----------------------------------------------------


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("on_cluster")
def test_it_shows_the_owner_and_the_team_the_simulated_log_lines(
    owner, teammate, outsider, sample_blueprints
):
    environment = request_environment(owner, sample_blueprints["shop-demo"])
    settle(environment)
    assert environment.state == State.READY, environment.last_error
    marker = f"logs test {uuid.uuid4().hex[:8]} (simulated)"
    append_log_line(marker)

    # The gateway: the component's pods by label, bounded, with the kubelet's times.
    (web,) = cluster.pod_logs(environment.namespace, "web", tail_lines=3)
    assert web.pod.startswith("web-") and not web.problem
    assert len(web.lines) == 3
    # Another test session may append its own line at the same moment: not the last one.
    (line,) = [line for line in web.lines if line.text == marker]
    assert line.time is not None

    for person in (owner, teammate):
        response = client_for(person).get(logs_url(environment, "api"), **HTMX)
        assert response.status_code == 200
        body = response.content.decode()
        assert marker in body
        assert 'hx-trigger="every 5s"' in body  # following while it lives
    assert client_for(outsider).get(logs_url(environment), **HTMX).status_code == 404

    # Following: a line printed after the page opened shows on the next poll.
    later = f"logs test {uuid.uuid4().hex[:8]} later (simulated)"
    append_log_line(later)
    assert later in client_for(owner).get(logs_url(environment), **HTMX).content.decode()

    # Once it is deleted, the panel stops following.
    services.delete_environment(environment=environment, user=owner)
    settle(environment, states=(State.DELETED,))
    assert client_for(owner).get(logs_url(environment), **HTMX).status_code == 286


@pytest.mark.django_db
def test_it_shows_logs_on_a_page_of_their_own_without_javascript(owner, team, shop):
    environment = make_environment(owner=owner, team=team, version=shop, state=State.APPROVED)
    response = client_for(owner).get(logs_url(environment, "cache", tail=500))
    assert response.status_code == 200
    body = response.content.decode()
    assert "<h1>Logs of cache" in body
    assert '<option value="500" selected>' in body
    assert "No logs yet: the environment has not started." in body
