"""Provisioning and teardown: what the provision and teardown jobs do.

Each function receives an id, re-reads the row, checks the state and claims its work
with a guarded UPDATE, so running it twice, or two workers at once, is safe. A
provision job holds a lease it renews as it goes; if its worker dies (even ``kill -9``),
the lease runs out and the reconciler starts the job again, which re-applies the
recorded manifests (server-side apply, a no-op for what already exists) and carries on.
See docs/contributing.md ("Jobs").
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from environments.catalog.rendering import render_components
from environments.governance.billing import accrue
from environments.integrations import notifications
from environments.kube import cluster
from environments.kube.objects import EnvironmentSpec, build_manifests, urls
from environments.lifecycle.states import State
from environments.lifecycle.transitions import transition
from environments.models import Environment, EnvironmentEvent

log = logging.getLogger(__name__)


# --- provision ------------------------------------------------------------------------


def environment_spec(environment: Environment) -> EnvironmentSpec:
    version = environment.blueprint_version
    blueprint = version.blueprint_spec
    return EnvironmentSpec(
        environment_id=str(environment.pk),
        name=environment.name,
        owner_id=str(environment.owner_id),
        team=environment.team.slug,
        blueprint=version.blueprint.name,
        expires_at=(environment.expires_at or timezone.now()).isoformat(),
        components=render_components(blueprint, environment.parameters),
        quota=blueprint.quota.model_dump(),
        base_domain=settings.BASE_DOMAIN,
        ingress_namespace=settings.INGRESS_NAMESPACE,
        ingress_class=settings.INGRESS_CLASS,
        instance=settings.EPHEMERA_INSTANCE,
        kube_access=blueprint.kube_access.value,
    )


class LeaseLost(Exception):
    """This job's provisioning lease was taken over (or the environment left provisioning)."""


def _claim(environment_id) -> uuid.UUID | None:
    """Take the provisioning lease: approved -> provisioning, or an expired lease.

    Returns this job's lease token, or None if another job holds a live lease.
    """
    now = timezone.now()
    lease = now + timedelta(seconds=settings.PROVISION_LEASE_SECONDS)
    token = uuid.uuid4()
    if transition(
        environment_id,
        from_states=State.APPROVED,
        to_state=State.PROVISIONING,
        message="Provisioning started.",
        lease_until=lease,
        lease_owner=token,
        provision_started_at=now,
        attempts=F("attempts") + 1,
    ):
        return token
    taken = (
        Environment.objects.filter(pk=environment_id, state=State.PROVISIONING)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_until=lease, lease_owner=token, attempts=F("attempts") + 1, updated_at=now)
    )
    return token if taken else None


def _renew_lease(environment_id, token: uuid.UUID) -> None:
    """Renew this job's lease, or raise LeaseLost: deleted meanwhile, or taken over."""
    now = timezone.now()
    renewed = Environment.objects.filter(
        pk=environment_id, state=State.PROVISIONING, lease_owner=token
    ).update(lease_until=now + timedelta(seconds=settings.PROVISION_LEASE_SECONDS))
    if not renewed:
        raise LeaseLost


def record_problem(environment_id, problem: cluster.Problem) -> None:
    """One EnvironmentEvent per distinct problem (the unique source_key drops repeats)."""
    EnvironmentEvent.objects.get_or_create(
        environment_id=environment_id,
        source_key=problem.key[:200],
        defaults={"kind": EnvironmentEvent.Kind.KUBE, "message": problem.message},
    )


def _fail(environment_id, message: str) -> None:
    if transition(
        environment_id,
        from_states=State.PROVISIONING,
        to_state=State.FAILED,
        message=f"Provisioning failed: {message}",
        last_error=message,
        lease_until=None,
        lease_owner=None,
        accrued_until=None,  # failed environments are not billed
    ):
        notifications.send_later(notifications.FAILED, environment_id)


def _apply_and_watch(
    environment: Environment, token: uuid.UUID, deadline: float, fatal: list
) -> tuple | None:
    """Render (once) and apply the manifests, then watch until ready or a fatal problem.

    Returns None when the parameters changed while rendering (an update raced us).
    """
    environment_id = environment.pk
    manifests, parameters = Environment.objects.values_list("manifests", "parameters").get(
        pk=environment_id
    )
    if not manifests:
        # Rendered once and recorded: re-runs and teardown use exactly these. The write
        # is guarded so that parameters changed meanwhile are never overwritten.
        environment.parameters = parameters
        spec = environment_spec(environment)
        manifests = build_manifests(spec)
        written = Environment.objects.filter(
            pk=environment_id, manifests=[], parameters=parameters
        ).update(
            manifests=manifests,
            urls=urls(spec, settings.INGRESS_URL_SCHEME),
            updated_at=timezone.now(),
        )
        if not written:
            return None
    for manifest in manifests:
        _renew_lease(environment_id, token)  # never apply on a lease another job holds
        cluster.apply(manifest)
    components = [m["metadata"]["name"] for m in manifests if m["kind"] == "Deployment"]

    def on_progress(ready: dict) -> None:
        Environment.objects.filter(pk=environment_id).update(component_status=ready)

    def on_tick() -> bool:
        _renew_lease(environment_id, token)  # LeaseLost ends the watch and the job
        for problem in cluster.problems(environment.namespace, components):
            record_problem(environment_id, problem)
            if problem.fatal:
                fatal.append(problem)
        return not fatal

    ready = cluster.watch_until_ready(
        environment.namespace,
        components,
        deadline=deadline,
        on_progress=on_progress,
        on_tick=on_tick,
    )
    return components, ready


