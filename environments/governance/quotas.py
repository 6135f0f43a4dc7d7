"""Quota and budget checks, per team and per user.

``check`` runs inside the caller's transaction *after* ``lock`` has taken row locks
on the team and the user (always in that order, so two requests cannot deadlock).
Concurrent requests therefore see each other's environments: 50 threads against a
quota of N create exactly N.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from environments.access import roles
from environments.catalog.pricing import money
from environments.governance import audit
from environments.lib.durations import format_duration
from environments.lib.errors import ServiceError
from environments.lib.quantities import format_cpu, format_memory
from environments.lifecycle.states import COUNTED_STATES
from environments.models import CostEntry, Environment, Quota, Team


@dataclass(frozen=True)
class Demand:
    """What a request, extension or clone needs."""

    environments: int
    cpu_millicores: int
    memory_bytes: int
    ttl_seconds: int
    cost: Decimal
    label: str  # e.g. "this Webshop sales demo for 8 h"


def lock(*, team: Team, user) -> None:
    """Serialise quota decisions for this team and user (row locks, team first)."""
    list(Team.objects.select_for_update().filter(pk=team.pk).values_list("pk"))
    list(get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk"))


def month_start(now=None):
    now = timezone.localtime(now or timezone.now())
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def spent_this_month(*, team: Team | None = None, user=None) -> Decimal:
    entries = CostEntry.objects.filter(period_end__gte=month_start())
    entries = entries.filter(team=team) if team is not None else entries.filter(owner=user)
    return entries.aggregate(total=Sum("amount"))["total"] or Decimal(0)


def committed(*, team: Team | None = None, user=None, exclude=None) -> Decimal:
    """Cost still to come from live environments until their expiry."""
    live = Environment.objects.filter(state__in=COUNTED_STATES)
    live = live.filter(team=team) if team is not None else live.filter(owner=user)
    if exclude is not None:
        live = live.exclude(pk=exclude.pk)
    now = timezone.now()
    total = Decimal(0)
    for hourly, accrued_until, expires_at, ttl in live.values_list(
        "hourly_price", "accrued_until", "expires_at", "ttl"
    ):
        start = accrued_until or now
        end = expires_at or (now + ttl)
        hours = Decimal(max((end - start).total_seconds(), 0)) / 3600
        total += hourly * hours
    return total


def usage(*, team: Team | None = None, user=None, exclude=None) -> dict:
    live = Environment.objects.filter(state__in=COUNTED_STATES)
    live = live.filter(team=team) if team is not None else live.filter(owner=user)
    if exclude is not None:
        live = live.exclude(pk=exclude.pk)
    return live.aggregate(
        environments=Count("pk"), cpu=Sum("cpu_millicores"), memory=Sum("memory_bytes")
    )


def _check_one(
    quota: Quota, subject: str, demand: Demand, usage: dict, spent, upcoming
) -> list[str]:
    refusals = []
    has, uses = ("have", "use") if subject == "You" else ("has", "uses")
    used_envs = usage["environments"] or 0
    if (
        quota.max_environments is not None
        and used_envs + demand.environments > quota.max_environments
    ):
        refusals.append(
            f"{subject} already {has} {used_envs} of {quota.max_environments} environments running "
            f"or requested; {demand.label} needs 1 more, and {max(quota.max_environments - used_envs, 0)} are left."
        )
    used_cpu = usage["cpu"] or 0
    if (
        quota.max_cpu_millicores is not None
        and used_cpu + demand.cpu_millicores > quota.max_cpu_millicores
    ):
        left = max(quota.max_cpu_millicores - used_cpu, 0)
        refusals.append(
            f"{subject} {uses} {format_cpu(used_cpu)} of {format_cpu(quota.max_cpu_millicores)} CPU; "
            f"{demand.label} needs {format_cpu(demand.cpu_millicores)} CPU and {format_cpu(left)} is left."
        )
    used_mem = usage["memory"] or 0
    if (
        quota.max_memory_bytes is not None
        and used_mem + demand.memory_bytes > quota.max_memory_bytes
    ):
        left = max(quota.max_memory_bytes - used_mem, 0)
        refusals.append(
            f"{subject} {uses} {format_memory(used_mem)} of {format_memory(quota.max_memory_bytes)} "
            f"memory; {demand.label} needs {format_memory(demand.memory_bytes)} and "
            f"{format_memory(left)} is left."
        )
    if quota.max_ttl is not None and demand.ttl_seconds > quota.max_ttl.total_seconds():
        refusals.append(
            f"{subject} may keep an environment for at most "
            f"{format_duration(quota.max_ttl.total_seconds())}; {demand.label} asks for "
            f"{format_duration(demand.ttl_seconds)}."
        )
    if quota.monthly_budget is not None:
        left = quota.monthly_budget - spent - upcoming
        if demand.cost > left:
            refusals.append(
                f"{subject} {has} {money(max(left, Decimal(0)))} of {money(quota.monthly_budget)} "
                f"left this month; {demand.label} costs {money(demand.cost)}."
            )
    return refusals


def check(*, team: Team, user, demand: Demand, exclude: Environment | None = None) -> list[str]:
    """Every limit ``demand`` would break, as messages naming what is used, needed and left."""
    refusals: list[str] = []
    team_quota = Quota.objects.filter(team=team).first()
    if team_quota is not None:
        refusals += _check_one(
            team_quota,
            f"Team {team.name}",
            demand,
            usage(team=team, exclude=exclude),
            spent_this_month(team=team),
            committed(team=team, exclude=exclude),
        )
    user_quota = Quota.objects.filter(user=user).first()
    if user_quota is not None:
        refusals += _check_one(
            user_quota,
            "You",
            demand,
            usage(user=user, exclude=exclude),
            spent_this_month(user=user),
            committed(user=user, exclude=exclude),
        )
    return refusals


def budget_summary(*, team: Team) -> dict:
    """Spent this month, committed (running environments until expiry) and what is left:
    the same sums the budget check uses, so an estimate never promises what a request
    is then refused."""
    quota = Quota.objects.filter(team=team).first()
    spent = spent_this_month(team=team)
    upcoming = committed(team=team)
    budget = quota.monthly_budget if quota else None
    return {
        "spent": spent,
        "committed": upcoming,
        "budget": budget,
        "left": max(budget - spent - upcoming, Decimal(0)) if budget is not None else None,
        "percent": int(min((spent + upcoming) / budget * 100, Decimal(100))) if budget else 0,
    }


QUOTA_FIELDS = (
    "max_environments",
    "max_cpu_millicores",
    "max_memory_bytes",
    "max_ttl",
    "monthly_budget",
)


def _quota_snapshot(quota: Quota) -> dict:
    values = {}
    for name in QUOTA_FIELDS:
        value = getattr(quota, name)
        if isinstance(value, timedelta):
            value = int(value.total_seconds())
        elif isinstance(value, Decimal):
            value = str(value)
        values[name] = value
    return values


@transaction.atomic
def set_quota(
    *, actor, team: Team | None = None, user=None, values: dict, ip: str | None = None
) -> Quota:
    """Create or change the quota of one team or one user; audited with before/after."""
    if not roles.is_admin(actor):
        raise PermissionDenied("Only portal admins can change quotas.")
    if (team is None) == (user is None):
        raise ServiceError("A quota is for one team or one user.")
    quota, created = Quota.objects.select_for_update().get_or_create(team=team, user=user)
    before = None if created else _quota_snapshot(quota)
    for name in QUOTA_FIELDS:
        if name in values:
            setattr(quota, name, values[name])
    quota.save()
    audit.record(
        actor=actor,
        action="quota.change",
        target=quota,
        before=before,
        after=_quota_snapshot(quota),
        ip=ip,
    )
    return quota
