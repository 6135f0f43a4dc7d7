"""Session idle timeout: signed out after ``SESSION_IDLE_MINUTES`` without activity.

Activity is any request a person makes; htmx's background GETs (polling a status, a
countdown) do not count, so a tab left open still times out. A timed-out request goes
on signed out, and the page's login check sends the person to sign in (htmx requests
are redirected as a whole page by ``errors.HtmxLoginRedirectMiddleware``).
"""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib.auth import logout

KEY = "last_activity"
# Write the time at most once a minute: not a session save on every click.
RESOLUTION_SECONDS = 60


class IdleTimeoutMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        idle = settings.SESSION_IDLE_MINUTES * 60
        user = getattr(request, "user", None)
        if idle and user is not None and user.is_authenticated:
            now = time.time()
            last = request.session.get(KEY)
            if not isinstance(last, int | float):
                last = None
            background = request.htmx and request.method == "GET"
            if last is not None and now - last > idle:
                logout(request)
            elif not background and (last is None or now - last >= RESOLUTION_SECONDS):
                request.session[KEY] = now
        return self.get_response(request)
