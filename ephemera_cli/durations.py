"""Durations as people write them: 30m, 4h, 3d, 1d12h.

The CLI's own copy of the portal's rules (environments/lib/durations.py): the CLI installs
alone, without the portal. tests/test_cli_package.py checks on a table of inputs that the
two copies agree, so a duration means the same thing everywhere.
"""

from __future__ import annotations

import re

DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")
# The shortest time to live a request may ask for (the portal's MIN_TTL_SECONDS).
MIN_TTL_SECONDS = 5 * 60


def parse_duration(text: str) -> int:
    """'1d12h', '4h', '30m' -> seconds. Raises ValueError in plain words."""
    match = DURATION.match(str(text).strip())
    if not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration like 30m, 4h or 3d")
    days, hours, minutes = (int(g or 0) for g in match.groups())
    seconds = days * 86400 + hours * 3600 + minutes * 60
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return seconds


def format_duration(seconds: int | float) -> str:
    """Seconds -> '1d4h', '30m' (whole minutes; '0m' for less than one)."""
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
    ]
    return "".join(parts) or "0m"
