"""API endpoints for git hosts' webhooks (mounted at /api/v1/hooks by urls.py).

No API token here: each delivery is authenticated by its signature, checked by
environments.integrations.github with the repository hook's secret.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Status

from environments.api.schemas import Error, HookOut
from environments.integrations import github

router = Router(tags=["hooks"])


# Operation ids name the module the endpoints were first published from
# (environments/api/routes.py); clients generated from the OpenAPI document use them.
@router.post(
    "/github/",
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
    summary="GitHub pull_request webhook (signed with the repository hook's secret)",
    operation_id="environments_api_routes_github_hook",
)
def github_hook(request: HttpRequest) -> Status[dict[str, Any]]:
    status, body = github.handle_delivery(
        event=request.headers.get("X-GitHub-Event", ""),
        delivery_id=request.headers.get("X-GitHub-Delivery", ""),
        signature=request.headers.get("X-Hub-Signature-256", ""),
        body=request.body,
    )
    return Status(status, body)
