"""Times in the viewer's zone: the one in their profile, else their browser's.

``static/portal.js`` puts the browser's zone (``Intl.DateTimeFormat``) in the ``tz``
cookie; the profile's choice wins over it. Templates show times with the ``local_time``
tag, which keeps UTC in the title for hovering.
"""

from __future__ import annotations

import zoneinfo

from django.utils import timezone

from environments.access import people

COOKIE = "tz"


# The profile's choice, kept in the session so a polled partial costs no query.
SESSION_KEY = "profile_time_zone"


def remember(request, name: str) -> None:
    """Keep the profile's zone (``""``: the browser's) for this session's next pages."""
    request.session[SESSION_KEY] = name


def viewer_zone(request) -> zoneinfo.ZoneInfo | None:
    """The zone to show times in for this request; None: the server's default (UTC)."""
    name = ""
    user = getattr(request, "user", None)
    session = getattr(request, "session", None)
    if session is not None and getattr(user, "is_authenticated", False):
        name = session.get(SESSION_KEY)
        if name is None:
            name = people.time_zone_of(user)
            remember(request, name)
    if not name:
        name = request.COOKIES.get(COOKIE, "")[:64]
    if not people.valid_time_zone(name):
        return None
    return zoneinfo.ZoneInfo(name)


class TimeZoneMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        zone = viewer_zone(request)
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
