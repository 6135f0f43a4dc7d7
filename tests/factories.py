"""Small helpers that create rows directly, for tests that need an environment in a state."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from environments.models import Environment


def make_environment(*, owner, team, version, state="ready", ttl_hours=4, **fields):
    now = timezone.now()
    values = {
        "owner": owner,
        "team": team,
        "blueprint_version": version,
        "purpose": version.purpose,
        "state": state,
        "ttl": timedelta(hours=ttl_hours),
        "expires_at": now + timedelta(hours=ttl_hours),
        "hourly_price": version.hourly_price,
        "cpu_millicores": version.cpu_millicores,
        "memory_bytes": version.memory_bytes,
    }
    values.update(fields)
    return Environment.objects.create(**values)
