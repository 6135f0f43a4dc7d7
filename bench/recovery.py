"""Recovery benchmark: prints numbers, asserts nothing.

With 2 real RQ worker processes and 1 watcher process (``manage.py watch_cluster``):
  - restore -> ready, p50 and p95, for a 3-component environment (one data volume,
    snapshotted): from the restore request to the watcher seeing every component
    available (the RecoveryRecord's seconds, what the Recovery page reads);
  - drift repair: a Deployment of a ready environment deleted by hand, until a new one
    stands (if this build repairs drift; else "n/a");
  - snapshot size: the canonical JSON the digest covers, and the volumes' declared size;
  - one restore drill on demand, its recovery time and result.

Runs against the cluster in KUBECONFIG or the local control plane, on this checkout's
embedded PostgreSQL, Redis database 13 and cluster instance label "bench-recovery", so
it never mixes with a running portal or the other benchmark. Usage:
`.venv/bin/python bench/recovery.py [--restores 10] [--workers 2]`. Goal: restore p95
<= 5 s, drift repair <= 5 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("DEBUG", "true")
os.environ["REDIS_DB"] = "13"
os.environ["EPHEMERA_INSTANCE"] = "bench-recovery"

import django  # noqa: E402

django.setup()

from common import bench_user_and_team, percentile  # noqa: E402
from django.conf import settings  # noqa: E402

from environments.catalog.publishing import publish_blueprint  # noqa: E402
from environments.kube import cluster  # noqa: E402
from environments.lib.quantities import format_memory  # noqa: E402
from environments.lifecycle import services  # noqa: E402
from environments.lifecycle.states import State  # noqa: E402
from environments.models import (  # noqa: E402
    Drill,
    Environment,
    RecoveryRecord,
)
from environments.recovery import drills  # noqa: E402
from environments.recovery.restore import restore  # noqa: E402
from environments.recovery.snapshots import take_snapshot  # noqa: E402

SOURCE = """
name: bench-recovery
title: Benchmark, three components and a volume
purpose: benchmark
ttl: {default: 2h, max: 12h}
approval: auto
recovery: {auto: true, rto: 2m, rpo: 1h}
components:
  - name: web
    image: nginxinc/nginx-unprivileged:1.27
    port: 8080
    resources: {cpu: 10m, memory: 16Mi}
    volume: {size: 1Gi, path: /var/lib/data, snapshot: true}
  - name: api
    image: ghcr.io/stefanprodan/podinfo:6.7.1
    port: 9898
    resources: {cpu: 10m, memory: 16Mi}
  - name: worker
    image: ghcr.io/stefanprodan/podinfo:6.7.1
    resources: {cpu: 10m, memory: 16Mi}
