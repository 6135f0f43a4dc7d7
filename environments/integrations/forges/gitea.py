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
from urllib.parse import quote

from environments.integrations.forges import base
from environments.integrations.forges.base import Delivery, PullRequestEvent, text

ACTIONS = {
    "opened": base.OPEN,
    "reopened": base.OPEN,
    "synchronized": base.UPDATE,
    "closed": base.CLOSE,
    "label_updated": base.LABEL,
    "label_cleared": base.LABEL,
}
STATES = {
    base.PENDING: "pending",
    base.SUCCESS: "success",
    base.FAILURE: "failure",
    base.ERROR: "error",
}


def _header(headers, name: str) -> str:
    return headers.get(f"X-Forgejo-{name}") or headers.get(f"X-Gitea-{name}") or ""


class Gitea(base.Forge):
    name = "gitea"
    title = "Gitea"
    signature_header = "X-Gitea-Signature"

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

    def is_pull_request_event(self, event: str) -> bool:
        return event == "pull_request"

    def repository(self, payload: dict) -> str:
        return str(payload["repository"]["full_name"])

    def pull_request_event(self, payload: dict) -> PullRequestEvent:
        try:
            action = str(payload["action"])
            pull_request = payload["pull_request"]
            head, base_branch = pull_request["head"], pull_request["base"]
            return PullRequestEvent(
                kind=ACTIONS.get(action, base.OTHER),
                action=text(action, 50),
                number=int(payload.get("number") or pull_request["number"]),
                sha=text(head["sha"], 64),
                is_open=pull_request.get("state", "open") == "open",
                from_fork=int(head.get("repo_id") or 0) != int(base_branch.get("repo_id") or 0),
                labels=frozenset(
                    text(label.get("name"), 50) for label in pull_request.get("labels") or []
                ),
                author=text((pull_request.get("user") or {}).get("login"), 100),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise base.PayloadInvalid("The body is not a pull_request event.") from None

    def api_base(self, api_url: str) -> str:
        return f"{api_url.rstrip('/')}/api/v1"

    def _headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"token {token}"}

    def _repo(self, api_url: str, repository: str) -> str:
        return f"{self.api_base(api_url)}/repos/{quote(repository, safe='/')}"

    def set_status(
        self, *, api_url, token, repository, sha, state, target_url, description, context
    ):
        body = {"state": STATES[state], "description": description[:140], "context": context}
        if target_url:
            body["target_url"] = target_url
        self._call(
            "POST",
            f"{self._repo(api_url, repository)}/statuses/{quote(sha)}",
            headers=self._headers(token),
            body=body,
        )

    def create_comment(self, *, api_url, token, repository, number, body) -> str:
        answer = self._call(
            "POST",
            f"{self._repo(api_url, repository)}/issues/{int(number)}/comments",
            headers=self._headers(token),
            body={"body": body},
        )
        return str(answer["id"])

    def edit_comment(self, *, api_url, token, repository, number, comment_id, body) -> None:
        self._call(
            "PATCH",
            f"{self._repo(api_url, repository)}/issues/comments/{quote(comment_id)}",
            headers=self._headers(token),
            body={"body": body},
        )
