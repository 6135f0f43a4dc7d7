"""Shared fixtures: three kinds of user (owner, teammate, outsider), a team, blueprints.

Tests run on real PostgreSQL and Redis (embedded unless DATABASE_URL / REDIS_URL
are set) and, where marked, the real local Kubernetes control plane.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group

from environments.catalog.publishing import publish_blueprint
from environments.models import Membership, Team
from tests.factories import make_environment

pytest_plugins = [
    "tests.kubecluster",
    "tests.helmchart",
    "tests.browser",
    "tests.smtp",
    "tests.gitea",
]

ROOT = Path(__file__).resolve().parent.parent
BLUEPRINTS = ROOT / "deploy" / "blueprints"
OUTPUT = Path(__file__).resolve().parent / "output"


def database_url() -> str:
    """The URL of the database the tests use, for subprocesses (workers, manage.py)."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    host = db["HOST"] or "localhost"
    if host.startswith("/"):
        return f"postgresql://{db['USER']}@/{db['NAME']}?host={host}"
    return f"postgresql://{db['USER']}:{db['PASSWORD']}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture(autouse=True)
def _empty_cache():
    # The cache is the real Redis (rate limits, cached dashboard rows): start clean.
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(scope="session", autouse=True)
def _flush_past_the_audit_trigger():
    """Transactional tests end with a flush (one TRUNCATE of every table); the audit
    log's trigger refuses TRUNCATE (migration 0011). The flush runs with triggers off,
    which only a superuser (the test database's owner) may do."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        return original(self, ["SET LOCAL session_replication_role = replica", *sql_list])

    DatabaseOperations.execute_sql_flush = execute_sql_flush
    yield
    DatabaseOperations.execute_sql_flush = original


@pytest.fixture(autouse=True)
def _fast_hasher(settings):
    # Fast settings are fine; fake backends are not (STYLE.md rule 16).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# Set only while a browser is open (tests/browser.py); never inherited by anything else.
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"


@pytest.fixture(autouse=True)
def _async_unsafe_stays_in_browser_tests(request):
    """Fail loudly if the browser tests' ``DJANGO_ALLOW_ASYNC_UNSAFE`` leaked out of them:
    it would switch off Django's async-safety check here and in every subprocess."""
    if request.node.get_closest_marker("browser") is None:
        assert ASYNC_UNSAFE not in os.environ, (
            f"{ASYNC_UNSAFE} is set outside the browser tests; scope it to them "
            "(tests/browser.py sets it only while a browser is open)"
        )


def subprocess_environ(**extra: str) -> dict[str, str]:
    """The environment for a child process: ours, minus switches meant for this process."""
    environ = {k: v for k, v in os.environ.items() if k != ASYNC_UNSAFE}
    environ.update(extra)
    return environ


def cli_runner(url: str, user, home) -> Any:
    """The ``ephemera`` command as a user runs it: a subprocess with a write token of
    ``user`` against the portal at ``url``; it must never print a traceback."""
    import subprocess

    from environments.access import tokens

    _, token = tokens.create_token(user=user, name="cli", scope="write", days=1)
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "EPHEMERA_URL": url,
        "EPHEMERA_TOKEN": token,
    }

    def run(*args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "ephemera_cli.main", *args],
            cwd=ROOT,
            env={**environ, **extra},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    run.token = token  # type: ignore[attr-defined]
    run.environ = environ  # type: ignore[attr-defined]
    return run


@pytest.fixture
def output_dir() -> Path:
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT


def make_user(email: str, *, roles: tuple[str, ...] = (), password: str = "pw-for-tests-1"):
    from allauth.account.models import EmailAddress
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username=email, email=email, password=password)
    EmailAddress.objects.create(user=user, email=email, primary=True, verified=True)
    for role in roles:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def team(db):
    return Team.objects.create(name="Sales", slug="sales")


@pytest.fixture
def other_team(db):
    return Team.objects.create(name="Research", slug="research")


@pytest.fixture
def owner(team):
    user = make_user("owner@example.com")
    Membership.objects.create(team=team, user=user)
    return user


