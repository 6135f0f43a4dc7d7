"""Warm pool benchmark (issue 16): prints numbers, asserts nothing.

Real processes: a web server (``manage.py runserver``), one RQ worker and one watcher
(``manage.py watch_cluster``). A blueprint keeps a pool of ``--size`` ready environments.
Requests go through the HTTP API as a client would (POST /api/v1/environments with a
token); request -> ready is the time from sending the request until the environment is
ready, as the client sees it (the answer itself when it came from the pool; otherwise
polled every 50 ms). In rounds: take the whole pool one request after another, then
wait until the pool is full and ready again (the refill), and say how long that took.
For contrast, the same request for a blueprint without a pool (cold).

Runs against the cluster in KUBECONFIG or the local control plane, on the embedded
(or configured) PostgreSQL, with Redis database 13 and cluster instance label
"bench-pool". Usage: `.venv/bin/python bench/pool.py [--size 5] [--rounds 4]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("DEBUG", "true")
os.environ["REDIS_DB"] = "13"
os.environ["EPHEMERA_INSTANCE"] = "bench-pool"

import django  # noqa: E402

django.setup()

from common import bench_user_and_team, free_port, percentile  # noqa: E402
from django.conf import settings  # noqa: E402

from environments.access import tokens  # noqa: E402
from environments.catalog.publishing import publish_blueprint  # noqa: E402
from environments.lifecycle import pools  # noqa: E402
from environments.lifecycle.states import State  # noqa: E402
from environments.models import Environment  # noqa: E402

# One component, no port: no Service (the local control plane's service range is small).
SOURCE = """
name: NAME
title: Pool benchmark
purpose: benchmark
description: One small Deployment, no Service.
ttl: {default: 1h, max: 4h}
approval: auto
components:
  - name: app
    image: ghcr.io/stefanprodan/podinfo:6.7.1
    resources: {cpu: 10m, memory: 16Mi}
quota: {cpu: 100m, memory: 64Mi, pods: "2"}
"""


def setup(size: int):
    user, team = bench_user_and_team()
    pooled = publish_blueprint(
        source=SOURCE.replace("NAME", "bench-pool") + f"pool: {{size: {size}}}\n"
    )[0]
    cold = publish_blueprint(source=SOURCE.replace("NAME", "bench-cold"))[0]
    token = tokens.create_token(user=user, name=f"bench {time.time()}", scope="write", days=1)[1]
    return user, team, pooled, cold, token


def start(command: list[str]) -> subprocess.Popen:
    environ = dict(os.environ)
    environ["KUBECONFIG"] = settings.KUBECONFIG
    return subprocess.Popen(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


class Api:
    def __init__(self, base: str, token: str):
        self.base, self.token = base, token

    def serving(self) -> bool:
        try:
            self.call("GET", "/blueprints")
        except OSError:
            return False
        return True

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.base + "/api/v1" + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())


def wait_until(predicate, timeout: float = 300, interval: float = 0.05) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise SystemExit("timed out")


def request_until_ready(api: Api, blueprint: str) -> tuple[float, bool, str]:
    """Seconds from sending the request until the client sees it ready; from the pool?"""
    started = time.monotonic()
    env = api.call("POST", "/environments", {"blueprint": blueprint})
    while env["state"] != "ready":
        if env["state"] == "failed":
            raise SystemExit(f"{env['name']} failed: {env['last_error']}")
        time.sleep(0.05)
        env = api.call("GET", f"/environments/{env['id']}")
    return time.monotonic() - started, bool(env.get("from_pool")), env["name"]


def pool_ready(version) -> int:
    return Environment.objects.filter(
        pooled=True, blueprint_version=version, state=State.READY
    ).count()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--cold", type=int, default=3)
    args = parser.parse_args()

    user, team, pooled, cold, token = setup(args.size)
    port = free_port()
    processes = [
        start(["runserver", "--noreload", f"127.0.0.1:{port}"]),
        start(["rqworker", "provision", "teardown", "default"]),
        start(["watch_cluster", "--id", "bench-pool"]),
    ]
    api = Api(f"http://127.0.0.1:{port}", token)
    claimed: list[str] = []
    try:
        wait_until(api.serving, timeout=120, interval=0.2)
        print(f"cluster: {settings.KUBECONFIG}")
        print(f"pool: {pooled} keeps {args.size} ready; processes: web, 1 worker, 1 watcher")
        pools.set_pool_team(blueprint=pooled.blueprint, team=team, actor=None)
        filled = wait_until(lambda: pool_ready(pooled) == args.size)
        print(f"pool filled from empty: {args.size} ready in {filled:.1f} s")

        latencies: list[float] = []
        refills: list[float] = []
        from_pool = 0
        for round_number in range(1, args.rounds + 1):
            for _ in range(args.size):
                seconds, pooled_answer, name = request_until_ready(api, "bench-pool")
                latencies.append(seconds)
                from_pool += pooled_answer
                claimed.append(name)
            refill = wait_until(lambda: pool_ready(pooled) == args.size)
            refills.append(refill)
            print(
                f"  round {round_number}: took {args.size}, "
                f"pool refilled to {pool_ready(pooled)} ready in {refill:.1f} s"
            )
        print(
            f"pool claims: request -> ready p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p95 {percentile(latencies, 95) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
            f"({len(latencies)} requests, {from_pool} answered from the pool)"
        )
        print(
            f"refill after taking the whole pool: p50 {statistics.median(refills):.1f} s, "
            f"max {max(refills):.1f} s; the pool refilled every round"
        )
        colds = []
        for _ in range(args.cold):
            seconds, _, name = request_until_ready(api, "bench-cold")
            colds.append(seconds)
            claimed.append(name)
        print(
            f"without a pool: request -> ready p50 {statistics.median(colds):.1f} s, "
            f"max {max(colds):.1f} s ({len(colds)} requests)"
        )
    finally:
        if claimed:
            api.call("POST", "/environments/bulk", {"action": "delete", "environments": claimed})
        pools.set_pool_team(blueprint=pooled.blueprint, team=None, actor=None)
        pools.refill(pooled.blueprint_id)
        try:
            wait_until(
                lambda: (
                    not Environment.objects.exclude(
                        state__in=[State.DELETED, State.REJECTED]
                    ).exists()
                ),
                timeout=300,
            )
            print("cleaned up: every environment deleted")
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=30)


if __name__ == "__main__":
    main()
