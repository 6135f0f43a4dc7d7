"""The cluster watcher's decisions: one shared view of the cluster drives every
environment's state.

``run()`` is the process (``manage.py watch_cluster``): a ``kube.reflector.ClusterView``
lists and watches namespaces, Deployments, Pods and Warning Events across all
namespaces; whenever something changes, and every ``WATCHER_TICK_SECONDS`` anyway, the
leader (``lifecycle.leader``) makes one pass over the environments in flight:

- provisioning, applied (the job gave its lease back): every component's Deployment
  available -> ``ready``; a fatal problem (image pull, crash loop, unschedulable, quota,
  Pod Security) -> ``failed`` with the reason in plain words; past the deadline
  (``PROVISION_DEADLINE_SECONDS`` from when the current job started) -> ``failed``;
  otherwise the component status is kept current for the pages;
- provisioning whose job died (lease ran out) or was lost, or approved but not claimed
  after ``APPROVED_RESEND_SECONDS`` (a worker died as it took the job) -> the job is
  enqueued again;
- tearing_down whose namespace is gone -> ``deleted`` (billed up to now first); whose
  namespace still stands, not terminating, after a while -> the teardown job again;
- failed only because the API server was unreachable -> retried once it answers
  (``OUTAGE_RETRY_LIMIT`` times), with an event saying so;
- ready whose namespace is gone -> restored in place from its latest snapshot when its
  blueprint says ``recovery: {auto: true}``, else failed with the reason
  (``recovery.healing``); a restored one that becomes ready records its recovery time.

Level-triggered: a pass looks at the whole state, never at the event that woke it, so a
missed event, a 410, an outage (the view re-lists itself) or a new leader can never
leave an environment stuck. ``reconcile_once()`` runs one pass from a fresh listing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta

import django_rq
from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from django.db.models import JSONField
from django.db.models.expressions import RawSQL
from django.utils import timezone

from environments.kube import reflector
from environments.lib.naming import namespace_for
from environments.lifecycle import services
from environments.lifecycle.leader import AdvisoryLeader
from environments.lifecycle.provisioning import (
    fail,
    job_lost,
    mark_deleted,
    mark_ready,
    record_problem,
)
from environments.lifecycle.queue import enqueue
from environments.lifecycle.states import State
from environments.models import Environment
from environments.recovery import drills, healing
from environments.recovery.drift import DriftCheck
from environments.recovery.restore import finish as finish_recovery

log = logging.getLogger(__name__)

# A tearing-down namespace that is still there, not terminating, after this long: the
# teardown job died before its delete; enqueue it again.
TEARDOWN_RESEND_SECONDS = 15

# An approved environment no job has claimed after this long: its job is enqueued again
# (a no-op while the job is really waiting in the queue).
APPROVED_RESEND_SECONDS = 10

# A component whose Deployment the view has not seen yet.
NOT_SEEN = {"ready": False, "available": 0, "replicas": 1, "generation": 0}

COMPONENTS_SQL = (
    "COALESCE(jsonb_path_query_array(manifests, "
    "'$[*] ? (@.kind == \"Deployment\").metadata.name'), '[]'::jsonb)"
)


def identity() -> str:
    return settings.WATCHER_ID or f"{socket.gethostname()}:{os.getpid()}"


def acted_key() -> str:
    """Redis hash: watcher identity -> number of state changes it made."""
    return f"ephemera:watcher:{settings.EPHEMERA_INSTANCE}:acted"


class Watcher:
    def __init__(self, view: reflector.ClusterView, name: str):
        self.view = view
        self.name = name
        self.recorded: set[tuple[str, str]] = set()  # problems already recorded
        # Ready environments whose namespace was seen terminating, and since when.
        self.losing: dict[str, datetime] = {}
        self.drift = DriftCheck(view)  # self-healing (recovery.drift)

    def _acted(self, done: bool) -> bool:
        if done:
            try:
                django_rq.get_connection("default").hincrby(acted_key(), self.name, 1)
            except Exception as exc:  # a counter, never a reason to stop
                log.warning("could not count the change: %s", exc)
        return done

    @staticmethod
    def _fail(environment_id, message: str, actor: str) -> bool:
        with transaction.atomic():
            done = fail(environment_id, message, actor=actor)
            if done:
                finish_recovery(environment_id, ok=False, reason=message)
        return done

    def run_pass(self) -> dict[str, int]:
        counts = {"ready": 0, "failed": 0, "deleted": 0, "restarted": 0, "retried": 0}
        synced = self.view.synced
        now = timezone.now()
        actor = f" (watcher {self.name})"
        for environment_id in Environment.objects.filter(job_lost()).values_list("pk", flat=True):
            try:
                if enqueue("provision", environment_id, replace_started=True):
                    counts["restarted"] += 1
            except Exception as exc:
                log.warning("could not enqueue provision for %s: %s", environment_id, exc)
        # Approved a while ago and still not claimed: the job was lost (a worker died as
        # it took it, Redis lost it); enqueue() does nothing while it is really waiting.
        stale = now - timedelta(seconds=APPROVED_RESEND_SECONDS)
        for environment_id in Environment.objects.filter(
            state=State.APPROVED, state_changed_at__lt=stale
        ).values_list("pk", flat=True):
            try:
                if enqueue("provision", environment_id):
                    counts["restarted"] += 1
            except Exception as exc:
                log.warning("could not enqueue provision for %s: %s", environment_id, exc)
        rows = (
            Environment.objects.filter(state=State.PROVISIONING, lease_owner__isnull=True)
            .exclude(manifests=[])
            .annotate(deployed=RawSQL(COMPONENTS_SQL, [], output_field=JSONField()))  # noqa: S611 (constant)
            .values_list(
                "pk",
                "name",
                "provision_started_at",
                "component_status",
                "deployed",
                "applied_generations",
            )
        )
        deadline = timedelta(seconds=settings.PROVISION_DEADLINE_SECONDS)
        for environment_id, name, started, current, components, generations in rows:
            past_deadline = started is not None and now - started > deadline
            if not synced:
                if past_deadline:
                    minutes = settings.PROVISION_DEADLINE_SECONDS // 60 or 1
                    message = f"not ready after {minutes} min: the API server could not be reached."
                    if self._acted(fail(environment_id, message, unreachable=True, actor=actor)):
                        counts["failed"] += 1
                continue
            namespace = namespace_for(name)
            live = self.view.readiness(namespace)
            status = {}
            for component in components:
                info = dict(live.get(component, NOT_SEEN))
                if info.pop("generation") < (generations or {}).get(component, 0):
                    # The view still holds the Deployment as it was before this apply
                    # (an update of a ready environment): its readiness is the old one's.
                    info["ready"] = False
                status[component] = info
            fatal = None
            for problem in self.view.problems(namespace, components):
                if (str(environment_id), problem.key) not in self.recorded:
                    record_problem(environment_id, problem)
                    self.recorded.add((str(environment_id), problem.key))
                if problem.fatal and fatal is None:
                    fatal = problem
            if fatal is not None:
                if self._acted(self._fail(environment_id, fatal.message, actor)):
                    counts["failed"] += 1
                    drills.environment_failed(environment_id, fatal.message)
            elif components and all(info["ready"] for info in status.values()):
                # A restore's recovery time is recorded with the move, never after it.
                with transaction.atomic():
                    done = mark_ready(environment_id, status, actor=actor)
                    if done:
                        finish_recovery(environment_id, ok=True)
                if self._acted(done):
                    counts["ready"] += 1
                    drills.environment_ready(environment_id)
            elif past_deadline:
                waiting = ", ".join(
                    f"{component} {info['available']}/{info['replicas']}"
                    for component, info in sorted(status.items())
                    if not info["ready"]
                )
                minutes = settings.PROVISION_DEADLINE_SECONDS // 60 or 1
                message = (
                    f"not ready after {minutes} min (still waiting for "
                    f"{waiting or 'the components'})."
                )
                if self._acted(self._fail(environment_id, message, actor)):
                    counts["failed"] += 1
                    drills.environment_failed(environment_id, message)
            elif status != current:
                Environment.objects.filter(pk=environment_id, state=State.PROVISIONING).update(
                    component_status=status
                )
        if not synced:
            return counts  # nothing below may be decided from a stale view

        resend = now - timedelta(seconds=TEARDOWN_RESEND_SECONDS)
        for environment_id, name, changed_at in Environment.objects.filter(
            state=State.TEARING_DOWN
        ).values_list("pk", "name", "state_changed_at"):
            standing = self.view.namespace(namespace_for(name))
            if standing is None:
                if self._acted(mark_deleted(environment_id, actor=actor)):
                    counts["deleted"] += 1
            elif not standing.terminating and changed_at < resend:
                try:
                    enqueue("teardown", environment_id, replace_started=True)
                except Exception as exc:
                    log.warning("could not enqueue teardown for %s: %s", environment_id, exc)

        # Restore drills not ready by their RTO fail (and are torn down).
        try:
            counts["drills_failed"] = drills.fail_overdue()
        except Exception:
            log.exception("could not check the running restore drills")

        # Ready, but its namespace is gone (kubectl delete namespace, a recycled
        # cluster): restored from its latest snapshot with recovery.auto, else failed.
        for environment_id, name in Environment.objects.filter(state=State.READY).values_list(
            "pk", "name"
        ):
            standing = self.view.namespace(namespace_for(name))
            if standing is not None:
                if standing.terminating:  # the loss starts now: the recovery time too
                    self.losing.setdefault(str(environment_id), now)
                continue
            try:
                outcome = healing.namespace_lost(
                    environment_id, lost_since=self.losing.pop(str(environment_id), None)
                )
            except Exception:
                log.exception("could not handle the lost namespace of %s", environment_id)
                continue
            if outcome == "restored":
                self._acted(True)
                counts["restored"] = counts.get("restored", 0) + 1
            elif outcome == "failed":
                self._acted(True)
                counts["failed"] += 1

        for environment_id in Environment.objects.filter(
            state=State.FAILED, failed_unreachable=True
        ).values_list("pk", flat=True):
            if self._acted(services.retry_after_outage(environment_id)):
                counts["retried"] += 1
        if len(self.losing) > 10_000:
            self.losing.clear()  # bounded: forgetting only shortens a measured recovery
        try:
            counts.update(self.drift.run())
        except Exception:
            log.exception("drift check failed; trying again next pass")
        if len(self.recorded) > 100_000:
            self.recorded.clear()  # bounded: forgetting only means one more get_or_create
        return counts


def reconcile_once(name: str = "sync") -> dict[str, int]:
    """One pass from a fresh listing of the cluster, synchronously (tests, scripts)."""
    view = reflector.snapshot(str(settings.EPHEMERA_INSTANCE))
    return Watcher(view, name).run_pass()


def run(stop: threading.Event, name: str | None = None) -> None:
    """The watcher process: watch, elect, and act while leading, until ``stop``."""
    name = name or identity()
    changed = threading.Event()
    view = reflector.ClusterView(
        str(settings.EPHEMERA_INSTANCE), on_change=lambda kind: changed.set()
    )
    view.start()
    leader = AdvisoryLeader(str(settings.EPHEMERA_INSTANCE))
    watcher = Watcher(view, name)
    leading: bool | None = None  # unknown until the first check
    log.info("watcher %s started (instance %s)", name, settings.EPHEMERA_INSTANCE)
    try:
        while not stop.is_set():
            now_leading = leader.check()
            if now_leading != leading:
                leading = now_leading
                log.info("watcher %s is %s", name, "the leader" if leading else "on standby")
                print(f"watcher {name}: {'leader' if leading else 'standby'}", flush=True)
            if not leading:
                stop.wait(1.0)
                continue
            changed.wait(timeout=settings.WATCHER_TICK_SECONDS)
            stop.wait(0.05)  # gather a burst of events into one pass
            changed.clear()
            try:
                close_old_connections()
                counts = watcher.run_pass()
                if any(counts.values()):
                    log.info("pass: %s", counts)
            except DatabaseError as exc:
                log.warning("database unavailable (%s); trying again", exc)
                close_old_connections()
                stop.wait(1.0)
            except Exception:
                log.exception("watcher pass failed; trying again")
                stop.wait(1.0)
    finally:
        view.close()
        leader.release()
