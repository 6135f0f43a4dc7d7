"""/healthz and /readyz: what Kubernetes' probes see, with every dependency up and with
PostgreSQL or Redis unreachable (a web process of our own pointed at a closed port; the
shared test servers are never stopped)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from rq.cron import CronScheduler
from rq.worker import Worker

from tests.conftest import ROOT, database_url, subprocess_environ, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_url(scheme: str) -> str:
    """A URL on a loopback port nothing listens on: connection refused at once."""
    port = free_port()
    if scheme == "postgresql":
        return f"postgresql://ephemera:s3cret-pw@127.0.0.1:{port}/ephemera"
    return f"redis://:s3cret-pw@127.0.0.1:{port}/0"


def get(url: str, headers: dict | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def web_process(tmp_path, kube_config, settings):
    """Start a gunicorn web process (DEBUG on: Django's debug pages must not show) with
    some settings replaced; yields a function that starts one and returns its base URL."""
    started: list[subprocess.Popen] = []

    def start(workers: int = 1, threads: int = 4, **env: str) -> str:
        port = free_port()
        environ = subprocess_environ(
            DATABASE_URL=database_url(),
            REDIS_URL=settings.REDIS_URL,
            KUBECONFIG=kube_config,
            DEBUG="true",
            READYZ_CHECKS="database,redis,kubernetes",
        )
        environ.update(env)
        log = (tmp_path / f"web-{port}.log").open("w")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "portal.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
            ],
            cwd=ROOT,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        started.append(process)
        base = f"http://127.0.0.1:{port}"

        def answers():
            try:
                return get(f"{base}/healthz")[0] == 200
            except OSError:
                assert process.poll() is None, (tmp_path / f"web-{port}.log").read_text()
                return False

        wait_for(answers, 60)
        return base

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_it_answers_healthz_without_the_database_or_redis(client, settings):
    # No db mark: pytest-django refuses any query. Redis points at a closed port.
    settings.REDIS_URL = closed_url("redis")
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_it_answers_probes_for_any_host_and_without_https(client, settings):
    # The kubelet calls the pod by its IP over plain HTTP.
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/healthz", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db
@pytest.mark.usefixtures("on_cluster")
def test_it_is_ready_when_every_dependency_answers_and_reports_heartbeats(client, settings):
    import django_rq

    settings.READYZ_CHECKS = ["database", "redis", "kubernetes"]
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 8
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["kubernetes"] == "ok"
    assert response["Cache-Control"] == "no-store"

    # No worker registered: reported, not required by default; required when configured.
    connection = django_rq.get_connection("default")
    for worker in Worker.all(connection=connection):
        worker.register_death()
    assert body["checks"]["worker"].startswith("stale") or body["checks"]["worker"] == "ok"
    settings.READYZ_CHECKS = ["database", "worker"]
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["worker"].startswith("stale: no worker")

    # A worker and a scheduler that just beat make them ok.
    worker = Worker(["default"], connection=connection, name="readyz-test-worker")
    worker.register_birth()
    scheduler = CronScheduler(connection=connection, name="readyz-test-scheduler")
    scheduler.register_birth()
    scheduler.heartbeat()
    try:
        settings.READYZ_CHECKS = ["database", "redis", "kubernetes", "worker", "scheduler"]
        response = client.get("/readyz")
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "ok"
    finally:
        worker.register_death()
        scheduler.register_death()


@pytest.mark.django_db
def test_it_is_unready_naming_redis_when_redis_is_unreachable(client, settings):
    settings.REDIS_URL = closed_url("redis")
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"].startswith("unreachable: ")
    assert body["checks"]["database"] == "ok"
    assert "s3cret" not in response.content.decode()


@pytest.mark.cluster
def test_it_is_unready_naming_postgresql_while_postgresql_is_unreachable(web_process):
    base = web_process(DATABASE_URL=closed_url("postgresql"))
    started = time.monotonic()
    status, headers, body = get(f"{base}/readyz")
    assert time.monotonic() - started < 8
    assert status == 503
    answer = json.loads(body)
    assert answer["status"] == "unavailable"
    assert answer["checks"]["database"].startswith("unreachable: ")
    assert "\n" not in answer["checks"]["database"]
    assert answer["checks"]["redis"] == "ok"
    assert b"s3cret" not in body
    # The liveness probe does not care: restarting the pod would not bring PostgreSQL back.
    assert get(f"{base}/healthz")[0] == 200


@pytest.mark.cluster
@pytest.mark.django_db
def test_it_is_unready_naming_the_api_server_when_it_is_unreachable(web_process, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{free_port()}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "users: [{name: u, user: {token: not-a-real-token}}]\n"
    )
    base = web_process(KUBECONFIG=str(kubeconfig))
    status, _, body = get(f"{base}/readyz")
    assert status == 503
    answer = json.loads(body)
    assert answer["checks"]["kubernetes"].startswith("unreachable: ")
    assert answer["checks"]["database"] == "ok"
    assert b"not-a-real-token" not in body


def test_it_logs_one_json_object_per_line_when_asked():
    import logging

    from portal.logformat import JsonFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "environments.x", logging.WARNING, __file__, 1, "hello %s", ("world",), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["message"] == "hello world"
    assert entry["logger"] == "environments.x"
    assert "ValueError: boom" in entry["exception"]


def test_it_refuses_an_unknown_readiness_check_or_log_format():
    for env, expected in (
        ({"READYZ_CHECKS": "database,disk"}, "READYZ_CHECKS: unknown check 'disk'"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT: plain or json"),
    ):
        result = subprocess.run(
            [sys.executable, "-c", "import django; django.setup()"],
            cwd=ROOT,
            env=subprocess_environ(DJANGO_SETTINGS_MODULE="portal.settings", DEBUG="true", **env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert expected in result.stderr
