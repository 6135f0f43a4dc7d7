"""Quota and budget checks, per team and per user.

``check`` runs inside the caller's transaction *after* ``lock`` has taken row locks
on the team and the user (always in that order, so two requests cannot deadlock).
Concurrent requests therefore see each other's environments: 50 threads against a
quota of N create exactly N.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from environments.access import roles
from environments.catalog.choices import ApprovalPolicy
from environments.catalog.pricing import money, money_pair, price_for
from environments.catalog.spec import component_totals
from environments.catalog.variants import select_components
from environments.governance import audit
from environments.lib.durations import format_duration
from environments.lib.errors import ServiceError
from environments.lib.quantities import format_cpu, format_memory
from environments.lifecycle.states import COUNTED_STATES, State
from environments.models import (
    BlueprintVersion,
    CapacityReservation,
    CostEntry,
    Environment,
    Quota,
    Team,
)


@dataclass(frozen=True)
class Demand:
    """What a request, extension or clone needs."""

    environments: int
    cpu_millicores: int
    memory_bytes: int
    ttl_seconds: int
    cost: Decimal
    label: str  # e.g. "this Webshop sales demo for 8 h"
    # When the demand starts (a class or booking's warm-up); None: now. With
    # ``ttl_seconds`` it is the window in which capacity reservations count against it.
    starts_at: datetime | None = None

    def window(self) -> tuple[datetime, datetime]:
        start = self.starts_at or timezone.now()
        return start, start + timedelta(seconds=self.ttl_seconds)


def demand_for(
    version: BlueprintVersion,
    ttl_seconds: int,
    *,
    count: int = 1,
    variant: Mapping[str, Any] | None = None,
) -> Demand:
    """What one request for ``version`` living ``ttl_seconds`` needs: the blueprint's own
    shape, or a ``variant``'s components (a clone's, ``catalog.variants``)."""
    totals = component_totals(select_components(version.blueprint_spec, variant))
    return Demand(
        environments=count,
        cpu_millicores=totals.cpu_millicores,
        memory_bytes=totals.memory_bytes,
        ttl_seconds=ttl_seconds,
        cost=price_for(version.blueprint_spec, ttl_seconds, variant),
        label=f"this {version.title} for {format_duration(ttl_seconds)}",
    )


def ttl_limit(*, version: BlueprintVersion, team: Team | None, user) -> tuple[int, str]:
    """The longest an environment of ``version`` may live for this team and user, in
    seconds, and whose limit that is: the blueprint's maximum, or the smaller quota
    ``max_ttl`` of the team and the user (the limit ``check`` enforces)."""
    limit, why = version.blueprint_spec.ttl.max, f"{version.title}'s maximum"
    for quota, whose in (
        (
            Quota.objects.filter(team=team).first() if team is not None else None,
            "your team's limit",
        ),
        (Quota.objects.filter(user=user).first(), "your limit"),
    ):
        if quota is None or quota.max_ttl is None:
            continue
        seconds = int(quota.max_ttl.total_seconds())
        if seconds < limit:
            limit, why = seconds, whose
    return limit, why


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
    # Classes and bookings not started yet: their whole price is already promised.
    held = CapacityReservation.objects.filter(released_at__isnull=True)
    held = held.filter(team=team) if team is not None else held.filter(owner=user)
    total = held.aggregate(total=Sum("cost"))["total"] or Decimal(0)
    for hourly, accrued_until, expires_at, ttl in live.values_list(
        "hourly_price", "accrued_until", "expires_at", "ttl"
    ):
        start = accrued_until or now
        end = expires_at or (now + ttl)
        hours = Decimal(max((end - start).total_seconds(), 0)) / 3600
        total += hourly * hours
    return total


# The parts of a quota's usage, named so a person can tell a running environment from
# another request that merely waits (COUNTED_STATES, split three ways).
RUNNING_STATES = frozenset({State.READY})
APPROVED_STATES = frozenset({State.APPROVED, State.PROVISIONING})
PENDING_STATES = frozenset({State.REQUESTED, State.PENDING_APPROVAL})
assert RUNNING_STATES | APPROVED_STATES | PENDING_STATES == COUNTED_STATES


@dataclass(frozen=True)
class Usage:
    """What a team or a user holds, by part: running, approved but not ready, pending."""

    environments: int = 0
    cpu: int = 0
    memory: int = 0
    parts: dict = field(default_factory=dict)  # part -> {"environments", "cpu", "memory"}

    def __getitem__(self, key: str) -> int:  # usage["cpu"], as before
        return getattr(self, key)

    def part(self, name: str, resource: str) -> int:
        return (self.parts.get(name) or {}).get(resource, 0)


def usage(
    *,
    team: Team | None = None,
    user=None,
    exclude=None,
    window: tuple[datetime, datetime] | None = None,
) -> Usage:
    """What the team or user holds: environments by state, and the capacity reserved
    for classes and bookings whose window overlaps ``window`` (None: every one)."""
    live = Environment.objects.filter(state__in=COUNTED_STATES)
    live = live.filter(team=team) if team is not None else live.filter(owner=user)
    if exclude is not None:
        live = live.exclude(pk=exclude.pk)
    parts: dict[str, dict[str, int]] = {
        name: {"environments": 0, "cpu": 0, "memory": 0} for name in PARTS
    }
    held = CapacityReservation.objects.filter(released_at__isnull=True)
    held = held.filter(team=team) if team is not None else held.filter(owner=user)
    if window is not None:
        held = held.filter(starts_at__lt=window[1], ends_at__gt=window[0])
    reserved = held.aggregate(
        environments=Sum("environments"), cpu=Sum("cpu_millicores"), memory=Sum("memory_bytes")
    )
    for kind in ("environments", "cpu", "memory"):
        parts["reserved"][kind] = reserved[kind] or 0
    for row in live.values("state").annotate(
        environments=Count("pk"), cpu=Sum("cpu_millicores"), memory=Sum("memory_bytes")
    ):
        name = _part_of(row["state"])
        for resource in ("environments", "cpu", "memory"):
            parts[name][resource] += row[resource] or 0
    return Usage(
        environments=sum(p["environments"] for p in parts.values()),
        cpu=sum(p["cpu"] for p in parts.values()),
        memory=sum(p["memory"] for p in parts.values()),
        parts=parts,
    )


PARTS = ("running", "approved", "pending", "reserved")
PART_WORDS = {
    "running": "running",
    "approved": "approved but not ready",
    "pending": "pending approval",
    "reserved": "reserved for classes and bookings",
}


def _part_of(state: str) -> str:
    if state in RUNNING_STATES:
        return "running"
    if state in APPROVED_STATES:
        return "approved"
    return "pending"


def _used_words(used: Usage, resource: str, fmt, unit: str = "") -> str:
    """'0.6 CPU running, 3.5 approved or pending': pending requests hold quota too."""
    running = used.part("running", resource)
    waiting = used.part("approved", resource) + used.part("pending", resource)
    reserved = used.part("reserved", resource)
    if not waiting and not reserved:
        return f"{fmt(running)}{unit} running" if running else fmt(0)
    words = [f"{fmt(running)}{unit} running"]
    if waiting:
        words.append(f"{fmt(waiting)} approved or pending")
    if reserved:
        words.append(f"{fmt(reserved)} reserved for classes and bookings")
    return ", ".join(words)


@dataclass(frozen=True)
class Breach:
    """One limit a demand goes over.

    ``message`` is the sentence a refusal shows the requester; ``short`` names the limit
    for an approver ("needs 1.5 CPU; the team has 0.4 left"); ``name`` is the limit in
    two words ("over budget").
    """

    limit: str  # environments | cpu | memory | ttl | budget | auto_approve_ttl
    scope: str  # team | user | blueprint
    name: str
    message: str
    short: str


def _check_one(
    quota: Quota, scope: str, subject: str, demand: Demand, used: Usage, spent, upcoming
) -> list[Breach]:
    breaches = []
    has, uses = ("have", "use") if scope == "user" else ("has", "uses")
    holder = "the team" if scope == "team" else "the requester"
    whose = "team's" if scope == "team" else "requester's"
    used_envs = used.environments
    if (
        quota.max_environments is not None
        and used_envs + demand.environments > quota.max_environments
    ):
        left = max(quota.max_environments - used_envs, 0)
        breaches.append(
            Breach(
                "environments",
                scope,
                f"over the {whose} environment limit",
                f"{subject} already {has} {used_envs} of {quota.max_environments} environments"
                + (f" ({_used_words(used, 'environments', str)})" if used_envs else "")
                + f"; {demand.label} needs {demand.environments} more, and {left} are left.",
                f"needs {demand.environments} more environment"
                + ("s" if demand.environments != 1 else "")
                + f"; {holder} has {left} of {quota.max_environments} left",
            )
        )
    used_cpu = used.cpu
    if (
        quota.max_cpu_millicores is not None
        and used_cpu + demand.cpu_millicores > quota.max_cpu_millicores
    ):
        left = max(quota.max_cpu_millicores - used_cpu, 0)
        breaches.append(
            Breach(
                "cpu",
                scope,
                f"over the {whose} CPU quota",
                f"{subject} {uses} {_used_words(used, 'cpu', format_cpu, ' CPU')} of "
                f"{format_cpu(quota.max_cpu_millicores)} CPU; {demand.label} needs "
                f"{format_cpu(demand.cpu_millicores)} CPU and {format_cpu(left)} is left.",
                f"needs {format_cpu(demand.cpu_millicores)} CPU; {holder} has "
                f"{format_cpu(left)} left",
            )
        )
    used_mem = used.memory
    if (
        quota.max_memory_bytes is not None
        and used_mem + demand.memory_bytes > quota.max_memory_bytes
    ):
        left = max(quota.max_memory_bytes - used_mem, 0)
        breaches.append(
            Breach(
                "memory",
                scope,
                f"over the {whose} memory quota",
                f"{subject} {uses} {_used_words(used, 'memory', format_memory)} of "
                f"{format_memory(quota.max_memory_bytes)} memory; {demand.label} needs "
                f"{format_memory(demand.memory_bytes)} and {format_memory(left)} is left.",
                f"needs {format_memory(demand.memory_bytes)} memory; {holder} has "
                f"{format_memory(left)} left",
            )
        )
    if quota.max_ttl is not None and demand.ttl_seconds > quota.max_ttl.total_seconds():
        most = format_duration(quota.max_ttl.total_seconds())
        breaches.append(
            Breach(
                "ttl",
                scope,
                f"over the {whose} time limit",
                f"{subject} may keep an environment for at most {most}; {demand.label} asks "
                f"for {format_duration(demand.ttl_seconds)}.",
                f"{format_duration(demand.ttl_seconds)} is over the {whose} {most} maximum "
                "time to live",
            )
        )
    if quota.monthly_budget is not None:
        left = quota.monthly_budget - spent - upcoming
        if demand.cost > left:
            shown_left, shown_cost = money_pair(max(left, Decimal(0)), demand.cost)
            breaches.append(
                Breach(
                    "budget",
                    scope,
                    "over budget",
                    f"{subject} {has} {shown_left} of {money(quota.monthly_budget)} left this "
                    f"month; {demand.label} costs {shown_cost}.",
                    f"costs {shown_cost}; {holder} has {shown_left} of "
                    f"{money(quota.monthly_budget)} left this month",
                )
            )
    return breaches


def breaches(
    *, team: Team, user, demand: Demand, exclude: Environment | None = None
) -> list[Breach]:
    """Every limit ``demand`` would break, team's first, then the user's."""
    found: list[Breach] = []
    team_quota = Quota.objects.filter(team=team).first()
    if team_quota is not None:
        found += _check_one(
            team_quota,
            "team",
            f"Team {team.name}",
            demand,
            usage(team=team, exclude=exclude, window=demand.window()),
            spent_this_month(team=team),
            committed(team=team, exclude=exclude),
        )
    user_quota = Quota.objects.filter(user=user).first()
    if user_quota is not None:
        found += _check_one(
            user_quota,
            "user",
            "You",
            demand,
            usage(user=user, exclude=exclude, window=demand.window()),
            spent_this_month(user=user),
            committed(user=user, exclude=exclude),
        )
    return found


def require(*, team: Team, user, demand: Demand, exclude: Environment | None = None) -> None:
    """Lock the team's and user's quota rows, then refuse (``ServiceError``, every broken
    limit in one message) if ``demand`` does not fit. Call inside the service's
    transaction, so the check and the write that uses it are one decision."""
    lock(team=team, user=user)
    refusals = check(team=team, user=user, demand=demand, exclude=exclude)
    if refusals:
        raise ServiceError(" ".join(refusals))


def check(*, team: Team, user, demand: Demand, exclude: Environment | None = None) -> list[str]:
    """Every limit ``demand`` would break, as messages naming what is used, needed and left."""
    return [
        breach.message for breach in breaches(team=team, user=user, demand=demand, exclude=exclude)
    ]


ALLOWED = "allowed"
NEEDS_APPROVAL = "needs_approval"
REFUSED = "refused"


@dataclass(frozen=True)
class Outcome:
    """What a request would come to: allowed, needs approval because…, refused because…"""

    decision: str  # ALLOWED | NEEDS_APPROVAL | REFUSED
    breaches: tuple[Breach, ...] = ()
    always_approved_by_hand: bool = False  # the blueprint's policy is "required"

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOWED

    @property
    def needs_approval(self) -> bool:
        return self.decision == NEEDS_APPROVAL

    @property
    def refused(self) -> bool:
        return self.decision == REFUSED

    @property
    def message(self) -> str:
        """The refusal, in the quota check's own sentences."""
        return " ".join(breach.message for breach in self.breaches)

    @property
    def because(self) -> str:
        """Why, in a few words: 'over budget', 'over the team's CPU quota'."""
        names = list(dict.fromkeys(breach.name for breach in self.breaches))
        if self.always_approved_by_hand and self.decision == NEEDS_APPROVAL:
            names.insert(0, "this blueprint always needs approval")
        return "; ".join(names)

    @property
    def summary(self) -> str:
        """One line for the estimate: 'Needs approval: over budget.'"""
        if self.decision == ALLOWED:
            return "Approved automatically: within every limit."
        if self.decision == NEEDS_APPROVAL:
            return f"Needs approval: {self.because}."
        return f"Would be refused: {self.because}."


