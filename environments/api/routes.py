"""The REST API (django-ninja): the same services as the UI, so the rules are identical.

Every answer is JSON; every error has a ``detail`` a person can read. Bearer tokens
(environments/tokens.py) authenticate; read scope may GET, write scope may change.
The OpenAPI document at /api/v1/openapi.json is generated from the schemas below, and
tests/test_schemathesis.py checks the API against it.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from ninja import Field, NinjaAPI, Path, Query, Schema, Status
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError
from ninja.security import HttpBearer
from ninja.throttling import BaseThrottle
from pydantic import field_validator

from environments.access import tokens
from environments.access.kubeconfig import kubeconfig_for
from environments.catalog.selectors import catalogue, requestable_version
from environments.catalog.spec import ParametersInvalid
from environments.governance import audit
from environments.integrations import github
from environments.lib.errors import ServiceError
from environments.lifecycle import selectors, services
from environments.models import ApiToken, Environment, Team


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

MAX_SECONDS = 366 * 86400
ENVIRONMENT_REF = r"^[0-9a-fA-F-]{8,36}$"


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
    return request.auth  # type: ignore[attr-defined]


def _require_write(request: HttpRequest) -> ApiToken:
    token = _token(request)
    if token.scope != ApiToken.Scope.WRITE:
        raise HttpError(
            403, "This token is read-only; create a token with write scope to change things."
        )
    return token


# --- Errors -----------------------------------------------------------------------------


class Error(Schema):
    detail: str
    errors: dict[str, str] | list[dict[str, Any]] | None = None


# 400: a body that is not JSON at all.
ERRORS = {400: Error, 401: Error, 403: Error, 404: Error, 409: Error, 422: Error, 429: Error}
READ_ERRORS = {401: Error, 404: Error, 422: Error, 429: Error}


def _error(request, status: int, detail: str, errors=None):
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return api.create_response(request, body, status=status)


@api.exception_handler(Throttled)
def _throttled(request, exc: Throttled):
    limit, window = settings.API_RATE_LIMIT
    wait = math.ceil(exc.wait or 1)
    return _error(
        request,
        429,
        f"Too many requests: this token may make {limit} calls per {window} s. "
        f"Try again in {wait} s.",
    )


@api.exception_handler(ServiceError)
def _service_error(request, exc):
    return _error(request, 409, str(exc))


@api.exception_handler(PermissionDenied)
def _permission_denied(request, exc):
    return _error(request, 403, str(exc) or "You may not do that.")


@api.exception_handler(ParametersInvalid)
def _parameters_invalid(request, exc: ParametersInvalid):
    return _error(request, 422, f"Invalid parameters: {exc}", exc.errors)


@api.exception_handler(Http404)
def _not_found(request, exc):
    return _error(request, 404, str(exc) or "Not found.")


# A parameter value may be any of these; pydantic reports one error per member.
_VALUE_TYPES = {"str", "int", "float", "bool", "none"}


def _plain_location(loc) -> str:
    """'body.payload.ttl_seconds' -> 'ttl_seconds': the name the client sent."""
    parts = [str(part) for part in loc[1:]]
    if parts[:1] == ["payload"]:
        parts = parts[1:]
    return ".".join(parts) if parts else "body"


@api.exception_handler(ValidationError)
def _validation_error(request, exc: ValidationError):
    problems: dict[str, str] = {}
    for error in exc.errors:
        loc = tuple(error.get("loc", ()))
        if loc and str(loc[-1]) in _VALUE_TYPES:  # one sentence for the union, not four
            problems[_plain_location(loc[:-1])] = "must be a string, a number, true/false or null"
            continue
        where = _plain_location(loc)
        message = str(error.get("msg"))
        if where == "body" and error.get("type") == "missing":
            message = 'send a JSON object, for example {"blueprint": "shop-demo"}'
        problems.setdefault(where, message)
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        for e in exc.errors
    ]
    detail = "; ".join(f"{where}: {message}" for where, message in problems.items())
    return _error(request, 422, "Invalid request: " + detail, errors)


# --- Schemas ----------------------------------------------------------------------------


class BlueprintOut(Schema):
    name: str
    title: str
    purpose: str
    description: str
    version: int
    hourly_price: str
    currency: str
    ttl_default_seconds: int
    ttl_max_seconds: int
    approval: str
    parameters: list[dict[str, Any]]


class EnvironmentOut(Schema):
    id: uuid.UUID
    name: str
    namespace: str
    state: str
    blueprint: str
    blueprint_version: int
    team: str
    owner: str
    parameters: dict[str, Any]
    urls: dict[str, str]
    reason: str
    created_at: datetime
    expires_at: datetime | None
    time_left_seconds: int | None
    accrued_cost: str
    projected_cost: str
    hourly_price: str
    currency: str
    last_error: str


class EventOut(Schema):
    created_at: datetime
    kind: str
    state: str
    message: str


ParameterValue = str | int | float | bool | None


def _not_a_boolean(value):
    # JSON true is not a 1-second TTL (pydantic would read it as 1); 3600.0 is 3600.
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds, not true or false")
    return value


# PostgreSQL text cannot hold NUL: refuse it here as bad input rather than fail later.
Text = Annotated[str, Field(max_length=2000, pattern=r"^[^\x00]*$")]


class EnvironmentIn(Schema):
    blueprint: str = Field(..., min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)
    ttl_seconds: int | None = Field(None, ge=services.MIN_TTL_SECONDS, le=MAX_SECONDS)
    team: str | None = Field(None, min_length=1, max_length=50, pattern=r"^[-a-zA-Z0-9_]+$")
    reason: Text = ""

    _ttl_not_a_boolean = field_validator("ttl_seconds", mode="before")(_not_a_boolean)

    @field_validator("parameters")
    @classmethod
    def _no_nul(cls, value: dict) -> dict:
        for name, item in value.items():
            if "\x00" in name or (isinstance(item, str) and "\x00" in item):
                raise ValueError("parameter names and values cannot contain NUL characters")
        return value


class ExtendIn(Schema):
    seconds: int = Field(..., ge=services.MIN_EXTENSION_SECONDS, le=MAX_SECONDS)
    reason: Text = ""

    _seconds_not_a_boolean = field_validator("seconds", mode="before")(_not_a_boolean)


class EnvironmentListQuery(Schema):
    scope: Literal["mine", "team"] = "mine"
    limit: int = Field(100, ge=1, le=500, description="Page size (at most 500).")
    offset: int = Field(0, ge=0, le=1_000_000, description="Rows to skip, newest first.")


def _money(amount) -> str:
    return f"{amount:.2f}"


def environment_out(environment: Environment) -> dict[str, Any]:
    time_left = environment.time_left
    version = environment.blueprint_version
    return {
        "id": environment.pk,
        "name": environment.name,
        "namespace": environment.namespace,
        "state": environment.state,
        "blueprint": version.blueprint.name,
        "blueprint_version": version.number,
        "team": environment.team.slug,
        "owner": environment.owner.email or environment.owner.get_username(),
        "parameters": environment.parameters,
        "urls": environment.urls,
        "reason": environment.reason,
        "created_at": environment.created_at,
        "expires_at": environment.expires_at,
        "time_left_seconds": int(time_left.total_seconds()) if time_left is not None else None,
        "accrued_cost": _money(environment.accrued_cost),
        "projected_cost": _money(environment.projected_cost),
        "hourly_price": f"{environment.hourly_price:.4f}",
        "currency": settings.COST_CURRENCY,
        "last_error": environment.last_error,
    }


def _visible(token: ApiToken):
    """What the token may see: a personal token what its user may see; a team token
    exactly its team's environments."""
    if token.team_id is not None:
        # A team (CI) token acts for its team only, even if its owner is an admin.
        visible = Q(team_id=token.team_id)
    else:
        visible = Q(pk__in=Environment.objects.visible_to(token.user).values("pk"))
    return Environment.objects.select_related(
        "owner", "team", "blueprint_version__blueprint"
    ).filter(visible)


