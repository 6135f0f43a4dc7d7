"""Self-healing: the watcher finds drift, a job repairs it.

Drift is a managed object of a ready environment deleted or changed by hand
(``kubectl delete deployment``, ``kubectl scale``, an edited image or env var) against
the manifests recorded when it was provisioned. Only the fields Ephemera sets are
compared (``kube.drift``), so Kubernetes' defaults and status updates are never drift.

- ``DriftCheck.run`` (the watcher's pass, leader only) looks at the namespaces whose
  objects changed since the last pass (``ClusterView.take_dirty``) and at all of them
  every ``DRIFT_SWEEP_SECONDS``. Only ``ready`` environments that have been ready a
  moment (``DRIFT_GRACE_SECONDS``: the stores catch up with the last apply) are
  checked; an environment being updated, torn down or restored is not. Each drift is
  recorded once as an event (its ``source_key`` names the object, its uid and the hash
  of its spec)
  and a ``repair_drift`` job is queued (ids only; one per environment at a time).
- ``repair`` (the job) re-reads the environment, applies the drifted objects' recorded
  manifests with server-side apply (field manager ``ephemera``: the fields it owns come
  back, nothing else is touched) and records when it repaired what. If the object still
  differs after the apply (another field manager holds the field), it says so once and
  does not try again for that version: never a loop with someone else's controller.
- The same pass writes each changed environment's inventory (``recovery.inventory``).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from environments.kube import cluster, reflector
from environments.kube.drift import comparable, describe_drift, drift
from environments.lib.naming import NAMESPACE_PREFIX, namespace_for
from environments.lifecycle import queue, telemetry
from environments.lifecycle.states import FINAL_STATES, State
from environments.models import Environment, EnvironmentEvent
from environments.recovery import inventory

log = logging.getLogger(__name__)

# Ready for less than this: the stores may still hold an object as it was before the
# last apply (each kind has its own watch), so a check now could see drift that is not.
DRIFT_GRACE_SECONDS = 2.0
# Every namespace is checked this often anyway (level-triggered backstop).
DRIFT_SWEEP_SECONDS = 30.0

DRIFT_PREFIX = "drift:"
REPAIR_PREFIX = "repair:"


def _drift_key(kind: str, name: str, marker: str) -> str:
    return f"{DRIFT_PREFIX}{kind}/{name}:{marker}"[:200]


def _parse_drift_key(key: str) -> tuple[str, str]:
    kind_name = key[len(DRIFT_PREFIX) :].partition(":")[0]  # names have no colons
    kind, _, name = kind_name.partition("/")
    return kind, name


class DriftCheck:
    """The watcher's part: held by one ``Watcher`` for its life."""

    def __init__(self, view: reflector.ClusterView):
        self.view = view
        self.last_sweep = 0.0
        # (namespace, Kind, name) -> the uid last seen: names a deletion.
        self.seen: dict[tuple[str, str, str], str] = {}
        # environment id -> the inventory last published (Redis only when it changes).
        self.published: dict[str, list] = {}
        self.last_unknown = 0.0
        self.unknown_due = False
        # environment name -> when its grace after becoming ready ends (checked then)
        self.after_grace: dict[str, float] = {}
        # environment id -> what was last looked at (see ``run``)
        self.signatures: dict[str, tuple] = {}
        # environment id -> (md5 of its recorded manifests, the manifests)
        self.manifests: dict[str, tuple[str, list[dict]]] = {}

    def run(self) -> dict[str, int]:
        counts = {"drifted": 0, "repairs": 0}
        everything, dirty = self.view.take_dirty()
        now = time.monotonic()
        sweep = everything or now - self.last_sweep >= DRIFT_SWEEP_SECONDS
        if sweep:
            self.last_sweep = now
        names = [ns[len(NAMESPACE_PREFIX) :] for ns in dirty if ns.startswith(NAMESPACE_PREFIX)]
        for name, due in list(self.after_grace.items()):
            if due <= now:
                names.append(name)
                del self.after_grace[name]
        if not sweep and not names and not self.unknown_due:
            return counts
        rows = Environment.objects.exclude(state__in=FINAL_STATES)
        if not sweep:
            rows = rows.filter(name__in=names)
        grace = timezone.now() - timedelta(seconds=DRIFT_GRACE_SECONDS)
        owned = set()
        # The manifests are read again only when their hash (computed by PostgreSQL)
        # changed: a pass during a burst of teardowns would otherwise parse them all.
        listed = rows.annotate(
            manifests_md5=RawSQL("md5(manifests::text)", [])  # noqa: S611 (constant)
        ).values_list("pk", "name", "state", "state_changed_at", "manifests_md5")
        for environment_id, name, state, changed_at, md5 in listed:
            owned.add(name)
            manifests = self._manifests(environment_id, md5)
            namespace = namespace_for(name)
            live = self.view.objects(namespace)
            checking = state == State.READY and changed_at <= grace and bool(manifests)
            # Nothing that matters changed since this environment was last looked at
            # (its objects' uids and spec hashes, its manifests, whether it is checked):
            # nothing to do. Status updates alone never get this far.
            signature = (
                md5,
                checking,
                tuple(
                    sorted(
                        (
                            kind,
                            object_name,
                            kept["object"]["metadata"].get("uid", ""),
                            kept.get("digest", ""),
                        )
                        for (kind, object_name), kept in live.items()
                    )
                ),
            )
            if not sweep and self.signatures.get(str(environment_id)) == signature:
                continue
            self.signatures[str(environment_id)] = signature
            for (kind, object_name), kept in live.items():
                self.seen[(namespace, kind, object_name)] = kept["object"]["metadata"].get(
                    "uid", ""
                )
            items = inventory.items_for(namespace, live, manifests)
            if self.published.get(str(environment_id)) != items:
                try:
                    inventory.publish(environment_id, items)
                    self.published[str(environment_id)] = items
                except Exception as exc:  # a cache for the pages, never a reason to stop
                    log.warning("could not record the inventory of %s: %s", environment_id, exc)
            if not checking:
                if state == State.READY and manifests:  # ready a moment ago: after the grace
                    self.after_grace[name] = now + DRIFT_GRACE_SECONDS
                continue
            standing = self.view.namespace(namespace)
            if standing is None or standing.terminating:
                continue  # vanished or going: not drift of an object
            found = self._check(environment_id, namespace, live, manifests)
            counts["drifted"] += len(found)
            if found:
                if queue.enqueue_recovery("repair", environment_id, found):
                    counts["repairs"] += 1
                else:  # a repair is still running: ask again next pass
                    self.signatures.pop(str(environment_id), None)
        # Also when a namespace of ours that no live environment owns changed (at most
        # once a second: a batch of teardowns changes many at once).
        if any(self.view.namespace(namespace_for(n)) for n in set(names) - owned):
            self.unknown_due = True  # looked at by this pass or, within a second, a later one
        if sweep or (self.unknown_due and now - self.last_unknown >= 1.0):
            self.last_unknown = now
            self.unknown_due = False
            self._unknown()
        return counts

    def _manifests(self, environment_id, md5: str) -> list[dict]:
        cached = self.manifests.get(str(environment_id))
        if cached is None or cached[0] != md5:
            manifests = (
                Environment.objects.filter(pk=environment_id)
                .values_list("manifests", flat=True)
                .first()
            ) or []
            if len(self.manifests) > 50_000:
                self.manifests.clear()
            self.manifests[str(environment_id)] = (md5, manifests)
            return manifests
        return cached[1]

    def _check(self, environment_id, namespace: str, live: dict, manifests: list[dict]) -> list:
        """Record each drift of one environment once; the ids of those not repaired."""
        pending = []
        watched = set(cluster.WATCHED_KINDS.values())
        for manifest in manifests:
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            if kind not in watched:
                continue
            kept = live.get((kind, name))
            changed = drift(manifest, kept["object"] if kept else None)
            if changed is None:
                continue
            # The same drift keeps the same key while its status changes (a Deployment
            # scaled by hand goes on updating its status): the object's uid and the hash
            # of its spec. A deletion: the uid of the object that went.
            if kept is None:
                marker = f"deleted:{self.seen.get((namespace, kind, name), 'unseen')}"
            else:
                uid = kept["object"]["metadata"].get("uid", "")
                marker = f"{uid}:{kept.get('digest', '')}"
            event, created = EnvironmentEvent.objects.get_or_create(
                environment_id=environment_id,
                source_key=_drift_key(kind, name, marker),
                defaults={
                    "kind": EnvironmentEvent.Kind.KUBE,
                    "message": f"Drift: {describe_drift(kind, name, changed)} by hand; "
                    "repairing it from the recorded manifests.",
                },
            )
            if created:
                log.info("environment %s: %s", environment_id, event.message)
            if (
                created
                or not EnvironmentEvent.objects.filter(
                    environment_id=environment_id, source_key=f"{REPAIR_PREFIX}{event.pk}"
                ).exists()
            ):
                pending.append(event.pk)
        if len(self.seen) > 200_000:
            self.seen.clear()  # bounded: forgetting only makes a deletion's key "unseen"
        if len(self.published) > 50_000:
            self.published.clear()  # bounded: forgetting only means one more write
            self.signatures.clear()
        return pending

    def _unknown(self) -> None:
        """Managed namespaces of this instance that no live environment owns, and objects
        in live environments' namespaces that no recorded manifest names."""
        namespaces = self.view.namespaces_of_instance()
        names = {ns[len(NAMESPACE_PREFIX) :]: ns for ns in namespaces}
        known = {
            name: (str(pk), state, manifests)
            for pk, name, state, manifests in Environment.objects.filter(
                name__in=list(names)
            ).values_list("pk", "name", "state", "manifests")
        }
        entries = []
        for name, namespace in sorted(names.items()):
            owner = known.get(name)
            live = self.view.objects(namespace)
            if owner is None or owner[1] in FINAL_STATES:
                why = (
                    "no environment in the database"
                    if owner is None
                    else f"its environment is {owner[1]}"
                )
                for (kind, object_name), kept in sorted(live.items()):
                    entries.append(_entry(kind, object_name, namespace, kept, why))
                continue
            for item in inventory.items_for(namespace, live, owner[2]):
                if item.status == inventory.NOT_RECORDED:
                    kept = live[(item.kind, item.name)]
                    entries.append(
                        _entry(item.kind, item.name, namespace, kept, "not in its manifests")
                    )
        try:
            inventory.publish_unknown(entries)
        except Exception as exc:
            log.warning("could not record the unknown objects: %s", exc)


