"""Several replicas on one database and one Redis: two web servers, three RQ workers,
two watchers and two schedulers, as real processes on the test database, Redis and the
local control plane. Each scheduled job runs once per tick; an environment requested
through one web server is served by the other; kill -9 any one process and nothing is
lost. Scheduled jobs tick every 6 s and 30 s here (CRON_INTERVAL_SCALE=0.1).
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import django_rq
import psutil
import pytest
import requests
from django.conf import settings
from rq.cron import CronScheduler, get_cron_job_ids
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from environments.access import tokens
from environments.catalog.publishing import publish_blueprint
from environments.lifecycle.states import State
from environments.models import Environment
from tests.conftest import ROOT, database_url, stop_worker, subprocess_environ, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

SCALE = 0.1
# environments.cron's jobs and their intervals at this scale.
SCHEDULE = {
    "environments.tasks.reap_expired": 6,
    "environments.tasks.warn_expiring": 6,
    "environments.tasks.accrue_cost": 6,
    "environments.tasks.refill_pools": 6,
    "environments.tasks.run_schedule": 6,
    "environments.tasks.remind_approvers": 30,
    "environments.tasks.reconcile": 30,
    "environments.tasks.prune_snapshots": 30,
    "environments.tasks.run_drills": 30,
}
FAST = "environments.tasks.accrue_cost"
API = "/api/v1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis():
    return django_rq.get_connection("default")


def runs(name: str, since: float) -> Counter[int]:
    """How many of ``name``'s jobs enqueued since ``since`` (epoch s) started, per tick
    (RQ's record of the jobs each cron job spawned, and each job's own record)."""
    interval = SCHEDULE[name]
    jobs = Job.fetch_many(get_cron_job_ids(name, redis()), connection=redis())
    return Counter(
        int(job.enqueued_at.timestamp() // interval)
        for job in jobs
        if job is not None
        and job.enqueued_at is not None
        and job.enqueued_at.timestamp() >= since
        and job.started_at is not None
    )


def assert_once_per_tick(since: float, settle: float = 15.0) -> None:
    """Every scheduled job ran exactly once in every tick since ``since``: none twice, and
    none missing among the ticks that began at least ``settle`` s ago."""
    now = time.time()
    for name, interval in SCHEDULE.items():
        counts = runs(name, since)
        assert max(counts.values(), default=1) == 1, f"{name} ran twice in a tick: {counts}"
        first = math.ceil(since / interval)
        last = math.floor((now - settle) / interval)
        missing = [tick for tick in range(first, last + 1) if counts[tick] != 1]
        assert not missing, f"{name} did not run in ticks {missing} (ran: {sorted(counts)})"


def test_schedulers_in_one_tick_enqueue_each_job_once(monkeypatch):
    """In-process, on the real Redis: three schedulers reach the same instant; each job
    is enqueued once, by the first, and every one of them next wakes at the next tick."""
    from environments.lifecycle import scheduler

    instant = datetime(2030, 1, 1, 12, 7, 30, tzinfo=UTC)  # mid-minute, mid-5-minutes
    monkeypatch.setattr(scheduler, "now", lambda: instant)
    monkeypatch.setattr("rq.cron.now", lambda: instant)  # RQ's own sense of the time
    schedulers = [scheduler.TickScheduler() for _ in range(3)]
    for each in schedulers:
        each.load_config_from_file("environments.cron")
    queue = django_rq.get_queue("default")
    queue.empty()  # (this test runs before the module's workers start)

    for each in schedulers:
        each.enqueue_jobs()

    enqueued = [job_id for name in SCHEDULE for job_id in get_cron_job_ids(name, redis())]
    assert (
        sorted(queue.get_job_ids())
        == sorted(enqueued)
        == sorted(
            f"cron-{settings.EPHEMERA_INSTANCE}-environments_tasks_{name}-{tick}"
            for name, tick in [
                ("reap_expired", 1893499620),  # 12:07:00
                ("warn_expiring", 1893499620),
                ("accrue_cost", 1893499620),
                ("refill_pools", 1893499620),
                ("run_schedule", 1893499620),
                ("remind_approvers", 1893499500),  # 12:05:00
                ("reconcile", 1893499500),
                ("prune_snapshots", 1893499500),
                ("run_drills", 1893499500),
            ]
        )
    )
    for each in schedulers:
        due = sorted({job.next_enqueue_time for job in each.get_jobs()})
        assert due == [
            datetime(2030, 1, 1, 12, 8, tzinfo=UTC),
            datetime(2030, 1, 1, 12, 10, tzinfo=UTC),
        ]
    queue.empty()


class Replicas:
    """The processes, by name; each in its own session, its log in ``logs``."""

    def __init__(self, kube_config: str, logs: Path):
        self.logs = logs
        self.ports = {"web-a": free_port(), "web-b": free_port()}
        self.environ = subprocess_environ(
            DATABASE_URL=database_url(),
            REDIS_URL=settings.REDIS_URL,
            KUBECONFIG=kube_config,
            EPHEMERA_INSTANCE=settings.EPHEMERA_INSTANCE,
            DEBUG="true",
            CRON_INTERVAL_SCALE=str(SCALE),
            PROVISION_LEASE_SECONDS="5",
        )
        self.processes: dict[str, subprocess.Popen] = {}

    def command(self, name: str) -> list[str]:
        kind = name.split("-")[0]
        if kind == "web":
            return ["runserver", f"127.0.0.1:{self.ports[name]}", "--noreload"]
        if kind == "worker":
            return ["rqworker", "provision", "teardown", "default"]
        if kind == "watcher":
            return ["watch_cluster", "--id", name]
        return ["cron"]

    def start(self, name: str) -> None:
        log = self.log(name).open("a")  # a restarted process adds to its log
        try:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "manage.py", *self.command(name)],
                cwd=ROOT,
                env=self.environ,
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def kill(self, name: str) -> None:
        """kill -9 the process and everything it started (an RQ work horse has its own
        session), as when its pod or machine dies."""
        process = self.processes[name]
        for child in psutil.Process(process.pid).children(recursive=True):
            child.send_signal(signal.SIGKILL)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{API}{path}"

    def serves(self, name: str) -> bool:
        try:
            return requests.get(self.url(name, "/blueprints"), timeout=5).status_code == 401
        except requests.ConnectionError:
            return False

    def leader(self) -> str | None:
        """The watcher whose latest word is that it leads (each prints its role)."""
        for name in ("watcher-a", "watcher-b"):
            if self.processes[name].poll() is not None:
                continue
            roles = [line for line in self.log(name).read_text().splitlines() if ": " in line]
            roles = [line for line in roles if line.startswith(f"watcher {name}: ")]
            if roles and roles[-1].endswith("leader"):
                return name
        return None

    def missing(self) -> list[str]:
        """What is not up yet: webs that do not answer, workers not listening, schedulers
        not registered in RQ's CronScheduler registry, no leading watcher. (Workers are
        judged by their logs: each test's cache.clear() empties Redis, RQ's worker
        registry with it, and only schedulers register again on their next heartbeat.)"""
        schedulers = {s.pid for s in CronScheduler.all(redis())}
        missing = [web for web in self.ports if not self.serves(web)]
        missing += [
            name
            for name, process in self.processes.items()
            if (
                name.startswith("worker")
                and (process.poll() is not None or "Listening on" not in self.log(name).read_text())
            )
            or (name.startswith("scheduler") and process.pid not in schedulers)
        ]
        return missing if self.leader() else [*missing, "leader"]

    def wait_until_up(self, timeout: float = 120) -> None:
        missing: list[str] = []

        def up() -> bool:
            missing[:] = self.missing()
            return not missing

        try:
            wait_for(up, timeout, interval=0.5)
        except AssertionError:
            raise AssertionError(f"not up within {timeout}s: {missing}") from None

    def stop(self) -> None:
        for process in self.processes.values():
            stop_worker(process)


NAMES = [
    "web-a",
    "web-b",
    "worker-1",
    "worker-2",
    "worker-3",
    "watcher-a",
    "watcher-b",
    "scheduler-a",
    "scheduler-b",
]


@pytest.fixture(scope="module")
def replicas(kube_config, django_db_setup, tmp_path_factory):
    replicas = Replicas(kube_config, tmp_path_factory.mktemp("replicas"))
    try:
        for name in NAMES:
            replicas.start(name)
        replicas.wait_until_up()
        yield replicas
    finally:
        replicas.stop()


@pytest.fixture
def fleet(replicas, on_cluster):
    """The process set, every process running (one a previous test killed is started
    again), and a clean slate in the schedule's history."""
    for name in NAMES:
        if replicas.processes[name].poll() is not None:
            replicas.start(name)
    replicas.wait_until_up()
    return replicas


