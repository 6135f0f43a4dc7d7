"""Measurements the jobs and the watcher record for /metrics, kept in Redis.

Web replicas and their processes come and go; the numbers Prometheus reads must not. So
what happens once (an environment became ready after N seconds, a reconcile finished)
is recorded here, in Redis, by whichever process saw it, and every web replica reports
the same values at scrape time (``web/metrics.py``). A Redis that is down loses a
measurement, never the state change that caused it: recording never raises.
"""

from __future__ import annotations

import bisect
import logging
import time

import django_rq
from django.conf import settings

log = logging.getLogger(__name__)

# Upper bounds in seconds. Provisioning: seconds when images are cached, minutes when
# not, PROVISION_DEADLINE_SECONDS (300 by default) at worst. Teardown: the namespace
# controller's 5 s wait and up to TEARDOWN_TIMEOUT_SECONDS.
BUCKETS = {
    "provision": (2.5, 5, 10, 20, 30, 60, 120, 180, 300, 600, 1800),
    "teardown": (2.5, 5, 10, 20, 30, 60, 120, 180, 300, 600),
    # From the watcher seeing drift to the repair job having re-applied it.
    "drift_repair": (0.25, 0.5, 1, 2, 5, 10, 30, 60),
}


def _key(name: str) -> str:
    return f"ephemera:metrics:{settings.EPHEMERA_INSTANCE}:{name}"


def _redis():
    return django_rq.get_connection("default")


def observe_duration(kind: str, seconds: float) -> None:
    """Count one provision or teardown that took ``seconds`` (a histogram in a hash)."""
    bounds = BUCKETS[kind]
    index = bisect.bisect_left(bounds, seconds)
    field = str(bounds[index]) if index < len(bounds) else "+Inf"
    try:
        with _redis().pipeline() as pipe:
            pipe.hincrby(_key(kind), field, 1)
            pipe.hincrby(_key(kind), "count", 1)
            pipe.hincrbyfloat(_key(kind), "sum", max(0.0, seconds))
            pipe.execute()
    except Exception as exc:
        log.warning("could not record a %s duration: %s", kind, exc)


def durations(kind: str) -> tuple[list[tuple[str, float]], float]:
    """([(le, cumulative count)...ending with +Inf], sum) for a Prometheus histogram."""
    raw = {k.decode(): v.decode() for k, v in _redis().hgetall(_key(kind)).items()}
    running = 0.0
    buckets = []
    for bound in BUCKETS[kind]:
        running += float(raw.get(str(bound), 0))
        buckets.append((str(float(bound)), running))
    buckets.append(("+Inf", float(raw.get("count", 0))))
    return buckets, float(raw.get("sum", 0))


def reconciled(*, vanished: int) -> None:
    """A reconcile run finished; ``vanished`` ready environments had lost their namespace
    (each was billed until the reconciler found it)."""
    try:
        with _redis().pipeline() as pipe:
            pipe.hset(_key("reconcile"), "last_success", f"{time.time():.3f}")
            pipe.hincrby(_key("reconcile"), "vanished", vanished)
            pipe.execute()
    except Exception as exc:
        log.warning("could not record the reconcile run: %s", exc)


def reconcile_status() -> tuple[float | None, int]:
    """(Unix time of the last successful reconcile or None, vanished namespaces so far)."""
    raw = {k.decode(): v.decode() for k, v in _redis().hgetall(_key("reconcile")).items()}
    last = raw.get("last_success")
    return (float(last) if last else None), int(raw.get("vanished", 0))


def leftovers(count: int) -> None:
    """How many objects the last reconcile found left over after teardowns."""
    try:
        _redis().hset(_key("reconcile"), "leftovers", count)
    except Exception as exc:
        log.warning("could not record the leftovers: %s", exc)


def leftover_count() -> int:
    raw = _redis().hget(_key("reconcile"), "leftovers")
    return int(raw) if raw else 0
