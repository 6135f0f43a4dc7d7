"""What the pull request shows: one commit status on the head commit and one comment.

``post`` (the job ``post_pull_request_feedback``) reads the pull request and its
environment as they are now, works out the status and the comment, and posts only what
changed since the last post (``PullRequest.posted``). The comment is created once; its
id is kept and every later change edits it, so a pull request never collects a comment
per push. The row is locked while posting, so two jobs for the same pull request post
one after the other, the second only if something changed.

A failure (the forge down, a token refused) is recorded on the hook's page and raised,
so RQ retries with backoff (``lifecycle.forge_feedback.RETRY_INTERVALS``). Whatever was
posted before the failure is kept, so a retry never creates a second comment.
"""

from __future__ import annotations

import hashlib
import logging

from django.conf import settings
from django.db import transaction

from environments.integrations.forges import base, forge_for
from environments.lifecycle.states import State
from environments.models import Environment, HookEvent, PullRequest

log = logging.getLogger(__name__)

CONTEXT = "ephemera/preview"
MARKER = "<!-- ephemera:preview -->"


def desired_status(pull_request: PullRequest) -> tuple[str, str, str] | None:
    """(state, description, link) for the head commit, or None if nothing to say."""
    environment = pull_request.environment
    if environment is None:
        if pull_request.refusal:
            return base.FAILURE, pull_request.refusal, ""
        return None
    page = f"{settings.SITE_URL}/environments/{environment.pk}/"
    state = environment.state
    if state == State.READY:
        link = next(iter((environment.urls or {}).values()), page)
        return base.SUCCESS, f"Ready: {environment.name}", link
    if state in {State.REQUESTED, State.PENDING_APPROVAL}:
        return base.PENDING, "Waiting for approval", page
    if state in {State.APPROVED, State.PROVISIONING}:
        return base.PENDING, f"Preparing {environment.name}", page
    if state == State.FAILED:
        return base.FAILURE, f"Failed: {environment.last_error or 'see the environment page'}", page
    if state == State.REJECTED:
        return (
            base.FAILURE,
            f"Rejected: {environment.last_error or 'see the environment page'}",
            page,
        )
    # tearing_down, deleted
    if pull_request.state == PullRequest.State.CLOSED:
        return base.SUCCESS, "Torn down: the pull request was closed", page
    return base.ERROR, "Torn down: the environment was deleted", page


def comment_body(pull_request: PullRequest, status: tuple[str, str, str]) -> str:
    state, description, link = status
    environment: Environment | None = pull_request.environment
    headline = {
        base.SUCCESS: "ready" if environment and environment.state == State.READY else "done",
        base.PENDING: "on its way",
        base.FAILURE: "not available",
        base.ERROR: "gone",
    }[state]
    lines = [MARKER, f"**Ephemera preview environment: {headline}**", "", description]
    if pull_request.head_sha:
        lines.append(f"\nCommit: `{pull_request.head_sha[:12]}`")
    if environment is not None:
        if environment.state == State.READY:
            for name, url in (environment.urls or {}).items():
                lines.append(f"- {name}: {url}")
        lines.append(
            f"\nEnvironment [{environment.name}]({settings.SITE_URL}/environments/"
            f"{environment.pk}/) (state: {State(environment.state).label.lower()})"
        )
    lines.append("\n<sub>This comment is edited as the environment changes.</sub>")
    return "\n".join(lines)


def post(pull_request_id: str) -> str:
    """Post what changed; raise ``ForgeCallFailed`` (RQ retries) if the forge refuses."""
    failure: base.ForgeCallFailed | None = None
    with transaction.atomic():
        pull_request = (
            PullRequest.objects.select_for_update(of=("self",))
            .select_related("hook", "environment")
            .filter(pk=pull_request_id)
            .first()
        )
        if pull_request is None:
            return "no such pull request"
        hook = pull_request.hook
        if not hook.token:
            return "no token: nothing posted"
        status = desired_status(pull_request)
        if status is None or not pull_request.head_sha:
            return "nothing to post"
        forge = forge_for(hook.forge)
        posted = dict(pull_request.posted or {})
        call = {"api_url": hook.api_url, "token": hook.token, "repository": hook.repository}
        done = []
        try:
            wanted_status = [pull_request.head_sha, *status]
            if posted.get("status") != wanted_status:
                state, description, link = status
                forge.set_status(
                    **call,
                    sha=pull_request.head_sha,
                    state=state,
                    target_url=link,
                    description=description,
                    context=CONTEXT,
                )
                posted["status"] = wanted_status
                done.append(f"status {state}")
            body = comment_body(pull_request, status)
            digest = hashlib.sha256(body.encode()).hexdigest()
            if posted.get("comment") != digest:
                if pull_request.comment_id:
                    forge.edit_comment(
                        **call,
                        number=pull_request.number,
                        comment_id=pull_request.comment_id,
                        body=body,
                    )
                    done.append("comment edited")
                else:
                    pull_request.comment_id = forge.create_comment(
                        **call, number=pull_request.number, body=body
                    )
                    done.append("comment created")
                posted["comment"] = digest
        except base.ForgeCallFailed as exc:
            failure = exc
        # Keep what was posted, even before a failure: a retry must not post it twice.
        PullRequest.objects.filter(pk=pull_request.pk).update(
            posted=posted, comment_id=pull_request.comment_id
        )
    if failure is not None:
        HookEvent.objects.create(
            hook=hook,
            kind=HookEvent.Kind.FAILED,
            number=pull_request.number,
            message=f"#{pull_request.number}: could not post to {forge.title}: {failure} "
            "(retried with backoff)"[:500],
        )
        log.warning("feedback for %s failed: %s", pull_request, failure)
        raise failure
    if done:
        HookEvent.objects.create(
            hook=hook,
            kind=HookEvent.Kind.POSTED,
            number=pull_request.number,
            message=f"#{pull_request.number}: {', '.join(done)}"[:500],
        )
    return ", ".join(done) or "unchanged"
