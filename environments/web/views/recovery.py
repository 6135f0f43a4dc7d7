"""Snapshots and restores from the environment page (recovery)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from environments.governance import audit
from environments.lib.errors import ServiceError
from environments.lifecycle import selectors
from environments.recovery import restore as restoring
from environments.recovery import snapshots
from environments.recovery.selectors import snapshot_for
from environments.web.navigation import back


@login_required
@require_POST
def take_snapshot(request, pk):
    environment = selectors.environment_for(user=request.user, pk=pk)
    try:
        snapshot = snapshots.take_snapshot(
            environment.pk, reason="manual", actor=request.user, ip=audit.client_ip(request)
        )
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Snapshot {snapshot.number} taken.")
    return back(request, environment)


@login_required
@require_POST
def restore_snapshot(request, pk):
    snapshot = snapshot_for(user=request.user, pk=pk)
    in_place = request.POST.get("in_place") == "1"
    try:
        environment = restoring.restore(
            snapshot,
            actor=request.user,
            request_key=request.POST.get("request_key", ""),
            in_place_of=snapshot.environment if in_place else None,
            ip=audit.client_ip(request),
        )
    except ServiceError as exc:
        messages.error(request, f"Not restored: {exc}")
        return back(request, snapshot.environment)
    messages.success(
        request,
        f"Restoring snapshot {snapshot.number}"
        + (" in place." if in_place else f" into {environment.namespace}."),
    )
    return redirect("environment_detail", pk=environment.pk)
