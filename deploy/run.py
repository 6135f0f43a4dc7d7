"""`make run`: prepare the database, then run and supervise web, worker, scheduler and watcher.

A supervisor, hand-written (about a hundred lines; honcho restarts nothing, supervisord
is a daemon with its own config language and control socket):

- a child that exits is started again after a back-off that doubles from 1 s to 30 s,
  and resets once the child stayed up for a minute; one log line per exit and restart;
- the embedded PostgreSQL and Redis (when ``DATABASE_URL`` / ``REDIS_URL`` are unset) are
  checked twice a second and started again when they died. The children ride through it:
  Django re-connects (``CONN_HEALTH_CHECKS``), redis-py re-connects, an RQ worker that
  gives up on Redis exits and is restarted here;
- Ctrl-C (SIGINT) or SIGTERM stops everything in order: SIGTERM to each child, up to
  ``EPHEMERA_STOP_SECONDS`` (20) for them to finish, SIGKILL for the rest (and for anything
  they left behind, such as an RQ work horse), then the embedded PostgreSQL and Redis.
  Nothing is restarted while stopping. Exit code 0.

Everything a fresh machine needs is done here or by the Makefile: migrate, load the
sample blueprints, create the first admin.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MANAGE = [PYTHON, str(ROOT / "manage.py")]
FIRST_DELAY, MAX_DELAY, STABLE_AFTER = 1.0, 30.0, 60.0

sys.path.insert(0, str(ROOT))
from portal import embedded  # noqa: E402 (after the path is set)


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [run] {message}", flush=True)


def manage(*args: str) -> None:
    subprocess.run([*MANAGE, *args], check=True, cwd=ROOT)


class Backoff:
    """When to try again after a failure: 1 s doubling to 30 s, reset after a quiet minute."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.up_since = time.monotonic()
        self.next_try = 0.0

    def failed(self) -> float:
        now = time.monotonic()
        if now - self.up_since >= STABLE_AFTER:
            self.delay = 0.0
        self.delay = min(MAX_DELAY, self.delay * 2) if self.delay else FIRST_DELAY
        self.next_try = now + self.delay
        return self.delay

    def due(self) -> bool:
        return time.monotonic() >= self.next_try


class Child(Backoff):
    def __init__(self, name: str, command: list[str]) -> None:
        super().__init__()
        self.name, self.command = name, command
        self.process: subprocess.Popen | None = None
        self.family: dict[int, psutil.Process] = {}

    def start(self) -> None:
        # Own session: the terminal's Ctrl-C reaches only us, and we stop children in order.
        self.process = subprocess.Popen(self.command, cwd=ROOT, start_new_session=True)
        self.up_since = time.monotonic()
        self.family = {}
        say(f"started {self.name} (pid {self.process.pid})")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def note_family(self) -> None:
        """Remember its descendants (gunicorn workers, RQ's work horse) to clean up after it."""
        if self.running():
            try:
                for proc in psutil.Process(self.process.pid).children(recursive=True):  # type: ignore[union-attr]
                    self.family.setdefault(proc.pid, proc)
            except psutil.Error:
                pass

    def kill_leftovers(self) -> None:
        for proc in self.family.values():
            try:
                if proc.is_running():  # same pid *and* start time: never a recycled pid
                    proc.kill()
            except psutil.Error:
                pass
        self.family = {}


class Server(Backoff):
    """An embedded server: ``alive()`` checks it, ``start()`` (idempotent, locked) starts it."""

    def __init__(self, name: str, alive, start) -> None:
        super().__init__()
        self.name, self.alive, self.start = name, alive, start
        self.down = False


