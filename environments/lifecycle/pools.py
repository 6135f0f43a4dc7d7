"""Warm pools (issue 16): ready, unclaimed environments a request takes at once.

A blueprint declares ``pool: {size: N}``; an admin chooses the team that pays for it
(``Blueprint.pool_team``, ``set_pool_team``). ``refill`` keeps N environments of the
current version with the default parameters in the pool: owned by the pool's account,
charged to the pool's team, counted in that team's quota, shown to nobody. It runs on
the schedule (``tasks.refill_pools``) and right after each claim; it only writes rows and
enqueues provision jobs, so it never waits on Kubernetes.

``claim`` is called by ``services.request_environment`` once the request passed the
requester's quotas and needs no approval: it takes the oldest ready pooled environment
of that version with one guarded UPDATE (``transitions.claim_pooled``), so two requests
never get the same one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import partial

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from environments.access.roles import is_admin
from environments.catalog.rendering import resolve_parameters
from environments.catalog.spec import ParametersInvalid
from environments.governance import audit, quotas
from environments.governance.billing import accrue
from environments.lib.durations import format_duration
from environments.lifecycle.queue import enqueue_access_on_commit, enqueue_on_commit
from environments.lifecycle.states import COUNTED_STATES, DELETABLE_STATES, State
from environments.lifecycle.transitions import claim_pooled, transition
from environments.models import Blueprint, BlueprintVersion, Environment, EnvironmentEvent, Team

log = logging.getLogger(__name__)

# The account that owns unclaimed pooled environments: it cannot sign in.
POOL_USERNAME = "ephemera-pool"


def pool_account():
    User = get_user_model()
    account, _ = User.objects.get_or_create(
        username=POOL_USERNAME, defaults={"is_active": False, "email": ""}
    )
    return account


def pool_size(version: BlueprintVersion | None) -> int:
    spec = version.blueprint_spec if version is not None else None
    return spec.pool.size if spec is not None and spec.pool is not None else 0


def default_parameters(version: BlueprintVersion) -> dict | None:
    """The parameters a pooled environment runs with (None: the blueprint has none to give)."""
    try:
        return resolve_parameters(version.blueprint_spec, {})
    except ParametersInvalid:
        return None


# --- Reads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolStatus:
    """What the blueprint page shows about its pool."""

    size: int
    team: Team | None
    ready: int
    warming: int
    hourly_cost: Decimal  # the whole pool, per hour, charged to ``team``

    @property
    def running(self) -> bool:
        return self.team is not None


def status(blueprint: Blueprint) -> PoolStatus | None:
    """The pool of ``blueprint``'s current version, or None if it declares none."""
    version = blueprint.current_version()
    size = pool_size(version)
    if version is None or size == 0:
        return None
    pooled = Environment.objects.filter(
        pooled=True, blueprint_version=version, state__in=COUNTED_STATES
    )
    ready = pooled.filter(state=State.READY).count()
    return PoolStatus(
        size=size,
        team=blueprint.pool_team,
        ready=ready,
        warming=pooled.count() - ready,
        hourly_cost=(version.hourly_price * size).quantize(Decimal("0.01")),
    )


# --- Writes ---------------------------------------------------------------------------


@transaction.atomic
def set_pool_team(*, blueprint: Blueprint, team: Team | None, actor, ip: str | None = None) -> None:
    """An admin chooses who pays for a blueprint's pool (None stops the pool)."""
    if actor is not None and not is_admin(actor):
        raise PermissionDenied("Only admins choose who pays for a warm pool.")
    blueprint = Blueprint.objects.select_for_update().get(pk=blueprint.pk)
    before = blueprint.pool_team.name if blueprint.pool_team else None
    Blueprint.objects.filter(pk=blueprint.pk).update(pool_team=team)
    audit.record(
        actor=actor,
        action="blueprint.pool_team",
        target=blueprint,
        before={"pool_team": before},
        after={"pool_team": team.name if team else None},
        ip=ip,
    )
    transaction.on_commit(lambda: refill_quietly(blueprint.pk))


def _drain(environment_id, why: str) -> None:
    if transition(
        environment_id,
        from_states=DELETABLE_STATES,
        to_state=State.TEARING_DOWN,
        message=f"Leaves the warm pool: {why}",
    ):
        enqueue_on_commit("teardown", environment_id)


