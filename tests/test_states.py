"""The state machine: every allowed and every forbidden transition, and races."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from environments.lifecycle.states import (
    TRANSITIONS,
    State,
    TransitionError,
    can_transition,
)
from environments.lifecycle.transitions import transition
from environments.models import Environment, EnvironmentEvent
from tests.conftest import wait_for
from tests.factories import make_environment

ALLOWED = {
    ("requested", "pending_approval"),
    ("requested", "approved"),
    ("requested", "rejected"),
    ("pending_approval", "approved"),
    ("pending_approval", "rejected"),
    ("pending_approval", "tearing_down"),
    ("approved", "provisioning"),
    ("approved", "tearing_down"),
    ("provisioning", "ready"),
    ("provisioning", "failed"),
    ("provisioning", "tearing_down"),
    ("ready", "provisioning"),
    ("ready", "tearing_down"),
    ("ready", "failed"),
    ("failed", "approved"),
    ("failed", "tearing_down"),
    ("tearing_down", "deleted"),
}
ALL_PAIRS = [(a, b) for a in State.values for b in State.values]


def test_it_lists_exactly_the_documented_transitions():
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == ALLOWED


@pytest.mark.parametrize(("from_state", "to_state"), sorted(ALLOWED))
def test_it_allows(db, owner, team, sample_blueprints, from_state, to_state):
    env = make_environment(
        owner=owner, team=team, version=sample_blueprints["shop-demo"], state=from_state
    )
    assert transition(env.pk, from_states=from_state, to_state=to_state) is True
    env.refresh_from_db()
    assert env.state == to_state
    event = EnvironmentEvent.objects.get(environment=env)
    assert event.state == to_state


@pytest.mark.parametrize(("from_state", "to_state"), [p for p in ALL_PAIRS if p not in ALLOWED])
def test_it_forbids(from_state, to_state):
    assert can_transition(from_state, to_state) is False
    with pytest.raises(TransitionError):
        transition(
            "00000000-0000-0000-0000-000000000000", from_states=from_state, to_state=to_state
        )


def test_it_does_nothing_when_the_row_is_in_another_state(db, owner, team, sample_blueprints):
    env = make_environment(owner=owner, team=team, version=sample_blueprints["shop-demo"])
    assert transition(env.pk, from_states="provisioning", to_state="failed") is False
    env.refresh_from_db()
    assert env.state == "ready"
    assert not EnvironmentEvent.objects.filter(environment=env).exists()


@pytest.mark.django_db(transaction=True)
def test_it_lets_exactly_one_of_two_racing_threads_win(owner, team, sample_blueprints):
    """Both threads are proven to be inside transition() at the same time, each blocked
    on its write behind a row lock the test holds; then the lock goes and they race.
    A read-then-write transition would let both win here."""
    env = make_environment(
        owner=owner, team=team, version=sample_blueprints["shop-demo"], state="approved"
    )
    results: list[bool] = []
    backends: list[int] = []
    errors: list[BaseException] = []

    def claim():
        try:
            connection.ensure_connection()
            backends.append(connection.connection.info.backend_pid)
            results.append(transition(env.pk, from_states="approved", to_state="provisioning"))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
        finally:
            connection.close()

    # A third session locks the row, as a slow transaction holding it would.
    holder = connection.get_new_connection(connection.get_connection_params())
    threads = [threading.Thread(target=claim) for _ in range(2)]
    try:
        holder.execute("SELECT id FROM environments_environment WHERE id = %s FOR UPDATE", [env.pk])
        for thread in threads:
            thread.start()
        # Proof of overlap: both threads' sessions wait on a lock at the same moment.
        wait_for(
            lambda: len(backends) == 2 and blocked(backends) == 2,
            timeout=60,
            interval=0.02,
        )
        assert results == [], "a thread finished while the row was locked"
    finally:
        holder.rollback()  # let them go
        holder.close()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert errors == []
    assert sorted(results) == [False, True]
    assert Environment.objects.get(pk=env.pk).state == "provisioning"
    assert EnvironmentEvent.objects.filter(environment=env).count() == 1


def blocked(backends: list[int]) -> int:
    """How many of these database sessions are waiting for a lock right now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM unnest(%s::int[]) AS pid"
            " WHERE cardinality(pg_blocking_pids(pid)) > 0",
            [list(backends)],
        )
        return cursor.fetchone()[0]
