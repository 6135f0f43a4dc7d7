"""API endpoints for extension requests (mounted at /api/v1/extension-requests).

An extension past what a blueprint's approval policy approves by itself waits here for
an approver (docs/governance.md). Approvers list what they may decide and approve or
reject it; requesters follow their own. The rules are the services' (the same as the
Approvals page): scoped approvers see their teams' only, and nobody decides their own.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest
from ninja import Query, Router
from ninja.errors import HttpError

from environments.access.teams import approver_team_ids
from environments.api.app import _require_write, _token, bearer
from environments.api.schemas import (
    ERRORS,
    READ_ERRORS,
    ExtensionRequestListQuery,
    ExtensionRequestOut,
    RejectIn,
    extension_request_out,
)
from environments.governance import audit
from environments.lifecycle import selectors, services
from environments.models import ApiToken, Environment, ExtensionRequest

router = Router(auth=bearer, tags=["extension requests"])


def _rows() -> QuerySet[ExtensionRequest]:
    return ExtensionRequest.objects.select_related(
        "requested_by", "decided_by", "environment__owner", "environment__team"
    )


def _visible(token: ApiToken) -> QuerySet[ExtensionRequest]:
    """Requests of environments the token may see, and those its user may decide."""
    if token.team_id is not None:
        return _rows().filter(environment__team_id=token.team_id)
    user = token.user
    seen = Q(environment__in=Environment.objects.visible_to(user).values("pk"))
    teams = approver_team_ids(user)
    if teams is None:
        return _rows()
    return _rows().filter(seen | Q(environment__team_id__in=teams))


def _extension(token: ApiToken, pk: uuid.UUID) -> ExtensionRequest:
    found = _visible(token).filter(pk=pk).first()
    if found is None:
        raise Http404("No such extension request, or you may not see it.")
    return found


def _decider(request: HttpRequest) -> ApiToken:
    token = _require_write(request)
    if token.team_id is not None:
        raise HttpError(403, "A team token cannot approve or reject; use a personal token.")
    return token


@router.get(
    "",
    response={200: list[ExtensionRequestOut], **READ_ERRORS},
    summary="Extension requests you may decide (scope=to_decide) or asked for (scope=mine)",
    operation_id="environments_api_extension_requests_list",
)
def list_extension_requests(
    request: HttpRequest, filters: Query[ExtensionRequestListQuery]
) -> list[dict[str, Any]]:
    token = _token(request)
    if filters.scope == "mine":
        rows = _visible(token).filter(requested_by=token.user).order_by("-created_at")
    elif token.team_id is not None:
        return []  # a team token decides nothing
    else:
        rows = selectors.pending_extensions(user=token.user).select_related("decided_by")
    return [extension_request_out(e) for e in rows[:500]]


@router.get(
    "/{pk}",
    response={200: ExtensionRequestOut, **READ_ERRORS},
    summary="One extension request",
    operation_id="environments_api_extension_requests_get",
)
def get_extension_request(request: HttpRequest, pk: uuid.UUID) -> dict[str, Any]:
    return extension_request_out(_extension(_token(request), pk))


@router.post(
    "/{pk}/approve",
    response={200: ExtensionRequestOut, **ERRORS},
    summary="Approve an extension request: the environment is extended now",
    operation_id="environments_api_extension_requests_approve",
)
def approve_extension_request(request: HttpRequest, pk: uuid.UUID) -> dict[str, Any]:
    token = _decider(request)
    extension = services.approve_extension(
        extension=_extension(token, pk), approver=token.user, ip=audit.client_ip(request)
    )
    return extension_request_out(_extension(token, extension.pk))


@router.post(
    "/{pk}/reject",
    response={200: ExtensionRequestOut, **ERRORS},
    summary="Reject an extension request, saying why; the environment keeps its expiry",
    operation_id="environments_api_extension_requests_reject",
)
def reject_extension_request(
    request: HttpRequest, payload: RejectIn, pk: uuid.UUID
) -> dict[str, Any]:
    token = _decider(request)
    extension = services.reject_extension(
        extension=_extension(token, pk),
        approver=token.user,
        reason=payload.reason,
        ip=audit.client_ip(request),
    )
    return extension_request_out(_extension(token, extension.pk))