"""


def setup():
    user, team = bench_user_and_team()
    version, _ = publish_blueprint(source=SOURCE, actor=user)
    return user, team, version


def start(command: list[str]) -> subprocess.Popen:
    environ = dict(os.environ)
    environ["KUBECONFIG"] = settings.KUBECONFIG
    return subprocess.Popen(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for(predicate, timeout: float = 300, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def wait_states(ids, states, timeout=300) -> bool:
    return bool(
        wait_for(
            lambda: not Environment.objects.filter(pk__in=ids).exclude(state__in=states).exists(),
            timeout,
        )
    )


def deployment(namespace: str, name: str) -> dict | None:
    return cluster.get(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
        }
    )


def drift_repair_seconds(environment: Environment, timeout: float = 15) -> float | None:
    """Delete a Deployment by hand; seconds until a new one of that name stands."""
    before = deployment(environment.namespace, "api")
    if before is None:
        return None
    cluster.delete(before | {"apiVersion": "apps/v1", "kind": "Deployment"})
    started = time.monotonic()
    uid = before["metadata"]["uid"]

    def repaired():
        now = deployment(environment.namespace, "api")
        return now is not None and now["metadata"]["uid"] != uid

    return time.monotonic() - started if wait_for(repaired, timeout) else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--restores", type=int, default=10)
    parser.add_argument("--drifts", type=int, default=5)
    args = parser.parse_args()

    user, team, version = setup()
    print(f"cluster: {settings.KUBECONFIG}")
    print(f"blueprint: {version} ({len(version.components)} components, 1 snapshotted volume)")
    workers = [start(["rqworker", "provision", "teardown", "default"]) for _ in range(args.workers)]
    watcher = start(["watch_cluster", "--id", "bench-recovery"])
    made: list = []
    try:
        source = services.request_environment(user=user, version=version, team=team)
        made.append(source.pk)
        if not wait_states([source.pk], [State.READY, State.FAILED]):
            raise SystemExit("the first environment did not become ready")
        source.refresh_from_db()
        snapshot = take_snapshot(source.pk, reason="manual", actor=user)
        volume_bytes = snapshot.volume_bytes
        print(
            f"snapshot size: {snapshot.size_bytes} bytes of canonical JSON "
            f"({format_memory(snapshot.size_bytes)}; {len(snapshot.manifests)} manifests, "
            f"{len(snapshot.inventory)} inventory entries), plus {len(snapshot.volumes)} "
            f"volume snapshot(s) of {format_memory(volume_bytes)} declared; "
            f"storage cost {snapshot.storage_cost} {settings.COST_CURRENCY}/month"
        )

        latencies = []
        for _ in range(args.restores):
            restored = restore(snapshot, actor=user, request_key=uuid.uuid4().hex)
            made.append(restored.pk)
            if not wait_states([restored.pk], [State.READY, State.FAILED]):
                print("  warning: a restore was not ready within 300 s")
                continue
            record = RecoveryRecord.objects.filter(environment=restored, ok=True).first()
            if record is None or record.seconds is None:
                print("  warning: a restore failed")
                continue
            latencies.append(record.seconds)
            services.delete_environment(environment=restored, user=user)
        if latencies:
            print(
                f"restore -> ready ({len(latencies)} restores, one at a time): "
                f"p50 {percentile(latencies, 50):.2f} s, p95 {percentile(latencies, 95):.2f} s, "
                f"max {max(latencies):.2f} s (goal: p95 <= 5 s)"
            )

        repairs = [drift_repair_seconds(source) for _ in range(args.drifts)]
        measured = [r for r in repairs if r is not None]
        if measured and len(measured) == len(repairs):
            print(
                f"drift repair (Deployment deleted by hand -> a new one stands, "
                f"{len(measured)} times): p50 {percentile(measured, 50):.2f} s, "
                f"p95 {percentile(measured, 95):.2f} s (goal: <= 5 s)"
            )
        else:
            print(
                "drift repair: n/a (a deleted Deployment was not re-created within 15 s: this "
                "build does not repair drift; the recovery-drift branch does)"
            )

        drill = drills.start_drill(
            blueprint=version.blueprint.name, actor=user, key=uuid.uuid4().hex, environment=source
        )
        if drill.environment_id:
            made.append(drill.environment_id)
        done = wait_for(
            lambda: Drill.objects.exclude(result=Drill.Result.RUNNING).filter(pk=drill.pk).first(),
            300,
        )
        if done is None:
            print("drill: still running after 300 s")
        else:
            print(
                f"drill on demand: {done.result} in {done.seconds or 0:.2f} s "
                f"(objective {done.rto_seconds} s): {done.reason}"
            )
    finally:
        for environment in Environment.objects.filter(pk__in=made).exclude(
            state__in=[State.DELETED, State.TEARING_DOWN]
        ):
            try:
                services.delete_environment(environment=environment, user=user)
            except Exception as exc:  # noqa: BLE001 (best effort on the way out)
                print(f"  could not delete {environment.pk}: {exc}")
        wait_states(made, [State.DELETED], timeout=120)
        for process in [*workers, watcher]:
            process.terminate()
        for process in [*workers, watcher]:
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
