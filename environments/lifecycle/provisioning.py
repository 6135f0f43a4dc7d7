"""Provisioning and teardown: what the provision and teardown jobs do, and the outcomes
the cluster watcher records.

Jobs never wait on Kubernetes. ``provision`` claims (a lease), renders once, applies and
returns; ``teardown`` issues the namespace deletes and returns. Whether the environment
became ready, failed or is gone is observed by the watcher (``lifecycle.watcher``),
which calls ``mark_ready``, ``fail`` and ``mark_deleted`` here.

Each job receives an id, re-reads the row, checks the state and claims its work with a
guarded UPDATE, so running it twice, or two workers at once, is safe. A provision job
holds a lease that a heartbeat thread renews every few seconds; if its worker dies (even
``kill -9``), the lease runs out within ``PROVISION_LEASE_SECONDS`` and the watcher
enqueues the job again, which re-applies the recorded manifests (server-side apply, a
no-op for what already exists). See docs/contributing.md ("Jobs").
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import string
import threading
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from environments.catalog.rendering import render_components
from environments.governance.billing import accrue
from environments.integrations import notifications
from environments.kube import cluster
from environments.kube.objects import (
    EnvironmentSpec,
    addresses,
    build_manifests,
    generated_secret,
    urls,
    without_own_role,
)
from environments.lifecycle import queue, telemetry
from environments.lifecycle.states import State
from environments.lifecycle.transitions import transition
from environments.models import Environment, EnvironmentEvent

log = logging.getLogger(__name__)


# --- provision ------------------------------------------------------------------------


def environment_spec(environment: Environment) -> EnvironmentSpec:
    """What the builders need; the components rendered with the environment's own
    addresses (``{{ urls.x }}``...), known once its name is."""
    version = environment.blueprint_version
    blueprint = version.blueprint_spec
    variant = environment.variant or {}
    unrendered = _environment_spec(environment, [c.model_dump() for c in environment.components])
    dynamic = addresses(unrendered, settings.INGRESS_URL_SCHEME)
    return dataclasses.replace(
        unrendered,
        components=render_components(
            blueprint, environment.parameters, variant=variant, dynamic=dynamic
        ),
    )


def _environment_spec(environment: Environment, components: list[dict]) -> EnvironmentSpec:
    version = environment.blueprint_version
    blueprint = version.blueprint_spec
    return EnvironmentSpec(
        environment_id=str(environment.pk),
        name=environment.name,
        owner_id=str(environment.owner_id),
        team=environment.team.slug,
        blueprint=version.blueprint.name,
        expires_at=(environment.expires_at or timezone.now()).isoformat(),
        components=components,
        quota=blueprint.quota.model_dump(),
        base_domain=settings.BASE_DOMAIN,
        ingress_namespace=settings.INGRESS_NAMESPACE,
        ingress_class=settings.INGRESS_CLASS,
        instance=settings.EPHEMERA_INSTANCE,
        kube_access=blueprint.kube_access.value,
        user_role_prefix=settings.KUBE_USER_CLUSTER_ROLE_PREFIX,
        egress=[rule.model_dump() for rule in blueprint.egress],
        egress_blocked=tuple(settings.EGRESS_BLOCKED_CIDRS),
        dns_namespace=settings.DNS_NAMESPACE,
        storage_default=settings.EPHEMERAL_STORAGE_DEFAULT,
        secrets=[secret.model_dump() for secret in blueprint.secrets],
        cluster_domain=settings.CLUSTER_DOMAIN,
        storage_class=settings.VOLUME_STORAGE_CLASS,
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
    # A job that died, or an update (ready -> provisioning) or a lost job: the lease is
    # free or has run out. A restarted job gets a whole deadline of its own: the time
    # the dead one used is not held against it.
    taken = (
        Environment.objects.filter(pk=environment_id, state=State.PROVISIONING)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(
            lease_until=lease,
            lease_owner=token,
            attempts=F("attempts") + 1,
            provision_started_at=now,
            updated_at=now,
        )
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


def fail(environment_id, message: str, *, unreachable: bool = False, actor: str = "") -> bool:
    """provisioning -> failed with the reason in plain words.

    ``unreachable``: it failed only because the API server could not be reached; the
    watcher retries it once the server answers again (``OUTAGE_RETRY_LIMIT`` times).
    """
    if transition(
        environment_id,
        from_states=State.PROVISIONING,
        to_state=State.FAILED,
        message=f"Provisioning failed: {message}",
        last_error=message,
        failed_unreachable=unreachable,
        lease_until=None,
        lease_owner=None,
        accrued_until=None,  # failed environments are not billed
    ):
        log.info("environment %s failed%s: %s", environment_id, actor, message)
        notifications.send_later(notifications.FAILED, environment_id)
        return True
    return False


def mark_ready(environment_id, component_status: dict, *, actor: str = "") -> bool:
    """provisioning -> ready: accrual starts (or resumes after an update), the lease ends."""
    now = timezone.now()
    if transition(
        environment_id,
        from_states=State.PROVISIONING,
        to_state=State.READY,
        message="Ready: every component is available.",
        ready_at=now,
        # After an update, billing resumes where it paused (the pods kept running).
        accrued_until=Coalesce(F("accrued_until"), Value(now)),
        lease_until=None,
        lease_owner=None,
        component_status=component_status,
        failed_unreachable=False,
        outage_retries=0,
    ):
        log.info("environment %s ready%s", environment_id, actor)
        started = (
            Environment.objects.filter(pk=environment_id)
            .values_list("provision_started_at", flat=True)
            .first()
        )
        if started is not None:
            telemetry.observe_duration("provision", (now - started).total_seconds())
        notifications.send_later(notifications.READY, environment_id)
        # Recovery: one snapshot of each revision that became ready (recovery.snapshots).
        queue.enqueue_snapshot_on_commit(environment_id, f"ready:{now.isoformat()}")
        return True
    return False


def mark_deleted(environment_id, *, actor: str = "") -> bool:
    """tearing_down -> deleted, once the namespace is gone: bill up to now, then stop."""
    accrue(environment_id)
    since = (
        Environment.objects.filter(pk=environment_id, state=State.TEARING_DOWN)
        .values_list("state_changed_at", flat=True)
        .first()
    )
    if transition(
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
    ):
        log.info("environment %s deleted%s", environment_id, actor)
        # Verified teardown (recovery.teardown_receipt): the namespace is gone now.
        queue.enqueue_recovery_on_commit("verify_teardown", environment_id)
        if since is not None:
            telemetry.observe_duration("teardown", (timezone.now() - since).total_seconds())
        return True
    return False


class _Heartbeat:
    """Renews a provision job's lease every few seconds, apart from its API calls (one
    call may retry for ``KUBE_RETRY_SECONDS``), so a short lease still means a live job.
    Dies with the job's process: a killed job's lease runs out at once."""

    def __init__(self, environment_id, token: uuid.UUID):
        self.environment_id = environment_id
        self.token = token
        self.stopped = threading.Event()
        self.lost = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="lease-heartbeat")

    def _run(self) -> None:
        interval = max(1.0, settings.PROVISION_LEASE_SECONDS / 4)
        try:
            while not self.stopped.wait(interval):
                try:
                    _renew_lease(self.environment_id, self.token)
                except LeaseLost:
                    self.lost.set()
                    return
        finally:
            connection.close()

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


def _render_once(environment: Environment) -> list[dict] | None:
    """The recorded manifests, rendering and recording them if there are none yet.

    Returns None when the parameters changed while rendering (an update raced us)."""
    environment_id = environment.pk
    manifests, parameters = Environment.objects.values_list("manifests", "parameters").get(
        pk=environment_id
    )
    if manifests:
        if any(m["kind"] == "Role" for m in manifests):  # recorded by an older release
            legacy = manifests
            manifests = without_own_role(environment_spec(environment), legacy)
            Environment.objects.filter(pk=environment_id, manifests=legacy).update(
                manifests=manifests, updated_at=timezone.now()
            )
        return manifests
    # Rendered once and recorded: re-runs and teardown use exactly these. The write is
    # guarded so that parameters changed meanwhile are never overwritten.
    environment.parameters = parameters
    spec = environment_spec(environment)
    manifests = build_manifests(spec)
    written = Environment.objects.filter(
        pk=environment_id, manifests=[], parameters=parameters
    ).update(
        manifests=manifests,
        urls=urls(spec, settings.INGRESS_URL_SCHEME),
        component_status={},
        updated_at=timezone.now(),
    )
    return manifests if written else None


# --- Generated credentials (issue 14, finding 4) ---


_SECRET_ALPHABET = string.ascii_letters + string.digits


def generated_value(length: int) -> str:
    """A fresh random credential (letters and digits: safe in any connection string)."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(length))


