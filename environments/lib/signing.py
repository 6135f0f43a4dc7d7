"""HMAC-SHA256 signatures in GitHub's ``sha256=<hex>`` form.

One helper for both directions: outgoing webhooks sign their body, incoming forge
deliveries are checked against their signature header.
"""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex>`` of ``body`` keyed with ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, signature: str) -> bool:
    """Constant-time comparison, so the check leaks nothing about the secret."""
    # Compare bytes: a non-ASCII header must be a plain mismatch, not a TypeError.
    return bool(signature) and hmac.compare_digest(
        sign(secret, body).encode(), signature.encode("utf-8", "surrogateescape")
    )
