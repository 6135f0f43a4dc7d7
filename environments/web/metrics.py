"""What /metrics reports (Prometheus text format, prometheus_client).

Two kinds of numbers:

- **Shared** ones are read from PostgreSQL and Redis at scrape time by
  ``EphemeraCollector``: environments by state, queue depths, failed jobs, cost, the
  provision and teardown histograms and the last reconcile (``lifecycle/telemetry.py``),
  heartbeats, the readiness checks. Every replica and every gunicorn worker reports the
  same values, so scrape any one (or all, and use ``max``).
- **Per-process** ones: request latency (``ephemera_http_request_duration_seconds``). In
  gunicorn each worker counts its own requests; with ``PROMETHEUS_MULTIPROC_DIR`` set to
  an empty directory (the chart mounts an emptyDir), prometheus_client's multiprocess
  mode adds every worker's counts up. Without it, a scrape sees one worker's share.

A dependency that is down never fails the scrape: its families are left out and
``ephemera_metrics_source_up{source}`` says which source could not be read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import django_rq
from django.conf import settings
from django.db.models import Count, Min, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector

from environments.lifecycle import telemetry
from environments.lifecycle.states import State
from environments.models import CostEntry, Environment
from environments.web import health

log = logging.getLogger(__name__)

REQUEST_LATENCY = Histogram(
    "ephemera_http_request_duration_seconds",
    "Time to answer an HTTP request, by URL name, method and status class (2xx, 4xx...).",
    ["view", "method", "status"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
# States whose oldest member is reported: the ones a job or the watcher should move on.
MOVING_STATES = (State.REQUESTED, State.APPROVED, State.PROVISIONING, State.TEARING_DOWN)


class EphemeraCollector:
    """The shared numbers, computed at scrape time from PostgreSQL and Redis."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "ephemera_metrics_source_up",
            "1 if this scrape could read the source (database, redis), 0 if not.",
            labels=["source"],
        )
        for source, families in (("database", self._database), ("redis", self._redis)):
            try:
                collected = list(families())
            except Exception as exc:
                log.warning("metrics: could not read the %s: %s", source, health.one_line(exc))
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from collected
        yield up
        yield from self._readiness()

    def _database(self) -> Iterator[Metric]:
        by_state = dict(
            Environment.objects.order_by()
            .values_list("state")
            .annotate(n=Count("pk"))
            .values_list("state", "n")
        )
        environments = GaugeMetricFamily(
            "ephemera_environments", "Environments in each state.", labels=["state"]
        )
        for state in State:
            environments.add_metric([state.value], by_state.get(state.value, 0))
        yield environments

        # Warm pools (issue 16): unclaimed environments per blueprint, ready or starting
        # (an empty pool means requests wait for a cold start again).
        pooled = GaugeMetricFamily(
            "ephemera_pool_environments",
            "Unclaimed environments in each blueprint's warm pool, ready or starting.",
            labels=["blueprint", "state"],
        )
        counts: dict[tuple[str, str], int] = {}
        for name, in_state, count in (
            Environment.objects.filter(
                pooled=True,
                state__in=[State.APPROVED, State.PROVISIONING, State.READY],
            )
            .order_by()
            .values_list("blueprint_version__blueprint__name", "state")
            .annotate(n=Count("pk"))
            .values_list("blueprint_version__blueprint__name", "state", "n")
        ):
            key = (name, "ready" if in_state == State.READY else "starting")
            counts[key] = counts.get(key, 0) + count
        for (name, shown), count in sorted(counts.items()):
            pooled.add_metric([name, shown], count)
        yield pooled

        oldest = dict(
            Environment.objects.filter(state__in=MOVING_STATES)
            .order_by()
            .values_list("state")
            .annotate(since=Min("state_changed_at"))
            .values_list("state", "since")
        )
        now = timezone.now()
        age = GaugeMetricFamily(
            "ephemera_environments_oldest_in_state_seconds",
            "How long the longest-waiting environment has been in a state a job or the "
            "watcher should move on (0 when none is).",
            labels=["state"],
        )
        for state in MOVING_STATES:
            since = oldest.get(state.value)
            age.add_metric([state.value], (now - since).total_seconds() if since else 0)
        yield age

        total = CostEntry.objects.aggregate(total=Sum("amount"))["total"] or 0
        cost = CounterMetricFamily(
            "ephemera_cost_accrued",
            "Cost recorded for every environment so far, in the configured currency.",
            labels=["currency"],
        )
        cost.add_metric([settings.COST_CURRENCY], float(total))
        yield cost

    def _redis(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "ephemera_queue_jobs", "Jobs waiting in each RQ queue.", labels=["queue"]
        )
        failed = GaugeMetricFamily(
            "ephemera_queue_failed_jobs",
            "Jobs in each RQ queue's failed registry (kept for their failure TTL).",
            labels=["queue"],
        )
        for name in settings.RQ_QUEUES:
            queue = django_rq.get_queue(name)
            depth.add_metric([name], queue.count)
            failed.add_metric([name], queue.connection.zcard(queue.failed_job_registry.key))
        yield depth
        yield failed

        for kind, what in (("provision", "approval or retry"), ("teardown", "delete")):
            buckets, total = telemetry.durations(kind)
            histogram = HistogramMetricFamily(
                f"ephemera_{kind}_duration_seconds",
                f"Seconds from the {kind} job's start ({what}) until the watcher saw it "
                + ("ready." if kind == "provision" else "gone."),
            )
            histogram.add_metric([], buckets, total)
            yield histogram

        last, vanished = telemetry.reconcile_status()
        reconcile = GaugeMetricFamily(
            "ephemera_reconcile_last_success_timestamp_seconds",
            "When the reconciler last finished a run (Unix time; 0 if never).",
        )
        reconcile.add_metric([], last or 0)
        yield reconcile
        lost = CounterMetricFamily(
            "ephemera_billing_vanished_namespaces",
            "Ready, billed environments whose namespace the reconciler found gone (billing "
            "stopped then): something deleted them behind the portal's back.",
        )
        lost.add_metric([], vanished)
        yield lost

        # Self-healing and verified teardown (recovery.drift, recovery.teardown_receipt).
        buckets, total = telemetry.durations("drift_repair")
        repair = HistogramMetricFamily(
            "ephemera_drift_repair_seconds",
            "Seconds from the watcher seeing an object deleted or changed by hand until "
            "the repair job re-applied it.",
        )
        repair.add_metric([], buckets, total)
        yield repair
        leftover = GaugeMetricFamily(
            "ephemera_leftover_objects",
            "Objects the last reconcile found on the cluster with the label of a deleted "
            "environment (see the admin Inventory page).",
        )
        leftover.add_metric([], telemetry.leftover_count())
        yield leftover

        beats = health.heartbeats(django_rq.get_connection("default"))
        for role, count, last_beat in (
            ("worker", beats.workers, beats.worker_last),
            ("scheduler", beats.schedulers, beats.scheduler_last),
        ):
            registered = GaugeMetricFamily(
                f"ephemera_{role}s", f"RQ {role}s registered in Redis with a heartbeat."
            )
            registered.add_metric([], count)
            yield registered
            newest = GaugeMetricFamily(
                f"ephemera_{role}_last_heartbeat_timestamp_seconds",
                f"The newest heartbeat of any {role} (Unix time; 0 if none).",
            )
            newest.add_metric([], last_beat or 0)
            yield newest

    def _readiness(self) -> Iterator[Metric]:
        ready, checks = health.readiness()
        check = GaugeMetricFamily(
            "ephemera_check_ok",
            "1 if the /readyz check passes from this replica, 0 if not.",
            labels=["check"],
        )
        for name, value in checks.items():
            check.add_metric([name], 1 if value == "ok" else 0)
        yield check
        overall = GaugeMetricFamily(
            "ephemera_ready", "1 if /readyz answers 200 on this replica (READYZ_CHECKS pass)."
        )
        overall.add_metric([], 1 if ready else 0)
        yield overall


_shared = CollectorRegistry(auto_describe=False)
_shared.register(EphemeraCollector())


def exposition() -> tuple[bytes, str]:
    """The whole /metrics body: shared numbers, then this process's (or all workers')."""
    if settings.PROMETHEUS_MULTIPROC_DIR:
        per_process = CollectorRegistry()
        MultiProcessCollector(per_process)
    else:
        per_process = REGISTRY
    return generate_latest(_shared) + generate_latest(per_process), CONTENT_TYPE_LATEST


class RequestMetricsMiddleware:
    """Times every request (the probe paths are answered before it and not counted)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.view_name or match.url_name or "unnamed") if match else "unmatched"
        method = request.method if request.method in METHODS else "other"
        REQUEST_LATENCY.labels(
            view=view, method=method, status=f"{response.status_code // 100}xx"
        ).observe(time.perf_counter() - started)
        return response
