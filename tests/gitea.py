"""pytest plugin: a real Gitea, a Git forge that is also an OpenID Connect provider.

Built from its Go module by ``deploy/gitea/build.sh`` (``make forge``, part of ``make
test``) into ~/.cache/ephemera/bin/gitea. Registered in tests/conftest.py.

Fixtures
  gitea  (session)  a running Gitea: ``gitea.url``, an admin (``gitea.admin``,
                    ``gitea.admin_password``) made with the ``gitea admin user create`` CLI,
                    and an API token (``gitea.token``) with every scope; ``gitea.api()``
                    calls its REST API. It runs on a free loopback port, with its own data
                    folder under the session's tmp folder and its own database in the tests'
                    PostgreSQL (dropped afterwards). Tests make their own users, repositories
                    and OAuth2 applications with unique names: the instance is shared.
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import requests

CACHE = Path(os.environ.get("EPHEMERA_CACHE", Path.home() / ".cache" / "ephemera"))
GITEA = CACHE / "bin" / "gitea"
STATIC = CACHE / "share" / "gitea"  # templates, locales, images (deploy/gitea/build.sh)
BUILD_HINT = "make forge  (or: bash deploy/gitea/build.sh)"


class Gitea:
    """A running Gitea and what a test needs to drive it."""

    def __init__(self, *, url: str, home: Path, config: Path, process: subprocess.Popen):
        self.url = url  # http://127.0.0.1:<port>, no trailing slash
        self.home = home
        self.config = config
        self.process = process
        self.admin = "forge-admin"
        self.admin_password = secrets.token_urlsafe(16)
        self.token = ""

    def api(self, method: str, path: str, *, sudo: str | None = None, **kwargs):
        """Call ``/api/v1<path>`` as the admin (or as ``sudo``); raise on an error status."""
        headers = {"Authorization": f"token {self.token}"}
        if sudo:
            headers["Sudo"] = sudo
        response = requests.request(
            method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kwargs
        )
        if response.status_code >= 400:
            raise AssertionError(
                f"Gitea {method} {path}: HTTP {response.status_code} {response.text[:500]}"
            )
        return response.json() if response.content else None

    def create_user(self, username: str, email: str, password: str) -> dict:
        """A confirmed, active user who can sign in with ``password`` straight away."""
        return self.api(
            "POST",
            "/admin/users",
            json={
                "username": username,
                "email": email,
                "password": password,
                "must_change_password": False,
                "send_notify": False,
            },
        )

    def create_oauth2_application(
        self, name: str, redirect_uris: list[str], *, owner: str | None = None
    ) -> dict:
        """An OAuth2/OpenID Connect client: the answer holds ``client_id`` and
        ``client_secret`` (shown only here)."""
        return self.api(
            "POST",
            "/user/applications/oauth2",
            sudo=owner,
            json={"name": name, "redirect_uris": redirect_uris, "confidential_client": True},
        )

    def cli(self, *args: str) -> str:
        """Run ``gitea <args>`` against this instance's configuration; its stdout."""
        result = subprocess.run(
            [str(GITEA), "--config", str(self.config), "--work-path", str(self.home), *args],
            env=_environ(self.home),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise AssertionError(f"gitea {' '.join(args[:3])}: {result.stderr or result.stdout}")
        return result.stdout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environ(home: Path) -> dict[str, str]:
    # Gitea (and the git it runs) keep their state in its own folder, never ~/.gitconfig.
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")
    environ = {k: v for k, v in os.environ.items() if k in keep}
    environ.update(HOME=str(home), GITEA_WORK_DIR=str(home))
    if os.getuid() == 0:  # Gitea refuses root unless told (CI containers run as root)
        environ["GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT"] = "true"
    return environ


def _database() -> dict:
    from django.conf import settings

    db = settings.DATABASES["default"]
    return {
        "host": db["HOST"] or "localhost",
        "port": str(db["PORT"] or 5432),
        "user": db["USER"],
        "password": db["PASSWORD"] or "",
        "name": f"gitea_{db['TEST']['NAME']}",  # one per test database, so per instance
    }


def _admin_connection(db: dict):
    import psycopg

    return psycopg.connect(
        host=db["host"],
        port=db["port"],
        user=db["user"],
        password=db["password"],
        dbname="postgres",
        autocommit=True,
    )


def _recreate_database(db: dict, *, create: bool = True) -> None:
    from psycopg import sql

    with _admin_connection(db) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db["name"]))
        )
        if create:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["name"])))


