"""Reads for the governance pages: spend, the audit log, quotas."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Q, Sum
from django.utils import timezone

from environments.governance import quotas
from environments.models import AuditEvent, CostEntry, Quota


def month_bounds(month: str | None):
    """'2026-11' -> (start, end) aware datetimes; None or a bad value -> this month."""
    today = timezone.localdate()
    try:
        year, number = (int(part) for part in (month or "").split("-"))
        start_date = dt.date(year, number, 1)
        next_month = (start_date.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    except (ValueError, TypeError, OverflowError):
        start_date = today.replace(day=1)
        next_month = (start_date.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    tz = timezone.get_current_timezone()
    return (
        dt.datetime.combine(start_date, dt.time.min, tzinfo=tz),
        dt.datetime.combine(next_month, dt.time.min, tzinfo=tz),
    )


def spend_report(*, start: dt.datetime, end: dt.datetime) -> list[Any]:
    """Spend per team, user and blueprint within [start, end), largest first."""
    return list(
        CostEntry.objects.filter(period_end__gt=start, period_end__lte=end)
        .values("team__name", "owner__email", "blueprint")
        .annotate(amount=Sum("amount"))
        .order_by("-amount", "team__name", "owner__email", "blueprint")
    )


def audit_search(*, query: str = "", action: str = ""):
    """Entries matching every word of ``query`` somewhere: "move call" finds the
    extension whose reason is "Customer call moved to Friday"."""
    entries = AuditEvent.objects.all()
    if action:
        entries = entries.filter(action=action)
    for word in query.split():
        entries = entries.filter(
            Q(actor__icontains=word)
            | Q(object_repr__icontains=word)
            | Q(object_id__icontains=word)
            | Q(action__icontains=word)
            | Q(ip__startswith=word)
            # Reasons, states and values live in before/after: "Thursday" finds the
            # extension whose reason mentions it.
            | Q(before__icontains=word)
            | Q(after__icontains=word)
        )
    return entries


def quota_rows() -> list[dict]:
    """Every quota with what its team or user uses now and has spent this month."""
    rows = []
    for quota in Quota.objects.select_related("team", "user").order_by("team__name", "user__email"):
        scope = {"team": quota.team} if quota.team is not None else {"user": quota.user}
        usage = quotas.usage(**scope)
        subject = (
            f"Team {quota.team.name}"
            if quota.team is not None
            else getattr(quota.user, "email", "")
        )
        rows.append(
            {
                "quota": quota,
                "subject": subject,
                "environments": usage["environments"] or 0,
                "cpu_millicores": usage["cpu"] or 0,
                "memory_bytes": usage["memory"] or 0,
                "spent": quotas.spent_this_month(**scope),
            }
        )
    return rows
