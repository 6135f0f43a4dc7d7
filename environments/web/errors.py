"""Error pages in the portal's look; never a stack trace."""

from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.http import HttpResponseServerError
from django.shortcuts import render, resolve_url
from django.template import loader
from django_htmx.http import HttpResponseClientRedirect


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
    return HttpResponseServerError(loader.get_template("500.html").render({}))


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