def _entry(kind: str, name: str, namespace: str, kept: dict, why: str) -> dict[str, str]:
    meta = kept["object"]["metadata"]
    return {
        "kind": kind,
        "name": name,
        "namespace": "" if kind == "Namespace" else namespace,
        "uid": meta.get("uid", ""),
        "created": meta.get("creationTimestamp", ""),
        "spec_hash": kept.get("digest", ""),
        "environment": (meta.get("labels") or {}).get("ephemera.io/environment", ""),
        "why": why,
    }


def repair(environment_id: str, event_ids: list[int]) -> str:
    """The repair job: re-apply the drifted objects of a ready environment."""
    environment = Environment.objects.filter(pk=environment_id).first()
    if environment is None:
        return "no such environment"
    repaired = 0
    events = EnvironmentEvent.objects.filter(
        environment_id=environment_id, pk__in=[int(i) for i in event_ids]
    ).filter(source_key__startswith=DRIFT_PREFIX)
    for event in events.order_by("pk"):
        if EnvironmentEvent.objects.filter(
            environment_id=environment_id, source_key=f"{REPAIR_PREFIX}{event.pk}"
        ).exists():
            continue  # repaired already (a job run twice)
        state = Environment.objects.filter(pk=environment_id).values_list("state", flat=True)
        if state.first() != State.READY:
            return "nothing to do: no longer ready"  # an update or a teardown took over
        kind, name = _parse_drift_key(event.source_key)
        manifest = next(
            (
                m
                for m in environment.manifests
                if m["kind"] == kind and m["metadata"]["name"] == name
            ),
            None,
        )
        if manifest is None:
            message = f"{kind} {name} is no longer in the recorded manifests: nothing to repair."
        else:
            try:
                applied = cluster.apply(manifest)
            except cluster.ClusterError as exc:
                # Recorded, so it is not retried for this version: the next change is.
                message = f"Could not repair {kind} {name}: {exc}"
            else:
                still = drift(manifest, comparable(applied))
                seconds = (timezone.now() - event.created_at).total_seconds()
                if still:
                    message = (
                        f"Could not repair {kind} {name}: {', '.join(still[:5])} still "
                        "differs after re-applying it (another field manager holds it)."
                    )
                else:
                    message = (
                        f"Repaired: {kind} {name} re-applied from the recorded manifests "
                        f"{seconds:.1f} s after the drift was seen."
                    )
                    telemetry.observe_duration("drift_repair", seconds)
                    repaired += 1
        EnvironmentEvent.objects.get_or_create(
            environment_id=environment_id,
            source_key=f"{REPAIR_PREFIX}{event.pk}",
            defaults={
                "kind": EnvironmentEvent.Kind.KUBE
                if message.startswith("Repaired")
                else EnvironmentEvent.Kind.ERROR,
                "message": message,
            },
        )
    return f"repaired {repaired}"


def drift_events(environment_id) -> list[EnvironmentEvent]:
    """The drift and repair events of one environment, oldest first."""
    return list(
        EnvironmentEvent.objects.filter(environment_id=environment_id).filter(
            Q(source_key__startswith=DRIFT_PREFIX) | Q(source_key__startswith=REPAIR_PREFIX)
        )
    )


def repaired_at(event: EnvironmentEvent) -> datetime | None:
    follow = EnvironmentEvent.objects.filter(
        environment_id=event.environment_id, source_key=f"{REPAIR_PREFIX}{event.pk}"
    ).first()
    return follow.created_at if follow else None