def decide(
    *,
    team: Team,
    user,
    version: BlueprintVersion,
    demand: Demand,
    exclude: Environment | None = None,
) -> Outcome:
    """Apply the blueprint's approval policy to every limit ``demand`` would break.

    The one decision the request service, the request form's estimate and the approval
    queue share. The caller takes ``lock`` first when it acts on the answer.
    """
    spec = version.blueprint_spec
    found = breaches(team=team, user=user, demand=demand, exclude=exclude)
    policy = spec.approval
    if policy == ApprovalPolicy.AUTO:
        return Outcome(REFUSED if found else ALLOWED, tuple(found))
    if policy == ApprovalPolicy.REQUIRED:
        # An approver vouches for the request, not for breaking the limits.
        return Outcome(REFUSED if found else NEEDS_APPROVAL, tuple(found), True)
    # over-quota: people approve what policy would refuse, and longer than usual.
    auto_ttl = spec.auto_approve_ttl or spec.ttl.default
    if demand.ttl_seconds > auto_ttl:
        found.append(
            Breach(
                "auto_approve_ttl",
                "blueprint",
                "longer than the auto-approve time",
                f"{format_duration(demand.ttl_seconds)} is over the {format_duration(auto_ttl)} "
                f"that {version.title} approves automatically.",
                f"{format_duration(demand.ttl_seconds)} is over the "
                f"{format_duration(auto_ttl)} auto-approve time",
            )
        )
    return Outcome(NEEDS_APPROVAL if found else ALLOWED, tuple(found))


