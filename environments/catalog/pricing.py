"""Prices in the configured currency, from the rate card in settings.

Hourly price of an environment = sum over components of
requests x replicas x rates, plus the blueprint's flat hourly fee.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings

from environments.catalog.spec import BlueprintSpec, as_blueprint_spec, component_totals
from environments.catalog.variants import select_components

GIB = Decimal(1024**3)
CURRENCY_SYMBOLS = {
    "USD": "$",
    "EUR": "€",
    "GBP": "£",
    "JPY": "¥",
    "CHF": "CHF ",
    "CAD": "C$",
    "AUD": "A$",
}


def hourly_price(
    spec: BlueprintSpec | Mapping[str, Any], variant: Mapping[str, Any] | None = None
) -> Decimal:
    """Per hour: the components' requests at the rate card, plus the blueprint's fee.

    The blueprint's own shape, or a ``variant``'s components (a clone's)."""
    blueprint = as_blueprint_spec(spec)
    totals = component_totals(select_components(blueprint, variant))
    total = (
        Decimal(blueprint.hourly_fee or 0)
        + Decimal(totals.cpu_millicores) / 1000 * settings.COST_PER_CPU_HOUR
        + Decimal(totals.memory_bytes) / GIB * settings.COST_PER_GIB_HOUR
    )
    return total.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def price_for(
    spec: BlueprintSpec | Mapping[str, Any],
    seconds: int | float,
    variant: Mapping[str, Any] | None = None,
) -> Decimal:
    """The price of ``seconds``, to a hundredth of a cent: a short environment of a cheap
    blueprint costs $0.0023, not $0.00, so budgets compare and add up as shown."""
    return (hourly_price(spec, variant) * Decimal(seconds) / 3600).quantize(
        Decimal("0.0001"), rounding=ROUND_HALF_UP
    )


def snapshot_monthly_cost(size_bytes: int) -> Decimal:
    """What keeping a snapshot of ``size_bytes`` costs per month, at the rate card's
    ``COST_PER_GIB_MONTH_SNAPSHOT`` (manifests and volume snapshots alike)."""
    return (Decimal(size_bytes) / GIB * settings.COST_PER_GIB_MONTH_SNAPSHOT).quantize(
        Decimal("0.0001"), rounding=ROUND_HALF_UP
    )


def _symbol() -> str:
    return CURRENCY_SYMBOLS.get(settings.COST_CURRENCY, settings.COST_CURRENCY + " ")


def hourly_rate(amount: Decimal | int | float | None) -> str:
    """An hourly price: cents, or four decimals below ten cents ($0.0045/hour, not $0.00)."""
    amount = Decimal(amount or 0)
    if amount == 0 or amount >= Decimal("0.10"):
        return money(amount) + "/hour"
    return f"{_symbol()}{amount.quantize(Decimal('0.0001'), rounding=ROUND_HALF_UP)}/hour"


def money_cents(amount: Decimal | int | float | None) -> Decimal:
    """An amount rounded to cents, as shown."""
    return Decimal(amount or 0).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def money(amount: Decimal | int | float | None, *, precise: bool = False) -> str:
    """Format an amount in the configured currency, e.g. €18.24.

    Under one cent (and when ``precise``) to four decimals, €0.0045, so that a small
    price never reads as €0.00 and a sum of shown amounts makes sense.
    """
    exact = Decimal(amount or 0)
    symbol = _symbol()
    if precise or (exact != 0 and abs(exact) < Decimal("0.01")):
        return f"{symbol}{exact.quantize(Decimal('0.0001'), rounding=ROUND_HALF_UP):,.4f}"
    return f"{symbol}{money_cents(exact):,.2f}"


def money_pair(first, second) -> tuple[str, str]:
    """Two amounts compared in one sentence: to four decimals when cents would show them
    equal ("$0.50 left; this costs $0.50" while it costs $0.5012)."""
    if first != second and money(first) == money(second):
        return money(first, precise=True), money(second, precise=True)
    return money(first), money(second)