def provision(environment_id: str) -> str:
    """Create the environment's objects and wait until every Deployment is available."""
    environment = (
        Environment.objects.select_related("blueprint_version__blueprint", "team")
        .filter(pk=environment_id)
        .first()
    )
    if environment is None:
        return "no such environment"
    if environment.state not in {State.APPROVED, State.PROVISIONING}:
        return f"nothing to do: {environment.state}"
    token = _claim(environment_id)
    if token is None:
        return "another worker holds the lease"
    environment.refresh_from_db()

    started = environment.provision_started_at or timezone.now()
    deadline_at = started + timedelta(seconds=settings.PROVISION_DEADLINE_SECONDS)
    deadline = time.monotonic() + (deadline_at - timezone.now()).total_seconds()

    fatal: list[cluster.Problem] = []
    try:
        # More than one round only when an update (new parameters, e.g. a pull
        # request's new commit) arrives while this job is working: it clears the
        # recorded manifests, and the next round renders and applies the new ones.
        components, ready = [], {}
        while time.monotonic() < deadline:
            result = _apply_and_watch(environment, token, deadline, fatal)
            if result is not None:
                components, ready = result
                updated = Environment.objects.filter(pk=environment_id, manifests=[]).exists()
                if fatal or not updated:
                    break
            if not Environment.objects.filter(pk=environment_id, state=State.PROVISIONING).exists():
                break  # deleted meanwhile
    except LeaseLost:
        return "stopped: the environment left provisioning, or another job took it over"
    except cluster.ClusterError as exc:
        _fail(environment_id, str(exc))
        return "failed"

    if fatal:
        _fail(environment_id, fatal[0].message)
        return "failed"
    applied = Environment.objects.filter(pk=environment_id).exclude(manifests=[]).exists()
    if components and applied and all(ready.get(name, {}).get("ready") for name in components):
        now = timezone.now()
        if transition(
            environment_id,
            from_states=State.PROVISIONING,
            to_state=State.READY,
            message="Ready.",
            ready_at=now,
            # After an update, billing resumes where it paused (the pods kept running).
            accrued_until=Coalesce(F("accrued_until"), Value(now)),
            lease_until=None,
            lease_owner=None,
            component_status=ready,
        ):
            notifications.send_later(notifications.READY, environment_id)
        return "ready"
    if Environment.objects.filter(pk=environment_id, state=State.PROVISIONING).exists():
        waiting = ", ".join(
            f"{name} {info['available']}/{info['replicas']}"
            for name, info in sorted(ready.items())
            if not info["ready"]
        )
        minutes = settings.PROVISION_DEADLINE_SECONDS // 60 or 1
        _fail(
            environment_id,
            f"not ready after {minutes} min (still waiting for {waiting or 'the components'}).",
        )
        return "failed"
    return "stopped: the environment left provisioning"


# --- teardown -------------------------------------------------------------------------


def _namespaces_of(environment: Environment) -> list[dict]:
    # Teardown uses what was applied, not the blueprint's current version.
    return [m for m in environment.manifests if m["kind"] == "Namespace"] or [
        cluster.namespace_manifest(environment.namespace)
    ]


def start_deleting(environment_ids) -> None:
    """Issue the namespace deletes for many environments at once, without waiting.

    Kubernetes' namespace controller waits 5 s before it empties a deleted namespace, and
    each teardown job holds a worker until its namespace is gone. Deleting a batch's
    namespaces up front lets those waits overlap: the teardown jobs that follow mostly
    find their namespace already gone. Best effort: the jobs delete again anyway.
    """
    rows = Environment.objects.filter(pk__in=list(environment_ids), state=State.TEARING_DOWN)
    for environment in rows.only("pk", "name", "manifests"):
        for manifest in _namespaces_of(environment):
            try:
                cluster.delete(manifest)
            except cluster.ClusterError as exc:
                log.warning("early delete of %s failed: %s", manifest["metadata"]["name"], exc)


def teardown(environment_id: str) -> str:
    """Delete the namespace recorded at provisioning and wait until it is gone."""
    environment = Environment.objects.filter(pk=environment_id).first()
    if environment is None:
        return "no such environment"
    if environment.state == State.DELETED:
        return "already deleted"
    if environment.state != State.TEARING_DOWN:
        return f"nothing to do: {environment.state}"
    namespaces = _namespaces_of(environment)
    for manifest in namespaces:
        cluster.delete(manifest)
    for manifest in namespaces:
        if not cluster.wait_namespace_gone(
            manifest["metadata"]["name"], timeout=settings.TEARDOWN_TIMEOUT_SECONDS
        ):
            # Left in tearing_down: the reconciler runs teardown again.
            raise cluster.ClusterError(
                f"namespace {manifest['metadata']['name']} still exists after "
                f"{settings.TEARDOWN_TIMEOUT_SECONDS} s"
            )
    accrue(environment_id)
    transition(
        environment_id,
        from_states=State.TEARING_DOWN,
        to_state=State.DELETED,
        message="Deleted: the namespace and everything in it is gone.",
        deleted_at=timezone.now(),
        # Nothing answers there any more: no links, no "Ready" components.
        urls={},
        component_status={},
        lease_until=None,
        lease_owner=None,
    )
    return "deleted"


# --- cost -----------------------------------------------------------------------------


# --- scheduled --------------------------------------------------------------------------
