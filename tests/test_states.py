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
    env = make_environment(
        owner=owner, team=team, version=sample_blueprints["shop-demo"], state="approved"
    )
    barrier = threading.Barrier(2)
    results: list[bool] = []

    def claim():
        try:
            barrier.wait()
            results.append(transition(env.pk, from_states="approved", to_state="provisioning"))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, True]
    assert Environment.objects.get(pk=env.pk).state == "provisioning"
    assert EnvironmentEvent.objects.filter(environment=env).count() == 1
