"""`make run` supervises: whatever dies is started again, and SIGTERM stops everything.

One real ``deploy/run.py`` for the module, with its own data folder (so its own embedded
PostgreSQL and Redis, not the test session's), port, instance label, and the shared
local cluster. Each test kills one part with SIGKILL and measures how long until the
portal serves again; the environment requested just before the kill must become ready.
The last test sends SIGTERM to run.py and checks that every process it ran is gone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from portal import embedded
from tests.conftest import OUTPUT, ROOT, wait_for

pytestmark = pytest.mark.cluster

ADMIN_EMAIL = "admin@supervision.test"
# Everything the test session sets for itself that the supervised run must not inherit.
NOT_INHERITED = {
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_DB",
    "TEST_DATABASE_NAME",
    "PYTEST_VERSION",
    "PYTEST_CURRENT_TEST",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
    "SITE_URL",
}
CHILDREN = {
    "web": "runserver",
    "worker": "rqworker",
    "scheduler": "manage.py cron",
    "watcher": "watch_cluster",
}
RECOVERY_SECONDS = 15


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Run:
    """One supervised ``deploy/run.py`` and what a test needs to poke at it."""

    def __init__(self, data: Path, log_path: Path, kube_config: str, instance: str):
        self.data = data
        self.port = free_port()
        self.instance = instance
        self.log_path = log_path
        self.environ = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        self.environ.update(
            DEBUG="true",
            EPHEMERA_DATA_DIR=str(self.data),
            EPHEMERA_PORT=str(self.port),
            EPHEMERA_INSTANCE=instance,
            KUBECONFIG=kube_config,
            EPHEMERA_ADMIN_EMAIL=ADMIN_EMAIL,
            EPHEMERA_ADMIN_PASSWORD="supervised-run-password-1",  # noqa: S106 (a test's own)
            # A job whose worker died is enqueued again within seconds, not 20.
            PROVISION_LEASE_SECONDS="4",
            WATCHER_TICK_SECONDS="1",
        )
        self.token = ""
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "deploy" / "run.py")],
                cwd=ROOT,
                env=self.environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def manage_shell(self, code: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env=self.environ,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout.strip()

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v1{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (our URL)
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, {}
        except (urllib.error.URLError, OSError):
            return 0, {}

    def page(self, path: str) -> int:
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (our URL)
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return 0

    def serving(self, environment_id: str) -> bool:
        # /readyz checks the database, Redis and the API server; the API call also
        # authenticates the token in the database and counts it against the rate limit
        # in Redis, through the same web process a user would reach.
        if self.page("/readyz") != 200:
            return False
        return self.api("GET", f"/environments/{environment_id}")[0] == 200

    def state(self, environment_id: str) -> str | None:
        status, body = self.api("GET", f"/environments/{environment_id}")
        return body.get("state") if status == 200 else None

    def request_environment(self) -> str:
        status, body = self.api("POST", "/environments", {"blueprint": "pr-preview"})
        assert status == 201, status
        return str(body["id"])

    def child_pid(self, name: str) -> int | None:
        assert self.process is not None
        for child in psutil.Process(self.process.pid).children():
            try:
                if CHILDREN[name] in " ".join(child.cmdline()) and child.status() != "zombie":
                    return child.pid
            except psutil.Error:
                continue
        return None

    def server_pid(self, name: str) -> int | None:
        path = self.data / ("pgdata/postmaster.pid" if name == "postgres" else "redis/redis.pid")
        try:
            return int(path.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def pid_of(self, victim: str) -> int | None:
        return (
            self.server_pid(victim) if victim in {"postgres", "redis"} else self.child_pid(victim)
        )

    def everything(self) -> list[psutil.Process]:
        """run.py, its children and theirs, and the embedded servers with their workers."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        found = [root, *root.children(recursive=True)]
        for name in ("postgres", "redis"):
            pid = self.server_pid(name)
            if pid and psutil.pid_exists(pid):
                server = psutil.Process(pid)
                found += [server, *server.children(recursive=True)]
        return found


