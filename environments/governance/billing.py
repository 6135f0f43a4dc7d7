"""Cost accrual: whole minutes of a running environment, recorded once each."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from environments.lifecycle.states import BILLED_STATES
from environments.models import CostEntry, Environment


def accrue(environment_id, now=None) -> Decimal:
    """Record cost for whole minutes since ``accrued_until``. Safe to run twice.

    The guarded UPDATE on ``accrued_until`` means a period is recorded once, even if
    two accrual jobs race.
    """
    now = now or timezone.now()
    environment = (
        Environment.objects.select_related("blueprint_version__blueprint")
        .filter(pk=environment_id, accrued_until__isnull=False)
        .first()
    )
    if (
        environment is None
        or environment.accrued_until is None
        or environment.state not in BILLED_STATES
    ):
        return Decimal(0)
    end = min(now, environment.expires_at or now)
    minutes = int((end - environment.accrued_until).total_seconds() // 60)
    if minutes < 1:
        return Decimal(0)
    start = environment.accrued_until
    period_end = start + timedelta(minutes=minutes)
    amount = (environment.hourly_price * minutes / Decimal(60)).quantize(Decimal("0.0001"))
    with transaction.atomic():
        moved = Environment.objects.filter(pk=environment_id, accrued_until=start).update(
            accrued_until=period_end, accrued_cost=F("accrued_cost") + amount
        )
        if not moved:
            return Decimal(0)
        CostEntry.objects.create(
            environment=environment,
            team_id=environment.team_id,
            owner_id=environment.owner_id,
            blueprint=environment.blueprint_version.blueprint.name,
            period_start=start,
            period_end=period_end,
            amount=amount,
        )
    return amount


def accrue_cost() -> int:
    """Scheduled: accrue every running environment."""
    count = 0
    for environment_id in Environment.objects.filter(
        state__in=BILLED_STATES, accrued_until__isnull=False
    ).values_list("pk", flat=True):
        if accrue(environment_id):
            count += 1
    return count
