"""What each environment owns on the cluster, as the watcher sees it: the inventory.

The watcher (``lifecycle.watcher`` through ``recovery.drift``) holds every managed
object in its stores (``kube.reflector``); whenever an environment's namespace changes
it writes that environment's inventory here, to Redis: kind, name, uid, when it was
created, a short hash of its spec, and whether the recorded manifests name it. The web
and the API read it back, so they need no right to read the cluster themselves (the
web's identity may only mint kubeconfig tokens: docs/security.md).

Objects labelled as this portal's that the database does not know (a namespace whose
environment row is gone or deleted, an object in a namespace that no recorded manifest
names) are written once per sweep, and what the reconciler finds left over after a
teardown (``recovery.teardown_receipt``) beside them: the admin inventory page shows both.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

import django_rq
from django.conf import settings
from django.utils import timezone

log = logging.getLogger(__name__)

# How an object stands against the recorded manifests.
RECORDED = "recorded"  # on the cluster and in the manifests
MISSING = "missing"  # in the manifests, not on the cluster (drift, or not applied yet)
NOT_RECORDED = "not recorded"  # on the cluster with the environment's labels only

CSV_FIELDS = ("kind", "name", "namespace", "uid", "created", "spec_hash", "status")


@dataclass(frozen=True)
class InventoryItem:
    kind: str
    name: str
    namespace: str
    uid: str
    created: str
    spec_hash: str
    status: str


def _key(what: str) -> str:
    return f"ephemera:{settings.EPHEMERA_INSTANCE}:inventory:{what}"


def _redis():
    return django_rq.get_connection("default")


def items_for(namespace: str, live: dict[tuple[str, str], dict], manifests: list[dict]):
    """The inventory of one environment from the watcher's stores (``live``: (Kind,
    name) -> kept object and digest) and its recorded manifests."""
    recorded = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    items = []
    for (kind, name), kept in sorted(live.items()):
        meta = kept["object"]["metadata"]
        items.append(
            InventoryItem(
                kind=kind,
                name=name,
                namespace="" if kind == "Namespace" else namespace,
                uid=meta.get("uid", ""),
                created=meta.get("creationTimestamp", ""),
                spec_hash=kept.get("digest", ""),
                status=RECORDED if (kind, name) in recorded else NOT_RECORDED,
            )
        )
    watched = {kind for kind, _ in live} | {"Namespace"}
    for kind, name in sorted(recorded - set(live)):
        if kind in {"Secret", "Role"} and kind not in watched:
            continue  # never watched (the controller may not read Secrets)
        items.append(
            InventoryItem(
                kind=kind,
                name=name,
                namespace="" if kind == "Namespace" else namespace,
                uid="",
                created="",
                spec_hash="",
                status=MISSING,
            )
        )
    return items


def publish(environment_id, items: list[InventoryItem]) -> bool:
    """Record one environment's inventory (the watcher); returns whether it changed."""
    objects = [asdict(i) for i in items]
    redis = _redis()
    previous = redis.hget(_key("environments"), str(environment_id))
    if previous and json.loads(previous).get("objects") == objects:
        return False
    value = json.dumps({"at": timezone.now().isoformat(), "objects": objects})
    redis.hset(_key("environments"), str(environment_id), value)
    return True


def forget(environment_id) -> None:
    """The environment is deleted: nothing of it is on the cluster any more."""
    try:
        _redis().hdel(_key("environments"), str(environment_id))
    except Exception as exc:  # a cache, never a reason to fail the caller
        log.warning("could not forget the inventory of %s: %s", environment_id, exc)


def read(environment_id) -> tuple[str | None, list[dict[str, Any]]]:
    """(when the watcher last saw it, or None if never; the objects) of one environment."""
    raw = _redis().hget(_key("environments"), str(environment_id))
    if not raw:
        return None, []
    data = json.loads(raw)
    return data["at"], data["objects"]


def read_all() -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """environment id -> (when, objects), for every environment the watcher reported."""
    found = {}
    for key, raw in _redis().hgetall(_key("environments")).items():
        data = json.loads(raw)
        found[key.decode()] = (data["at"], data["objects"])
    return found


def publish_unknown(entries: list[dict[str, str]]) -> None:
    """Objects labelled as this portal's that no live environment owns (one sweep)."""
    value = json.dumps({"at": timezone.now().isoformat(), "objects": entries})
    _redis().set(_key("unknown"), value)


def publish_leftovers(entries: list[dict[str, str]]) -> None:
    """What the reconciler found left over after teardowns (recovery.teardown_receipt)."""
    value = json.dumps({"at": timezone.now().isoformat(), "objects": entries})
    _redis().set(_key("leftovers"), value)


def _read_list(what: str) -> tuple[str | None, list[dict[str, str]]]:
    raw = _redis().get(_key(what))
    if not raw:
        return None, []
    data = json.loads(raw)
    return data["at"], data["objects"]


def unknown() -> tuple[str | None, list[dict[str, str]]]:
    return _read_list("unknown")


def leftovers() -> tuple[str | None, list[dict[str, str]]]:
    return _read_list("leftovers")


def as_csv(objects: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in objects:
        # A leading = + - @ would be a formula in a spreadsheet: names never start so,
        # but the file must be safe whatever is on the cluster.
        writer.writerow({k: ("'" + str(v) if str(v)[:1] in "=+-@" else v) for k, v in row.items()})
    return out.getvalue()
