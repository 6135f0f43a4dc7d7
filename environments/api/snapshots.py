"""API endpoints for snapshots and restores (recovery).

``environment_router`` (mounted on /environments): take and list an environment's
snapshots. ``router`` (mounted on /snapshots): read one, restore it. A snapshot is
visible to whoever may see its environment; anyone else gets 404. Taking and restoring
need a write token and the right to change the environment (403 otherwise).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.http import Http404, HttpRequest
from ninja import Header, Path, Router, Status
from ninja.errors import HttpError

from environments.api.app import _require_write, _token, bearer
from environments.api.environments import ENVIRONMENT_REF, _environment, _visible
from environments.api.schemas import (
    ERRORS,
    READ_ERRORS,
    EnvironmentOut,
    RestoreIn,
    SnapshotDetailOut,
    SnapshotOut,
    environment_out,
    snapshot_out,
)
from environments.governance import audit
from environments.models import ApiToken, RestoreRequest, Snapshot
from environments.recovery import restore as restoring
from environments.recovery import snapshots

environment_router = Router(auth=bearer, tags=["snapshots"])
router = Router(auth=bearer, tags=["snapshots"])


def _snapshot(token: ApiToken, snapshot_id: uuid.UUID) -> Snapshot:
    found = (
        Snapshot.objects.select_related("environment", "created_by")
        .filter(pk=snapshot_id, environment__in=_visible(token).values("pk"))
        .first()
    )
    if found is None:
        raise Http404("No such snapshot, or you may not see it.")
    return found


@environment_router.get(
    "/{ref}/snapshots",
    response={200: list[SnapshotOut], **READ_ERRORS},
    summary="An environment's snapshots, newest first",
)
def list_snapshots(
    request: HttpRequest, ref: str = Path(..., pattern=ENVIRONMENT_REF)
) -> list[dict[str, Any]]:
    environment = _environment(_token(request), ref)
    rows = environment.snapshots.select_related("environment", "created_by").order_by("-number")
    return [snapshot_out(s) for s in rows]


@environment_router.post(
    "/{ref}/snapshots",
    response={201: SnapshotOut, **ERRORS},
    summary="Take a snapshot of a ready environment now",
)
def take_snapshot(
    request: HttpRequest, ref: str = Path(..., pattern=ENVIRONMENT_REF)
) -> Status[dict[str, Any]]:
    token = _require_write(request)
    environment = _environment(token, ref)
    snapshot = snapshots.take_snapshot(
        environment.pk, reason="manual", actor=token.user, ip=audit.client_ip(request)
    )
    return Status(201, snapshot_out(_snapshot(token, snapshot.pk)))


@router.get(
    "/{snapshot_id}",
    response={200: SnapshotDetailOut, **READ_ERRORS},
    summary="One snapshot, with its manifests and inventory",
)
def get_snapshot(request: HttpRequest, snapshot_id: uuid.UUID) -> dict[str, Any]:
    return snapshot_out(_snapshot(_token(request), snapshot_id), detail=True)


@router.post(
    "/{snapshot_id}/restore",
    response={200: EnvironmentOut, 201: EnvironmentOut, **ERRORS},
    summary="Restore a snapshot: a new environment, or in place of its own",
    description=(
        "Give a request key (the `Idempotency-Key` header or `request_key`): the same key "
        "again answers 200 with the environment the first request made. The snapshot's "
        "digest and signature are verified first; a snapshot that fails either is refused "
        "(409) with the check named."
    ),
)
def restore_snapshot(
    request: HttpRequest,
    snapshot_id: uuid.UUID,
    payload: RestoreIn,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=150),
) -> Status[dict[str, Any]]:
    token = _require_write(request)
    snapshot = _snapshot(token, snapshot_id)
    key = (idempotency_key or payload.request_key or "").strip()
    if not key:
        raise HttpError(422, "Give a request key: an Idempotency-Key header or request_key.")
    seen = RestoreRequest.objects.filter(
        key=restoring.stored_key(token.user, key), snapshot=snapshot
    ).exists()
    environment = restoring.restore(
        snapshot,
        actor=token.user,
        request_key=key,
        in_place_of=snapshot.environment if payload.in_place else None,
        ip=audit.client_ip(request),
    )
    return Status(200 if seen else 201, environment_out(_environment(token, str(environment.pk))))