def _environment(token: ApiToken, ref: str) -> Environment:
    """By id or short name; 404 for anything the token may not see (no IDOR)."""
    rows = _visible(token)
    try:
        found = rows.filter(pk=uuid.UUID(ref)).first() if len(ref) > 8 else None
    except ValueError:
        found = None
    if found is None and len(ref) == 8:
        found = rows.filter(name=ref.lower()).first()
    if found is None:
        raise Http404("No such environment, or you may not see it.")
    return found


# --- Blueprints -------------------------------------------------------------------------


@api.get(
    "/blueprints",
    auth=bearer,
    response={200: list[BlueprintOut], 401: Error, 429: Error},
    tags=["blueprints"],
    summary="Blueprints open to new requests",
)
def list_blueprints(request):
    rows = []
    for _purpose, versions in catalogue():
        for version in versions:
            spec = version.spec
            rows.append(
                {
                    "name": version.blueprint.name,
                    "title": spec["title"],
                    "purpose": spec["purpose"],
                    "description": spec.get("description", ""),
                    "version": version.number,
                    "hourly_price": f"{version.hourly_price:.4f}",
                    "currency": settings.COST_CURRENCY,
                    "ttl_default_seconds": spec["ttl"]["default"],
                    "ttl_max_seconds": spec["ttl"]["max"],
                    "approval": spec["approval"],
                    "parameters": spec["parameters"],
                }
            )
    return rows


# --- Environments -----------------------------------------------------------------------


@api.get(
    "/environments",
    auth=bearer,
    response={200: list[EnvironmentOut], **READ_ERRORS},
    tags=["environments"],
    summary="Your environments (scope=mine) or your teams' (scope=team)",
    description=(
        "Newest first, one page at a time (`limit`, `offset`). `X-Total-Count` gives the "
        'number of rows, and a `Link: <...>; rel="next"` header points at the next page.'
    ),
)
def list_environments(request, response: HttpResponse, filters: Query[EnvironmentListQuery]):
    token = _token(request)
    # The API shows parameters, which the dashboard's selector defers: load them here.
    rows = (
        selectors.environments_for(user=token.user, scope=filters.scope)
        .defer(None)
        .order_by("-created_at", "-pk")  # stable pages
    )
    if token.team_id is not None:
        rows = rows.filter(team_id=token.team_id)
    total = rows.count()
    end = filters.offset + filters.limit
    response["X-Total-Count"] = str(total)
    if end < total:
        query = request.GET.copy()
        query["offset"] = str(end)
        query["limit"] = str(filters.limit)
        response["Link"] = (
            f'<{request.build_absolute_uri(request.path)}?{query.urlencode()}>; rel="next"'
        )
    return [environment_out(e) for e in rows[filters.offset : end]]


