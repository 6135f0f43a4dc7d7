"""API endpoints for the blueprint catalogue (mounted at /api/v1/blueprints by urls.py)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router

from environments.api.app import bearer
from environments.api.schemas import BlueprintOut, Error, blueprint_out
from environments.catalog.selectors import catalogue

router = Router(auth=bearer, tags=["blueprints"])


# Operation ids name the module the endpoints were first published from
# (environments/api/routes.py); clients generated from the OpenAPI document use them.
@router.get(
    "",
    response={200: list[BlueprintOut], 401: Error, 429: Error},
    summary="Blueprints open to new requests",
    operation_id="environments_api_routes_list_blueprints",
)
def list_blueprints(request: HttpRequest) -> list[dict[str, Any]]:
    return [blueprint_out(version) for _purpose, versions in catalogue() for version in versions]
