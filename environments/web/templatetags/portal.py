"""Template filters for the portal: money, durations, state badges."""

from __future__ import annotations

from datetime import UTC, timedelta

from django import template
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from environments.catalog import pricing
from environments.lib import durations, quantities
from environments.lifecycle.states import State

register = template.Library()

# What a countdown says at zero (static/portal.js says the same).
EXPIRED = "Expired"

# Colour class for each state's badge; the text always names the state too.
BADGE_TONES: dict[str, str] = {
    State.READY: "ok",
    State.FAILED: "bad",
    State.REJECTED: "bad",
    State.PENDING_APPROVAL: "warn",
    State.DELETED: "muted",
    State.TEARING_DOWN: "muted",
}


@register.filter
def money(amount) -> str:
    return pricing.money(amount)


@register.filter
def sub(value, other):
    return value - other


@register.filter
def hourly(amount) -> str:
    return pricing.hourly_rate(amount)


@register.filter
def duration(value) -> str:
    """Seconds or a timedelta as '1d4h', '30m'."""
    if value is None:
        return ""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return durations.format_duration(value)


@register.filter
def badge_tone(state: str) -> str:
    return BADGE_TONES.get(state, "busy")


@register.filter
def cpu(millicores: int) -> str:
    return quantities.format_cpu(millicores)


@register.filter
def memory(num_bytes: int) -> str:
    return quantities.format_memory(num_bytes)


@register.filter
def get_item(mapping, key):
    """``mapping[key]`` in a template, or None."""
    if not isinstance(mapping, dict):
        return None
    return mapping.get(key)


# The two tags below render once per table row: built in Python (format_html) rather
# than with {% include %}, which is several times slower for a 100-row dashboard.


@register.simple_tag
def state_badge(environment) -> str:
    spinner = (
        mark_safe('<span class="spinner" aria-hidden="true"></span>')
        if environment.is_moving
        else ""
    )
    return format_html(
        '<span class="badge {}">{}{}</span>',
        BADGE_TONES.get(environment.state, "busy"),
        spinner,
        environment.get_state_display(),
    )


def _local_and_utc(value) -> str:
    local = timezone.localtime(value)
    utc = value.astimezone(UTC)
    if local.utcoffset() == timedelta(0):
        return utc.strftime("%Y-%m-%d %H:%M UTC")
    return f"{date_format(local, 'Y-m-d H:i T')} ({utc:%Y-%m-%d %H:%M} UTC)"


@register.simple_tag
def countdown(environment) -> str:
    left = environment.time_left
    if left is None:
        return mark_safe('<span class="muted">—</span>')
    expires = environment.expires_at.isoformat()
    return format_html(
        '<time class="countdown" datetime="{}" data-expires="{}" title="Expires {}">{}</time>',
        expires,
        expires,
        # In the viewer's zone (web.timezones), UTC beside it.
        _local_and_utc(environment.expires_at),
        # The same word static/portal.js switches to when the countdown reaches zero.
        durations.format_duration(left.total_seconds()) if left else EXPIRED,
    )


@register.simple_tag
def local_time(value, fmt: str = "Y-m-d H:i T") -> str:
    """A time in the viewer's zone (web.timezones), with UTC in the title for hovering."""
    if value is None:
        return ""
    utc = value.astimezone(UTC)
    return format_html(
        '<time datetime="{}" title="{} UTC">{}</time>',
        utc.isoformat(),
        utc.strftime("%Y-%m-%d %H:%M:%S"),
        date_format(timezone.localtime(value), fmt),
    )


@register.simple_tag
def environment_name(environment, title: str | None = None) -> str:
    """A list's name cell: the name people gave it (else the blueprint's title), the
    blueprint's list parameter ("customer: acme"), then the title and the namespace."""
    title = title or environment.blueprint_version.blueprint.title
    listed = environment.listed_parameter_labelled
    return format_html(
        '<a href="{}">{}</a>{}<br><span class="muted">{}{}</span>',
        environment.get_absolute_url(),
        environment.display_name or title,
        format_html(' <span class="listed-parameter">{}: {}</span>', *listed) if listed else "",
        format_html("{} · ", title) if environment.display_name else "",
        environment.namespace,
    )
