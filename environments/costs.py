"""Old import path of pricing, kept for one release (external scripts).

Prices now live in ``environments.catalog.pricing``. Nothing in the project imports
this module (an import-linter contract enforces that).
"""

from environments.catalog.pricing import hourly_price, money, price_for

__all__ = ["hourly_price", "money", "price_for"]
