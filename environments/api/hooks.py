"""API endpoints for git hosts' webhooks (mounted at /api/v1/hooks by urls.py).

No API token here: each delivery is authenticated by the forge's own scheme (GitHub's
and Gitea's HMAC signatures, GitLab's secret token), checked by
environments.integrations.forges with the repository hook's secret.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Status

from environments.api.schemas import Error, HookOut
from environments.integrations.forges import previews

router = Router(tags=["hooks"])

RESPONSES: dict[int, Any] = {
    200: HookOut,
    201: HookOut,
    400: Error,
    401: Error,
    403: Error,
    404: Error,
    409: Error,
    422: Error,
}


# Operation ids name the module the endpoints were first published from
# (environments/api/routes.py); clients generated from the OpenAPI document use them.
@router.post(
    "/github/",
    auth=None,
    response=RESPONSES,
    summary="GitHub pull_request webhook (signed with the repository hook's secret)",
    operation_id="environments_api_routes_github_hook",
)
def github_hook(request: HttpRequest) -> Status[dict[str, Any]]:
    status, body = previews.handle_delivery(
        forge_name="github", headers=request.headers, body=request.body
    )
    return Status(status, body)


@router.post(
    "/gitlab/",
    auth=None,
    response=RESPONSES,
    summary="GitLab merge request hook (X-Gitlab-Token: the repository hook's secret)",
    operation_id="environments_api_hooks_gitlab_hook",
)
def gitlab_hook(request: HttpRequest) -> Status[dict[str, Any]]:
    status, body = previews.handle_delivery(
        forge_name="gitlab", headers=request.headers, body=request.body
    )
    return Status(status, body)


@router.post(
    "/gitea/",
    auth=None,
    response=RESPONSES,
    summary="Gitea or Forgejo pull_request webhook (signed with the repository hook's secret)",
    operation_id="environments_api_hooks_gitea_hook",
)
def gitea_hook(request: HttpRequest) -> Status[dict[str, Any]]:
    status, body = previews.handle_delivery(
        forge_name="gitea", headers=request.headers, body=request.body
    )
    return Status(status, body)