def refill(blueprint_id) -> int:
    """Top the pool up to its size (and drain what no longer belongs); how many started.

    Refills of one blueprint are serialised by a row lock, so two schedulers or a claim
    and the schedule never overfill it. Idempotent: a second call starts nothing.
    """
    with transaction.atomic():
        blueprint = (
            Blueprint.objects.select_for_update(of=("self",))
            .select_related("pool_team")
            .get(pk=blueprint_id)
        )
        version = blueprint.current_version()
        team = blueprint.pool_team
        size = pool_size(version) if team is not None else 0
        pooled = Environment.objects.filter(
            pooled=True, blueprint_version__blueprint=blueprint, state__in=DELETABLE_STATES
        )
        for environment_id, state, version_id, team_id in pooled.values_list(
            "pk", "state", "blueprint_version_id", "team_id"
        ):
            if version is None or version_id != version.pk:
                _drain(environment_id, "a newer version of the blueprint was published.")
            elif team is None or team_id != team.pk or size == 0:
                _drain(environment_id, "the pool was stopped or changed hands.")
            elif state == State.FAILED:
                _drain(environment_id, "it failed to start; a fresh one replaces it.")
        if version is None or team is None or size == 0:
            return 0
        kept = Environment.objects.filter(
            pooled=True, blueprint_version=version, team=team, state__in=COUNTED_STATES
        ).count()
        parameters = default_parameters(version)
        if parameters is None:
            log.warning("pool of %s: the blueprint has no defaults to start with", blueprint)
            return 0
        owner = pool_account()
        started = 0
        for _ in range(size - kept):
            demand = quotas.demand_for(version, version.blueprint_spec.ttl.max)
            quotas.lock(team=team, user=owner)
            outcome = quotas.decide(team=team, user=owner, version=version, demand=demand)
            if outcome.refused:
                log.warning("pool of %s not refilled: %s", blueprint, outcome.message)
                break
            _start_one(version=version, team=team, owner=owner, parameters=parameters)
            started += 1
        return started


def _start_one(*, version: BlueprintVersion, team: Team, owner, parameters: dict) -> None:
    spec = version.blueprint_spec
    now = timezone.now()
    environment = Environment.objects.create(
        owner=owner,
        team=team,
        blueprint_version=version,
        parameters=parameters,
        purpose=version.purpose,
        reason="Warm pool",
        ttl=timedelta(seconds=spec.ttl.default),
        hourly_price=version.hourly_price,
        cpu_millicores=version.cpu_millicores,
        memory_bytes=version.memory_bytes,
        pooled=True,
    )
    EnvironmentEvent.objects.create(
        environment=environment,
        kind=EnvironmentEvent.Kind.STATE,
        state=State.REQUESTED,
        message=f"Started for the warm pool of {version}, paid by {team}.",
    )
    audit.record(
        actor=None,
        action="pool.fill",
        target=environment,
        after={"blueprint": str(version), "team": team.name},
    )
    # Unclaimed, it lives at most the blueprint's maximum; then it is replaced.
    transition(
        environment.pk,
        from_states=State.REQUESTED,
        to_state=State.APPROVED,
        message="Approved for the warm pool.",
        approved_at=now,
        expires_at=now + timedelta(seconds=spec.ttl.max),
    )
    enqueue_on_commit("provision", environment.pk)


def refill_quietly(blueprint_id) -> None:
    """After a claim's commit: a refill that fails leaves the schedule to try again."""
    try:
        refill(blueprint_id)
    except Exception:  # the claim stands whatever happens here
        log.exception("pool refill of blueprint %s failed; the schedule retries it", blueprint_id)


def refill_all() -> int:
    """Scheduled: top up every pool, and drain the pools of blueprints that dropped them."""
    started = 0
    with_pool = set(
        Blueprint.objects.filter(pool_team__isnull=False).values_list("pk", flat=True)
    ) | set(
        Environment.objects.filter(pooled=True, state__in=DELETABLE_STATES).values_list(
            "blueprint_version__blueprint_id", flat=True
        )
    )
    for blueprint_id in with_pool:
        started += refill(blueprint_id)
    return started


def claim(
    *,
    user,
    team: Team,
    version: BlueprintVersion,
    parameters: dict,
    seconds: int,
    demand: quotas.Demand,
    display_name: str = "",
    reason: str = "",
) -> Environment | None:
    """Take a ready pooled environment for ``user``, or None: none ready, the request is
    not the pool's (other parameters), or the request's quota decision does not simply
    allow it (refused, or it needs an approver: the normal path says so). The decision
    leaves the candidate out, since it already counts against the pool's team and moves
    to ``user``'s. Call inside the request's transaction, after ``quotas.lock``."""
    if pool_size(version) == 0 or parameters != default_parameters(version):
        return None
    now = timezone.now()
    message = f"Taken from the warm pool by {audit.who(user)} for {format_duration(seconds)}" + (
        f": {reason}" if reason else "."
    )
    for _attempt in range(3):
        candidate = (
            Environment.objects.select_for_update(skip_locked=True)
            .filter(pooled=True, state=State.READY, blueprint_version=version)
            .order_by("ready_at")
            .values_list("pk", flat=True)
            .first()
        )
        if candidate is None:
            return None
        outcome = quotas.decide(
            team=team,
            user=user,
            version=version,
            demand=demand,
            exclude=Environment(pk=candidate),
        )
        if not outcome.allowed:
            return None
        accrue(candidate, now)  # the pool's minutes so far are the pool team's
        if claim_pooled(
            candidate,
            owner=user,
            team=team,
            actor=user,
            message=message,
            display_name=display_name,
            reason=reason,
            ttl=timedelta(seconds=seconds),
            approved_at=now,
            expires_at=now + timedelta(seconds=seconds),
            accrued_cost=Decimal(0),
        ):
            enqueue_access_on_commit("environment", candidate)  # kubeconfigs for the claimer
            transaction.on_commit(partial(refill_quietly, version.blueprint_id))
            return Environment.objects.get(pk=candidate)
    return None
