"""Is this portal able to serve? The checks behind /readyz and the heartbeat metrics.

Each check answers ``"ok"`` or one line saying what is wrong, never a URL or a password.
Every check has its own short timeout and they run side by side, so a probe answers in
about ``CHECK_SECONDS`` even when a dependency black-holes its packets.

Which checks make a web replica unready is ``settings.READYZ_CHECKS``. By default the
database, Redis and the Kubernetes API server count: without them a request cannot be
served or carried out. The worker and scheduler heartbeats are reported (in the body and
in /metrics) but do not count by default: Kubernetes takes every unready web pod out of
the Service at once, so a dead worker would turn "environments start late" into "the
portal is down for everyone". See docs/operations.md.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import psycopg
import redis
from django.conf import settings
from django.db import connections
from rq.cron import CronScheduler
from rq.worker import Worker

from environments.kube import cluster

# Each check's own timeout; /readyz answers within CHECK_SECONDS + 1 (probe timeoutSeconds: 5).
CHECK_SECONDS = 3.0
CHECKS = ("database", "redis", "kubernetes", "worker", "scheduler")
# Threads for the checks; a check that overruns keeps its thread until its own timeout.
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="readyz")


def one_line(exc: BaseException) -> str:
    """An error as one short line, with any credentials in a URL blanked out."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"://[^/@\s]*@", "://***@", text)
    text = re.sub(r"(password|token)=\S+", r"\1=***", text, flags=re.IGNORECASE)
    return text[:200]


def quick_redis() -> redis.Redis:
    """A Redis client that gives up within a second (the app's own waits longer)."""
    return redis.Redis.from_url(
        str(settings.REDIS_URL), socket_connect_timeout=1, socket_timeout=1, retry_on_timeout=False
    )


def check_database() -> str:
    """A fresh connection (never the request's own), ``SELECT 1``, closed again."""
    params = connections["default"].get_connection_params()
    params["connect_timeout"] = max(1, int(CHECK_SECONDS))
    params.pop("cursor_factory", None)
    try:
        with psycopg.connect(**params) as conn:
            conn.execute("SET statement_timeout = 1000")
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"unreachable: {one_line(exc)}"
    return "ok"


def check_redis() -> str:
    try:
        quick_redis().ping()
    except Exception as exc:
        return f"unreachable: {one_line(exc)}"
    return "ok"


def check_kubernetes() -> str:
    try:
        cluster.api_server_reachable(timeout=CHECK_SECONDS)
    except Exception as exc:
        return f"unreachable: {one_line(exc)}"
    return "ok"


@dataclass(frozen=True)
class Heartbeats:
    """The newest heartbeat of any RQ worker and of any cron scheduler (Unix time)."""

    workers: int
    worker_last: float | None
    schedulers: int
    scheduler_last: float | None


def heartbeats(connection: redis.Redis) -> Heartbeats:
    """Read-only: RQ's worker registry and its cron scheduler registry."""
    workers = [w for w in Worker.all(connection=connection) if w.last_heartbeat]
    schedulers = CronScheduler.all(connection, cleanup=False)
    scheduler_beats = [s.last_heartbeat for s in schedulers]
    return Heartbeats(
        workers=len(workers),
        worker_last=max((w.last_heartbeat.timestamp() for w in workers), default=None),  # type: ignore[union-attr]
        schedulers=len(schedulers),
        scheduler_last=max((b.timestamp() for b in scheduler_beats if b), default=None),
    )


def _age(what: str, last: float | None, max_age: int) -> str:
    if last is None:
        return f"stale: no {what} has a heartbeat in Redis"
    age = time.time() - last
    if age > max_age:
        return f"stale: the newest {what} heartbeat is {int(age)} s old (limit {max_age} s)"
    return "ok"


def check_heartbeats() -> dict[str, str]:
    try:
        beats = heartbeats(quick_redis())
    except Exception as exc:
        unknown = f"unknown: Redis unreachable ({one_line(exc)})"
        return {"worker": unknown, "scheduler": unknown}
    return {
        "worker": _age("worker", beats.worker_last, settings.WORKER_HEARTBEAT_MAX_AGE),
        "scheduler": _age("scheduler", beats.scheduler_last, settings.SCHEDULER_HEARTBEAT_MAX_AGE),
    }


def readiness() -> tuple[bool, dict[str, str]]:
    """(ready, check -> "ok" or what is wrong). Answers within about CHECK_SECONDS + 1."""
    probes: dict[str, Callable[[], object]] = {
        "database": check_database,
        "redis": check_redis,
        "kubernetes": check_kubernetes,
        "heartbeats": check_heartbeats,
    }
    futures = {name: _pool.submit(probe) for name, probe in probes.items()}
    deadline = time.monotonic() + CHECK_SECONDS + 1
    results: dict[str, str] = {}
    for name, future in futures.items():
        try:
            value = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            value = f"timeout: no answer within {CHECK_SECONDS + 1:.0f} s"
        except Exception as exc:  # a check never raises, but a probe must not 500
            value = f"error: {one_line(exc)}"
        if isinstance(value, dict):
            results.update(value)
        elif name == "heartbeats":
            results.update({"worker": str(value), "scheduler": str(value)})
        else:
            results[name] = str(value)
    ready = all(results[name] == "ok" for name in settings.READYZ_CHECKS)
    return ready, {name: results[name] for name in CHECKS}
