"""Pull-request previews: one environment per open pull request, from any forge.

A RepositoryHook (set up in the Django admin) maps a forge's repository to a blueprint,
a team, an owner, the blueprint parameter that takes the head commit, a policy (who may
get an environment) and a limit. Deliveries are authenticated with the hook's secret by
the forge's own scheme. Every event is idempotent: a replayed delivery id does nothing,
and ``Environment.external_key`` ("gitea:owner/name#42") allows one live environment
per pull request.

Ephemera remembers each pull request (``PullRequest``): once closed, a late or
redelivered event other than a reopening creates nothing, and the payload's own state
is checked too. A refusal by policy (a fork, a missing label) is recorded on the hook's
page and posted nowhere; a refusal by the repository's limit is posted to the pull
request. Feedback is posted by a job (``feedback``), never here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction

from environments.catalog.spec import ParametersInvalid
from environments.integrations.forges import base, forge_for
from environments.integrations.forges.base import Forge, PullRequestEvent
from environments.kube.objects import urls as expected_urls
from environments.lib.errors import ServiceError
from environments.lifecycle import forge_feedback, services
from environments.lifecycle.provisioning import environment_spec
from environments.lifecycle.states import ACTIVE_STATES
from environments.models import (
    Environment,
    EnvironmentEvent,
    HookDelivery,
    HookEvent,
    PullRequest,
    RepositoryHook,
)

log = logging.getLogger(__name__)

TRUSTED_ASSOCIATIONS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})


class HookRefused(Exception):
    """The delivery cannot be handled; ``status`` is the HTTP answer."""

    def __init__(self, status: int, detail: str):
        self.status = status
        self.detail = detail
        super().__init__(detail)


def external_key(forge: str, repository: str, number: int) -> str:
    return f"{forge}:{repository}#{number}"


def handle_delivery(*, forge_name: str, headers, body: bytes) -> tuple[int, dict[str, Any]]:
    """Check and handle one delivery; return ``(http status, JSON body)``."""
    forge = forge_for(forge_name)
    delivery = forge.delivery(headers)
    try:
        hook, payload = _verified(forge=forge, signature=delivery.signature, body=body)
        if forge.is_ping(delivery.event):
            return 200, {"status": "pong"}
        if not forge.is_pull_request_event(delivery.event):
            return 200, {"status": f"ignored: {delivery.event[:50] or 'no'} event"}
        delivery_id = delivery.delivery_id
        if "\x00" in delivery_id:
            delivery_id = ""
        if not delivery_id and forge.name == "github":
            raise HookRefused(400, "The X-GitHub-Delivery header is missing.")
        if forge.name != "github":
            # Namespaced, and a redelivered body without an id is the same delivery.
            delivery_id = f"{forge.name}:{delivery_id or hashlib.sha256(body).hexdigest()}"
        return 200, _handle(forge=forge, hook=hook, payload=payload, delivery_id=delivery_id)
    except HookRefused as exc:
        return exc.status, {"detail": exc.detail}
    except base.PayloadInvalid as exc:
        return 400, {"detail": str(exc)}
    except ParametersInvalid as exc:
        return 422, {"detail": f"Invalid parameters: {exc}", "errors": exc.errors}
    except ServiceError as exc:
        return 409, {"detail": str(exc)}
    except PermissionDenied as exc:
        return 403, {"detail": str(exc) or "The hook's owner may not change this environment."}


def _verified(*, forge: Forge, signature: str, body: bytes) -> tuple[RepositoryHook, dict]:
    """The hook whose secret signed ``body``, and the parsed body.

    The signature is checked on the raw bytes before anything parses them, so an
    unsigned body costs one check per hook of that forge and nothing else. A body that
    does not parse (bad JSON, nested too deep, not an event) is 400 once signed.
    """
    if not signature:
        raise HookRefused(401, f"The {forge.signature_header} header is missing.")
    hook = next(
        (
            candidate
            for candidate in RepositoryHook.objects.filter(forge=forge.name).select_related(
                "blueprint", "team", "owner"
            )
            if forge.signature_valid(candidate.secret, body, signature)
        ),
        None,
    )
    # Same answer for an unknown repository and a bad signature: tells a prober nothing.
    refused = HookRefused(401, "The signature does not match this repository's hook secret.")
    if hook is None:
        raise refused
    try:
        payload = json.loads(body)
        repository = forge.repository(payload)
    except (ValueError, KeyError, TypeError, RecursionError):
        raise HookRefused(
            400, f"The body is not a {forge.title} event with a repository."
        ) from None
    # Signed with one repository's secret, the body must be about that repository.
    if repository != hook.repository:
        raise refused
    return hook, payload


@transaction.atomic
def _handle(*, forge: Forge, hook: RepositoryHook, payload: dict, delivery_id: str) -> dict:
    try:
        with transaction.atomic():
            delivery = HookDelivery.objects.create(delivery_id=delivery_id[:100])
    except IntegrityError:
        return {"status": "duplicate"}
    event = forge.pull_request_event(payload)
    # One delivery at a time per repository: the limit is counted, then used. NO KEY:
    # rows that refer to the hook (its events, written by the feedback job) stay free.
    RepositoryHook.objects.select_for_update(no_key=True).filter(pk=hook.pk).first()
    pull_request, _ = PullRequest.objects.select_for_update().get_or_create(
        hook=hook, number=event.number
    )
    before = (pull_request.environment_id, pull_request.refusal, pull_request.state)
    key = external_key(forge.name, hook.repository, event.number)
    # External keys are unique per team (lifecycle.pipelines): the hook's team's one.
    live = Environment.objects.filter(
        team=hook.team, external_key=key, state__in=ACTIVE_STATES
    ).first()
    environment, status = _decide(
        hook=hook, event=event, pull_request=pull_request, live=live, key=key
    )
    if environment is not None:
        pull_request.environment = environment
        _note(environment, delivery_id, f"Pull request #{event.number} at {event.sha[:12]}", hook)
    pull_request.save()
    after = (pull_request.environment_id, pull_request.refusal, pull_request.state)
    if environment is not None or after != before:
        forge_feedback.tell_forge_on_commit(pull_request.pk)

    HookDelivery.objects.filter(pk=delivery.pk).update(outcome=status[:200])
    if environment is None:
        return {"status": status}
    environment.refresh_from_db()
    return {
        "status": status,
        "environment": str(environment.pk),
        "urls": environment.urls or _urls_to_be(environment),
        "state": environment.state,
    }


def _decide(
    *,
    hook: RepositoryHook,
    event: PullRequestEvent,
    pull_request: PullRequest,
    live: Environment | None,
    key: str,
) -> tuple[Environment | None, str]:
    """What this event does; records on ``pull_request`` (saved by the caller)."""
    number = event.number
    if event.kind == base.CLOSE:
        pull_request.state = PullRequest.State.CLOSED
        if live is None:
            return None, "nothing to delete"
        _delete(hook, live, f"Pull request #{number} was closed.")
        return live, "deleted"
    if not event.is_open:
        # A late or redelivered event about a pull request that is closed now.
        pull_request.state = PullRequest.State.CLOSED
        return None, f"ignored: pull request #{number} is closed"
    if pull_request.state == PullRequest.State.CLOSED and event.kind != base.OPEN:
        return None, f"ignored: pull request #{number} was closed"
    if event.kind == base.OTHER:
        return None, f"ignored: {event.action}"

    pull_request.state = PullRequest.State.OPEN
    pull_request.head_sha = event.sha
    why_not = _refused_by_policy(hook, event)
    if why_not:
        if live is not None and event.kind == base.LABEL:
            # The label policy's label was taken off: the environment goes.
            _delete(hook, live, f"Pull request #{number} lost the label {hook.label!r}.")
            return live, "deleted"
        _record(hook, HookEvent.Kind.REFUSED, number, f"#{number} not started: {why_not}.")
        return None, f"refused: {why_not}"
    if live is not None:
        if event.kind == base.LABEL and live.parameters.get(hook.sha_parameter) == event.sha:
            return live, "unchanged"
        return _synchronize(hook=hook, environment=live, sha=event.sha), "updated"
    running = Environment.objects.filter(
        team=hook.team,
        external_key__startswith=external_key(hook.forge, hook.repository, 0)[:-1],
        state__in=ACTIVE_STATES,
    ).count()
    if running >= hook.max_environments:
        refusal = (
            f"Not started: {hook.repository} already has {running} pull-request "
            f"environment{'s' if running != 1 else ''}, its limit. Close a pull request "
            "or ask an admin to raise the limit, then push again."
        )
        pull_request.refusal = refusal
        _record(hook, HookEvent.Kind.REFUSED, number, f"#{number}: {refusal}")
        return None, "refused: the repository's limit of environments is reached"
    pull_request.refusal = ""
    return _open(hook=hook, key=key, number=number, sha=event.sha)


def _refused_by_policy(hook: RepositoryHook, event: PullRequestEvent) -> str:
    """Why this pull request may not have an environment, or "" if it may."""
    policy = hook.policy
    if policy == RepositoryHook.Policy.FORKS:
        return ""
    if policy == RepositoryHook.Policy.LABEL:
        if hook.label in event.labels:
            return ""
        return f"it does not have the label {hook.label!r}, which this repository requires"
    if policy == RepositoryHook.Policy.ASSOCIATION:
        if event.author_association in TRUSTED_ASSOCIATIONS:
            return ""
        relation = (event.author_association or "unknown").lower().replace("_", " ")
        return (
            f"its author {event.author or '(unknown)'} is {relation} here, not an owner, "
            "member or collaborator"
        )
    if event.from_fork:
        return (
            "it comes from a fork, and this repository gives environments to its own "
            "branches only (policy: same repository)"
        )
    return ""


def _record(hook: RepositoryHook, kind: str, number: int, message: str) -> None:
    HookEvent.objects.create(hook=hook, kind=kind, number=number, message=message[:500])
    log.info("hook %s: %s", hook.repository, message)


def _delete(hook: RepositoryHook, environment: Environment, message: str) -> None:
    services.delete_environment(environment=environment, user=hook.owner, message=message)


def _open(*, hook: RepositoryHook, key: str, number: int, sha: str) -> tuple[Environment, str]:
    version = hook.blueprint.current_version()
    if version is None:
        raise HookRefused(409, f"Blueprint {hook.blueprint.name} has no version open to requests.")
    try:
        # A savepoint: if another delivery for the same pull request won the race, the
        # unique constraint on external_key refuses ours and we update theirs instead
        # (the provision job our request queued is discarded with the savepoint).
        with transaction.atomic():
            environment = services.request_environment(
                user=hook.owner,
                version=version,
                parameters={hook.sha_parameter: sha},
                team=hook.team,
                reason=f"PR #{number}",
                external_key=key,
            )
    except IntegrityError:
        live = Environment.objects.get(team=hook.team, external_key=key, state__in=ACTIVE_STATES)
        return _synchronize(hook=hook, environment=live, sha=sha), "updated"
    return environment, "created"


def _synchronize(*, hook: RepositoryHook, environment: Environment, sha: str) -> Environment:
    return services.update_environment(
        environment=environment, user=hook.owner, parameters={hook.sha_parameter: sha}
    )


def _urls_to_be(environment: Environment) -> dict[str, str]:
    """The URLs the environment will have once ready (they depend only on its name)."""
    return expected_urls(environment_spec(environment), settings.INGRESS_URL_SCHEME)


def _note(environment: Environment, delivery_id: str, what: str, hook: RepositoryHook) -> None:
    links = ", ".join(f"{name}: {url}" for name, url in _urls_to_be(environment).items())
    EnvironmentEvent.objects.get_or_create(
        environment=environment,
        source_key=f"{hook.forge}:{delivery_id}"[:200],
        defaults={
            "kind": EnvironmentEvent.Kind.INFO,
            "message": f"{what} from {hook.repository}." + (f" Preview: {links}" if links else ""),
        },
    )