def _generate_secrets(environment: Environment) -> None:
    """Create the environment's generated Secret once, before anything uses it.

    Create-only: if it exists (a retry, an update) it is kept as it is, so values never
    change under a running database. The values exist only in that Secret: never in the
    recorded manifests, the database, the logs or the audit log."""
    spec = environment_spec(environment)
    if not spec.secrets:
        return
    values = {s["name"]: generated_value(s["length"]) for s in spec.secrets}
    cluster.create_once(generated_secret(spec, values))


def provision(environment_id: str) -> str:
    """Claim, render (once) and apply the environment's objects, then return.

    The watcher turns the Deployments becoming available into ``ready`` (or a problem
    into ``failed``). Returns "applied", "failed", or why there was nothing to do.
    """
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
    try:
        with _Heartbeat(environment_id, token) as heartbeat:
            # More than one round only when an update (new parameters, e.g. a pull
            # request's new commit) arrives while this job applies: it clears the
            # recorded manifests, and the next round renders and applies the new ones.
            while True:
                manifests = _render_once(environment)
                if manifests is not None:
                    generations = {}
                    for manifest in manifests:
                        if heartbeat.lost.is_set():
                            raise LeaseLost
                        _renew_lease(environment_id, token)  # never apply on another's lease
                        applied = cluster.apply(manifest)
                        if manifest["kind"] == "Namespace":
                            _generate_secrets(environment)
                        if manifest["kind"] == "Deployment":
                            meta = applied.get("metadata", {})
                            generations[meta.get("name")] = meta.get("generation", 0)
                    # Done: give the lease back, unless new parameters arrived meanwhile.
                    # The generations let the watcher tell this apply's Deployments from
                    # the previous ones still in its view (an update of a ready one).
                    released = (
                        Environment.objects.filter(
                            pk=environment_id, state=State.PROVISIONING, lease_owner=token
                        )
                        .exclude(manifests=[])
                        .update(
                            lease_owner=None,
                            lease_until=None,
                            applied_generations=generations,
                            updated_at=timezone.now(),
                        )
                    )
                    if released:
                        # Each person's revocable kubeconfig identity (access.credentials).
                        queue.enqueue_access_on_commit("environment", environment_id)
                        return "applied"
                _renew_lease(environment_id, token)  # LeaseLost if it left provisioning
    except LeaseLost:
        return "stopped: the environment left provisioning, or another job took it over"
    except cluster.ClusterUnavailable as exc:
        fail(environment_id, str(exc), unreachable=True)
        return "failed"
    except cluster.ClusterError as exc:
        fail(environment_id, str(exc))
        return "failed"


