"""Bulk actions on the dashboards (issue 16): pick several environments, choose extend or
delete, confirm once on a page that lists them, and each goes through the single
action's service (lifecycle.bulk): its own permission check and audit entry."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from environments.access.teams import can_change
from environments.lib.durations import format_duration, parse_duration
from environments.lib.errors import ServiceError
from environments.lifecycle import bulk

# The extensions the dashboard's bar offers (each environment's own limits still apply).
EXTEND_CHOICES = [(s, format_duration(s)) for s in (1800, 3600, 7200, 14400, 28800, 86400)]


def _back(request):
    return redirect(
        "team_environments" if request.POST.get("scope") == "team" else "my_environments"
    )


def _seconds(text: str) -> int:
    text = (text or "").strip()
    if text.isdigit():
        return int(text)
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ServiceError(f"Extend by: {exc}.") from None


@login_required
@require_POST
def bulk_action(request):
    """First post: the confirmation page. Second post (``confirmed``): do it."""
    action = request.POST.get("action", "")
    ids = request.POST.getlist("environment")
    try:
        if action not in ("extend", "delete"):
            raise ServiceError("Choose extend or delete.")
        seconds = _seconds(request.POST.get("seconds", "")) if action == "extend" else 0
        reason = request.POST.get("reason", "").strip()[:2000]
        found = bulk.targets(request.user, ids)
    except ServiceError as exc:
        messages.error(request, str(exc))
        return _back(request)
    if not request.POST.get("confirmed"):
        rows = [(ref, env, env is not None and can_change(request.user, env)) for ref, env in found]
        return render(
            request,
            "environments/bulk_confirm.html",
            {
                "action": action,
                "rows": rows,
                "seconds": seconds,
                "duration": format_duration(seconds),
                "reason": reason,
                "scope": request.POST.get("scope", "mine"),
                "changeable": sum(1 for *_, ok in rows if ok),
            },
        )
    ip = request.META.get("REMOTE_ADDR")
    if action == "extend":
        result = bulk.extend_many(request.user, ids, seconds, reason=reason, ip=ip)
    else:
        result = bulk.delete_many(request.user, ids, ip=ip)
    verb = "Extended" if action == "extend" else "Deleting"
    if result.done:
        messages.success(
            request,
            f"{verb} {len(result.done)} of {len(result.outcomes)}: "
            + ", ".join(f"{o.label} ({o.message})" for o in result.done)
            + ".",
        )
    for refused in result.refused:
        messages.error(request, f"Not changed: {refused.label}: {refused.message}")
    return _back(request)
