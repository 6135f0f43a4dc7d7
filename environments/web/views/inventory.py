"""What environments own on the cluster (recovery.inventory): one environment's page
and its JSON and CSV downloads, and the admins' page of every environment with the
objects no environment owns flagged. The watcher reports the objects; these pages only
read what it reported, so the web needs no right to read the cluster."""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from environments.access import roles
from environments.lifecycle import selectors
from environments.lifecycle.states import FINAL_STATES
from environments.models import Environment
from environments.recovery import inventory
from environments.recovery.teardown_receipt import receipt


def _download(name: str, objects: list[dict], fmt: str, extra: dict) -> HttpResponse:
    if fmt == "csv":
        response = HttpResponse(inventory.as_csv(objects), content_type="text/csv; charset=utf-8")
    else:
        response = HttpResponse(
            json.dumps({**extra, "objects": objects}, indent=2),
            content_type="application/json",
        )
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response


@login_required
@require_GET
def environment_inventory(request, pk):
    """One environment's objects on the cluster; ``?format=json`` or ``csv`` downloads."""
    environment = selectors.environment_for(user=request.user, pk=pk)
    observed_at, objects = inventory.read(environment.pk)
    fmt = request.GET.get("format", "")
    if fmt in {"json", "csv"}:
        return _download(
            f"{environment.name}-inventory",
            objects,
            fmt,
            {
                "environment": str(environment.pk),
                "name": environment.name,
                "observed_at": observed_at,
            },
        )
    return render(
        request,
        "environments/inventory.html",
        {
            "env": environment,
            "version": environment.blueprint_version,
            "objects": objects,
            "observed_at": observed_at,
            "receipt": receipt(environment.pk),
        },
    )


@login_required
@require_GET
def admin_inventory(request):
    """Every environment's objects, and what is on the cluster that no environment owns."""
    if not roles.is_admin(request.user):
        raise PermissionDenied("Only portal admins can see the whole inventory.")
    reported = inventory.read_all()
    environments = {
        str(e.pk): e
        for e in Environment.objects.filter(pk__in=list(reported)).exclude(state__in=FINAL_STATES)
    }
    rows = [
        {"env": environments[key], "observed_at": at, "objects": objects}
        for key, (at, objects) in reported.items()
        if key in environments
    ]
    rows.sort(key=lambda r: r["env"].name)
    unknown_at, unknown = inventory.unknown()
    leftovers_at, leftovers = inventory.leftovers()
    fmt = request.GET.get("format", "")
    if fmt in {"json", "csv"}:
        flat = [{**o, "environment": r["env"].name} for r in rows for o in r["objects"]] + [
            {**o, "status": f"unknown: {o['why']}"} for o in unknown + leftovers
        ]
        return _download("inventory", flat, fmt, {})
    return render(
        request,
        "environments/admin_inventory.html",
        {
            "rows": rows,
            "unknown": unknown,
            "unknown_at": unknown_at,
            "leftovers": leftovers,
            "leftovers_at": leftovers_at,
        },
    )
