"""What the benchmarks share: the bench user and team, a clean queue, percentiles.

Imported by a benchmark after its own ``django.setup()`` (each sets its Redis database
and instance label first)."""

from __future__ import annotations

import socket

import django_rq
from django.contrib.auth import get_user_model
from django.core.management import call_command

from environments.lifecycle.states import State
from environments.models import Environment, Membership, Quota, Team


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_user_and_team():
    """Migrate, then the bench user in team "bench" with no quota, empty job queues, and
    the environments an interrupted run left closed (not provisioned again)."""
    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(
        username="bench@example.com", defaults={"email": "bench@example.com"}
    )
    team, _ = Team.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    Membership.objects.get_or_create(team=team, user=user)
    Quota.objects.filter(team=team).delete()
    for queue in ("provision", "teardown", "default"):
        django_rq.get_queue(queue).empty()
    Environment.objects.exclude(state__in=[State.DELETED, State.REJECTED]).update(
        state=State.DELETED, manifests=[]
    )
    return user, team
