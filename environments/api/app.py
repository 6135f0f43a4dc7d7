"""The REST API (django-ninja) itself: the NinjaAPI instance, token auth, throttle, errors.

The API calls the same services as the UI, so the rules are identical. Every answer is
JSON; every error has a ``detail`` a person can read. Bearer tokens
(environments/access/tokens.py) authenticate; read scope may GET, write scope may change.

The endpoints live in one router per resource (blueprints.py, environments.py, hooks.py);
urls.py mounts them on ``api``. The OpenAPI document at /api/v1/openapi.json is generated
from their schemas (schemas.py), and tests/test_schemathesis.py checks the API against it.
"""

from __future__ import annotations

import difflib
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError
from ninja.security import HttpBearer
from ninja.throttling import BaseThrottle

from environments.access import tokens
from environments.catalog.spec import ParametersInvalid
from environments.lib.errors import ServiceError
from environments.lib.outages import dependency_down
from environments.lifecycle import idempotency
from environments.models import ApiToken

log = logging.getLogger(__name__)


class TokenRateThrottle(BaseThrottle):
    """At most ``settings.API_RATE_LIMIT`` calls per window for each API token.

    A fixed window counted with Redis INCR, so the limit is exact across web workers and
    threads (ninja's own throttles keep a history list per instance and are not). Calls
    that are not token-authenticated (the GitHub hook) are checked by signature instead.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def allow_request(self, request: HttpRequest) -> bool:
        token = getattr(request, "auth", None)
        if not isinstance(token, ApiToken):
            return True
        limit, window = settings.API_RATE_LIMIT
        now = time.time()
        slot = int(now // window)
        key = f"api-rate:{token.pk}:{window}:{slot}"
        cache.add(key, 0, timeout=window + 5)
        self._local.wait = (slot + 1) * window - now
        return cache.incr(key) <= limit

    def wait(self) -> float | None:
        return getattr(self._local, "wait", None)


api = NinjaAPI(
    title="Ephemera API",
    version="1",
    urls_namespace="api",
    docs_url="/docs",
    description="Self-service short-lived Kubernetes environments. See docs/api.md.",
    throttle=TokenRateThrottle(),
)


# --- Authentication ---------------------------------------------------------------------


class TokenAuth(HttpBearer):
    """``Authorization: Bearer eph_...``; the token's user acts through the services."""

    def __call__(self, request: HttpRequest) -> ApiToken | None:
        if not request.headers.get("Authorization"):
            raise AuthenticationError(
                message="Authentication required: send 'Authorization: Bearer <API token>'."
            )
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken:
        api_token = tokens.authenticate(token)
        if api_token is None:
            raise AuthenticationError(message="The API token is invalid, expired or revoked.")
        return api_token


bearer = TokenAuth()


def _token(request: HttpRequest) -> ApiToken:
    """The token that authenticated ``request`` (set by ``bearer``)."""
    return request.auth  # type: ignore[attr-defined]


def _require_write(request: HttpRequest) -> ApiToken:
    """The request's token, or 403 if it may only read."""
    token = _token(request)
    if token.scope != ApiToken.Scope.WRITE:
        raise HttpError(
            403, "This token is read-only; create a token with write scope to change things."
        )
    return token


# --- Errors -----------------------------------------------------------------------------


def _error(
    request: HttpRequest,
    status: int,
    detail: str,
    errors: dict[str, str] | list[dict[str, Any]] | None = None,
) -> HttpResponse:
    """A JSON error answer shaped like ``schemas.Error``."""
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return api.create_response(request, body, status=status)


@api.exception_handler(Throttled)
def _throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
    limit, window = settings.API_RATE_LIMIT
    wait = math.ceil(exc.wait or 1)
    return _error(
        request,
        429,
        f"Too many requests: this token may make {limit} calls per {window} s. "
        f"Try again in {wait} s.",
    )


@api.exception_handler(ServiceError)
def _service_error(request: HttpRequest, exc: ServiceError) -> HttpResponse:
    if isinstance(exc, (idempotency.KeyReused, idempotency.KeyInvalid)):
        return _error(request, 422, str(exc))  # the request itself is wrong, not the state
    return _error(request, 409, str(exc))


