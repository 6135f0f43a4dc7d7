"""Is this exception a dependency outage (PostgreSQL or Redis unreachable)?

Such errors are answered 503 with Retry-After, JSON for the API and a friendly page for
people, never as a 500 with a trace (``web/errors.py``, ``api/app.py``).
"""

from __future__ import annotations

import django.db
import redis.exceptions

DATABASE = "database"
QUEUE = "job queue"

_REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_DATABASE_ERRORS = (django.db.OperationalError, django.db.InterfaceError)


def dependency_down(exc: BaseException | None) -> str | None:
    """``DATABASE`` or ``QUEUE`` if ``exc`` (or what caused it) is an outage, else None."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, _DATABASE_ERRORS):
            return DATABASE
        if isinstance(exc, _REDIS_ERRORS):
            return QUEUE
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None
