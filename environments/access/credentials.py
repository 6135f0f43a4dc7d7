"""Per-person cluster credentials: each kubeconfig is revocable on its own.

A person's kubeconfig token is bound to an empty Secret of their own in the
environment's namespace (``kube.objects.access_secret``). These jobs (run by the worker,
with the controller's credential) create those Secrets for the people who may hold a
kubeconfig, and delete them when a person may no longer: they left the team, or were
deactivated. Deleting the Secret revokes every token bound to it (the API server answers
401). When the environment ends, the namespace takes everything with it.

Jobs receive ids, are enqueued on commit (``lifecycle.queue.enqueue_access``), and are
idempotent: create-if-missing and delete-if-present, never a read.
"""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from environments.access.teams import can_hold_kubeconfig
from environments.kube import cluster
from environments.kube.objects import (
    GENERATED_SECRET,
    SECRETS_READER,
    access_secret,
    access_secret_name,
)
from environments.lifecycle import queue
from environments.lifecycle.states import State
from environments.models import Environment, Membership

log = logging.getLogger(__name__)

# Where a namespace may exist and a kubeconfig may have been issued.
WITH_NAMESPACE = (State.PROVISIONING, State.READY, State.FAILED)


def may_hold(user, environment: Environment) -> bool:
    """Whether ``user`` may hold a kubeconfig for ``environment`` now (the rule of
    ``access.teams``)."""
    return can_hold_kubeconfig(user, environment)


def grant(environment: Environment, user) -> bool:
    """Make ``user``'s identity Secret in the namespace (no-op if it exists)."""
    return cluster.create_once(access_secret(environment.namespace, str(environment.pk), user.pk))


def revoke(environment: Environment, user_id) -> bool:
    """Delete ``user_id``'s identity Secret: every token bound to it stops working."""
    return cluster.delete(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": access_secret_name(user_id),
                "namespace": environment.namespace,
            },
        }
    )


def _holders(environment: Environment) -> list:
    """The people given an identity up front: the owner and the team's members (others
    allowed, such as portal admins, get theirs on their first download)."""
    User = get_user_model()
    return list(
        User.objects.filter(
            Q(pk=environment.owner_id) | Q(memberships__team_id=environment.team_id),
            is_active=True,
        ).distinct()
    )


def grant_environment(environment_id: str) -> str:
    """The provision job's follow-up: identities for everyone who may hold one."""
    environment = Environment.objects.filter(
        pk=environment_id, state__in=WITH_NAMESPACE, pooled=False
    ).first()
    if environment is None:
        return "nothing to do"
    made = sum(grant(environment, u) for u in _holders(environment) if may_hold(u, environment))
    return f"granted {made}"


def grant_person(environment_id: str, user_id: int) -> str:
    """One person's identity in one environment (their first kubeconfig download)."""
    environment = Environment.objects.filter(pk=environment_id, state__in=WITH_NAMESPACE).first()
    user = get_user_model().objects.filter(pk=user_id).first()
    if environment is None or user is None or not may_hold(user, environment):
        return "nothing to do"
    return "granted" if grant(environment, user) else "already granted"


def sync_person(user_id: int) -> str:
    """After a membership or activity change: revoke ``user_id``'s identity wherever
    they may no longer hold a kubeconfig, and grant it in their teams' environments."""
    user = get_user_model().objects.filter(pk=user_id).first()
    revoked = granted = 0
    environments = Environment.objects.filter(
        state__in=WITH_NAMESPACE, pooled=False
    ).select_related("team")
    for environment in environments:
        if user is not None and may_hold(user, environment):
            if (
                environment.owner_id == user.pk
                or Membership.objects.filter(team_id=environment.team_id, user=user).exists()
            ):
                granted += grant(environment, user)
        else:
            revoked += revoke(environment, user_id)
    log.info("access of person %s: %d revoked, %d granted", user_id, revoked, granted)
    return f"revoked {revoked}, granted {granted}"


# Changes made anywhere (the people pages, the Django admin, the shell) queue the sync.


def sync_later(user_id) -> None:
    """Queue ``sync_person`` on commit, if any environment could hold an identity."""
    if Environment.objects.filter(state__in=WITH_NAMESPACE).exists():
        queue.enqueue_access_on_commit("person", user_id)


@receiver(post_delete, sender=Membership, dispatch_uid="credentials-membership-deleted")
def _membership_deleted(sender, instance, **kwargs):
    sync_later(instance.user_id)


@receiver(post_save, sender=Membership, dispatch_uid="credentials-membership-saved")
def _membership_saved(sender, instance, created, raw=False, **kwargs):
    if created and not raw:
        sync_later(instance.user_id)


def _user_saved(sender, instance, created, raw=False, **kwargs):
    if not created and not raw and not instance.is_active:
        sync_later(instance.pk)


def connect() -> None:
    post_save.connect(_user_saved, sender=get_user_model(), dispatch_uid="credentials-user-saved")


# --- Generated credentials, shown to the owner ----------------------------------------


def generated_values(environment: Environment, user) -> dict[str, str] | None:
    """The environment's generated credentials (key -> value), read from its namespace at
    request time with a short-lived token of its own reader account; None when ``user``
    may not see them, or they cannot be read now. Never stored, logged or audited."""
    if not environment.blueprint_version.blueprint_spec.secrets:
        return None
    if environment.state != State.READY or not may_hold(user, environment):
        return None
    try:
        return cluster.read_secret_as(environment.namespace, GENERATED_SECRET, SECRETS_READER)
    except cluster.ClusterError as exc:
        log.warning("generated credentials of %s unreadable: %s", environment.pk, exc.status)
        return None
