"""Every answer under /api/ is JSON, errors included.

django-ninja answers the errors it raises itself as JSON (app.py's handlers); what it
does not see is answered here: a path that matches no endpoint (404, with a hint when
only a trailing slash is wrong), a method an endpoint does not take (405, with
``Allow``), and anything else Django answers with HTML under /api/ (a body over the
size limit read before the API saw it: 413).
"""

from __future__ import annotations

import json

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve

from environments.api.app import too_big_detail

API_PREFIX = "/api/"


def _exists(path: str) -> bool:
    try:
        match = resolve(path)
    except Resolver404:
        return False
    return getattr(match.func, "api_path_exists", True) is True


def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """The last URL under /api/v1/: no endpoint has this path."""
    path = request.path_info
    hint = ""
    if path.endswith("/") and _exists(path.rstrip("/")):
        hint = f" Did you mean {path.rstrip('/')} (without the trailing slash)?"
    elif not path.endswith("/") and _exists(path + "/"):
        hint = f" Did you mean {path}/ (with a trailing slash)?"
    return JsonResponse(
        {"detail": f"No API endpoint at {path}.{hint} The endpoints are listed at /api/v1/docs."},
        status=404,
    )


not_found.api_path_exists = False  # type: ignore[attr-defined]


class JsonErrorsMiddleware:
    """Turn any non-JSON error answer under /api/ into ``{"detail": ...}`` JSON,
    keeping its status and its ``Allow`` header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            not request.path_info.startswith(API_PREFIX)
            or response.status_code < 400
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        status = response.status_code
        if isinstance(getattr(request, "portal_exception", None), RequestDataTooBig):
            status, detail = 413, too_big_detail()
        elif status == 405:
            allowed = response.get("Allow", "")
            detail = f"{request.method} is not allowed at {request.path_info}; allowed: {allowed}."
        elif status == 404:
            return not_found(request)
        else:
            detail = {
                400: "Bad request.",
                403: "Forbidden.",
                413: too_big_detail(),
            }.get(status, f"The request failed (HTTP {status}).")
        answer = HttpResponse(
            json.dumps({"detail": detail}), status=status, content_type="application/json"
        )
        if response.has_header("Allow"):
            answer["Allow"] = response["Allow"]
        return answer
