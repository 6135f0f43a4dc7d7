"""GitLab: merge-request hooks (``X-Gitlab-Event: Merge Request Hook``) carrying the
hook's secret token in ``X-Gitlab-Token``; commit statuses and merge-request notes
through ``/api/v4`` (https://docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit,
https://docs.gitlab.com/api/notes/#merge-requests).

GitLab does not sign the body: the token is compared in constant time. A new commit is
``update`` with ``oldrev``; a label change is ``update`` with ``changes.labels``; a
merge is ``merge``. The project's id in API paths is its URL-encoded path.
"""

from __future__ import annotations

import hmac
from urllib.parse import quote

from environments.integrations.forges import base
from environments.integrations.forges.base import Delivery, PullRequestEvent, text

ACTIONS = {
    "open": base.OPEN,
    "reopen": base.OPEN,
    "close": base.CLOSE,
    "merge": base.CLOSE,
}
STATES = {
    base.PENDING: "pending",
    base.SUCCESS: "success",
    base.FAILURE: "failed",
    base.ERROR: "failed",
}


class GitLab(base.Forge):
    name = "gitlab"
    title = "GitLab"
    signature_header = "X-Gitlab-Token"
    default_api_url = "https://gitlab.com"

    def delivery(self, headers) -> Delivery:
        return Delivery(
            event=headers.get("X-Gitlab-Event", ""),
            delivery_id=headers.get("X-Gitlab-Event-UUID", "")
            or headers.get("X-Gitlab-Webhook-UUID", ""),
            signature=headers.get("X-Gitlab-Token", ""),
        )

    def signature_valid(self, secret: str, body: bytes, signature: str) -> bool:
        return bool(signature) and hmac.compare_digest(
            secret.encode(), signature.encode("utf-8", "surrogateescape")
        )

    def is_pull_request_event(self, event: str) -> bool:
        return event == "Merge Request Hook"

    def repository(self, payload: dict) -> str:
        return str(payload["project"]["path_with_namespace"])

    def pull_request_event(self, payload: dict) -> PullRequestEvent:
        try:
            attributes = payload["object_attributes"]
            action = str(attributes.get("action") or "")
            kind = ACTIONS.get(action, base.OTHER)
            if action == "update":
                if attributes.get("oldrev"):
                    kind = base.UPDATE
                elif "labels" in (payload.get("changes") or {}):
                    kind = base.LABEL
            labels = payload.get("labels") or attributes.get("labels") or []
            return PullRequestEvent(
                kind=kind,
                action=text(action, 50),
                number=int(attributes["iid"]),
                sha=text((attributes.get("last_commit") or {}).get("id"), 64),
                is_open=attributes.get("state") == "opened",
                from_fork=int(attributes["source_project_id"])
                != int(attributes["target_project_id"]),
                labels=frozenset(text(label.get("title"), 50) for label in labels),
                author=text((payload.get("user") or {}).get("username"), 100),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise base.PayloadInvalid("The body is not a merge request event.") from None

    def api_base(self, api_url: str) -> str:
        return f"{(api_url or self.default_api_url).rstrip('/')}/api/v4"

    def _headers(self, token: str) -> dict[str, str]:
        return {"PRIVATE-TOKEN": token}

    def _project(self, api_url: str, repository: str) -> str:
        return f"{self.api_base(api_url)}/projects/{quote(repository, safe='')}"

    def set_status(
        self, *, api_url, token, repository, sha, state, target_url, description, context
    ):
        body = {"state": STATES[state], "description": description[:140], "name": context}
        if target_url:
            body["target_url"] = target_url
        self._call(
            "POST",
            f"{self._project(api_url, repository)}/statuses/{quote(sha)}",
            headers=self._headers(token),
            body=body,
        )

    def create_comment(self, *, api_url, token, repository, number, body) -> str:
        answer = self._call(
            "POST",
            f"{self._project(api_url, repository)}/merge_requests/{int(number)}/notes",
            headers=self._headers(token),
            body={"body": body},
        )
        return str(answer["id"])

    def edit_comment(self, *, api_url, token, repository, number, comment_id, body) -> None:
        self._call(
            "PUT",
            f"{self._project(api_url, repository)}/merge_requests/{int(number)}/notes/"
            f"{quote(comment_id)}",
            headers=self._headers(token),
            body={"body": body},
        )