def adopt_orphans() -> None:
    """Become a child subreaper (Linux): the daemons started from here (the embedded
    PostgreSQL and Redis) and what a dead child left behind become our children, so a
    killed server is reaped at once. Otherwise its zombie keeps its pid until init reaps
    it, and PostgreSQL will not start while its old postmaster's pid looks alive."""
    import ctypes

    # Not Linux: init reaps them, a little later.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap_adopted(own: set[int]) -> None:
    """Reap adopted processes that exited (never our own children: Popen waits for those)."""
    for proc in psutil.Process().children():
        try:
            if proc.pid not in own and proc.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(proc.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            pass


def children_commands(host: str, port: str) -> dict[str, list[str]]:
    commands = {
        "web": [
            PYTHON,
            "-m",
            "gunicorn",
            "portal.wsgi",
            "--bind",
            f"{host}:{port}",
            "--workers",
            os.environ.get("WEB_CONCURRENCY", "2"),
            # An API call waiting for an environment (?wait=) holds a thread, not a worker.
            "--threads",
            os.environ.get("WEB_THREADS", "8"),
            "--access-logfile",
            "-",
        ],
        "worker": [*MANAGE, "rqworker", "provision", "teardown", "default", "--with-scheduler"],
        "scheduler": [*MANAGE, "cron"],
        # Observes the cluster and moves environments to ready / failed / deleted.
        "watcher": [*MANAGE, "watch_cluster"],
    }
    if os.environ.get("DEBUG", "").lower() in {"1", "true", "yes", "on"}:
        # Development: serve static files from static/ without collectstatic. Supervised
        # exactly like gunicorn.
        commands["web"] = [*MANAGE, "runserver", f"{host}:{port}", "--noreload"]
    return commands


def main() -> int:
    os.environ.setdefault("DEBUG", "true")
    host = os.environ.get("EPHEMERA_HOST", "127.0.0.1")
    port = os.environ.get("EPHEMERA_PORT", "8000")
    # Links in emails and webhooks point at the portal actually being served.
    os.environ.setdefault("SITE_URL", f"http://{host}:{port}")
    try:
        stop_seconds = float(os.environ.get("EPHEMERA_STOP_SECONDS") or "20")
        if not 0 < stop_seconds < 3600:
            raise ValueError
    except ValueError:
        print("EPHEMERA_STOP_SECONDS: expected a number of seconds between 0 and 3600")
        return 2
    data_dir = Path(os.environ.get("EPHEMERA_DATA_DIR") or ROOT / ".ephemera").resolve()
    servers = []
    if not os.environ.get("DATABASE_URL"):
        servers.append(
            Server(
                "PostgreSQL",
                lambda: embedded.postgres_running(data_dir),
                lambda: embedded.postgres_url(data_dir),
            )
        )
    if not os.environ.get("REDIS_URL"):
        servers.append(
            Server(
                "Redis",
                lambda: embedded.redis_running(data_dir),
                lambda: embedded.redis_url(data_dir),
            )
        )

    stopping = False

    def stop(signum=None, frame=None):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    adopt_orphans()
    print("==> Preparing the database", flush=True)
    try:
        for server in servers:
            server.start()
        manage("migrate", "--noinput")
        manage("load_blueprints", str(ROOT / "deploy" / "blueprints"))
        manage("bootstrap_admin")
    except subprocess.CalledProcessError as exc:
        print(f"!!! {' '.join(exc.cmd[2:4])} failed (exit code {exc.returncode}); see above")
        return 1
    except Exception as exc:  # an embedded server that cannot start: its reason, one line
        print(f"!!! could not start the embedded servers: {exc}")
        return 1

    children = [Child(name, command) for name, command in children_commands(host, port).items()]
    for child in children:
        if not stopping:
            child.start()
    print(f"\nEphemera is at http://{host}:{port}/  (Ctrl-C stops everything)\n", flush=True)

    checked = 0.0
    while not stopping:
        if time.monotonic() - checked >= 0.5:
            checked = time.monotonic()
            reap_adopted({child.process.pid for child in children if child.process})
            for child in children:
                child.note_family()
            for server in servers:
                if stopping or server.alive() or not server.due():
                    continue
                if not server.down:
                    say(f"embedded {server.name} is not running; starting it again")
                    server.down = True
                try:
                    server.start()
                    problem = "" if server.alive() else "exiting"
                except Exception as exc:  # log it, try again after the back-off
                    problem = (str(exc).strip().splitlines() or [repr(exc)])[-1]
                if problem == "exiting":
                    pass  # its killed process is not reaped yet (pg_ctl sees a zombie's pid)
                elif problem:
                    say(
                        f"embedded {server.name} did not start ({problem}); "
                        f"trying again in {server.failed():.0f} s"
                    )
                else:
                    server.up_since, server.down = time.monotonic(), False
                    say(f"embedded {server.name} is back")
        for child in children:
            if stopping or child.running():
                continue
            if child.process is not None:
                code, lived = child.process.returncode, time.monotonic() - child.up_since
                child.kill_leftovers()
                child.process = None
                say(
                    f"{child.name} exited with code {code} after {lived:.1f} s; "
                    f"restarting in {child.failed():.0f} s"
                )
            if child.due():
                child.start()
        time.sleep(0.2)

    print("\n==> Stopping web, worker, scheduler and watcher", flush=True)
    live = [child for child in children if child.running()]
    for child in live:
        child.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    deadline = time.monotonic() + stop_seconds
    for child in live:
        try:
            child.process.wait(timeout=max(deadline - time.monotonic(), 0.1))  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            say(f"{child.name} did not stop in {stop_seconds:.0f} s; killing it")
            child.process.kill()  # type: ignore[union-attr]
            child.process.wait()  # type: ignore[union-attr]
    for child in children:
        child.kill_leftovers()
    if servers:
        stopped = embedded.stop(data_dir)
        if stopped:
            print("==> Stopped embedded " + " and ".join(stopped), flush=True)
    # Anything else we adopted (a work horse forked just before its worker died): no orphans.
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            proc.kill()
    print("==> Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
