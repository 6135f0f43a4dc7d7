"""Drift: how a live object differs from the manifest Ephemera applied. Pure, no I/O.

Only the fields Ephemera sets are compared: the API server adds defaults (a Service
port's protocol, a Deployment's revisionHistoryLimit, the namespace's
``kubernetes.io/metadata.name`` label) and controllers write ``status``; none of that
is drift. What is drift: an object that is gone, or a field of the manifest whose live
value differs (``kubectl scale`` changes ``spec.replicas``, ``kubectl set image`` an
image, an edited env var, a removed label).

- Maps: every key of the manifest must be there with an equal value; extra keys are
  someone else's (server-side apply would not remove them either).
- Lists of maps: matched by ``name`` when every item has one (containers, env, ports,
  subjects), else by position; the live list may hold more.
- Lists of scalars (args, policyTypes, ``except``): equal as a whole (server-side apply
  replaces them whole).
- Strings that are Kubernetes quantities compare by value: the API server writes a
  ResourceQuota's ``268435456`` back as ``256Mi``.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils.quantity import parse_quantity

# What a store keeps of a managed object: enough to compare it with its manifest and to
# list it in the inventory; never its status or managedFields.
KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "labels")
SKIPPED = {"apiVersion", "kind", "metadata", "status"}


def comparable(obj: dict) -> dict:
    """The parts of a live object drift and the inventory look at."""
    meta = obj.get("metadata") or {}
    kept: dict[str, Any] = {k: meta[k] for k in KEPT_METADATA if k in meta}
    annotations = _annotations(meta)
    if annotations:
        kept["annotations"] = annotations
    if meta.get("deletionTimestamp"):
        kept["deletionTimestamp"] = meta["deletionTimestamp"]
    body = {k: v for k, v in obj.items() if k not in SKIPPED}
    return {"kind": obj.get("kind", ""), "metadata": kept, **body}


def _annotations(meta: dict) -> dict:
    return {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        # kubectl's and the Deployment controller's own bookkeeping, never ours
        if k != "kubectl.kubernetes.io/last-applied-configuration"
        and not k.startswith("deployment.kubernetes.io/")
    }


def spec_digest(obj: dict) -> str:
    """A short hash of what an object is (everything but status and bookkeeping): equal
    objects have equal digests across clusters and restores."""
    body = {k: v for k, v in obj.items() if k not in SKIPPED}
    meta = obj.get("metadata") or {}
    body["labels"] = meta.get("labels") or {}
    body["annotations"] = _annotations(meta)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _quantity(value: str) -> Decimal | None:
    if not value or not (value[0].isdigit() or value[0] in "+-."):
        return None
    try:
        return parse_quantity(value)
    except (ValueError, InvalidOperation, TypeError):
        return None


def _same_scalar(desired: Any, live: Any) -> bool:
    if desired == live:
        return True
    if isinstance(desired, str) and isinstance(live, str):
        a, b = _quantity(desired), _quantity(live)
        return a is not None and a == b
    return False


def _keyed(items: list) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def differences(desired: Any, live: Any, path: str = "") -> list[str]:
    """The paths of the manifest's fields whose live value differs (empty: no drift)."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            where = f"{path}.{key}" if path else key
            if key not in live:
                if value in ({}, [], None):
                    continue  # an empty value the server leaves out
                found.append(where)
            else:
                found += differences(value, live[key], where)
        return found
    if isinstance(desired, list):
        if not isinstance(live, list):
            return [path]
        if not any(isinstance(i, dict) for i in desired):
            if len(desired) != len(live) or not all(
                _same_scalar(a, b) for a, b in zip(desired, live, strict=True)
            ):
                return [path]
            return []
        found = []
        if _keyed(desired):
            by_name = {i.get("name"): i for i in live if isinstance(i, dict)}
            for item in desired:
                where = f"{path}[{item['name']}]"
                if item["name"] not in by_name:
                    found.append(where)
                else:
                    found += differences(item, by_name[item["name"]], where)
            return found
        if len(live) < len(desired):
            return [path]
        for index, item in enumerate(desired):
            found += differences(item, live[index], f"{path}[{index}]")
        return found
    return [] if _same_scalar(desired, live) else [path]


def drift(desired: dict, live: dict | None) -> list[str] | None:
    """None: no drift. [] : the object is gone. Otherwise the changed field paths.

    ``live`` is the store's ``comparable`` copy (or a raw object); only the manifest's
    labels and annotations are compared in its metadata."""
    if live is None:
        return []
    meta = desired.get("metadata") or {}
    want = {k: v for k, v in desired.items() if k not in {"apiVersion", "kind", "metadata"}}
    want["metadata"] = {k: meta[k] for k in ("labels", "annotations") if meta.get(k)}
    have = dict(live)
    have["metadata"] = {
        k: (live.get("metadata") or {}).get(k) or {} for k in ("labels", "annotations")
    }
    changed = differences(want, have)
    return changed or None


def describe_drift(kind: str, name: str, changed: list[str]) -> str:
    """One line: what drifted, in words."""
    if not changed:
        return f"{kind} {name} was deleted"
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return f"{kind} {name} was changed ({shown})"
