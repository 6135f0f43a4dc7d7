"""Provisioning benchmark: prints numbers, asserts nothing.

  - approval -> ready, p50 and p95, for 1 environment and for 20 concurrent ones
    served by 2 real RQ worker processes;
  - Kubernetes API requests per environment (one provision run, in process);
  - teardown time (delete -> deleted): one, 20 deleted one by one, 20 expiring together.

Runs against the cluster in KUBECONFIG or the local control plane, on the embedded
(or configured) PostgreSQL, with Redis database 14 and cluster instance label
"bench" so it never mixes with a running portal. Usage: `make bench` or
`.venv/bin/python bench/provision.py [--concurrent 20] [--workers 2]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("DEBUG", "true")
os.environ["REDIS_DB"] = "14"
os.environ["EPHEMERA_INSTANCE"] = "bench"

import django  # noqa: E402

django.setup()

import django_rq  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402

from environments.kube import cluster  # noqa: E402
from environments.lifecycle import services  # noqa: E402
from environments.lifecycle.provisioning import provision, teardown  # noqa: E402
from environments.lifecycle.states import State  # noqa: E402
from environments.lifecycle.upkeep import reap_expired  # noqa: E402
from environments.models import Blueprint, Environment, Membership, Quota, Team  # noqa: E402

BLUEPRINT = "shop-demo"  # three components


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def setup():
    call_command("migrate", verbosity=0)
    call_command("load_blueprints", str(ROOT / "deploy" / "blueprints"), verbosity=0)
    user, _ = get_user_model().objects.get_or_create(
        username="bench@example.com", defaults={"email": "bench@example.com"}
    )
    team, _ = Team.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    Membership.objects.get_or_create(team=team, user=user)
    Quota.objects.filter(team=team).delete()
    for queue in ("provision", "teardown", "default"):
        django_rq.get_queue(queue).empty()
    return user, Blueprint.objects.get(name=BLUEPRINT).current_version()


def start_workers(count: int) -> list[subprocess.Popen]:
    environ = dict(os.environ)
    environ["KUBECONFIG"] = settings.KUBECONFIG
    return [
        subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", "provision", "teardown"],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def wait_states(ids, states, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Environment.objects.filter(pk__in=ids).exclude(state__in=states).count() == 0:
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {states}")


def approval_to_ready(ids) -> list[float]:
    return [
        (ready - approved).total_seconds()
        for approved, ready in Environment.objects.filter(pk__in=ids).values_list(
            "approved_at", "ready_at"
        )
    ]


def run_batch(user, version, count: int, *, reap: bool = False) -> tuple[list[float], float]:
    """Provision ``count`` at once; then delete them all (or let them expire and run the
    reaper once, as the scheduler would); return the latencies and the teardown time."""
    ids = [services.request_environment(user=user, version=version).pk for _ in range(count)]
    wait_states(ids, [State.READY, State.FAILED])
    failed = Environment.objects.filter(pk__in=ids, state=State.FAILED).count()
    if failed:
        print(f"  warning: {failed} environment(s) failed")
    latencies = approval_to_ready(ids)
    started = time.monotonic()
    if reap:
        Environment.objects.filter(pk__in=ids).update(expires_at=timezone.now())
        reap_expired()
    else:
        for environment in Environment.objects.filter(pk__in=ids):
            services.delete_environment(environment=environment, user=user)
    wait_states(ids, [State.DELETED])
    return latencies, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--single-runs", type=int, default=5)
    args = parser.parse_args()

    user, version = setup()
    print(f"cluster: {settings.KUBECONFIG}")
    print(f"blueprint: {version} ({len(version.components)} components)")

    # API requests for one environment, counted in this process.
    environment = services.request_environment(user=user, version=version)
    django_rq.get_queue("provision").empty()
    before = cluster.request_count
    provision(str(environment.pk))
    provision_calls = cluster.request_count - before
    services.delete_environment(environment=environment, user=user)
    django_rq.get_queue("teardown").empty()
    before = cluster.request_count
    teardown(str(environment.pk))
    teardown_calls = cluster.request_count - before
    print(f"API requests per environment: provision {provision_calls}, teardown {teardown_calls}")

    workers = start_workers(args.workers)
    try:
        singles, teardowns = [], []
        for _ in range(args.single_runs):
            latencies, teardown_seconds = run_batch(user, version, 1)
            singles += latencies
            teardowns.append(teardown_seconds)
        print(
            f"1 environment, approval -> ready ({args.single_runs} runs): "
            f"p50 {percentile(singles, 50):.2f}s  p95 {percentile(singles, 95):.2f}s"
        )
        print(
            f"teardown (delete -> deleted): p50 {statistics.median(teardowns):.2f}s  "
            f"max {max(teardowns):.2f}s"
        )
        latencies, teardown_seconds = run_batch(user, version, args.concurrent)
        print(
            f"{args.concurrent} concurrent environments, {args.workers} workers, approval -> "
            f"ready: p50 {percentile(latencies, 50):.2f}s  p95 {percentile(latencies, 95):.2f}s  "
            f"max {max(latencies):.2f}s"
        )
        print(f"teardown of {args.concurrent}, deleted one by one: {teardown_seconds:.2f}s")
        _, reap_seconds = run_batch(user, version, args.concurrent, reap=True)
        print(
            f"teardown of {args.concurrent} expiring together (one reaper run): {reap_seconds:.2f}s"
        )
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)


if __name__ == "__main__":
    main()
