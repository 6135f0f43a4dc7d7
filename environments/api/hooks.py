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


def _hook(forge_name: str, *, summary: str, operation_id: str) -> None:
    """Mount one forge's webhook endpoint at /<forge_name>/ (URL name <forge_name>_hook)."""

    def hook(request: HttpRequest) -> Status[dict[str, Any]]:
        status, body = previews.handle_delivery(
            forge_name=forge_name, headers=request.headers, body=request.body
        )
        return Status(status, body)

    hook.__name__ = hook.__qualname__ = f"{forge_name}_hook"
    router.post(
        f"/{forge_name}/",
        auth=None,
        response=RESPONSES,
        summary=summary,
        operation_id=operation_id,
    )(hook)


# Operation ids name the module the endpoints were first published from
# (environments/api/routes.py); clients generated from the OpenAPI document use them.
_hook(
    "github",
    summary="GitHub pull_request webhook (signed with the repository hook's secret)",
    operation_id="environments_api_routes_github_hook",
)
_hook(
    "gitlab",
    summary="GitLab merge request hook (X-Gitlab-Token: the repository hook's secret)",
    operation_id="environments_api_hooks_gitlab_hook",
)
_hook(
    "gitea",
    summary="Gitea or Forgejo pull_request webhook (signed with the repository hook's secret)",
    operation_id="environments_api_hooks_gitea_hook",
)