def _app_ini(*, home: Path, port: int, db: dict) -> str:
    # The tests' PostgreSQL listens on a Unix socket (a HOST that starts with "/"), or TCP.
    host = db["host"] if db["host"].startswith("/") else f"{db['host']}:{db['port']}"
    return f"""\
APP_NAME = Ephemera test forge
RUN_MODE = prod
RUN_USER = {pwd.getpwuid(os.getuid()).pw_name}
WORK_PATH = {home}

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = {port}
ROOT_URL = http://127.0.0.1:{port}/
STATIC_ROOT_PATH = {STATIC}
APP_DATA_PATH = {home}/data
DISABLE_SSH = true
START_SSH_SERVER = false
LFS_START_SERVER = false
OFFLINE_MODE = true

[database]
DB_TYPE = postgres
HOST = {host}
NAME = {db["name"]}
USER = {db["user"]}
PASSWD = {db["password"]}
SSL_MODE = disable

[repository]
ROOT = {home}/repositories

[security]
INSTALL_LOCK = true
SECRET_KEY = {secrets.token_hex(32)}
INTERNAL_TOKEN = {secrets.token_hex(40)}

[oauth2]
ENABLED = true
JWT_SECRET = {secrets.token_urlsafe(32)}

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false
ENABLE_NOTIFY_MAIL = false

[mailer]
ENABLED = false

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[queue]
TYPE = channel

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[cron]
ENABLED = false

[webhook]
; the portal under test listens on loopback (forge tests)
ALLOWED_HOST_LIST = loopback

[log]
MODE = file
LEVEL = Info
ROOT_PATH = {home}/log

[other]
SHOW_FOOTER_VERSION = false
"""


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="session")
def gitea(tmp_path_factory):
    from tests.conftest import wait_for

    if not GITEA.exists() or not (STATIC / "templates").is_dir():
        pytest.fail(f"Gitea is not built; run `{BUILD_HINT}`", pytrace=False)
    home = tmp_path_factory.mktemp("gitea")
    port = _free_port()
    db = _database()
    _recreate_database(db)
    config = home / "app.ini"
    config.write_text(_app_ini(home=home, port=port, db=db))
    url = f"http://127.0.0.1:{port}"
    forge = Gitea(url=url, home=home, config=config, process=None)  # type: ignore[arg-type]
    try:
        forge.cli("migrate")
        forge.cli(
            "admin", "user", "create", "--admin",
            "--username", forge.admin,
            "--password", forge.admin_password,
            "--email", "forge-admin@example.com",
            "--must-change-password=false",
        )  # fmt: skip
        output = forge.cli(
            "admin", "user", "generate-access-token",
            "--username", forge.admin,
            "--token-name", "tests",
            "--scopes", "all",
            "--raw",
        )  # fmt: skip
        forge.token = output.strip().splitlines()[-1]  # after Gitea's warning about root
        log = (home / "gitea.out").open("w")
        try:
            forge.process = subprocess.Popen(
                [str(GITEA), "--config", str(config), "--work-path", str(home), "web"],
                env=_environ(home),
                cwd=home,
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

        def up() -> bool:
            if forge.process.poll() is not None:
                output = (home / "gitea.out").read_text()[-2000:]
                raise AssertionError(f"Gitea exited ({forge.process.returncode}): {output}")
            return _healthy(url)

        wait_for(up, timeout=120, interval=0.5)
        yield forge
    finally:
        if forge.process is not None and forge.process.poll() is None:
            os.killpg(forge.process.pid, signal.SIGTERM)
            try:
                forge.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(forge.process.pid, signal.SIGKILL)
                forge.process.wait(timeout=10)
        _recreate_database(db, create=False)
