"""Warm pools on the admins' blueprint page (issue 16): each pool's size, how many are
ready, what it costs an hour, and the team it is charged to (admins choose)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from environments.access import roles
from environments.governance import audit
from environments.lifecycle import pools
from environments.models import Blueprint, Team


def pool_rows() -> list[tuple[Blueprint, pools.PoolStatus]]:
    """Every blueprint whose current version declares a pool, with its status."""
    rows = []
    for blueprint in Blueprint.objects.select_related("pool_team").order_by("name"):
        found = pools.status(blueprint)
        if found is not None:
            rows.append((blueprint, found))
    return rows


@login_required
@require_POST
def set_pool_team(request, name: str):
    if not roles.is_admin(request.user):
        raise PermissionDenied("Portal admins only.")
    blueprint = get_object_or_404(Blueprint, name=name)
    slug = request.POST.get("team", "").strip()
    team = None
    if slug:
        team = Team.objects.filter(slug=slug).first()
        if team is None:
            messages.error(request, f"No team '{slug[:50]}'.")
            return redirect("governance_blueprints")
    pools.set_pool_team(
        blueprint=blueprint, team=team, actor=request.user, ip=audit.client_ip(request)
    )
    if team is None:
        messages.success(request, f"The warm pool of {blueprint.name} is stopped.")
    else:
        messages.success(
            request, f"The warm pool of {blueprint.name} is charged to {team.name}; it fills now."
        )
    return redirect("governance_blueprints")
