"""Idempotency keys: a retried API request replays the first answer instead of acting twice.

A pipeline that retries ``POST /api/v1/environments`` after a timeout must not get two
environments. The client sends ``Idempotency-Key``; the first request with that key
(per user) stores its answer in the same transaction as what it created, so:

- a later retry finds the row and gets the same status and body back;
- a concurrent twin inserts the same (user, key) and waits on the unique index until the
  first commits, then finds its row (or, if the first failed and rolled back, goes on
  and does the work itself);
- the same key with a different request is refused: it is a client bug.

Only answers that changed something are stored: a refusal (409, 422) rolls back with
everything else, so a retry after fixing the cause is evaluated afresh.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from environments.lib.errors import ServiceError
from environments.models import IdempotencyKey

# How long a key is remembered; pruned after that (``prune``, run by the cron).
KEY_LIFETIME = timedelta(hours=24)
KEY_MAX_LENGTH = 200
REUSED = "Idempotency-Key reused with a different request"


class KeyInvalid(ServiceError):
    """A header that is empty, too long or not printable."""


class KeyReused(ServiceError):
    """The same key with another method, path or body."""


@dataclass(frozen=True)
class Replay:
    status: int
    body: Any


def check_key(key: str) -> str:
    """The key as sent, or ``KeyInvalid`` with a sentence saying what is wrong."""
    if not 1 <= len(key) <= KEY_MAX_LENGTH:
        raise KeyInvalid(f"Idempotency-Key must have 1 to {KEY_MAX_LENGTH} characters.")
    if not key.isprintable() or not key.isascii():
        raise KeyInvalid("Idempotency-Key must be printable ASCII characters.")
    return key


def fingerprint(*, method: str, path: str, body: Any) -> str:
    """SHA-256 of the request as the server understood it (canonical JSON: key order and
    spacing do not matter)."""
    canonical = json.dumps(
        {"method": method, "path": path, "body": body},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _live(user, key: str) -> IdempotencyKey | None:
    return IdempotencyKey.objects.filter(
        user=user, key=key, created_at__gt=timezone.now() - KEY_LIFETIME
    ).first()


def replay(*, user, key: str, request_hash: str) -> Replay | None:
    """The stored answer for ``key``, or None if there is none (yet). Raises
    ``KeyReused`` if the key was used for another request."""
    found = _live(user, key)
    if found is None:
        return None
    if found.request_hash != request_hash:
        raise KeyReused(REUSED + ".")
    return Replay(status=found.status, body=found.body)


def claim(*, user, key: str, request_hash: str) -> IdempotencyKey | Replay:
    """Inside the caller's transaction: take ``key`` for this request, or return the
    answer stored by the request that took it first (waiting for it to commit).

    An expired row with the same key is replaced.
    """
    IdempotencyKey.objects.filter(
        user=user, key=key, created_at__lte=timezone.now() - KEY_LIFETIME
    ).delete()
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction survives
            return IdempotencyKey.objects.create(
                user=user, key=key, request_hash=request_hash, status=0, body={}
            )
    except IntegrityError:
        pass
    # The twin committed first (the insert above waited for it).
    stored = replay(user=user, key=key, request_hash=request_hash)
    if stored is None:  # pruned in between: vanishingly rare; the client retries
        raise ServiceError("This Idempotency-Key is being used right now; try again.")
    return stored


def remember(claimed: IdempotencyKey, *, status: int, body: Any) -> None:
    """Store the answer for the claimed key (in the transaction that claimed it, and
    again after a wait, so a retry gets exactly what the first caller got)."""
    IdempotencyKey.objects.filter(pk=claimed.pk).update(status=status, body=body)


def prune() -> int:
    """Forget keys older than ``KEY_LIFETIME`` (scheduled with the reaper)."""
    deleted, _ = IdempotencyKey.objects.filter(
        created_at__lte=timezone.now() - KEY_LIFETIME
    ).delete()
    return deleted
