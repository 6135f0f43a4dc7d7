"""GitHub ``pull_request`` webhook: one preview environment per open pull request.

A RepositoryHook (set up in the Django admin) maps ``owner/name`` to a blueprint, a
team, an owner and the blueprint parameter that takes the head commit. Deliveries
are signed with the hook's secret (``X-Hub-Signature-256``). Every event is
idempotent: a replayed delivery id does nothing, and ``Environment.external_key``
("github:owner/name#42") allows one live environment per pull request.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction

from environments.catalog.spec import ParametersInvalid
from environments.kube.objects import urls as expected_urls
from environments.lib.errors import ServiceError
from environments.lib.signing import signature_valid
from environments.lifecycle import services
from environments.lifecycle.provisioning import environment_spec
from environments.lifecycle.states import ACTIVE_STATES
from environments.models import Environment, EnvironmentEvent, HookDelivery, RepositoryHook

log = logging.getLogger(__name__)


class HookRefused(Exception):
    """The delivery cannot be handled; ``status`` is the HTTP answer."""

    def __init__(self, status: int, detail: str):
        self.status = status
        self.detail = detail
        super().__init__(detail)


def external_key(repository: str, number: int) -> str:
    return f"github:{repository}#{number}"


def handle_delivery(
    *, event: str, delivery_id: str, signature: str, body: bytes
) -> tuple[int, dict[str, Any]]:
    """Check and handle one delivery; return ``(http status, JSON body)``."""
    try:
        hook, payload = _verified(signature=signature, body=body)
        if event == "ping":
            return 200, {"status": "pong"}
        if event != "pull_request":
            return 200, {"status": f"ignored: {event or 'no'} event"}
        if not delivery_id or "\x00" in delivery_id:
            raise HookRefused(400, "The X-GitHub-Delivery header is missing.")
        return 200, _handle_pull_request(hook=hook, payload=payload, delivery_id=delivery_id)
    except HookRefused as exc:
        return exc.status, {"detail": exc.detail}
    except ParametersInvalid as exc:
        return 422, {"detail": f"Invalid parameters: {exc}", "errors": exc.errors}
    except ServiceError as exc:
        return 409, {"detail": str(exc)}
    except PermissionDenied as exc:
        return 403, {"detail": str(exc) or "The hook's owner may not change this environment."}


def _verified(*, signature: str, body: bytes) -> tuple[RepositoryHook, dict]:
    """The hook whose secret signed ``body``, and the parsed body.

    The signature is checked on the raw bytes before anything parses them, so an
    unsigned body costs one HMAC per hook and nothing else. A body that does not parse
    (bad JSON, nested too deep, not an event) is 400 once signed.
    """
    if not signature:
        raise HookRefused(401, "The X-Hub-Signature-256 header is missing.")
    hook = next(
        (
            candidate
            for candidate in RepositoryHook.objects.select_related("blueprint", "team", "owner")
            if signature_valid(candidate.secret, body, signature)
        ),
        None,
    )
    # Same answer for an unknown repository and a bad signature: tells a prober nothing.
    refused = HookRefused(401, "The signature does not match this repository's hook secret.")
    if hook is None:
        raise refused
    try:
        payload = json.loads(body)
        repository = payload["repository"]["full_name"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise HookRefused(400, "The body is not a GitHub event with a repository.") from None
    # Signed with one repository's secret, the body must be about that repository.
    if repository != hook.repository:
        raise refused
    return hook, payload


@transaction.atomic
def _handle_pull_request(*, hook: RepositoryHook, payload: dict, delivery_id: str) -> dict:
    try:
        with transaction.atomic():
            delivery = HookDelivery.objects.create(delivery_id=delivery_id[:100])
    except IntegrityError:
        return {"status": "duplicate"}
    try:
        action = str(payload["action"])
        pull_request = payload["pull_request"]
        number = int(payload.get("number") or pull_request["number"])
        sha = str(pull_request["head"]["sha"]).replace("\x00", "")
    except (KeyError, TypeError, ValueError):
        raise HookRefused(400, "The body is not a pull_request event.") from None
    key = external_key(hook.repository, number)
    live = Environment.objects.filter(external_key=key, state__in=ACTIVE_STATES).first()

    if action in {"opened", "reopened", "synchronize"}:
        if live is None:
            environment, status = _open(hook=hook, key=key, number=number, sha=sha)
        else:
            environment, status = _synchronize(hook=hook, environment=live, sha=sha), "updated"
        _note(environment, delivery_id, f"Pull request #{number} at {sha[:12]}", hook)
    elif action == "closed":
        if live is None:
            status, environment = "nothing to delete", None
        else:
            services.delete_environment(
                environment=live,
                user=hook.owner,
                message=f"Pull request #{number} was closed.",
            )
            environment, status = live, "deleted"
    else:
        status, environment = f"ignored: {action}", None

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
            )
            Environment.objects.filter(pk=environment.pk).update(external_key=key)
    except IntegrityError:
        live = Environment.objects.get(external_key=key, state__in=ACTIVE_STATES)
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
        source_key=f"github:{delivery_id}"[:200],
        defaults={
            "kind": EnvironmentEvent.Kind.INFO,
            "message": f"{what} from {hook.repository}." + (f" Preview: {links}" if links else ""),
        },
    )
