"""Model fields for secrets the portal must read back.

Webhook and repository secrets are HMAC keys: Ephemera needs them in clear to sign and
to verify, so they cannot be hashed like API tokens. They are encrypted at rest instead
(Fernet: AES-128-CBC with HMAC-SHA256, from the well-kept ``cryptography`` package), so a
database dump or backup does not give them away. The key is derived from ``SECRET_KEY``;
values written under a key now in ``SECRET_KEY_FALLBACKS`` still read, and are written
under the current key the next time the row is saved.

A value stored before encryption (no ``fernet:`` prefix) reads as it is.
"""

from __future__ import annotations

import base64
import functools
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django import forms
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

PREFIX = "fernet:"


def _fernet_key(secret_key: str) -> bytes:
    # A separate key for this purpose, never SECRET_KEY itself.
    digest = hashlib.sha256(b"ephemera.fields.EncryptedSecretField:" + secret_key.encode())
    return base64.urlsafe_b64encode(digest.digest())


@functools.lru_cache(maxsize=4)
def _fernet(secret_key: str, fallbacks: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(_fernet_key(k)) for k in (secret_key, *fallbacks)])


def fernet() -> MultiFernet:
    return _fernet(settings.SECRET_KEY, tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ())))


def encrypt(value: str) -> str:
    return PREFIX + fernet().encrypt(value.encode()).decode()


def decrypt(stored: str) -> str:
    if not stored.startswith(PREFIX):
        return stored  # written before encryption
    try:
        return fernet().decrypt(stored[len(PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "A stored secret cannot be decrypted: SECRET_KEY changed. Put the previous key "
            "in SECRET_KEY_FALLBACKS."
        ) from exc


class EncryptedSecretField(models.TextField):
    """A text secret, encrypted in the database and clear in Python. Not searchable."""

    def formfield(self, **kwargs):
        # One line in forms (the admin), not a text area.
        return super().formfield(**{"widget": forms.TextInput, **kwargs})

    def from_db_value(self, value, expression, connection):
        return value if value is None else decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(value)
