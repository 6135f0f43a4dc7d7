"""Kubeconfig downloads: a short-lived token that reaches one namespace only."""

from __future__ import annotations

import yaml
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from environments.access.teams import can_hold_kubeconfig
from environments.governance import audit
from environments.kube import cluster
from environments.kube.objects import USER_ACCOUNT, access_secret_name
from environments.lib.errors import ServiceError
from environments.lifecycle import queue
from environments.lifecycle.states import State
from environments.models import Environment

# Kubernetes' TokenRequest refuses tokens shorter than 10 minutes.
MIN_TOKEN_SECONDS = 600


def kubeconfig_for(*, environment: Environment, user, ip: str | None = None) -> str:
    """A kubeconfig scoped to the environment's namespace, for its owner and team.

    The token comes from the TokenRequest API and expires with the environment (at
    the latest); Ephemera never stores it. It is bound to the person's own identity
    Secret in the namespace, so it stops working (401) when they leave the team or are
    deactivated (``access.credentials``). Writes an audit entry (without the token).
    """
    if not can_hold_kubeconfig(user, environment):
        raise PermissionDenied(
            "Only the owner and the team's leads, while in the team, can download this kubeconfig."
        )
    if environment.state != State.READY:
        raise ServiceError("A kubeconfig is available once the environment is ready.")
    if not any(
        m["kind"] == "ServiceAccount" and m["metadata"]["name"] == USER_ACCOUNT
        for m in environment.manifests
    ):
        raise ServiceError(
            "This environment was provisioned before kubeconfig downloads existed; clone it."
        )
    if environment.expires_at is None:  # a ready environment always has one
        raise ServiceError("This environment has no expiry yet; try again in a moment.")
    seconds = int((environment.expires_at - timezone.now()).total_seconds())
    if seconds < MIN_TOKEN_SECONDS:
        raise ServiceError(
            "This environment expires in less than 10 minutes; extend it to download a kubeconfig."
        )
    if not user.is_active:  # signed-in sessions end, but a service call might not
        raise PermissionDenied("This account is deactivated.")
    try:
        # Bound to the person's own identity Secret: revoked when they leave the team
        # or are deactivated (access.credentials deletes it).
        token = cluster.issue_token(
            environment.namespace,
            USER_ACCOUNT,
            seconds=seconds,
            bound_secret=access_secret_name(user.pk),
        )
        config = cluster.kubeconfig(
            namespace=environment.namespace, token=token, name=environment.namespace
        )
    except cluster.ClusterError as exc:
        if exc.status == 404:  # their identity is not made yet: the worker makes it
            queue.enqueue_access_on_commit("grant", environment.pk, user.pk)
            raise ServiceError(
                "Your access to this environment is being set up; try again in a few seconds."
            ) from exc
        raise ServiceError(f"The cluster could not issue a token: {exc}") from exc
    audit.record(
        actor=user,
        action="environment.kubeconfig",
        target=environment,
        after={"expires_in_seconds": seconds},
        ip=ip,
    )
    return yaml.safe_dump(config, sort_keys=False)
