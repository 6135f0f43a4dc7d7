"""Reads for the recovery parts of the pages."""

from __future__ import annotations

import uuid

from django.http import Http404

from environments.access.teams import can_change
from environments.lifecycle.states import State
from environments.models import Environment, Snapshot


def snapshot_for(*, user, pk) -> Snapshot:
    """A snapshot whose environment ``user`` may see; 404 otherwise (no IDOR)."""
    found = (
        Snapshot.objects.select_related("environment", "created_by")
        .filter(pk=pk, environment__in=Environment.objects.visible_to(user).values("pk"))
        .first()
    )
    if found is None:
        raise Http404("No such snapshot.")
    return found


def environment_panel(*, user, environment: Environment) -> dict:
    """The environment page's snapshot list and buttons."""
    may_change = can_change(user, environment)
    rows = list(environment.snapshots.select_related("created_by").order_by("-number")[:20])
    spec = environment.blueprint_version.blueprint_spec
    return {
        "snapshots": rows,
        "snapshot_count": environment.snapshots.count(),
        "can_snapshot": may_change and environment.state == State.READY,
        "can_restore": may_change,
        "can_restore_in_place": may_change and environment.state in {State.READY, State.FAILED},
        "recovery": spec.recovery_objectives,
        "recovery_declared": spec.recovery is not None,
        "retention": spec.snapshot_retention,
        # A fresh key per page view: a double-clicked restore makes one environment.
        "restore_key": str(uuid.uuid4()),
    }
