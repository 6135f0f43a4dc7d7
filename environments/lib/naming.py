"""How Ephemera names what it creates on a cluster."""

from __future__ import annotations

NAMESPACE_PREFIX = "eph-"


def namespace_for(name: str) -> str:
    """An environment's namespace, from its short name: ``eph-<name>``."""
    return f"{NAMESPACE_PREFIX}{name}"
