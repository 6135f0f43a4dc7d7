"""API endpoints for environments (mounted at /api/v1/environments by urls.py).

List, request, read, extend, tear down, and fetch a namespace-scoped kubeconfig. An
environment is addressed by id or short name, and only if the token may see it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from ninja import Header, Path, Query, Router, Status
from ninja.errors import HttpError
from ninja.responses import NinjaJSONEncoder

from environments.access.kubeconfig import kubeconfig_for
from environments.api.app import _require_write, _token, bearer
from environments.api.schemas import (
    ERRORS,
    READ_ERRORS,
    BulkIn,
    BulkOut,
    EnvironmentIn,
    EnvironmentListQuery,
    EnvironmentOut,
    EnvironmentPatchIn,
    EventOut,
    ExtendIn,
    ExtensionRequestOut,
    InventoryOut,
    KubeconfigOut,
    WaitQuery,
    environment_out,
    event_out,
    extension_request_out,
)
from environments.catalog.selectors import requestable_version
from environments.governance import audit
from environments.lib.errors import ServiceError
from environments.lifecycle import bulk, idempotency, pipelines, queue, selectors, services
from environments.lifecycle.states import State
from environments.models import ApiToken, Environment, IdempotencyKey, Team
from environments.recovery import inventory

router = Router(auth=bearer, tags=["environments"])

ENVIRONMENT_REF = r"^[0-9a-fA-F-]{8,36}$"


def _visible(token: ApiToken) -> QuerySet[Environment]:
    """What the token may see: a personal token what its user may see; a team token
    exactly its team's environments."""
    if token.team_id is not None:
        # A team (CI) token acts for its team only, even if its owner is an admin.
        visible = Q(team_id=token.team_id, pooled=False)
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


# OpenAPI links: what a client (or schemathesis, statefully) can do next with the id in
# an answer. Operation ids as published below.
_NEXT = {
    "get": ("GetEnvironment", "environments_api_routes_get_environment"),
    "events": ("ListEvents", "environments_api_routes_list_events"),
    "extend": ("ExtendEnvironment", "environments_api_routes_extend_environment"),
    "change": ("ChangeEnvironment", "environments_api_rename_environment"),
    "delete": ("DeleteEnvironment", "environments_api_routes_delete_environment"),
}


def _links(status: int, *steps: str) -> dict[str, Any]:
    """``openapi_extra`` declaring links from the ``status`` answer's ``id`` to ``steps``."""
    links = {
        _NEXT[step][0]: {
            "operationId": _NEXT[step][1],
            "parameters": {"ref": "$response.body#/id"},
        }
        for step in steps
    }
    # An int key, like ninja's own: deep-merged into the generated response, not beside it.
    return {"responses": {status: {"links": links}}}


# Operation ids name the module the endpoints were first published from
# (environments/api/routes.py); clients generated from the OpenAPI document use them.


