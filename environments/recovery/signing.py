"""Snapshot signatures.

Today one scheme: HMAC-SHA256 over the snapshot's digest, keyed with
``settings.SNAPSHOT_SIGNING_KEY`` (or ``SNAPSHOT_SIGNING_KEY_FILE``), or, unset, a key
derived from ``SECRET_KEY``.

The seam for an asymmetric key (Ed25519, say, so that a verifier never holds the key
that signs): implement ``Signer`` (``algorithm``, ``key_id``, ``sign``, ``verify``) and
return it from ``signer_for(algorithm)``. Each snapshot records the algorithm and the
key fingerprint it was signed with, so old and new snapshots verify side by side.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

from django.conf import settings

HMAC_SHA256 = "hmac-sha256"


class Signer(Protocol):
    algorithm: str

    @property
    def key_id(self) -> str: ...

    def sign(self, digest: str) -> str: ...

    def verify(self, digest: str, signature: str) -> bool: ...


class HmacSigner:
    algorithm = HMAC_SHA256

    def _key(self) -> bytes:
        if settings.SNAPSHOT_SIGNING_KEY:
            return settings.SNAPSHOT_SIGNING_KEY.encode()
        # Derived, never SECRET_KEY itself: a snapshot signature reveals nothing usable
        # for sessions or signed cookies.
        return hmac.new(
            str(settings.SECRET_KEY).encode(), b"ephemera snapshot signing key", hashlib.sha256
        ).digest()

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"key-id:" + self._key()).hexdigest()[:16]

    def sign(self, digest: str) -> str:
        return hmac.new(self._key(), digest.encode(), hashlib.sha256).hexdigest()

    def verify(self, digest: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(digest).encode(), (signature or "").encode())


def signer() -> Signer:
    """The signer new snapshots are signed with."""
    return HmacSigner()


def signer_for(algorithm: str) -> Signer | None:
    """The signer that checks a snapshot signed with ``algorithm`` (None: unknown)."""
    if algorithm == HMAC_SHA256:
        return HmacSigner()
    return None
