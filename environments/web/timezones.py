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


def viewer_zone(request) -> zoneinfo.ZoneInfo | None:
    """The zone to show times in for this request; None: the server's default (UTC)."""
    name = people.time_zone_of(getattr(request, "user", None))
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