@api.post(
    "/environments",
    auth=bearer,
    response={201: EnvironmentOut, **ERRORS},
    tags=["environments"],
    summary="Request an environment",
)
def create_environment(request, payload: EnvironmentIn):
    token = _require_write(request)
    version = requestable_version(payload.blueprint)
    team = None
    if payload.team:
        team = Team.objects.filter(slug=payload.team).first()
        if team is None:
            raise Http404(f"No team {payload.team!r}.")
    elif token.team_id is not None:
        team = token.team
    if token.team_id is not None and team.pk != token.team_id:
        raise HttpError(403, f"This token acts for team {token.team.slug} only.")
    environment = services.request_environment(
        user=token.user,
        version=version,
        parameters=payload.parameters,
        ttl_seconds=payload.ttl_seconds,
        team=team,
        reason=payload.reason,
        ip=audit.client_ip(request),
    )
    return Status(201, environment_out(_environment(token, str(environment.pk))))


@api.get(
    "/environments/{ref}",
    auth=bearer,
    response={200: EnvironmentOut, **READ_ERRORS},
    tags=["environments"],
    summary="One environment, by id or short name",
)
def get_environment(request, ref: str = Path(..., pattern=ENVIRONMENT_REF)):
    return environment_out(_environment(_token(request), ref))


@api.get(
    "/environments/{ref}/events",
    auth=bearer,
    response={200: list[EventOut], **READ_ERRORS},
    tags=["environments"],
    summary="An environment's timeline",
)
def list_events(request, ref: str = Path(..., pattern=ENVIRONMENT_REF)):
    environment = _environment(_token(request), ref)
    return [
        {"created_at": e.created_at, "kind": e.kind, "state": e.state, "message": e.message}
        for e in environment.events.all()
    ]


@api.post(
    "/environments/{ref}/extend",
    auth=bearer,
    response={200: EnvironmentOut, **ERRORS},
    tags=["environments"],
    summary="Push the expiry back",
)
def extend_environment(request, payload: ExtendIn, ref: str = Path(..., pattern=ENVIRONMENT_REF)):
    token = _require_write(request)
    environment = services.extend_environment(
        environment=_environment(token, ref),
        user=token.user,
        seconds=payload.seconds,
        reason=payload.reason,
        ip=audit.client_ip(request),
    )
    return environment_out(_environment(token, str(environment.pk)))


@api.delete(
    "/environments/{ref}",
    auth=bearer,
    response={202: EnvironmentOut, **ERRORS},
    tags=["environments"],
    summary="Start teardown",
)
def delete_environment(request, ref: str = Path(..., pattern=ENVIRONMENT_REF)):
    token = _require_write(request)
    environment = _environment(token, ref)
    services.delete_environment(
        environment=environment, user=token.user, ip=audit.client_ip(request)
    )
    return Status(202, environment_out(_environment(token, str(environment.pk))))


class KubeconfigOut(Schema):
    namespace: str
    expires_at: datetime
    kubeconfig: str = Field(description="YAML; the token in it is not stored by Ephemera")


@api.post(
    "/environments/{ref}/kubeconfig",
    auth=bearer,
    response={200: KubeconfigOut, **ERRORS},
    tags=["environments"],
    summary="A kubeconfig scoped to the environment's namespace (needs write scope)",
)
def environment_kubeconfig(request, ref: str = Path(..., pattern=ENVIRONMENT_REF)):
    # Credentials are as sensitive as a change: a read-only token cannot fetch them.
    token = _require_write(request)
    environment = _environment(token, ref)
    text = kubeconfig_for(environment=environment, user=token.user, ip=audit.client_ip(request))
    return {
        "namespace": environment.namespace,
        "expires_at": environment.expires_at,
        "kubeconfig": text,
    }


# --- Git hosts --------------------------------------------------------------------------


class HookOut(Schema):
    status: str
    environment: uuid.UUID | None = None
    urls: dict[str, str] = Field(default_factory=dict)
    state: str | None = None


@api.post(
    "/hooks/github/",
    auth=None,
    response={
        200: HookOut,
        201: HookOut,
        400: Error,
        401: Error,
        403: Error,
        404: Error,
        409: Error,
        422: Error,
    },
    tags=["hooks"],
    summary="GitHub pull_request webhook (signed with the repository hook's secret)",
)
def github_hook(request):
    status, body = github.handle_delivery(
        event=request.headers.get("X-GitHub-Event", ""),
        delivery_id=request.headers.get("X-GitHub-Delivery", ""),
        signature=request.headers.get("X-Hub-Signature-256", ""),
        body=request.body,
    )
    return Status(status, body)
