"""Verified teardown: after an environment is deleted, prove nothing of it is left.

Jobs never wait on Kubernetes: the namespace controller takes seconds to empty a
namespace, so nothing here polls. The watcher marks the environment deleted when it
sees the namespace gone (``lifecycle.provisioning.mark_deleted``), which queues
``verify`` (the ``verify_teardown`` job). It lists every kind in
``kube.cluster.TEARDOWN_KINDS`` for the environment's label, namespaced kinds across all
namespaces and the cluster-scoped ones (PersistentVolumes, ClusterRoles,
ClusterRoleBindings, VolumeSnapshotContents: a namespace's deletion never takes those
with it), and records a receipt event with the counts.

The reconciler (``report_leftovers``, every run) lists the same kinds for everything
labelled as managed by Ephemera and reports what belongs to a deleted environment (or,
with this instance's label, to none): an event on the environment once per object, the
``ephemera_leftover_objects`` metric, and the admin inventory page. It deletes nothing:
a leftover PersistentVolume may hold the only copy of someone's data.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from environments.kube import cluster
from environments.kube.objects import ENV_LABEL, INSTANCE_LABEL, MANAGED_BY, MANAGER
from environments.lifecycle import queue, telemetry
from environments.lifecycle.states import State
from environments.models import Environment, EnvironmentEvent
from environments.recovery import inventory

log = logging.getLogger(__name__)

RECEIPT_KEY = "teardown-receipt"
LEFTOVER_PREFIX = "leftover:"


def _describe(kind: str, obj: dict) -> str:
    meta = obj["metadata"]
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{kind} {where}{meta['name']}"


def check(selector: str) -> tuple[list[str], list[str], list[str], list[tuple[str, dict]]]:
    """(kinds checked, not served, not permitted, objects found) for ``selector``."""
    checked, not_served, refused, found = [], [], [], []
    for key, (kind, _, _) in cluster.TEARDOWN_KINDS.items():
        try:
            items = cluster.list_labelled(key, selector)
        except cluster.NotServed:
            not_served.append(kind)
            continue
        except cluster.ClusterError as exc:
            if exc.status == 403:
                refused.append(kind)
                continue
            raise
        checked.append(kind)
        found += [(kind, item) for item in items]
    return checked, not_served, refused, found


def verify(environment_id: str) -> str:
    """The receipt of one deleted environment (the verify_teardown job; idempotent)."""
    state = Environment.objects.filter(pk=environment_id).values_list("state", flat=True).first()
    if state != State.DELETED:
        return f"nothing to do: {state}"
    if EnvironmentEvent.objects.filter(
        environment_id=environment_id, source_key=RECEIPT_KEY
    ).exists():
        return "already verified"
    inventory.forget(environment_id)
    checked, not_served, refused, found = check(f"{ENV_LABEL}={environment_id}")
    notes = []
    if not_served:
        notes.append(f"not served by this cluster: {', '.join(not_served)}")
    if refused:
        notes.append(f"not permitted to list: {', '.join(refused)}")
    extra = f" ({'; '.join(notes)})" if notes else ""
    if found:
        shown = ", ".join(_describe(kind, obj) for kind, obj in found[:10])
        more = f" and {len(found) - 10} more" if len(found) > 10 else ""
        message = (
            f"Teardown receipt: {len(checked)} kinds checked{extra}; "
            f"{len(found)} object{'s' if len(found) != 1 else ''} left over: {shown}{more}."
        )
        kind = EnvironmentEvent.Kind.ERROR
    else:
        message = (
            f"Teardown receipt: {len(checked)} kinds checked{extra}; 0 objects left over "
            f"({', '.join(checked)})."
        )
        kind = EnvironmentEvent.Kind.INFO
    EnvironmentEvent.objects.get_or_create(
        environment_id=environment_id,
        source_key=RECEIPT_KEY,
        defaults={"kind": kind, "message": message},
    )
    for object_kind, obj in found:
        _record_leftover(environment_id, object_kind, obj)
    return f"{len(checked)} kinds checked, {len(found)} left over"


def _record_leftover(environment_id, kind: str, obj: dict) -> None:
    uid = obj["metadata"].get("uid", "")
    EnvironmentEvent.objects.get_or_create(
        environment_id=environment_id,
        source_key=f"{LEFTOVER_PREFIX}{uid}"[:200],
        defaults={
            "kind": EnvironmentEvent.Kind.ERROR,
            "message": f"Left over after teardown: {_describe(kind, obj)} still carries "
            "this environment's label. It was not deleted (it may hold data); an admin "
            "can see it on the Inventory page.",
        },
    )


def report_leftovers() -> int:
    """The reconciler's sweep: objects labelled as Ephemera's that belong to a deleted
    environment, or to none while carrying this instance's label. Returns how many."""
    _, _, _, found = check(f"{MANAGED_BY}={MANAGER}")
    ids = {(obj["metadata"].get("labels") or {}).get(ENV_LABEL, "") for _, obj in found} - {""}
    states = {
        str(pk): state
        for pk, state in Environment.objects.filter(
            pk__in=[i for i in ids if _is_uuid(i)]
        ).values_list("pk", "state")
    }
    entries = []
    for kind, obj in found:
        labels = obj["metadata"].get("labels") or {}
        environment_id = labels.get(ENV_LABEL, "")
        state = states.get(environment_id)
        if state == State.DELETED:
            why = "its environment is deleted"
            _record_leftover(environment_id, kind, obj)
        elif state is None and labels.get(INSTANCE_LABEL) == settings.EPHEMERA_INSTANCE:
            why = "no environment in the database"
        else:
            continue  # live, or another portal's (the label says nothing about us)
        meta = obj["metadata"]
        entries.append(
            {
                "kind": kind,
                "name": meta["name"],
                "namespace": meta.get("namespace", ""),
                "uid": meta.get("uid", ""),
                "created": meta.get("creationTimestamp", ""),
                "environment": environment_id,
                "why": why,
            }
        )
    try:
        inventory.publish_leftovers(entries)
    except Exception as exc:
        log.warning("could not record the leftovers: %s", exc)
    telemetry.leftovers(len(entries))
    return len(entries)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False


def receipt(environment_id) -> EnvironmentEvent | None:
    return EnvironmentEvent.objects.filter(
        environment_id=environment_id, source_key=RECEIPT_KEY
    ).first()


def requeue_missing_receipts() -> int:
    """The reconciler's backstop: environments deleted in the last day (more than a
    minute ago) without a receipt (its job was lost to a Redis outage) get the job
    again. Returns how many were queued."""
    now = timezone.now()
    missing = (
        Environment.objects.filter(
            state=State.DELETED,
            deleted_at__gte=now - timedelta(days=1),
            deleted_at__lt=now - timedelta(minutes=1),
        )
        .exclude(events__source_key=RECEIPT_KEY)
        .values_list("pk", flat=True)
    )
    return sum(1 for pk in missing if queue.enqueue_recovery("verify_teardown", pk))
