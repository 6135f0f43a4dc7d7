"""GitHub: ``pull_request`` webhooks signed in ``X-Hub-Signature-256``; commit statuses
and issue comments through the REST API (https://docs.github.com/en/rest).

A personal or fine-grained token (statuses: write, pull requests: write) is the hook's
token. A GitHub App plugs in at ``_headers``: the installation token it mints (a JWT
signed with the App's key, exchanged at ``/app/installations/<id>/access_tokens``, valid
for an hour) is sent the same way; see docs/ci.md.
"""

from __future__ import annotations

from urllib.parse import quote

from environments.integrations.forges import base
from environments.integrations.forges.base import Delivery, PullRequestEvent, text
from environments.lib.signing import signature_valid

ACTIONS = {
    "opened": base.OPEN,
    "reopened": base.OPEN,
    "synchronize": base.UPDATE,
    "closed": base.CLOSE,
    "labeled": base.LABEL,
    "unlabeled": base.LABEL,
}
STATES = {
    base.PENDING: "pending",
    base.SUCCESS: "success",
    base.FAILURE: "failure",
    base.ERROR: "error",
}


class GitHub(base.Forge):
    name = "github"
    title = "GitHub"
    signature_header = "X-Hub-Signature-256"
    default_api_url = "https://api.github.com"
    knows_author_association = True

    def delivery(self, headers) -> Delivery:
        return Delivery(
            event=headers.get("X-GitHub-Event", ""),
            delivery_id=headers.get("X-GitHub-Delivery", ""),
            signature=headers.get("X-Hub-Signature-256", ""),
        )

    def signature_valid(self, secret: str, body: bytes, signature: str) -> bool:
        return signature_valid(secret, body, signature)

    def is_pull_request_event(self, event: str) -> bool:
        return event == "pull_request"

    def is_ping(self, event: str) -> bool:
        return event == "ping"

    def repository(self, payload: dict) -> str:
        return str(payload["repository"]["full_name"])

    def pull_request_event(self, payload: dict) -> PullRequestEvent:
        try:
            action = str(payload["action"])
            pull_request = payload["pull_request"]
            number = int(payload.get("number") or pull_request["number"])
            head_repo = (pull_request["head"].get("repo") or {}).get("full_name")
            return PullRequestEvent(
                kind=ACTIONS.get(action, base.OTHER),
                action=text(action, 50),
                number=number,
                sha=text(pull_request["head"]["sha"], 64),
                is_open=pull_request.get("state", "open") == "open",
                # A deleted fork has no head repository: still a fork.
                from_fork=head_repo != self.repository(payload),
                labels=frozenset(
                    text(label.get("name"), 50) for label in pull_request.get("labels") or []
                ),
                author=text((pull_request.get("user") or {}).get("login"), 100),
                author_association=text(pull_request.get("author_association"), 30).upper(),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise base.PayloadInvalid("The body is not a pull_request event.") from None

    def _headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

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
