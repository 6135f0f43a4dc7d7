"""Admin pages inside the portal: spend, audit log and quotas (blueprints: blueprints.py).

Portal admins only (role ``admin`` or superuser); everyone else gets 403. Each list
has a CSV export of exactly what the page shows.
"""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from environments.access import roles
from environments.catalog.pricing import money_cents
from environments.catalog.spec import format_duration, parse_duration
from environments.governance import audit
from environments.governance.quotas import set_quota
from environments.governance.selectors import audit_search, month_bounds, quota_rows, spend_report
from environments.models import AuditEvent, Quota, Team
from environments.scheduling.selectors import class_spend


def _require_admin(user) -> None:
    if not roles.is_admin(user):
        raise PermissionDenied("Portal admins only.")


def _csv_response(filename: str, header: list[str], rows) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(header)
    for row in rows:
        # Cells starting with = + - @ would run as formulas in a spreadsheet.
        writer.writerow(
            [f"'{c}" if isinstance(c, str) and c[:1] in ("=", "+", "-", "@") else c for c in row]
        )
    return response


@login_required
def spend(request):
    _require_admin(request.user)
    asked = request.GET.get("month", "")
    start, end = month_bounds(asked)
    month = start.strftime("%Y-%m")
    if asked and asked != month:
        if request.GET.get("format") == "csv":
            return HttpResponse(
                f"month: {asked!r} is not a month like 2026-11\n",
                status=400,
                content_type="text/plain",
            )
        messages.error(request, f"“{asked}” is not a month like 2026-11; showing {month}.")
    rows = spend_report(start=start, end=end)
    if request.GET.get("format") == "csv":
        return _csv_response(
            f"ephemera-spend-{month}.csv",
            ["month", "team", "user", "blueprint", "amount", "currency"],
            [
                [
                    month,
                    r["team__name"],
                    r["owner__email"],
                    r["blueprint"],
                    f"{r['amount']:.4f}",
                    settings.COST_CURRENCY,
                ]
                for r in rows
            ],
        )
    # The total of what the page shows (cents), so the rows add up to it; the CSV keeps
    # four decimals.
    total = sum((money_cents(r["amount"]) for r in rows), Decimal(0))
    return render(
        request,
        "governance/spend.html",
        {
            "rows": rows,
            "month": month,
            "total": total,
            # Each class's seats and total (scheduling): the same cost entries, by class.
            "classes": class_spend(start=start, end=end),
        },
    )


@login_required
def audit_log(request):
    _require_admin(request.user)
    query = request.GET.get("q", "").strip()[:100]
    action = request.GET.get("action", "").strip()[:50]
    entries = audit_search(query=query, action=action)
    if request.GET.get("format") == "csv":
        return _csv_response(
            "ephemera-audit.csv",
            [
                "when",
                "actor",
                "action",
                "object_type",
                "object_id",
                "object",
                "ip",
                "before",
                "after",
            ],
            (
                [
                    e.created_at.isoformat(),
                    e.actor,
                    e.action,
                    e.object_type,
                    e.object_id,
                    e.object_repr,
                    e.ip or "",
                    # JSON, so a spreadsheet or script reads the values back as they were.
                    json.dumps(e.before, sort_keys=True) if e.before is not None else "",
                    json.dumps(e.after, sort_keys=True) if e.after is not None else "",
                ]
                for e in entries.iterator()
            ),
        )
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    actions = AuditEvent.objects.order_by("action").values_list("action", flat=True).distinct()
    return render(
        request,
        "governance/audit.html",
        {"page": page, "query": query, "action": action, "actions": actions},
    )


class QuotaForm(forms.Form):
    """Blank means no limit. Sizes in the units people use."""

    max_environments = forms.IntegerField(
        label="Max environments", min_value=0, max_value=100_000, required=False
    )
    max_cpu = forms.DecimalField(
        label="Max CPU", min_value=0, max_value=1_000_000, required=False, decimal_places=3
    )
    max_memory_gib = forms.DecimalField(
        label="Max memory (GiB)", min_value=0, max_value=1_000_000, required=False, decimal_places=3
    )
    max_ttl = forms.CharField(label="Max time to live", required=False, help_text="e.g. 8h, 3d")
    monthly_budget = forms.DecimalField(
        label="Monthly budget",
        min_value=0,
        max_value=Decimal("9999999999.99"),
        required=False,
        decimal_places=2,
    )

    def clean_max_ttl(self):
        value = self.cleaned_data["max_ttl"].strip()
        if not value:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc
        if seconds > 366 * 86400:
            raise forms.ValidationError("At most a year (366d).")
        return timedelta(seconds=seconds)

    def quota_values(self) -> dict:
        data = self.cleaned_data
        return {
            "max_environments": data["max_environments"],
            "max_cpu_millicores": int(data["max_cpu"] * 1000)
            if data["max_cpu"] is not None
            else None,
            "max_memory_bytes": int(data["max_memory_gib"] * 1024**3)
            if data["max_memory_gib"] is not None
            else None,
            "max_ttl": data["max_ttl"],
            "monthly_budget": data["monthly_budget"].quantize(Decimal("0.01"))
            if data["monthly_budget"] is not None
            else None,
        }

    @classmethod
    def initial_for(cls, quota: Quota | None) -> dict:
        if quota is None:
            return {}
        return {
            "max_environments": quota.max_environments,
            "max_cpu": Decimal(quota.max_cpu_millicores) / 1000
            if quota.max_cpu_millicores is not None
            else None,
            "max_memory_gib": (Decimal(quota.max_memory_bytes) / 1024**3).quantize(Decimal("0.001"))
            if quota.max_memory_bytes is not None
            else None,
            "max_ttl": format_duration(quota.max_ttl.total_seconds()) if quota.max_ttl else "",
            "monthly_budget": quota.monthly_budget,
        }


@login_required
def quotas(request):
    _require_admin(request.user)
    email = request.GET.get("email", "").strip()
    if email:  # "A person's quota, by email"
        if "/" in email:
            raise Http404("No such person.")
        return redirect("governance_quota_edit", "user", email)
    return render(
        request,
        "governance/quotas.html",
        {
            "rows": quota_rows(),
            "teams": Team.objects.order_by("name"),
        },
    )


@login_required
def quota_edit(request, kind: str, key: str):
    """Edit the quota of team ``key`` (a slug) or user ``key`` (an email)."""
    _require_admin(request.user)
    if kind == "team":
        team, user = get_object_or_404(Team, slug=key), None
        subject = f"Team {team.name}"
    elif kind == "user":
        # By id (emails need not be unique in auth.User); the form below also takes an email.
        users = get_user_model().objects.all()
        user = get_object_or_404(users, pk=key) if key.isdigit() else None
        if user is None:
            user = users.filter(email__iexact=key).order_by("pk").first()
            if user is None:
                raise Http404("No such person.")
        team, subject = None, user.email or user.get_username()
    else:
        raise PermissionDenied
    quota = Quota.objects.filter(team=team, user=user).first()
    form = QuotaForm(request.POST or None, initial=QuotaForm.initial_for(quota))
    if request.method == "POST" and form.is_valid():
        set_quota(
            actor=request.user,
            team=team,
            user=user,
            values=form.quota_values(),
            ip=audit.client_ip(request),
        )
        messages.success(request, f"Saved the quota for {subject}.")
        return redirect("governance_quotas")
    return render(
        request,
        "governance/quota_edit.html",
        {"form": form, "subject": subject},
        status=400 if request.method == "POST" else 200,
    )
