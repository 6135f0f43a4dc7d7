"""Local copies of the managed objects, kept current by one list-and-watch per kind.

Part of the Kubernetes gateway (with ``kube.cluster``, which makes the calls). Modelled
on KubeSpawner's ``ResourceReflector``: list, then watch from the list's
resourceVersion; on 410 Gone list again at once; on any other failure (the API server
went away) mark the store unsynced, back off and list again. A store holds only what
the watcher decides from (``compact_*``), so 1,000 environments cost a few MB.

``ClusterView`` answers the watcher's questions (does this namespace exist, which
components are available, what is wrong) from the stores; ``snapshot()`` builds the same
view from one LIST of each kind, for a synchronous pass (tests, the reconciler).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import urllib3
from kubernetes.client.exceptions import ApiException

from environments.kube import cluster
from environments.kube.drift import comparable, spec_digest
from environments.kube.objects import ENV_LABEL, INSTANCE_LABEL

log = logging.getLogger(__name__)

WATCH_SECONDS = 55  # the server ends each watch after this; the reflector watches again


def _key(obj: dict) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def compact_namespace(obj: dict) -> dict:
    meta = obj["metadata"]
    labels = meta.get("labels") or {}
    return {
        "environment": labels.get(ENV_LABEL, ""),
        "instance": labels.get(INSTANCE_LABEL, ""),
        "terminating": bool(meta.get("deletionTimestamp")),
        "created_at": meta.get("creationTimestamp", ""),
        **_kept("namespaces", obj),
    }


def _kept(kind: str, obj: dict) -> dict:
    """What drift and the inventory need: the object less status (``kube.drift``)."""
    return {
        "object": {**comparable(obj), "kind": cluster.WATCHED_KINDS[kind]},
        "digest": spec_digest(obj),
    }


def compact_deployment(obj: dict) -> dict:
    info = cluster.readiness([obj])[obj["metadata"]["name"]]
    return {
        "namespace": obj["metadata"]["namespace"],
        "name": obj["metadata"]["name"],
        **info,
        **_kept("deployments", obj),
    }


def compact_managed(kind: str) -> Callable[[dict], dict]:
    def compact(obj: dict) -> dict:
        meta = obj["metadata"]
        return {"namespace": meta.get("namespace", ""), "name": meta["name"], **_kept(kind, obj)}

    return compact


def compact_pod(obj: dict) -> dict | None:
    """Only what ``problems_from`` reads: the waiting reasons of its containers."""
    statuses = [
        {"state": {"waiting": (s.get("state") or {}).get("waiting")}}
        for s in (obj.get("status", {}).get("containerStatuses") or [])
        if (s.get("state") or {}).get("waiting")
    ]
    if not statuses:
        return None  # nothing wrong: not kept
    meta = obj["metadata"]
    return {
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "status": {"containerStatuses": statuses},
    }


def compact_event(obj: dict) -> dict | None:
    if cluster._explain_event(obj, []) is None:
        return None  # not a reason we explain: not kept
    return {
        "metadata": {
            "uid": obj["metadata"].get("uid", ""),
            "namespace": obj["metadata"]["namespace"],
        },
        "type": obj.get("type", "Warning"),
        "reason": obj.get("reason", ""),
        "message": (obj.get("message") or "")[:1000],
        "involvedObject": {"name": (obj.get("involvedObject") or {}).get("name", "")},
    }


COMPACT: dict[str, Callable[[dict], dict | None]] = {
    "namespaces": compact_namespace,
    "deployments": compact_deployment,
    "pods": compact_pod,
    "events": compact_event,
    **{
        kind: compact_managed(kind)
        for kind in cluster.WATCHED_KINDS
        if kind not in {"namespaces", "deployments"}
    },
}

# Kinds whose changes mark their namespace for a drift check (not pods or events).
DRIFT_KINDS = frozenset(cluster.WATCHED_KINDS)
# Kinds kept for drift and the inventory alone: a change of their status only (a
# ResourceQuota's usage, an Ingress's load balancer) does not wake the watcher.
SPEC_ONLY_KINDS = DRIFT_KINDS - {"namespaces", "deployments"}


class Reflector:
    """One kind: list, then watch; ``store`` maps namespace/name to the compact object."""

    def __init__(self, kind: str, on_change: Callable[[str], None]):
        self.kind = kind
        self.compact = COMPACT[kind]
        self.on_change = on_change
        self.store: dict[str, dict] = {}
        # namespace -> keys of its objects in the store: a namespace's objects without a
        # scan of every object on the cluster (a pass asks for many namespaces).
        self.index: dict[str, dict[str, None]] = {}  # (a dict: insertion order, as listed)
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.lists = 0  # how many times it listed (start, 410, outage)
        # Namespaces whose objects changed since the watcher last asked (drift checks);
        # ``relisted``: every namespace (a fresh list may have missed anything).
        self.dirty: set[str] = set()
        self.relisted = False

    def replace(self, items: list[dict]) -> None:
        store = {}
        for item in items:
            compact = self.compact(item)
            if compact is not None:
                store[_key(item)] = compact
        index: dict[str, dict[str, None]] = {}
        for key in store:
            index.setdefault(key.partition("/")[0], {})[key] = None
        with self.lock:
            self.store = store
            self.index = index
            self.relisted = True
        self.lists += 1

    def apply(self, event: dict) -> bool:
        """Keep one watch event; False if the watcher need not look (only the status of
        an object it keeps for drift alone changed: a ResourceQuota's usage)."""
        obj = event["object"]
        key = _key(obj)
        compact = None if event["type"] == "DELETED" else self.compact(obj)
        meta = obj["metadata"]
        namespace = key.partition("/")[0]
        with self.lock:
            before = self.store.get(key)
            if (
                compact is not None
                and before is not None
                and "digest" in compact
                and before.get("digest") == compact["digest"]
                and before["object"]["metadata"].get("uid")
                == compact["object"]["metadata"].get("uid")
            ):
                # Only its status changed (a rollout, a scaled pod): not a reason for a
                # drift check, which compares specs.
                self.store[key] = compact
                return self.kind not in SPEC_ONLY_KINDS
            if compact is None:
                self.store.pop(key, None)
                keys = self.index.get(namespace)
                if keys is not None:
                    keys.pop(key, None)
                    if not keys:
                        del self.index[namespace]
            else:
                self.store[key] = compact
                self.index.setdefault(namespace, {})[key] = None
            self.dirty.add(meta.get("namespace") or meta["name"])
        return True

    def values(self) -> list[dict]:
        with self.lock:
            return list(self.store.values())

    def run(self, stop: threading.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                items, version = cluster.list_objects(self.kind)
                self.replace(items)
                self.synced.set()
                self.on_change(self.kind)
                backoff = 0.5
                while not stop.is_set():
                    for event in cluster.watch_objects(
                        self.kind, version, timeout_seconds=WATCH_SECONDS
                    ):
                        version = event["object"]["metadata"].get("resourceVersion", version)
                        if event["type"] == "BOOKMARK":
                            continue
                        if self.apply(event):
                            self.on_change(self.kind)
                        if stop.is_set():
                            break
            except cluster.WatchExpired:
                log.info("watch on %s expired (410); listing again", self.kind)
            except (
                cluster.ClusterError,
                ApiException,
                urllib3.exceptions.HTTPError,
                OSError,
                ValueError,
            ) as exc:
                if self.synced.is_set():
                    log.warning("watch on %s failed (%s); listing again", self.kind, exc)
                self.synced.clear()
                self.on_change(self.kind)
                stop.wait(backoff)
                backoff = min(backoff * 2, 4.0)


@dataclass(frozen=True)
class NamespaceState:
    name: str
    terminating: bool
    created_at: str


class ClusterView:
    """What the watcher decides from: one store per kind."""

    def __init__(self, instance: str, on_change: Callable[[str], None] = lambda kind: None):
        self.instance = instance
        self.reflectors = {kind: Reflector(kind, on_change) for kind in cluster.WATCHED}
        self.threads: list[threading.Thread] = []
        self.stop = threading.Event()

    def start(self) -> None:
        for reflector in self.reflectors.values():
            thread = threading.Thread(
                target=reflector.run, args=(self.stop,), name=f"reflector-{reflector.kind}"
            )
            thread.daemon = True
            thread.start()
            self.threads.append(thread)

    def close(self) -> None:
        self.stop.set()

    @property
    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self.reflectors.values())

    @property
    def lists(self) -> int:
        return sum(r.lists for r in self.reflectors.values())

    def namespace(self, name: str) -> NamespaceState | None:
        reflector = self.reflectors["namespaces"]
        with reflector.lock:
            ns = reflector.store.get(f"/{name}")
        if ns is None or ns["instance"] not in {"", self.instance}:
            return None
        return NamespaceState(name, ns["terminating"], ns["created_at"])

    def _in(self, kind: str, namespace: str) -> list[dict]:
        reflector = self.reflectors[kind]
        with reflector.lock:
            return [reflector.store[k] for k in reflector.index.get(namespace, ())]

    def readiness(self, namespace: str) -> dict[str, dict]:
        return {
            d["name"]: {k: d[k] for k in ("ready", "available", "replicas", "generation")}
            for d in self._in("deployments", namespace)
        }

    def problems(self, namespace: str, components: list[str]) -> list[cluster.Problem]:
        return cluster.problems_from(
            self._in("events", namespace), self._in("pods", namespace), components
        )

    def take_dirty(self) -> tuple[bool, set[str]]:
        """(everything, namespaces): what changed since the last call, for drift checks.
        ``everything``: a store listed afresh, so any namespace may have changed."""
        everything, namespaces = False, set()
        for kind in DRIFT_KINDS:
            reflector = self.reflectors[kind]
            with reflector.lock:
                everything |= reflector.relisted
                namespaces |= reflector.dirty
                reflector.relisted, reflector.dirty = False, set()
        return everything, namespaces

    def objects(self, namespace: str) -> dict[tuple[str, str], dict]:
        """(Kind, name) -> the kept object and its digest, of every managed object the
        stores hold in ``namespace`` (the namespace itself included)."""
        found: dict[tuple[str, str], dict] = {}
        ns = self.reflectors["namespaces"]
        with ns.lock:
            own = ns.store.get(f"/{namespace}")
        if own is not None:
            found[("Namespace", namespace)] = own
        for kind, name in cluster.WATCHED_KINDS.items():
            if kind == "namespaces":
                continue
            for item in self._in(kind, namespace):
                found[(name, item["name"])] = item
        return found

    def namespaces_of_instance(self) -> list[str]:
        """Every managed namespace of this portal instance in the store."""
        reflector = self.reflectors["namespaces"]
        with reflector.lock:
            return [
                key[1:]
                for key, ns in reflector.store.items()
                if ns["instance"] in {"", self.instance}
            ]

    def sizes(self) -> dict[str, int]:
        return {kind: len(r.store) for kind, r in self.reflectors.items()}


def snapshot(instance: str) -> ClusterView:
    """A ClusterView from one LIST of each kind (retried like any call): no threads."""
    view = ClusterView(instance)
    for kind, reflector in view.reflectors.items():
        items, _ = cluster.with_retries(
            functools.partial(cluster.list_objects, kind), what=f"list {kind}"
        )
        reflector.replace(items)
        reflector.synced.set()
    return view
