"""Recovery in the web: snapshots and restores from the environment page, and the
Recovery page (issue 15): for each blueprint its recovery objectives against what
drills and restores measured, its snapshots, and a button to run a drill now.

The Recovery page: admins see every blueprint; a blueprint's owners (who published it)
see theirs; anyone else gets 404, for GET and POST alike.
"""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from environments.governance import audit
from environments.lib.errors import ServiceError
from environments.lifecycle import selectors
from environments.models import Environment
from environments.recovery import drills, snapshots
from environments.recovery import restore as restoring
from environments.recovery.selectors import recovery_overview, snapshot_for
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


@login_required
def recovery(request):
    rows = recovery_overview(request.user)
    if not rows:
        raise Http404("No such page.")
    return render(
        request,
        "environments/recovery.html",
        {
            "rows": rows,
            "drill_key": uuid.uuid4().hex,
            "any_running": any(d.result == "running" for row in rows for d in row.drills),
        },
    )


@login_required
@require_POST
def run_drill(request):
    blueprint = request.POST.get("blueprint", "")
    if not drills.may_drill(request.user, blueprint):
        raise Http404("No such blueprint.")
    environment = None
    chosen = request.POST.get("environment", "")
    if chosen:
        try:
            environment = Environment.objects.filter(
                pk=uuid.UUID(chosen), blueprint_version__blueprint__name=blueprint
            ).first()
        except ValueError:
            environment = None
        if environment is None:
            messages.error(request, "That environment is not one of this blueprint's.")
            return redirect("recovery")
    try:
        drill = drills.start_drill(
            blueprint=blueprint,
            actor=request.user,
            key=request.POST.get("key") or uuid.uuid4().hex,
            environment=environment,
            ip=audit.client_ip(request),
        )
    except PermissionDenied as exc:
        raise Http404("No such blueprint.") from exc
    except ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("recovery")
    if drill.result == drill.Result.FAILED:
        messages.error(request, f"The drill of {blueprint} failed: {drill.reason}")
    else:
        messages.success(
            request,
            f"A restore drill of {blueprint} (snapshot {drill.snapshot_number}) is running; "
            "this page shows its result.",
        )
    return redirect("recovery")
