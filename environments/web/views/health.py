"""/healthz, /readyz and /metrics: for Kubernetes probes and Prometheus, not for people.

``ProbeMiddleware`` (first in settings.MIDDLEWARE) answers them before anything else
runs: no session, no host check (the kubelet and Prometheus call the pod by its IP), no
HTTPS redirect (probes speak plain HTTP to the pod), no database unless the check needs
it. No sign-in; nothing in an answer names a URL, a user or a password.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from environments.web import health, metrics


def healthz(request: HttpRequest) -> HttpResponse:
    """The process lives and answers HTTP: no database, no Redis (liveness)."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> HttpResponse:
    """200 when every check in ``READYZ_CHECKS`` passes, else 503 naming the failures."""
    ready, checks = health.readiness()
    body = {
        "status": "ok" if ready else "unavailable",
        "checks": checks,
        "required": list(settings.READYZ_CHECKS),
    }
    if ready and any(value != "ok" for value in checks.values()):
        body["status"] = "degraded"  # serving, but something not required is wrong
    response = JsonResponse(body, status=200 if ready else 503)
    response["Cache-Control"] = "no-store"
    return response


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; a bearer token is asked for when METRICS_TOKEN is set."""
    token = settings.METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            response = HttpResponse("Send 'Authorization: Bearer <METRICS_TOKEN>'.\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)


PROBES = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics_view}


class ProbeMiddleware:
    """Answers the probe paths before the rest of the stack (see the module docstring)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = PROBES.get(request.path_info.rstrip("/") or "/")
        if view is None:
            return self.get_response(request)
        if request.method not in {"GET", "HEAD"}:
            return HttpResponse("GET only.\n", status=405, headers={"Allow": "GET, HEAD"})
        return view(request)