def standing(*, team: Team, user, demand: Demand, exclude: Environment | None = None) -> list[str]:
    """For approvers: what each limited resource holds, by part, and what ``demand`` adds.

    "Team Sales CPU: 0.6 running, 0.5 approved but not ready, 3 pending approval, of 5;
    approving this uses 1.5 more." Rejecting a pending request frees what it needs.
    """
    lines = []
    scopes = []
    team_quota = Quota.objects.filter(team=team).first()
    if team_quota is not None:
        scopes.append(
            (
                team_quota,
                f"Team {team.name}",
                usage(team=team, exclude=exclude, window=demand.window()),
            )
        )
    user_quota = Quota.objects.filter(user=user).first()
    if user_quota is not None:
        scopes.append(
            (
                user_quota,
                getattr(user, "email", "The requester"),
                usage(user=user, exclude=exclude, window=demand.window()),
            )
        )
    for quota, subject, used in scopes:
        for resource, limit, word, fmt, need in (
            ("environments", quota.max_environments, "environments", str, demand.environments),
            ("cpu", quota.max_cpu_millicores, "CPU", format_cpu, demand.cpu_millicores),
            ("memory", quota.max_memory_bytes, "memory", format_memory, demand.memory_bytes),
        ):
            if limit is None:
                continue
            parts = ", ".join(
                f"{fmt(used.part(name, resource))} {PART_WORDS[name]}"
                for name in PARTS
                # Reserved capacity is named only when there is some.
                if name != "reserved" or used.part(name, resource)
            )
            after = used[resource] + need
            lines.append(
                f"{subject} {word}: {parts}, of {fmt(limit)}; approving this uses "
                f"{fmt(need)} more ({fmt(after)} of {fmt(limit)})."
            )
    return lines


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
