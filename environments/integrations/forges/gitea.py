"""Gitea and Forgejo: ``pull_request`` webhooks signed in ``X-Gitea-Signature`` (Forgejo:
``X-Forgejo-Signature``), the HMAC-SHA256 of the body as bare hex; commit statuses and
issue comments through ``/api/v1`` (https://docs.gitea.com/api/).

Their action names differ from GitHub's: a new commit is ``synchronized``, label changes
are ``label_updated`` and ``label_cleared``, and a merge is ``closed`` with
``merged: true``. Authors' association with the repository is not in the payload.
"""

from __future__ import annotations

import hashlib
import hmac

from environments.integrations.forges import base
from environments.integrations.forges.base import Delivery
from environments.integrations.forges.github_shaped import GitHubShaped

ACTIONS = {
    "opened": base.OPEN,
    "reopened": base.OPEN,
    "synchronized": base.UPDATE,
    "closed": base.CLOSE,
    "label_updated": base.LABEL,
    "label_cleared": base.LABEL,
}


def _header(headers, name: str) -> str:
    return headers.get(f"X-Forgejo-{name}") or headers.get(f"X-Gitea-{name}") or ""


class Gitea(GitHubShaped):
    name = "gitea"
    title = "Gitea"
    signature_header = "X-Gitea-Signature"
    actions = ACTIONS

    def delivery(self, headers) -> Delivery:
        return Delivery(
            event=_header(headers, "Event"),
            delivery_id=_header(headers, "Delivery"),
            signature=_header(headers, "Signature"),
        )

    def signature_valid(self, secret: str, body: bytes, signature: str) -> bool:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return bool(signature) and hmac.compare_digest(
            expected.encode(), signature.encode("utf-8", "surrogateescape")
        )

    def _from_fork(self, payload: dict, pull_request: dict) -> bool:
        head, base_branch = pull_request["head"], pull_request["base"]
        return int(head.get("repo_id") or 0) != int(base_branch.get("repo_id") or 0)

    def api_base(self, api_url: str) -> str:
        return f"{api_url.rstrip('/')}/api/v1"

    def _headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"token {token}"}
