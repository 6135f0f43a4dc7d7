"""`make run`: prepare the database, then run web, worker, scheduler and watcher together.

Ctrl-C (SIGINT) or SIGTERM stops all four, then the embedded PostgreSQL and Redis
if this run used them. Everything a fresh machine needs is done here or by the
Makefile: migrate, load the sample blueprints, create the first admin.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MANAGE = [PYTHON, str(ROOT / "manage.py")]


def manage(*args: str) -> None:
    subprocess.run([*MANAGE, *args], check=True, cwd=ROOT)


def main() -> int:
    os.environ.setdefault("DEBUG", "true")
    host = os.environ.get("EPHEMERA_HOST", "127.0.0.1")
    port = os.environ.get("EPHEMERA_PORT", "8000")
    # Links in emails and webhooks point at the portal actually being served.
    os.environ.setdefault("SITE_URL", f"http://{host}:{port}")
    embedded = not os.environ.get("DATABASE_URL") and not os.environ.get("REDIS_URL")

    print("==> Preparing the database")
    manage("migrate", "--noinput")
    manage("load_blueprints", str(ROOT / "deploy" / "blueprints"))
    manage("bootstrap_admin")

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
            "--access-logfile",
            "-",
        ],
        "worker": [*MANAGE, "rqworker", "provision", "teardown", "default", "--with-scheduler"],
        "scheduler": [*MANAGE, "rqcron", "environments.cron"],
        # Observes the cluster and moves environments to ready / failed / deleted.
        "watcher": [*MANAGE, "watch_cluster"],
    }
    if os.environ.get("DEBUG", "").lower() in {"1", "true", "yes", "on"}:
        # Development: serve static files from static/ without collectstatic.
        commands["web"] = [*MANAGE, "runserver", f"{host}:{port}", "--noreload"]
    processes: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop(signum=None, frame=None):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for name, command in commands.items():
        # Own process group: the terminal's Ctrl-C reaches us, and we stop children in order.
        processes[name] = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
        print(f"==> Started {name} (pid {processes[name].pid})")
    print(f"\nEphemera is at http://{host}:{port}/  (Ctrl-C stops everything)\n")

    exit_code = 0
    while not stopping:
        for name, process in processes.items():
            if process.poll() is not None:
                print(f"!!! {name} exited with code {process.returncode}; stopping the rest")
                exit_code = 1
                stopping = True
                break
        time.sleep(0.5)

    print("\n==> Stopping web, worker, scheduler and watcher")
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for name, process in processes.items():
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            print(f"!!! {name} did not stop in time; killing it")
            process.kill()
            process.wait()
    if embedded:
        sys.path.insert(0, str(ROOT))
        from portal import embedded as embedded_servers

        data_dir = Path(os.environ.get("EPHEMERA_DATA_DIR", ROOT / ".ephemera"))
        stopped = embedded_servers.stop(data_dir)
        if stopped:
            print("==> Stopped embedded " + " and ".join(stopped))
    print("==> Stopped.")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