def too_big_detail() -> str:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return (
        f"The request body is larger than the limit of {limit / 1048576:.1f} MiB ({limit} bytes)."
    )


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    # Django refuses to read a body over DATA_UPLOAD_MAX_MEMORY_SIZE; that is the
    # client's doing (413), not a failure to log with a trace.
    return _error(request, 413, too_big_detail())


@api.exception_handler(PermissionDenied)
def _permission_denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return _error(request, 403, str(exc) or "You may not do that.")


@api.exception_handler(ParametersInvalid)
def _parameters_invalid(request: HttpRequest, exc: ParametersInvalid) -> HttpResponse:
    return _error(request, 422, f"Invalid parameters: {exc}", exc.errors)


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    """PostgreSQL or Redis down: 503 with Retry-After. Anything else: a JSON 500, logged
    with its trace for us, one sentence for the client (never the trace)."""
    dependency = dependency_down(exc)
    if dependency:
        wait = settings.OUTAGE_RETRY_AFTER_SECONDS
        log.warning(
            "API %s %s: %s unavailable (%s)",
            request.method,
            request.path,
            dependency,
            type(exc).__name__,
        )
        response = _error(
            request,
            503,
            f"The portal's {dependency} is unavailable right now. Try again in {wait} s.",
        )
        response["Retry-After"] = str(wait)
        return response
    log.exception("API %s %s failed", request.method, request.path)
    return _error(
        request, 500, "Something went wrong on our side; it was logged. Try again in a minute."
    )


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, 404, str(exc) or "Not found.")


# A parameter value may be any of these; pydantic reports one error per member.
_VALUE_TYPES = {"str", "constrained-str", "int", "float", "bool", "none"}


def _plain_location(loc: Sequence[Any]) -> str:
    """'body.payload.ttl_seconds' -> 'ttl_seconds': the name the client sent."""
    parts = [str(part) for part in loc[1:]]
    if parts[:1] == ["payload"]:
        parts = parts[1:]
    return ".".join(parts) if parts else "body"


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    problems: dict[str, str] = {}
    for error in exc.errors:
        loc = tuple(error.get("loc", ()))
        if loc and str(loc[-1]) in _VALUE_TYPES:  # one sentence for the union, not four
            problems[_plain_location(loc[:-1])] = "must be a string, a number, true/false or null"
            continue
        where = _plain_location(loc)
        message = _plain_message(error)
        if where == "body" and error.get("type") in {"missing", "model_type", "dict_type"}:
            message = 'send a JSON object, for example {"blueprint": "shop-demo"}'
        problems.setdefault(where, message)
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        for e in exc.errors
    ]
    detail = "; ".join(f"{where}: {message}" for where, message in problems.items())
    return _error(request, 422, "Invalid request: " + detail, errors)


# Every field any request body declares: a misspelt one gets a suggestion.
_KNOWN_FIELDS = (
    "blueprint",
    "parameters",
    "ttl_seconds",
    "team",
    "reason",
    "display_name",
    "external_key",
    "seconds",
)
_JSON_TYPES = {
    "int_type": 'a whole number (3600, not "3600")',
    "int_from_float": "a whole number (3600, not 3600.5)",
    "string_type": 'a string (in "quotes")',
    "bool_type": "true or false",
    "float_type": "a number",
    "dict_type": "a JSON object",
}


def _plain_message(error: dict[str, Any]) -> str:
    """pydantic's message, said for someone writing JSON by hand, on one line."""
    kind = str(error.get("type", ""))
    if kind == "extra_forbidden":
        name = str(error.get("loc", ("",))[-1])
        close = [f for f in _KNOWN_FIELDS if f.startswith(name) or name.startswith(f)]
        close = close or difflib.get_close_matches(name, _KNOWN_FIELDS, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else "remove it"
        return f"unknown field; {hint}"
    if kind in _JSON_TYPES:
        return f"must be {_JSON_TYPES[kind]}"
    return " ".join(str(error.get("msg", "")).split())
