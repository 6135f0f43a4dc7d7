"""The dashboards (mine, my team's): rows, htmx polling, caching, query counts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from environments.lifecycle.states import State
from environments.lifecycle.transitions import transition
from environments.models import Environment
from tests.conftest import client_for
from tests.factories import make_environment

pytestmark = pytest.mark.django_db


def test_it_lists_my_environments(owner, env):
    response = client_for(owner).get(reverse("my_environments"))
    assert response.status_code == 200
    assert env.namespace in response.content.decode()


def test_it_shows_an_empty_dashboard(owner, shop):
    response = client_for(owner).get(reverse("my_environments"))
    assert response.status_code == 200
    assert "You have no environments" in response.content.decode()


def test_it_shows_team_environments_to_a_teammate(teammate, env):
    response = client_for(teammate).get(reverse("team_environments"))
    assert response.status_code == 200
    assert env.namespace in response.content.decode()


def test_it_hides_team_environments_from_outsiders(outsider, env):
    response = client_for(outsider).get(reverse("team_environments"))
    assert env.namespace not in response.content.decode()
    response = client_for(outsider).get(reverse("environment_rows"), {"scope": "team"})
    assert env.namespace not in response.content.decode()


def test_it_keeps_polling_ready_rows_slowly(owner, env):
    # Ready is not the end: expiry or a teammate's delete must still show (issue 12).
    response = client_for(owner).get(reverse("environment_rows"), {"scope": "mine"})
    assert response.status_code == 200
    assert 'hx-trigger="every 5s"' in response.content.decode()


@pytest.mark.parametrize("state", [State.DELETED, State.REJECTED])
def test_it_stops_polling_rows_when_all_are_final(owner, team, shop, state):
    make_environment(owner=owner, team=team, version=shop, state=state)
    response = client_for(owner).get(reverse("environment_rows"), {"scope": "mine"})
    assert response.status_code == 286
    assert "hx-trigger" not in response.content.decode()


def test_it_notices_a_change_that_commits_after_a_later_one(owner, team, shop):
    # Two writers: B's timestamp is later, but A's write is the last to commit. The
    # newest timestamp does not move; the rows must change anyway.
    a = make_environment(owner=owner, team=team, version=shop, state=State.READY)
    b = make_environment(owner=owner, team=team, version=shop, state=State.READY)
    now = timezone.now()
    Environment.objects.filter(pk=b.pk).update(updated_at=now)
    client = client_for(owner)
    url = reverse("environment_rows") + "?scope=mine"
    assert "Tearing down" not in client.get(url).content.decode()
    Environment.objects.filter(pk=a.pk).update(
        state=State.TEARING_DOWN, updated_at=now - timedelta(milliseconds=5)
    )
    assert "Tearing down" in client.get(url).content.decode()


def test_it_keeps_polling_rows_while_one_is_changing(owner, team, shop, env):
    make_environment(owner=owner, team=team, version=shop, state=State.PROVISIONING)
    response = client_for(owner).get(reverse("environment_rows"), {"scope": "mine"})
    assert response.status_code == 200
    assert 'hx-trigger="every 2s"' in response.content.decode()


def _bulk_environments(count: int, *, owner, team, version) -> None:
    template = make_environment(owner=owner, team=team, version=version, state=State.PROVISIONING)
    fields = {
        f.attname: getattr(template, f.attname)
        for f in Environment._meta.concrete_fields
        if f.attname not in {"id", "name"}
    }
    base = Environment.objects.count()  # unique names without random collisions
    Environment.objects.bulk_create(
        [Environment(**fields, name=f"z{base + i:07d}") for i in range(count - 1)]
    )


@pytest.mark.parametrize("url_name", ["my_environments", "environment_rows", "team_environments"])
def test_it_makes_the_same_number_of_queries_for_10_and_1000_rows(
    owner, team, shop, url_name, django_assert_num_queries
):
    client = client_for(owner)
    url = reverse(url_name)
    _bulk_environments(10, owner=owner, team=team, version=shop)
    client.get(url)  # warm the session
    cache.clear()  # measure the rendering path, not the cached one
    with CaptureQueriesContext(connection) as ten:
        assert client.get(url).status_code in (200, 286)
    _bulk_environments(990, owner=owner, team=team, version=shop)
    assert Environment.objects.filter(owner=owner).count() == 1000
    cache.clear()
    with django_assert_num_queries(len(ten.captured_queries)):
        assert client.get(url).status_code in (200, 286)


def test_it_serves_unchanged_rows_from_the_cache_and_notices_changes(owner, team, shop):
    client = client_for(owner)
    environment = make_environment(owner=owner, team=team, version=shop, state=State.PROVISIONING)
    url = reverse("environment_rows") + "?scope=mine"
    client.get(url)
    with CaptureQueriesContext(connection) as cached:
        assert "Provisioning" in client.get(url).content.decode()
    assert not any("environments_blueprintversion" in q["sql"] for q in cached.captured_queries)
    # A state change (a guarded UPDATE through the state machine) shows at once.
    transition(environment.pk, from_states=State.PROVISIONING, to_state=State.READY)
    response = client.get(url)
    assert "Ready" in response.content.decode()
    assert 'hx-trigger="every 5s"' in response.content.decode()  # ready: polled slowly
    transition(environment.pk, from_states=State.READY, to_state=State.TEARING_DOWN)
    transition(environment.pk, from_states=State.TEARING_DOWN, to_state=State.DELETED)
    response = client.get(url)
    assert "Deleted" in response.content.decode()
    assert response.status_code == 286
