"""Reads: each returns what a page needs, with the joins it needs (HackSoft selectors)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone

from environments.models import (
    Blueprint,
    BlueprintVersion,
    Environment,
    Membership,
    Purpose,
    Team,
)
from environments.states import LIVE_STATES, State


def catalogue(*, search: str = "") -> list[tuple[str, list[BlueprintVersion]]]:
    """The newest non-deprecated version of each blueprint, grouped by purpose.

    Two queries whatever the number of blueprints.
    """
    newest = (
        BlueprintVersion.objects.filter(blueprint=OuterRef("blueprint"), deprecated=False)
        .order_by("-number")
        .values("pk")[:1]
    )
    versions = BlueprintVersion.objects.filter(pk=Subquery(newest)).select_related("blueprint")
    if search:
        versions = versions.filter(
            Q(blueprint__name__icontains=search)
            | Q(blueprint__title__icontains=search)
            | Q(spec__description__icontains=search)
            # Components and their images: "postgres" finds what runs PostgreSQL.
            | Q(spec__components__icontains=search)
        )
    grouped: dict[str, list[BlueprintVersion]] = defaultdict(list)
    for version in versions.order_by("blueprint__title"):
        grouped[version.blueprint.purpose].append(version)
    labels = dict(Purpose.choices)
    return [(labels[p], grouped[p]) for p in Purpose.values if grouped.get(p)]


# --- Environments ---------------------------------------------------------------------


def _environment_rows():
    # Every column the tables show comes from these joins: a constant number of queries.
    return Environment.objects.select_related("owner", "team", "blueprint_version__blueprint")


def environments_for(*, user, scope: str = "mine") -> QuerySet[Environment]:
    """The dashboard's rows: the user's own ("mine") or their teams' ("team").

    Finished environments (deleted, rejected) are left out after a day so the
    table stays about what is running.
    """
    rows = (
        _environment_rows()
        # The table needs none of these, and they are the big JSON columns.
        .defer(
            "manifests",
            "component_status",
            "parameters",
            "blueprint_version__source",
            "blueprint_version__spec",
        )
        .filter(
            Q(state__in=LIVE_STATES) | Q(state_changed_at__gte=timezone.now() - timedelta(days=1))
        )
    )
    if scope == "team":
        team_ids = Membership.objects.filter(user=user).values("team_id")
        return rows.filter(team_id__in=Subquery(team_ids))
    return rows.filter(owner=user)


def rows_stamp(rows: QuerySet[Environment]) -> dict:
    """What the dashboard rows depend on, in one aggregate query (the cache key)."""
    from django.db.models import Count, Max

    return rows.order_by().aggregate(
        count=Count("pk"),
        changed=Max("updated_at"),
        accrued=Max("accrued_until"),
    )


def environment_for(*, user, pk) -> Environment:
    """One environment the user may see, or 404 (no IDOR: outsiders learn nothing)."""
    return get_object_or_404(
        _environment_rows().filter(pk__in=Environment.objects.visible_to(user).values("pk")), pk=pk
    )


def pending_approvals() -> QuerySet[Environment]:
    return _environment_rows().filter(state=State.PENDING_APPROVAL).order_by("created_at")


def all_environments(
    *,
    state: str = "",
    team: str = "",
    owner: str = "",
    blueprint: str = "",
    expiring_within_hours: int | None = None,
) -> QuerySet[Environment]:
    """The admin list, filtered; same joins as the dashboard."""
    rows = _environment_rows()
    if state:
        rows = rows.filter(state=state)
    if team:
        rows = rows.filter(team__slug=team)
    if owner:
        rows = rows.filter(owner__email__icontains=owner)
    if blueprint:
        rows = rows.filter(blueprint_version__blueprint__name=blueprint)
    if expiring_within_hours:
        rows = rows.filter(
            state__in=LIVE_STATES,
            expires_at__lte=timezone.now() + timedelta(hours=expiring_within_hours),
        ).order_by("expires_at")
    return rows


def teams_of(user) -> list[Team]:
    return list(Team.objects.filter(memberships__user=user).order_by("name"))


def requestable_version(name: str) -> BlueprintVersion:
    """The current (non-deprecated) version of blueprint ``name``, or 404."""
    version = (
        BlueprintVersion.objects.filter(blueprint__name=name, deprecated=False)
        .select_related("blueprint")
        .order_by("-number")
        .first()
    )
    if version is None:
        raise Http404("No such blueprint open to requests.")
    return version


def blueprint_names() -> list[str]:
    return list(Blueprint.objects.order_by("name").values_list("name", flat=True))


# --- Governance ---------------------------------------------------------------------------


def month_bounds(month: str | None):
    """'2026-11' -> (start, end) aware datetimes; None or a bad value -> this month."""
    import datetime as dt

    from django.utils import timezone

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


def spend_report(*, start, end) -> list[dict]:
    """Spend per team, user and blueprint within [start, end), largest first."""
    from django.db.models import Sum

    from environments.models import CostEntry

    return list(
        CostEntry.objects.filter(period_end__gt=start, period_end__lte=end)
        .values("team__name", "owner__email", "blueprint")
        .annotate(amount=Sum("amount"))
        .order_by("-amount", "team__name", "owner__email", "blueprint")
    )


def audit_search(*, query: str = "", action: str = ""):
    from environments.models import AuditEvent

    entries = AuditEvent.objects.all()
    if action:
        entries = entries.filter(action=action)
    if query:
        entries = entries.filter(
            Q(actor__icontains=query)
            | Q(object_repr__icontains=query)
            | Q(object_id__icontains=query)
            | Q(action__icontains=query)
            | Q(ip__startswith=query)
            # Reasons, states and values live in before/after: "Thursday" finds the
            # extension whose reason mentions it.
            | Q(before__icontains=query)
            | Q(after__icontains=query)
        )
    return entries


def quota_rows() -> list[dict]:
    """Every quota with what its team or user uses now and has spent this month."""
    from environments import quotas
    from environments.models import Quota

    rows = []
    for quota in Quota.objects.select_related("team", "user").order_by("team__name", "user__email"):
        scope = {"team": quota.team} if quota.team_id else {"user": quota.user}
        usage = quotas.usage(**scope)
        rows.append(
            {
                "quota": quota,
                "subject": f"Team {quota.team.name}" if quota.team_id else quota.user.email,
                "environments": usage["environments"] or 0,
                "cpu_millicores": usage["cpu"] or 0,
                "memory_bytes": usage["memory"] or 0,
                "spent": quotas.spent_this_month(**scope),
            }
        )
    return rows
