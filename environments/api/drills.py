"""API endpoints for restore drills (recovery, mounted on /drills).

Admins and a blueprint's owners (who published it) may run and read its drills;
anyone else gets 404. Running one needs a write token.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.http import Http404, HttpRequest
from ninja import Header, Router, Status
from ninja.errors import HttpError

from environments.api.app import _require_write, _token, bearer
from environments.api.schemas import ERRORS, READ_ERRORS, DrillIn, DrillOut, drill_out
from environments.governance import audit
from environments.models import Drill, Environment, Snapshot
from environments.recovery import drills

router = Router(auth=bearer, tags=["drills"])


@router.post(
    "",
    response={200: DrillOut, 201: DrillOut, **ERRORS},
    summary="Run a restore drill now",
    description=(
        "Restores the latest snapshot of the chosen environment (or the given snapshot, or "
        "the blueprint's most recent ready environment's) into a scratch environment with "
        "no public URLs, then checks it, times it and tears it down. Give a request key "
        "(the `Idempotency-Key` header or `request_key`): the same key again answers 200 "
        "with the same drill. A snapshot that fails its checks gives a failed drill."
    ),
)
def run_drill(
    request: HttpRequest,
    payload: DrillIn,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=150),
) -> Status[dict[str, Any]]:
    token = _require_write(request)
    user = token.user
    if not drills.may_drill(user, payload.blueprint):
        raise Http404("No such blueprint, or you may not drill it.")
    key = (idempotency_key or payload.request_key or "").strip()
    if not key:
        raise HttpError(422, "Give a request key: an Idempotency-Key header or request_key.")
    environment = snapshot = None
    if payload.environment is not None:
        environment = Environment.objects.filter(
            pk=payload.environment, blueprint_version__blueprint__name=payload.blueprint
        ).first()
        if environment is None:
            raise Http404("No such environment of this blueprint.")
    if payload.snapshot is not None:
        snapshot = Snapshot.objects.filter(pk=payload.snapshot, blueprint=payload.blueprint).first()
        if snapshot is None:
            raise Http404("No such snapshot of this blueprint.")
    seen = Drill.objects.filter(key=drills._stored_key(user, key)).exists()
    drill = drills.start_drill(
        blueprint=payload.blueprint,
        actor=user,
        key=key,
        environment=environment,
        snapshot=snapshot,
        ip=audit.client_ip(request),
    )
    return Status(200 if seen else 201, drill_out(drill))


@router.get(
    "/{drill_id}",
    response={200: DrillOut, **READ_ERRORS},
    summary="One restore drill: running, passed or failed, with the reason",
)
def get_drill(request: HttpRequest, drill_id: uuid.UUID) -> dict[str, Any]:
    drill = Drill.objects.filter(pk=drill_id).first()
    if drill is None or not drills.may_drill(_token(request).user, drill.blueprint):
        raise Http404("No such drill, or you may not see it.")
    return drill_out(drill)
