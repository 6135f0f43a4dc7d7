"""Error pages in the portal's look; never a stack trace."""

import logging
import sys
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.core.signals import got_request_exception
from django.http import HttpResponse, HttpResponseServerError, JsonResponse
from django.shortcuts import render, resolve_url
from django.template import loader
from django_htmx.http import HttpResponseClientRedirect

from environments.lib.outages import dependency_down
from environments.lifecycle import queue

log = logging.getLogger(__name__)


def permission_denied(request, exception=None):
    return render(request, "403.html", status=403)


def csrf_failure(request, reason=""):
    """A form posted with a missing or stale CSRF token (e.g. after signing in again in
    another tab): say what happened and how to go on, in the portal's look."""
    return render(request, "403_csrf.html", status=403)


def page_not_found(request, exception=None):
    response = render(request, "404.html", status=404)
    response.portal_page = True  # see PortalNotFoundMiddleware
    return response


class PortalNotFoundMiddleware:
    """With DEBUG on (``make run``), Django answers a missing page with its technical
    404 (the URL patterns, the settings' name); people trying the portal should see the
    portal's own page, as in production. JSON answers (the API's) are left alone."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            settings.DEBUG
            and response.status_code == 404
            and not getattr(response, "portal_page", False)
            and response.get("Content-Type", "").startswith("text/html")
        ):
            return page_not_found(request)
        return response


def server_error(request):
    # No context processors: the database may be what failed.
    dependency = dependency_down(sys.exc_info()[1])
    if dependency:
        return outage_response(request, dependency)
    if _is_api(request):
        return JsonResponse({"detail": _API_500}, status=500)
    return HttpResponseServerError(loader.get_template("500.html").render({}))


_API_500 = "Something went wrong on our side; it was logged. Try again in a minute."


def _is_api(request) -> bool:
    return request.path_info.startswith("/api/")


def outage_response(request, dependency: str) -> HttpResponse:
    """503 + Retry-After: JSON for the API, the "back in a moment" page for people."""
    wait = settings.OUTAGE_RETRY_AFTER_SECONDS
    if _is_api(request):
        response: HttpResponse = JsonResponse(
            {
                "detail": f"The portal's {dependency} is unavailable right now. "
                f"Try again in {wait} s."
            },
            status=503,
        )
    else:
        page = loader.get_template("503.html").render(
            {"dependency": dependency, "retry_after": wait}
        )
        response = HttpResponse(page, status=503)
    response["Retry-After"] = str(wait)
    response["Cache-Control"] = "no-store"
    return response


def _remember_exception(sender, request=None, **kwargs):
    """Django turns an exception into a 500 where it happens (each middleware, the view);
    keep it on the request so ``OutageMiddleware`` can tell an outage from a bug."""
    if request is not None:
        request.portal_exception = sys.exc_info()[1]


got_request_exception.connect(_remember_exception, dispatch_uid="portal-remember-exception")


class OutageMiddleware:
    """An uncaught PostgreSQL or Redis error anywhere below becomes a 503 with Retry-After
    (with DEBUG on too, where Django would show its debug page); any other 500 under
    /api/ becomes JSON. Logged once, as a warning, without the trace."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        queue.forget_deferred()
        response = self.get_response(request)
        if response.status_code < 500:
            return response
        exc = getattr(request, "portal_exception", None)
        dependency = dependency_down(exc)
        if dependency:
            log.warning(
                "%s %s: %s unavailable (%s)",
                request.method,
                request.path,
                dependency,
                type(exc).__name__,
            )
            return outage_response(request, dependency)
        if _is_api(request) and not response.get("Content-Type", "").startswith("application/json"):
            return JsonResponse({"detail": _API_500}, status=500)
        return response


class HtmxLoginRedirectMiddleware:
    """An htmx request whose session ended gets the sign-in page as a whole page.

    Without this, htmx follows the 302 of ``login_required`` and swaps the sign-in page
    (header and all) into the polled fragment. ``HX-Redirect`` makes htmx navigate the
    page instead, back to where the user was after signing in.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        login_url = resolve_url(settings.LOGIN_URL)
        if (
            request.htmx
            and response.status_code == 302
            and response.get("Location", "").split("?")[0] == login_url
        ):
            # Back to the page the user was on (its path only: never another host).
            here = urlsplit(request.htmx.current_url or "")
            page = here.path + (f"?{here.query}" if here.query else "")
            target = f"{login_url}?{urlencode({'next': page})}" if page else login_url
            answer = HttpResponseClientRedirect(target)
            answer.status_code = 204  # no body to swap: htmx navigates at once
            return answer
        return response
