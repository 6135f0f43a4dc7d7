"""API endpoints for environments (mounted at /api/v1/environments by urls.py).

List, request, read, extend, tear down, and fetch a namespace-scoped kubeconfig. An
environment is addressed by id or short name, and only if the token may see it.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from ninja import Path, Query, Router, Status
from ninja.errors import HttpError

from environments.access.kubeconfig import kubeconfig_for
from environments.api.app import _require_write, _token, bearer
from environments.api.schemas import (
    ERRORS,
    READ_ERRORS,
    EnvironmentIn,
    EnvironmentListQuery,
    EnvironmentOut,
    EventOut,
    ExtendIn,
    ExtensionRequestOut,
    InventoryOut,
    KubeconfigOut,
    RenameIn,
    environment_out,
    event_out,
    extension_request_out,
)
from environments.catalog.selectors import requestable_version
from environments.governance import audit
from environments.lifecycle import queue, selectors, services
from environments.models import ApiToken, Environment, Team
from environments.recovery import inventory

router = Router(auth=bearer, tags=["environments"])

ENVIRONMENT_REF = r"^[0-9a-fA-F-]{8,36}$"


def _visible(token: ApiToken) -> QuerySet[Environment]:
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


# Operation ids name the module the endpoints were first published from
# (environments/api/routes.py); clients generated from the OpenAPI document use them.


@router.get(
    "",
    response={200: list[EnvironmentOut], **READ_ERRORS},
    summary="Your environments (scope=mine) or your teams' (scope=team)",
    description=(
        "Newest first, one page at a time (`limit`, `offset`). `X-Total-Count` gives the "
        'number of rows, and a `Link: <...>; rel="next"` header points at the next page.'
    ),
    operation_id="environments_api_routes_list_environments",
)
def list_environments(
    request: HttpRequest, response: HttpResponse, filters: Query[EnvironmentListQuery]
) -> list[dict[str, Any]]:
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


@router.post(
    "",
    response={201: EnvironmentOut, **ERRORS},
    summary="Request an environment",
    operation_id="environments_api_routes_create_environment",
)
def create_environment(request: HttpRequest, payload: EnvironmentIn) -> Status[dict[str, Any]]:
    token = _require_write(request)
    version = requestable_version(payload.blueprint)
    # Whether the user may request for the team is the service's decision (team_for);
    # here only the token's own limit: a team (CI) token requests for its team only.
    token_team = token.team  # loaded with the token; None for a personal token
    team: Team | None = token_team
    if payload.team:
        team = Team.objects.filter(slug=payload.team).first()
        if team is None:
            raise Http404(f"No team {payload.team!r}.")
        if token_team is not None and team.pk != token_team.pk:
            raise HttpError(403, f"This token acts for team {token_team.slug} only.")
    environment = services.request_environment(
        user=token.user,
        version=version,
        parameters=payload.parameters,
        ttl_seconds=payload.ttl_seconds,
        team=team,
        reason=payload.reason,
        display_name=payload.display_name,
        ip=audit.client_ip(request),
    )
    return Status(201, _with_notice(environment_out(_environment(token, str(environment.pk)))))


def _with_notice(answer: dict[str, Any]) -> dict[str, Any]:
    """Say so when the request stands but its job waits for the queue (lifecycle.queue)."""
    if queue.deferred(answer["id"]):
        answer["notice"] = queue.WAITING_FOR_QUEUE
    return answer


@router.get(
    "/{ref}",
    response={200: EnvironmentOut, **READ_ERRORS},
    summary="One environment, by id or short name",
    operation_id="environments_api_routes_get_environment",
)
def get_environment(
    request: HttpRequest, ref: str = Path(..., pattern=ENVIRONMENT_REF)
) -> dict[str, Any]:
    return environment_out(_environment(_token(request), ref))


@router.get(
    "/{ref}/events",
    response={200: list[EventOut], **READ_ERRORS},
    summary="An environment's timeline",
    operation_id="environments_api_routes_list_events",
)
def list_events(
    request: HttpRequest, ref: str = Path(..., pattern=ENVIRONMENT_REF)
) -> list[dict[str, Any]]:
    environment = _environment(_token(request), ref)
    return [event_out(e) for e in environment.events.all()]


@router.get(
    "/{ref}/inventory",
    response={200: InventoryOut, **READ_ERRORS},
    summary="What an environment owns on the cluster (kind, name, uid, created, spec hash)",
)
def environment_inventory(
    request: HttpRequest, ref: str = Path(..., pattern=ENVIRONMENT_REF)
) -> dict[str, Any]:
    environment = _environment(_token(request), ref)
    observed_at, objects = inventory.read(environment.pk)
    return {
        "environment": str(environment.pk),
        "name": environment.name,
        "observed_at": observed_at,
        "objects": objects,
    }


@router.patch(
    "/{ref}",
    response={200: EnvironmentOut, **ERRORS},
    summary="Rename: set or clear the name people call it by",
    operation_id="environments_api_rename_environment",
)
def rename_environment(
    request: HttpRequest, payload: RenameIn, ref: str = Path(..., pattern=ENVIRONMENT_REF)
) -> dict[str, Any]:
    token = _require_write(request)
    environment = services.rename_environment(
        environment=_environment(token, ref),
        user=token.user,
        display_name=payload.display_name,
        ip=audit.client_ip(request),
    )
    return environment_out(_environment(token, str(environment.pk)))


@router.post(
    "/{ref}/extend",
    response={200: EnvironmentOut, 202: ExtensionRequestOut, **ERRORS},
    summary="Push the expiry back",
    description=(
        "200 with the environment when extended. An extension past what the blueprint's "
        "approval policy approves by itself is not applied: 202 with the extension request "
        "that waits for an approver (see /extension-requests); the environment keeps its "
        "current expiry meanwhile."
    ),
    operation_id="environments_api_routes_extend_environment",
)
def extend_environment(
    request: HttpRequest, payload: ExtendIn, ref: str = Path(..., pattern=ENVIRONMENT_REF)
) -> Any:
    token = _require_write(request)
    environment = services.extend_environment(
        environment=_environment(token, ref),
        user=token.user,
        seconds=payload.seconds,
        reason=payload.reason,
        ip=audit.client_ip(request),
    )
    queued = environment.queued_extension  # type: ignore[attr-defined]
    if queued is not None:
        return Status(202, extension_request_out(queued))
    return environment_out(_environment(token, str(environment.pk)))


@router.delete(
    "/{ref}",
    response={202: EnvironmentOut, **ERRORS},
    summary="Start teardown",
    operation_id="environments_api_routes_delete_environment",
)
def delete_environment(
    request: HttpRequest, ref: str = Path(..., pattern=ENVIRONMENT_REF)
) -> Status[dict[str, Any]]:
    token = _require_write(request)
    environment = _environment(token, ref)
    services.delete_environment(
        environment=environment, user=token.user, ip=audit.client_ip(request)
    )
    return Status(202, _with_notice(environment_out(_environment(token, str(environment.pk)))))


@router.post(
    "/{ref}/kubeconfig",
    response={200: KubeconfigOut, **ERRORS},
    summary="A kubeconfig scoped to the environment's namespace (needs write scope)",
    operation_id="environments_api_routes_environment_kubeconfig",
)
def environment_kubeconfig(
    request: HttpRequest, ref: str = Path(..., pattern=ENVIRONMENT_REF)
) -> dict[str, Any]:
    # Credentials are as sensitive as a change: a read-only token cannot fetch them.
    token = _require_write(request)
    environment = _environment(token, ref)
    text = kubeconfig_for(environment=environment, user=token.user, ip=audit.client_ip(request))
    return {
        "namespace": environment.namespace,
        "expires_at": environment.expires_at,
        "kubeconfig": text,
    }