@pytest.fixture
def teammate(team):
    user = make_user("teammate@example.com")
    Membership.objects.create(team=team, user=user)
    return user


@pytest.fixture
def outsider(other_team):
    user = make_user("outsider@example.com")
    Membership.objects.create(team=other_team, user=user)
    return user


@pytest.fixture
def approver(team):
    user = make_user("approver@example.com", roles=("approver",))
    Membership.objects.create(team=team, user=user)
    return user


@pytest.fixture
def portal_admin(db):
    return make_user("admin@example.com", roles=("admin",))


def client_for(user):
    """A Django test client signed in as ``user``."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def load_sample(name: str):
    version, _ = publish_blueprint(source=(BLUEPRINTS / f"{name}.yaml").read_text())
    return version


@pytest.fixture
def sample_blueprints(db):
    return {path.stem: load_sample(path.stem) for path in sorted(BLUEPRINTS.glob("*.yaml"))}


@pytest.fixture
def shop(sample_blueprints):
    """The three-component sample blueprint's current version."""
    return sample_blueprints["shop-demo"]


@pytest.fixture
def env(owner, team, shop):
    """A ready shop-demo environment of ``owner`` in ``team`` (rows only, no cluster)."""
    from environments.lifecycle.states import State

    return make_environment(owner=owner, team=team, version=shop, state=State.READY)


@pytest.fixture
def worker(on_cluster, kube_config, tmp_path):
    """A real RQ worker and a real watcher process on the test database, Redis and
    cluster: what makes a requested environment ready (the job applies, the watcher
    sees it available)."""
    process = start_worker(kube_config, tmp_path / "worker.log")
    watcher = start_watcher(kube_config, tmp_path / "watcher.log")
    yield process
    stop_worker(watcher)
    stop_worker(process)


@pytest.fixture
def processes():
    """Worker and watcher processes a test starts; stopped afterwards, whatever happens."""
    started: list = []
    yield started
    for process in started:
        stop_worker(process)


@pytest.fixture
def on_cluster(settings, kube_config):
    """Point the portal at the test cluster, with empty job queues (cluster tests)."""
    import django_rq

    from environments.kube import cluster

    settings.KUBECONFIG = kube_config
    cluster.reset_client()
    for name in ("default", "provision", "teardown"):
        django_rq.get_queue(name).empty()
    yield
    cluster.reset_client()


def start_worker(
    kube_config: str, log_path: Path, *, queues=("provision", "teardown", "default"), **env
):
    """A real RQ worker process on the test database, Redis and cluster.

    Its own session, so ``stop_worker`` (or a test's kill -9) reaches its work horse too.
    """
    import subprocess
    import sys

    from django.conf import settings

    environ = subprocess_environ(
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        KUBECONFIG=kube_config,
        DEBUG="true",
        **env,
    )
    log = log_path.open("w")
    try:
        return subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", *queues],
            cwd=ROOT,
            env=environ,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()  # the child has its own copy


def start_watcher(kube_config: str, log_path: Path, *, name: str | None = None, **env):
    """A real watcher process (``manage.py watch_cluster``) on the test database, Redis,
    cluster and instance label. Its own session, like a worker; stop it with
    ``stop_worker`` (or kill -9 it)."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    environ = dict(os.environ)
    environ.update(
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        KUBECONFIG=kube_config,
        EPHEMERA_INSTANCE=settings.EPHEMERA_INSTANCE,
        DEBUG="true",
        **env,
    )
    command = [sys.executable, "manage.py", "watch_cluster"]
    if name:
        command += ["--id", name]
    log = log_path.open("w")
    try:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=environ,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def stop_worker(process) -> None:
    import signal
    import subprocess

    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        # RQ's work horse runs in its own process group: kill it by pid, too.
        import psutil

        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def hold(seconds: float) -> None:
    """Let ``seconds`` pass on purpose: a scenario's duration (an outage that lasts 20 s,
    the interval that defines "settled"), never a wait for something to happen; for
    that, use ``wait_for``."""
    import threading

    threading.Event().wait(seconds)


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
