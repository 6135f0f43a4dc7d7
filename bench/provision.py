"""Provisioning benchmark: prints numbers, asserts nothing.

With 2 real RQ worker processes and 1 watcher process (``manage.py watch_cluster``):
  - approval -> ready, p50 and p95, for 1, 20 and 100 concurrent environments;
  - worker busy seconds per environment (RQ's started/ended times of the jobs);
  - teardown: one, and 100 deleted one by one (time from the last delete until all
    are deleted, and from the first);
  - Kubernetes API requests per environment (one provision and teardown, in process);
  - the watcher's peak memory (VmHWM) with ``--live`` (1,000) live environments of a
    1-component blueprint.

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
from common import bench_user_and_team, percentile  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from environments.catalog.publishing import publish_blueprint  # noqa: E402
from environments.kube import cluster  # noqa: E402
from environments.lifecycle import services  # noqa: E402
from environments.lifecycle.provisioning import provision, teardown  # noqa: E402
from environments.lifecycle.states import State  # noqa: E402
from environments.lifecycle.watcher import reconcile_once  # noqa: E402
from environments.models import Blueprint, Environment  # noqa: E402

BLUEPRINT = "shop-demo"  # three components
# One component, no port: no Service, so no service IP. The local control plane's
# service range is a /24 (254 addresses, shared by every session on the cluster):
# 100 shop-demos (300 Services) or 1,000 previews would not fit.
SMALL_SOURCE = """
name: bench-small
title: Benchmark, one component
purpose: benchmark
description: One small Deployment, no Service.
ttl: {default: 2h, max: 12h}
approval: auto
components:
  - name: app
    image: ghcr.io/stefanprodan/podinfo:6.7.1
    resources: {cpu: 10m, memory: 16Mi}
quota: {cpu: 100m, memory: 64Mi, pods: "2"}
"""


def setup():
    user, _ = bench_user_and_team()
    call_command("load_blueprints", str(ROOT / "deploy" / "blueprints"), verbosity=0)
    return (
        user,
        Blueprint.objects.get(name=BLUEPRINT).current_version(),
        publish_blueprint(source=SMALL_SOURCE)[0],
    )


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


def start_watcher() -> subprocess.Popen:
    environ = dict(os.environ)
    environ["KUBECONFIG"] = settings.KUBECONFIG
    return subprocess.Popen(
        [sys.executable, "manage.py", "watch_cluster", "--id", "bench"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def busy_seconds() -> float:
    """Total run time of the finished provision and teardown jobs (RQ's timestamps)."""
    total = 0.0
    for name in ("provision", "teardown"):
        queue = django_rq.get_queue(name)
        for job_id in queue.finished_job_registry.get_job_ids():
            job = queue.fetch_job(job_id)
            if job and job.started_at and job.ended_at:
                total += (job.ended_at - job.started_at).total_seconds()
        queue.finished_job_registry.cleanup()
        for job_id in queue.finished_job_registry.get_job_ids():
            queue.finished_job_registry.remove(job_id, delete_job=True)
    return total


def wait_states(ids, states, timeout=900):
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


def run_batch(user, version, count: int) -> tuple[list[float], float, float]:
    """Provision ``count`` at once, then delete them one by one; return the latencies,
    the time from the last delete until all are deleted, and from the first."""
    ids = [services.request_environment(user=user, version=version).pk for _ in range(count)]
    wait_states(ids, [State.READY, State.FAILED])
    failed = Environment.objects.filter(pk__in=ids, state=State.FAILED).count()
    if failed:
        print(f"  warning: {failed} environment(s) failed")
    latencies = approval_to_ready(ids)
    first = time.monotonic()
    for environment in Environment.objects.filter(pk__in=ids):
        services.delete_environment(environment=environment, user=user)
    last = time.monotonic()
    wait_states(ids, [State.DELETED])
    return latencies, time.monotonic() - last, time.monotonic() - first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--single-runs", type=int, default=5)
    parser.add_argument("--concurrent", type=int, nargs="*", default=[20, 100])
    parser.add_argument("--live", type=int, default=1000)
    args = parser.parse_args()

    user, version, small = setup()
    print(f"cluster: {settings.KUBECONFIG}")
    print(f"blueprint: {version} ({len(version.components)} components)")

    # API requests for one environment, counted in this process (jobs and one watcher
    # pass; the running watcher's own watches are shared by every environment).
    environment = services.request_environment(user=user, version=version)
    django_rq.get_queue("provision").empty()
    before = cluster.request_count
    provision(str(environment.pk))
    provision_calls = cluster.request_count - before
    wait_states_sync = time.monotonic()
    while Environment.objects.get(pk=environment.pk).state != State.READY:
        reconcile_once()
        if time.monotonic() - wait_states_sync > 120:
            raise SystemExit("single environment did not become ready")
    services.delete_environment(environment=environment, user=user)
    django_rq.get_queue("teardown").empty()
    before = cluster.request_count
    teardown(str(environment.pk))
    teardown_calls = cluster.request_count - before
    print(
        f"API requests per environment (jobs): provision {provision_calls}, "
        f"teardown {teardown_calls}; the watcher adds none per environment (4 shared watches)"
    )

    workers = start_workers(args.workers)
    watcher = start_watcher()
    try:
        busy_seconds()  # forget earlier jobs
        singles, teardowns = [], []
        for _ in range(args.single_runs):
            latencies, after_last, _ = run_batch(user, version, 1)
            singles += latencies
            teardowns.append(after_last)
        print(
            f"1 environment, approval -> ready ({args.single_runs} runs): "
            f"p50 {percentile(singles, 50):.2f}s  p95 {percentile(singles, 95):.2f}s; "
            f"teardown p50 {statistics.median(teardowns):.2f}s"
        )
        jobs = args.single_runs
        for count in args.concurrent:
            batch_version = version if count <= 20 else small
            latencies, after_last, after_first = run_batch(user, batch_version, count)
            jobs += count
            print(
                f"{count} concurrent ({batch_version.blueprint.name}), {args.workers} workers "
                "+ 1 watcher, approval -> ready: "
                f"p50 {percentile(latencies, 50):.2f}s  p95 {percentile(latencies, 95):.2f}s  "
                f"max {max(latencies):.2f}s; {count} deleted one by one: all deleted "
                f"{after_last:.2f}s after the last delete ({after_first:.2f}s after the first)"
            )
        busy = busy_seconds()
        print(f"worker busy time per environment (provision + teardown): {busy / jobs:.3f}s")
        if args.live:
            started = time.monotonic()
            ids = [
                services.request_environment(user=user, version=small).pk for _ in range(args.live)
            ]
            wait_states(ids, [State.READY, State.FAILED], timeout=3600)
            print(
                f"{args.live} live environments ({small.blueprint.name}, 1 component) ready "
                f"in {time.monotonic() - started:.0f}s; watcher peak RSS "
                f"{peak_rss_mb(watcher.pid):.0f} MB"
            )
            for environment in Environment.objects.filter(pk__in=ids):
                services.delete_environment(environment=environment, user=user)
            wait_states(ids, [State.DELETED], timeout=3600)
            print(f"watcher peak RSS after tearing them down: {peak_rss_mb(watcher.pid):.0f} MB")
    finally:
        for process in [*workers, watcher]:
            process.terminate()
        for process in [*workers, watcher]:
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