@pytest.fixture(scope="module")
def supervised(kube_config, kube_client):
    from django.conf import settings

    instance = f"{settings.EPHEMERA_INSTANCE}-run"
    # Not under pytest's tmp folder: other sessions on the machine rotate those away, and
    # PostgreSQL runs as its own user, which must reach the data folder.
    data = Path(tempfile.mkdtemp(prefix="ephemera-run-"))
    OUTPUT.mkdir(exist_ok=True)
    run = Run(data, OUTPUT / f"supervision-{instance}.log", kube_config, instance)
    run.start()
    try:
        # A fresh data folder: initdb and every migration first (slow on a busy machine).
        wait_for(lambda: run.page("/accounts/login/") == 200 or run.process.poll(), 240)
        assert run.process.poll() is None, run.log()[-3000:]
        wait_for(lambda: all(run.child_pid(name) for name in CHILDREN), 30)
        run.token = run.manage_shell(
            "from django.contrib.auth import get_user_model\n"
            "from environments.access.tokens import create_token\n"
            f"user = get_user_model().objects.get(email={ADMIN_EMAIL!r})\n"
            "print(create_token(user=user, name='supervision', scope='write', days=1)[1])"
        ).splitlines()[-1]
        yield run
    finally:
        if run.process.poll() is None:
            os.kill(run.process.pid, signal.SIGTERM)
            try:
                run.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                for proc in run.everything():
                    proc.kill()
        from kubernetes import client

        core = client.CoreV1Api(kube_client)
        selector = f"ephemera.io/instance={run.instance}"
        for namespace in core.list_namespace(label_selector=selector).items:
            core.delete_namespace(namespace.metadata.name)
        embedded.wipe(run.data)


RECOVERY: dict[str, float] = {}


@pytest.mark.parametrize("victim", ["worker", "scheduler", "watcher", "redis", "postgres"])
def test_it_serves_again_and_loses_nothing_after_a_kill(supervised, victim):
    pid = supervised.pid_of(victim)
    assert pid, f"no {victim} process found"
    if victim != "worker":
        environment_id = supervised.request_environment()
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    if victim == "worker":
        # Requested while no worker runs: only the worker that replaces it can provision.
        # (Not before the kill: a worker blocked in BLPOP that dies as the job arrives
        # takes the job with it, and only the 5-minute reconcile finds it again.)
        environment_id = supervised.request_environment()
    wait_for(lambda: supervised.pid_of(victim) not in (None, pid), RECOVERY_SECONDS)
    wait_for(lambda: supervised.serving(environment_id), RECOVERY_SECONDS)
    RECOVERY[victim] = time.monotonic() - killed
    # A replacement runs. (The first pid seen after the kill may be what the dead worker
    # left behind, its forked scheduler, reparented to run.py until run.py stops it; the
    # new worker follows after the back-off.)
    wait_for(
        lambda: (new := supervised.pid_of(victim)) not in (None, pid) and psutil.pid_exists(new),
        RECOVERY_SECONDS,
    )

    # Generous: another test on the machine may stop the shared API server meanwhile.
    wait_for(lambda: supervised.state(environment_id) == "ready", 180)
    ready = time.monotonic() - killed
    if victim in {"redis", "postgres"}:
        assert (
            f"embedded {'Redis' if victim == 'redis' else 'PostgreSQL'} is back" in supervised.log()
        )
    else:
        assert f"{victim} exited with code -9" in supervised.log()
    print(
        f"\n{victim}: killed -> restarted and serving in {RECOVERY[victim]:.1f} s, "
        f"environment ready {ready:.1f} s after the kill",
        file=sys.stderr,
    )


def test_sigterm_stops_every_process_and_exits_0(supervised):
    processes = supervised.everything()
    assert len(processes) >= 7  # run.py, four children, PostgreSQL, Redis

    os.kill(supervised.process.pid, signal.SIGTERM)
    assert supervised.process.wait(timeout=60) == 0

    def gone(proc: psutil.Process) -> bool:
        try:
            return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(lambda: all(gone(proc) for proc in processes), 15)
    log = supervised.log()
    assert "did not stop in" not in log  # every child stopped on SIGTERM, none was killed
    assert "Stopped embedded postgres and redis" in log
    assert "restarting in" not in log.split("Stopping web, worker")[-1]


def test_a_job_taken_by_a_worker_that_died_is_enqueued_again(on_cluster):
    """RQ marks a job queued, a worker pops it (BLPOP) and dies before marking it started:
    the job is in no queue but still says queued. enqueue() sees it as lost."""
    import uuid

    import django_rq

    from environments.lifecycle.queue import enqueue, job_id

    environment_id = uuid.uuid4()
    queue = django_rq.get_queue("provision")
    assert enqueue("provision", environment_id)
    assert not enqueue("provision", environment_id)  # really waiting: left alone

    assert queue.connection.lpop(queue.key) == job_id("provision", environment_id).encode()
    assert enqueue("provision", environment_id)
    assert queue.job_ids == [job_id("provision", environment_id)]
    queue.empty()
