"""What GitHub and Gitea/Forgejo share: Gitea's API and pull-request payload are
GitHub-shaped, so reading the payload and calling the statuses and comments endpoints are
written once here.

Each forge keeps its own webhook headers, signature check, action names (``actions``), API
address and request headers (``_headers``), and says how it tells a fork (``_from_fork``)
and, where its payload has one, the author's association (``_author_association``).
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

from environments.integrations.forges import base
from environments.integrations.forges.base import PullRequestEvent, text

# Commit-status states: both forges use Ephemera's own words.
STATES = {
    base.PENDING: "pending",
    base.SUCCESS: "success",
    base.FAILURE: "failure",
    base.ERROR: "error",
}


class GitHubShaped(base.Forge):
    # The forge's pull_request actions, in Ephemera's words.
    actions: ClassVar[dict[str, str]]

    def is_pull_request_event(self, event: str) -> bool:
        return event == "pull_request"

    def repository(self, payload: dict) -> str:
        return str(payload["repository"]["full_name"])

    def _from_fork(self, payload: dict, pull_request: dict) -> bool:
        raise NotImplementedError

    def _author_association(self, pull_request: dict) -> str:
        return ""

    def pull_request_event(self, payload: dict) -> PullRequestEvent:
        try:
            action = str(payload["action"])
            pull_request = payload["pull_request"]
            return PullRequestEvent(
                kind=self.actions.get(action, base.OTHER),
                action=text(action, 50),
                number=int(payload.get("number") or pull_request["number"]),
                sha=text(pull_request["head"]["sha"], 64),
                is_open=pull_request.get("state", "open") == "open",
                from_fork=self._from_fork(payload, pull_request),
                labels=frozenset(
                    text(label.get("name"), 50) for label in pull_request.get("labels") or []
                ),
                author=text((pull_request.get("user") or {}).get("login"), 100),
                author_association=self._author_association(pull_request),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise base.PayloadInvalid("The body is not a pull_request event.") from None

    def _headers(self, token: str) -> dict[str, str]:
        raise NotImplementedError

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