@router.get(
    "",
    response={200: list[EnvironmentOut], **READ_ERRORS},
    summary="Your environments (scope=mine) or your teams' (scope=team)",
    description=(
        "Newest first, one page at a time (`limit`, `offset`). `X-Total-Count` gives the "
        'number of rows, and a `Link: <...>; rel="next"` header points at the next page. '
        "Filters: `state` (repeat it or separate with commas), `blueprint`, `reason` and "
        "`external_key` (exact values)."
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
    rows = _filtered(rows, filters)
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


CREATE_DESCRIPTION = (
    "201 with the new environment. With `external_key`, if your team already has an "
    "active environment of this blueprint with that key, its parameters are updated "
    "instead (as with PATCH) and the answer is 200.\n\n"
    "`Idempotency-Key` (1-200 printable characters): a retry with the same key within "
    "24 hours gets the first answer again (same status and body, header "
    "`Idempotent-Replayed: true`) and creates nothing; the same key with another body is "
    "refused (422). Refusals are not remembered: after fixing the cause, retry with the "
    "same key.\n\n"
    "`wait`: see GET /environments/{ref}."
)


@router.post(
    "",
    response={200: EnvironmentOut, 201: EnvironmentOut, **ERRORS},
    summary="Request an environment (or update the one with the same external key)",
    description=CREATE_DESCRIPTION,
    operation_id="environments_api_routes_create_environment",
    openapi_extra=_links(201, "get", "events", "extend", "change", "delete"),
)
def create_environment(
    request: HttpRequest,
    response: HttpResponse,
    payload: EnvironmentIn,
    waiting: Query[WaitQuery],
    idempotency_key: str | None = Header(
        None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=idempotency.KEY_MAX_LENGTH,
        pattern=r"^[\x20-\x7e]+$",
        description="Makes a retry safe: the same key within 24 hours replays the first "
        "answer instead of creating again.",
    ),
) -> Status[dict[str, Any]]:
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

    def act() -> tuple[int, dict[str, Any]]:
        fields: dict[str, Any] = {
            "user": token.user,
            "version": version,
            "parameters": payload.parameters,
            "ttl_seconds": payload.ttl_seconds,
            "team": team,
            "reason": payload.reason,
            "display_name": payload.display_name,
            "ip": audit.client_ip(request),
        }
        if payload.external_key:
            environment, created = pipelines.request_or_update(
                external_key=payload.external_key, **fields
            )
        else:
            environment, created = services.request_environment(**fields), True
        answer = environment_out(_environment(token, str(environment.pk)))
        answer["from_pool"] = getattr(environment, "from_pool", False)
        return (201 if created else 200), answer

    if idempotency_key is None:
        status, answer = act()
        return Status(status, _waited(request, _with_notice(answer), waiting.wait))

    key = idempotency.check_key(idempotency_key)
    request_hash = idempotency.fingerprint(
        method="POST", path=request.path, body=payload.model_dump(mode="json")
    )
    claimed: IdempotencyKey | idempotency.Replay | None
    claimed = idempotency.replay(user=token.user, key=key, request_hash=request_hash)
    if claimed is None:
        # The key, the environment and the answer commit together (lifecycle.idempotency).
        with transaction.atomic():
            claimed = idempotency.claim(user=token.user, key=key, request_hash=request_hash)
            if isinstance(claimed, IdempotencyKey):
                status, answer = act()
                idempotency.remember(claimed, status=status, body=_json(answer))
    if isinstance(claimed, idempotency.Replay):
        response["Idempotent-Replayed"] = "true"
        return Status(claimed.status, claimed.body)
    answer = _waited(request, _with_notice(answer), waiting.wait)
    if waiting.wait:  # a retry gets exactly what this caller got
        idempotency.remember(claimed, status=status, body=_json(answer))
    return Status(status, answer)


def _json(answer: dict[str, Any]) -> Any:
    """The answer as stored JSON (ids, times and decimals as the API writes them)."""
    return json.loads(json.dumps(answer, cls=NinjaJSONEncoder))


def _waited(request: HttpRequest, answer: dict[str, Any], seconds: int) -> dict[str, Any]:
    """``answer`` again after waiting up to ``seconds`` for the environment to settle
    (outside any transaction: lifecycle.pipelines.wait_until_settled)."""
    if seconds <= 0 or answer["state"] in _SETTLED:
        return answer
    with pipelines.wait_slot() as may_wait:
        if not may_wait:
            answer["notice"] = (
                "The server is busy with other waiting calls; this answer did not wait. "
                "Ask again (GET with ?wait=) in a few seconds."
            )
            return answer
        pipelines.wait_until_settled(answer["id"], seconds)
    token = _token(request)
    return environment_out(_environment(token, str(answer["id"])))


_SETTLED = {str(state) for state in pipelines.SETTLED_STATES}


@router.post(
    "/bulk",
    response={200: BulkOut, **ERRORS},
    summary="Extend or delete several environments",
    description=(
        "Each environment goes through the single action's rules, permission check and "
        "audit entry. One you may not see or change is not touched: its result says why "
        "(`done: false`); the others go ahead."
    ),
    operation_id="environments_api_bulk_environments",
)
def bulk_environments(request: HttpRequest, payload: BulkIn) -> dict[str, Any]:
    token = _require_write(request)
    ip = audit.client_ip(request)
    if payload.action == "extend":
        if payload.seconds is None:
            raise ServiceError("Say by how much to extend: seconds.")
        result = bulk.extend_many(
            token.user,
            payload.environments,
            payload.seconds,
            reason=payload.reason,
            ip=ip,
            team_id=token.team_id,
        )
    else:
        result = bulk.delete_many(token.user, payload.environments, ip=ip, team_id=token.team_id)
    return {
        "action": result.action,
        "done": len(result.done),
        "refused": len(result.refused),
        "results": [
            {
                "ref": o.ref,
                "environment_id": o.environment_id,
                "done": o.done,
                "message": o.message,
            }
            for o in result.outcomes
        ],
    }


def _with_notice(answer: dict[str, Any]) -> dict[str, Any]:
    """Say so when the request stands but its job waits for the queue (lifecycle.queue)."""
    if queue.deferred(answer["id"]):
        answer["notice"] = queue.WAITING_FOR_QUEUE
    return answer


@router.get(
    "/{ref}",
    response={200: EnvironmentOut, **READ_ERRORS},
    summary="One environment, by id or short name",
    description=(
        "`wait=N`: answer as soon as the environment is settled (ready, failed, "
        "pending_approval, rejected or deleted), or after N seconds (at most "
        "`API_WAIT_MAX_SECONDS`, 120 by default), whichever comes first; `state` says "
        "which. Without it (or 0) the answer is immediate."
    ),
    operation_id="environments_api_routes_get_environment",
    openapi_extra=_links(200, "events", "extend", "change", "delete"),
)
def get_environment(
    request: HttpRequest, waiting: Query[WaitQuery], ref: str = Path(..., pattern=ENVIRONMENT_REF)
) -> dict[str, Any]:
    answer = environment_out(_environment(_token(request), ref))
    return _waited(request, answer, waiting.wait)


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
    summary="Change parameters (a new commit) and/or rename",
    description=(
        "`parameters`: only the ones to change; the others keep their values. They are "
        "checked with the blueprint's rules and the environment is provisioned again "
        "(state `provisioning`, then `ready`; only what changed is re-applied). "
        "`display_name`: the name people call it by; empty removes it. Fields left out "
        "are not changed."
    ),
    operation_id="environments_api_rename_environment",
    openapi_extra=_links(200, "get", "extend", "delete"),
)
def rename_environment(
    request: HttpRequest,
    payload: EnvironmentPatchIn,
    ref: str = Path(..., pattern=ENVIRONMENT_REF),
) -> dict[str, Any]:
    token = _require_write(request)
    environment = pipelines.change_environment(
        environment=_environment(token, ref),
        user=token.user,
        display_name=payload.display_name,
        parameters=payload.parameters,
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
    openapi_extra=_links(200, "get", "delete"),
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
    openapi_extra=_links(202, "get"),
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


def _filtered(rows: QuerySet[Environment], filters: EnvironmentListQuery) -> QuerySet[Environment]:
    """The list's filters: states (repeated or comma-separated), blueprint, reason, key."""
    states = {part.strip() for value in filters.state for part in value.split(",")} - {""}
    unknown = sorted(states - set(State.values))
    if unknown:
        raise HttpError(
            422,
            f"state: unknown state {', '.join(map(repr, unknown))}; "
            f"the states are {', '.join(State.values)}.",
        )
    if states:
        rows = rows.filter(state__in=states)
    if filters.blueprint:
        rows = rows.filter(blueprint_version__blueprint__name=filters.blueprint)
    if filters.reason is not None:
        rows = rows.filter(reason=filters.reason)
    if filters.external_key is not None:
        rows = rows.filter(external_key=filters.external_key)
    return rows
