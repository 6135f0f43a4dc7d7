"""The one small interface every forge (GitHub, GitLab, Gitea/Forgejo) implements.

A forge knows three things and nothing else:

- its webhook: which header carries the event, the delivery id and the signature, how
  the signature is checked against a hook's secret, and how its pull-request (merge
  request) payload reads as a ``PullRequestEvent``;
- its API: how to set a commit status and how to create and edit a comment;
- its defaults: the public API address when the hook leaves it blank.

What to do with an event (policy, limits, environments) is decided once, in
``previews``; what to post, in ``feedback``. Outgoing calls use the standard library
through ``lib.egress.opener`` (no redirects, internal addresses refused unless
``WEBHOOK_ALLOWED_NETWORKS`` allows them), with a short timeout.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, ClassVar

from environments.lib import egress

# What a pull-request event means for its environment, whatever the forge calls it.
OPEN = "open"  # opened or reopened
UPDATE = "update"  # a new head commit
CLOSE = "close"  # closed or merged
LABEL = "label"  # labels changed
OTHER = "other"  # anything else: ignored

# Commit-status states, in Ephemera's words; each forge maps them to its own.
PENDING, SUCCESS, FAILURE, ERROR = "pending", "success", "failure", "error"

TIMEOUT_SECONDS = 10


class PayloadInvalid(ValueError):
    """The signed body is not a pull-request event this forge sends."""


class ForgeCallFailed(Exception):
    """A call to the forge's API failed; the message is one line, with no credential."""


@dataclass(frozen=True)
class PullRequestEvent:
    kind: str  # OPEN, UPDATE, CLOSE, LABEL or OTHER
    action: str  # the forge's own word, for the record
    number: int
    sha: str
    is_open: bool  # the pull request's state in the payload itself
    from_fork: bool
    labels: frozenset[str] = field(default_factory=frozenset)
    author: str = ""
    author_association: str = ""  # GitHub only: OWNER, MEMBER, COLLABORATOR, ...


@dataclass(frozen=True)
class Delivery:
    """The headers of one webhook delivery that matter, read by the forge."""

    event: str
    delivery_id: str
    signature: str


class Forge:
    name: ClassVar[str]
    title: ClassVar[str]
    signature_header: ClassVar[str]
    default_api_url: ClassVar[str] = ""
    # Whether payloads say how the author relates to the repository (GitHub's
    # author_association): the association policy needs it.
    knows_author_association: ClassVar[bool] = False

    # --- the webhook ---------------------------------------------------------------
    def delivery(self, headers) -> Delivery:
        raise NotImplementedError

    def signature_valid(self, secret: str, body: bytes, signature: str) -> bool:
        raise NotImplementedError

    def is_pull_request_event(self, event: str) -> bool:
        raise NotImplementedError

    def is_ping(self, event: str) -> bool:
        return False

    def repository(self, payload: dict) -> str:
        raise NotImplementedError

    def pull_request_event(self, payload: dict) -> PullRequestEvent:
        raise NotImplementedError

    # --- the API -------------------------------------------------------------------
    def api_base(self, api_url: str) -> str:
        return (api_url or self.default_api_url).rstrip("/")

    def set_status(
        self,
        *,
        api_url: str,
        token: str,
        repository: str,
        sha: str,
        state: str,
        target_url: str,
        description: str,
        context: str,
    ) -> None:
        raise NotImplementedError

    def create_comment(
        self, *, api_url: str, token: str, repository: str, number: int, body: str
    ) -> str:
        """Create the pull request's comment; return its id."""
        raise NotImplementedError

    def edit_comment(
        self,
        *,
        api_url: str,
        token: str,
        repository: str,
        number: int,
        comment_id: str,
        body: str,
    ) -> None:
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------
    def _call(self, method: str, url: str, *, headers: dict[str, str], body: dict) -> Any:
        """One JSON call; raise ForgeCallFailed with a one-line reason."""
        refused = egress.refused_url(url)
        if refused:
            raise ForgeCallFailed(f"{egress.masked_url(url)} refused: {refused}")
        request = urllib.request.Request(  # noqa: S310 (scheme checked above)
            url,
            data=json.dumps(body).encode(),
            method=method,
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "Ephemera",
                **headers,
            },
        )
        try:
            with egress.opener.open(request, timeout=TIMEOUT_SECONDS) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            raise ForgeCallFailed(
                f"{self.title} answered HTTP {exc.code} to {method} {_path(url)}{detail}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ForgeCallFailed(
                f"could not reach {egress.masked_url(url)}: {reason}".replace("\n", " ")
            ) from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise ForgeCallFailed(
                f"{self.title} answered {method} {_path(url)} with no JSON"
            ) from None


def _path(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
        message = body.get("message") or body.get("error") or ""
    except (ValueError, AttributeError, OSError):
        message = ""
    message = str(message).replace("\n", " ")[:200]
    return f": {message}" if message else ""


def text(value: Any, limit: int = 200) -> str:
    """A payload string, without NUL characters and bounded."""
    return str(value or "").replace("\x00", "")[:limit]