@pytest.fixture
def token(owner):
    return tokens.create_token(user=owner, name="replicas", scope="write", days=1)[1]


@pytest.fixture
def slow_shop(sample_blueprints):
    """shop-demo whose web pods become ready 4 s after they start (a kwok stage delay),
    so an environment stays in flight long enough to kill something under it."""
    source = sample_blueprints["shop-demo"].source.replace(
        "    expose: true\n  - name: api",
        '    expose: true\n    annotations: {pod-ready.stage.kwok.x-k8s.io/delay: "4s"}\n'
        "  - name: api",
    )
    assert "annotations" in source
    return publish_blueprint(source=source)[0]


def request_through(fleet: Replicas, web: str, token: str) -> dict:
    response = requests.post(
        fleet.url(web, "/environments"),
        json={"blueprint": "shop-demo", "ttl_seconds": 3600},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()


def shown_by(fleet: Replicas, web: str, token: str, environment_id: str) -> dict:
    response = requests.get(
        fleet.url(web, f"/environments/{environment_id}"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def state(environment_id: str) -> str:
    return Environment.objects.get(pk=environment_id).state


def delete_and_wait(fleet: Replicas, web: str, token: str, ids: list[str]) -> None:
    """Clean up through the API: every namespace gone, every environment deleted."""
    for environment_id in ids:
        response = requests.delete(
            fleet.url(web, f"/environments/{environment_id}"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code in (200, 202, 204), response.text
    wait_for(lambda: all(state(i) == State.DELETED for i in ids), 120, interval=0.5)


def ticks_after(name: str, moment: float, count: int) -> bool:
    """``name`` ran in ``count`` ticks that began after ``moment``."""
    return len(runs(name, moment)) >= count


def test_two_schedulers_run_each_job_once_per_tick(fleet, token, slow_shop):
    """Two schedulers, three workers: over four short ticks (and one long one) every
    job ran exactly once per tick; an environment requested through one web server is
    shown by the other."""
    since = time.time()
    ids = [request_through(fleet, "web-a", token)["id"]]
    shown = shown_by(fleet, "web-b", token, ids[0])
    assert shown["id"] == ids[0] and shown["blueprint"] == "shop-demo"
    wait_for(lambda: state(ids[0]) == State.READY, 120, interval=0.5)
    assert shown_by(fleet, "web-b", token, ids[0])["state"] == State.READY
    wait_for(lambda: ticks_after(FAST, since, 4), 90, interval=0.5)
    wait_for(lambda: ticks_after("environments.tasks.reconcile", since, 1), 90, interval=0.5)
    # Both schedulers are registered in RQ and beating.
    beats = {s.name: s.last_heartbeat for s in CronScheduler.all(redis())}
    ours = {
        s.name
        for s in CronScheduler.all(redis())
        if s.pid in {fleet.processes[n].pid for n in ("scheduler-a", "scheduler-b")}
    }
    assert len(ours) == 2 and all(beats[name] for name in ours)
    assert_once_per_tick(since)
    delete_and_wait(fleet, "web-b", token, ids)


def kill_a_worker_mid_provision(fleet: Replicas, ids: list[str]) -> str:
    workers = {name: fleet.log(name).read_text() for name in fleet.processes if "worker" in name}

    def taker() -> str | None:
        """The worker running the first environment's provision job, once it runs."""
        try:
            job = Job.fetch(f"provision-{ids[0]}", connection=redis())
        except NoSuchJobError:
            return None
        if job.get_status() != JobStatus.STARTED or not job.worker_name:
            return None
        # Started is set before the job runs; killed once it holds the provisioning lease.
        if state(ids[0]) != State.PROVISIONING:
            return None
        return next(n for n, log in workers.items() if f"Worker {job.worker_name}" in log)

    name = wait_for(taker, 60, interval=0.05)  # the job applies for about a second
    fleet.kill(name)
    # Killed holding the job: it never finished, and its environment is still in flight.
    assert Job.fetch(f"provision-{ids[0]}", connection=redis()).get_status() == JobStatus.STARTED
    assert state(ids[0]) == State.PROVISIONING
    return name


def kill_the_leader(fleet: Replicas, ids: list[str]) -> str:
    wait_for(lambda: state(ids[0]) == State.PROVISIONING, 60, interval=0.1)
    leader = fleet.leader()
    assert leader
    fleet.kill(leader)
    standby = "watcher-b" if leader == "watcher-a" else "watcher-a"
    wait_for(lambda: fleet.leader() == standby, 30, interval=0.2)
    return leader


def kill_a_scheduler(fleet: Replicas, ids: list[str]) -> str:
    # No scheduler leads (each tick goes to whichever enqueues it first): kill the one
    # that enqueued the latest tick.
    def latest(name: str) -> str:
        lines = [line for line in fleet.log(name).read_text().splitlines() if "Enqueued" in line]
        return lines[-1][:23] if lines else ""

    name = max(("scheduler-a", "scheduler-b"), key=latest)
    fleet.kill(name)
    return name


def kill_a_web_server(fleet: Replicas, ids: list[str]) -> str:
    fleet.kill("web-a")
    assert not fleet.serves("web-a")
    return "web-a"


@pytest.mark.parametrize(
    "kill",
    [kill_a_web_server, kill_a_worker_mid_provision, kill_the_leader, kill_a_scheduler],
    ids=["web", "worker", "watcher", "scheduler"],
)
def test_kill_9_any_one_process_and_nothing_is_lost(fleet, token, slow_shop, kill):
    since = time.time()
    ids = [request_through(fleet, "web-a", token)["id"] for _ in range(2)]
    killed = kill(fleet, ids)
    killed_at = time.time()
    assert fleet.processes[killed].poll() is not None  # it is dead

    # In-flight environments still become ready, and the other web server serves them.
    wait_for(lambda: all(state(i) == State.READY for i in ids), 120, interval=0.5)
    for environment_id in ids:
        assert shown_by(fleet, "web-b", token, environment_id)["state"] == State.READY
        environment = Environment.objects.get(pk=environment_id)
        assert environment.events.filter(state=State.READY).count() == 1
        assert environment.component_status["web"]["ready"]
    # The schedule goes on: the fast jobs ran in two more ticks after the kill.
    wait_for(lambda: ticks_after(FAST, killed_at, 2), 60, interval=0.5)
    assert_once_per_tick(since)
    delete_and_wait(fleet, "web-b", token, ids)
