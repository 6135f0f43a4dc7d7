"""GitHub: ``pull_request`` webhooks signed in ``X-Hub-Signature-256``; commit statuses
and issue comments through the REST API (https://docs.github.com/en/rest).

A personal or fine-grained token (statuses: write, pull requests: write) is the hook's
token. A GitHub App plugs in at ``_headers``: the installation token it mints (a JWT
signed with the App's key, exchanged at ``/app/installations/<id>/access_tokens``, valid
for an hour) is sent the same way; see docs/ci.md.
"""

from __future__ import annotations

from environments.integrations.forges import base
from environments.integrations.forges.base import Delivery, text
from environments.integrations.forges.github_shaped import GitHubShaped
from environments.lib.signing import signature_valid

ACTIONS = {
    "opened": base.OPEN,
    "reopened": base.OPEN,
    "synchronize": base.UPDATE,
    "closed": base.CLOSE,
    "labeled": base.LABEL,
    "unlabeled": base.LABEL,
}


class GitHub(GitHubShaped):
    name = "github"
    title = "GitHub"
    signature_header = "X-Hub-Signature-256"
    default_api_url = "https://api.github.com"
    knows_author_association = True
    actions = ACTIONS

    def delivery(self, headers) -> Delivery:
        return Delivery(
            event=headers.get("X-GitHub-Event", ""),
            delivery_id=headers.get("X-GitHub-Delivery", ""),
            signature=headers.get("X-Hub-Signature-256", ""),
        )

    def signature_valid(self, secret: str, body: bytes, signature: str) -> bool:
        return signature_valid(secret, body, signature)

    def is_ping(self, event: str) -> bool:
        return event == "ping"

    def _from_fork(self, payload: dict, pull_request: dict) -> bool:
        # A deleted fork has no head repository: still a fork.
        head_repo = (pull_request["head"].get("repo") or {}).get("full_name")
        return head_repo != self.repository(payload)

    def _author_association(self, pull_request: dict) -> str:
        return text(pull_request.get("author_association"), 30).upper()

    def _headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
