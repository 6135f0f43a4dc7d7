"""Leader election for the cluster watcher: a PostgreSQL advisory lock.

Every watcher replica keeps its stores warm; only the one holding the lock acts. The
lock is taken with ``pg_try_advisory_lock`` on a connection of its own, held for as long
as that connection lives: when the leader dies (even ``kill -9``), PostgreSQL sees its
connection close and frees the lock at once, and a standby, which tries every second,
takes over. No lease to expire, no clock to trust, nothing new to run: the database is
already the one thing every process shares.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time

from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (advisory locks take a bigint)."""
    digest = hashlib.sha256(f"ephemera-watcher:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLeader:
    def __init__(self, name: str, *, recheck_seconds: float = 1.0):
        self.key = lock_key(name)
        self.recheck_seconds = recheck_seconds
        self.db: BaseDatabaseWrapper | None = None
        self.leading = False
        self.checked_at = 0.0

    def check(self) -> bool:
        """True while this process holds the lock (tries to take it if not)."""
        now = time.monotonic()
        if self.leading and now - self.checked_at < self.recheck_seconds:
            return True
        self.checked_at = now
        try:
            if self.db is None:
                self.db = connections.create_connection("default")
            with self.db.cursor() as cursor:
                if self.leading:
                    cursor.execute("SELECT 1")  # the connection lives, so the lock is held
                else:
                    cursor.execute("SELECT pg_try_advisory_lock(%s)", [self.key])
                    self.leading = bool(cursor.fetchone()[0])
        except DatabaseError as exc:
            if self.leading:
                log.warning("lost the leader lock's connection (%s); stepping down", exc)
            self.leading = False
            self.release()
        return self.leading

    def release(self) -> None:
        """Close the lock's connection: the lock goes with it."""
        if self.db is not None:
            with contextlib.suppress(DatabaseError):
                self.db.close()
            self.db = None
        self.leading = False