def job_lost() -> Q:
    """Provisioning environments that need their job again: the job died holding its
    lease (which ran out), or no job holds it and nothing is applied yet (an update's
    or a retry's job was lost). A job that finished applying leaves no lease and a
    non-empty manifest list: the watcher waits for readiness, nothing to restart."""
    now = timezone.now()
    died = Q(lease_owner__isnull=False, lease_until__lt=now)
    never_applied = Q(lease_owner__isnull=True, manifests=[])
    return Q(state=State.PROVISIONING) & (died | never_applied)


# --- teardown -------------------------------------------------------------------------


def _namespaces_of(environment: Environment) -> list[dict]:
    # Teardown uses what was applied, not the blueprint's current version.
    return [m for m in environment.manifests if m["kind"] == "Namespace"] or [
        cluster.namespace_manifest(environment.namespace)
    ]


def start_deleting(environment_ids) -> None:
    """Issue the namespace deletes for many environments at once (the reaper's batch).

    Best effort: the teardown jobs delete again anyway; the watcher marks each deleted
    once its namespace is gone.
    """
    rows = Environment.objects.filter(pk__in=list(environment_ids), state=State.TEARING_DOWN)
    for environment in rows.only("pk", "name", "manifests"):
        for manifest in _namespaces_of(environment):
            try:
                cluster.delete(manifest)
            except cluster.ClusterError as exc:
                log.warning("early delete of %s failed: %s", manifest["metadata"]["name"], exc)


def teardown(environment_id: str) -> str:
    """Delete the namespace recorded at provisioning, and return.

    The namespace controller empties it (after a 5 s wait); the watcher marks the
    environment deleted when the namespace is gone. If it is gone already, so does this.
    """
    environment = Environment.objects.filter(pk=environment_id).first()
    if environment is None:
        return "no such environment"
    if environment.state == State.DELETED:
        return "already deleted"
    if environment.state != State.TEARING_DOWN:
        return f"nothing to do: {environment.state}"
    gone = [not cluster.delete(manifest) for manifest in _namespaces_of(environment)]
    if all(gone):
        mark_deleted(environment_id, actor=" (teardown job: nothing left to delete)")
        return "deleted"
    return "deleting"
