"""Every write in Ephemera goes through a function here (HackSoft-style services).

Services are keyword-only, transactional, check state first, and raise a
``ServiceError`` whose message a user can read. Jobs are enqueued on commit.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from environments.access.teams import can_approve_for, can_change, is_any_approver, team_for
from environments.catalog.rendering import render_components, resolve_parameters
from environments.governance import audit, quotas
from environments.governance.billing import accrue
from environments.integrations import notifications
from environments.lib import durations
from environments.lib.durations import format_duration
from environments.lib.errors import ServiceError
from environments.lifecycle.queue import enqueue_on_commit
from environments.lifecycle.states import EXTENDABLE_STATES, FINAL_STATES, LIVE_STATES, State
from environments.lifecycle.transitions import (
    decide_extension_request,
    transition,
    withdraw_extension_requests,
)
from environments.models import (
    DISPLAY_NAME_MAX_LENGTH,
    BlueprintVersion,
    Environment,
    EnvironmentEvent,
    ExtensionRequest,
    Membership,
    Team,
)

# --- Environments -----------------------------------------------------------------------


MIN_TTL_SECONDS = durations.MIN_TTL_SECONDS  # the shortest time to live, shared with the CLI
MIN_EXTENSION_SECONDS = 60


def _resolve_ttl(version: BlueprintVersion, ttl_seconds: int | None) -> int:
    seconds = ttl_seconds or version.blueprint_spec.ttl.default
    if seconds < MIN_TTL_SECONDS:
        raise ServiceError(
            f"The time to live must be at least {format_duration(MIN_TTL_SECONDS)}; "
            f"you asked for {seconds} s."
        )
    blueprint_max = version.blueprint_spec.ttl.max
    if seconds > blueprint_max:
        raise ServiceError(
            f"{version.title} may live at most {format_duration(blueprint_max)}; "
            f"you asked for {format_duration(seconds)}."
        )
    return seconds


# The one way to say what a request needs (kept here for the callers that import it).
demand_for = quotas.demand_for


def _snapshot(environment: Environment) -> dict:
    return {
        "state": environment.state,
        "expires_at": environment.expires_at.isoformat() if environment.expires_at else None,
        "ttl_seconds": int(environment.ttl.total_seconds()),
        "extension_count": environment.extension_count,
    }


class DisplayNameInvalid(ServiceError):
    """A name that is too long, unreadable or already taken (forms show it on the field)."""


def clean_display_name(display_name: str | None) -> str:
    """The name as stored: trimmed, inner spaces collapsed; "" for none.

    Raises ``ServiceError`` for a name that is too long or holds control characters.
    """
    cleaned = " ".join((display_name or "").split())
    if len(cleaned) > DISPLAY_NAME_MAX_LENGTH:
        raise DisplayNameInvalid(
            f"A name has at most {DISPLAY_NAME_MAX_LENGTH} characters; "
            f"'{cleaned[:20]}…' has {len(cleaned)}."
        )
    if any(not character.isprintable() for character in cleaned):
        raise DisplayNameInvalid("A name cannot contain control characters.")
    return cleaned


def _name_taken(owner, display_name: str, *, by=None) -> str:
    who = "You already have" if by is None or by.pk == owner.pk else f"{audit.who(owner)} has"
    return f"{who} an environment named '{display_name}'."


def _check_name_free(*, owner, display_name: str, by=None, exclude=None) -> None:
    """Unique per owner among environments that are not final, ignoring case."""
    if not display_name:
        return
    taken = Environment.objects.filter(
        owner=owner, display_name__iexact=display_name, state__in=LIVE_STATES
    )
    if exclude is not None:
        taken = taken.exclude(pk=exclude.pk)
    if taken.exists():
        raise DisplayNameInvalid(_name_taken(owner, display_name, by=by))


@contextmanager
def _name_race(*, owner, display_name: str, by=None):
    """Two requests with one name at the same moment: the constraint refuses the second;
    it gets the same sentence as the check above (a savepoint keeps the transaction)."""
    try:
        with transaction.atomic():
            yield
    except IntegrityError as exc:
        if "environment_display_name_unique_per_owner" not in str(exc):
            raise
        raise DisplayNameInvalid(_name_taken(owner, display_name, by=by)) from None


@transaction.atomic
def request_environment(
    *,
    user,
    version: BlueprintVersion,
    parameters: dict | None = None,
    ttl_seconds: int | None = None,
    team: Team | None = None,
    reason: str = "",
    display_name: str = "",
    ip: str | None = None,
    action: str = "environment.request",
    external_key: str = "",
) -> Environment:
    """Create an environment request, apply the approval policy and quotas.

    Raises ``ParametersInvalid`` for bad parameters (field by field) and
    ``ServiceError`` for anything else a user must fix, with nothing written.
    """
    if version.deprecated:
        raise ServiceError(f"{version} is deprecated; request the current version instead.")
    team = team_for(user, team)
    display_name = clean_display_name(display_name)
    _check_name_free(owner=user, display_name=display_name)
    resolved = resolve_parameters(version.blueprint_spec, parameters or {})
    render_components(version.blueprint_spec, resolved)  # rendered images must be valid references
    seconds = _resolve_ttl(version, ttl_seconds)
    demand = demand_for(version, seconds)

    quotas.lock(team=team, user=user)
    # The same decision the request form's estimate and the approval queue show.
    outcome = quotas.decide(team=team, user=user, version=version, demand=demand)
    if outcome.refused:
        raise ServiceError(outcome.message)
    needs_approval = outcome.needs_approval

    with _name_race(owner=user, display_name=display_name):
        environment = Environment.objects.create(
            owner=user,
            team=team,
            blueprint_version=version,
            parameters=resolved,
            purpose=version.purpose,
            reason=reason,
            display_name=display_name,
            ttl=timedelta(seconds=seconds),
            hourly_price=version.hourly_price,
            cpu_millicores=version.cpu_millicores,
            memory_bytes=version.memory_bytes,
            external_key=external_key,
        )
    EnvironmentEvent.objects.create(
        environment=environment,
        kind=EnvironmentEvent.Kind.STATE,
        state=State.REQUESTED,
        message=f"Requested by {audit.who(user)} for {format_duration(seconds)}"
        + (f": {reason}" if reason else "."),
        actor=user,
    )
    audit.record(
        actor=user,
        action=action,
        target=environment,
        after={
            "blueprint": str(version),
            "parameters": resolved,
            "ttl_seconds": seconds,
            "reason": reason,
            **({"display_name": display_name} if display_name else {}),
        },
        ip=ip,
    )
    if needs_approval:
        transition(
            environment.pk,
            from_states=State.REQUESTED,
            to_state=State.PENDING_APPROVAL,
            message="Waiting for an approver.",
            actor=user,
        )
        notifications.send_later(notifications.REQUESTED, environment.pk)
    else:
        _approve(environment, approver=None, seconds=seconds, from_state=State.REQUESTED)
    environment.refresh_from_db()
    return environment


def _approve(environment: Environment, *, approver, seconds: int, from_state: str) -> None:
    now = timezone.now()
    message = f"Approved by {audit.who(approver)}." if approver else "Approved automatically."
    if not transition(
        environment.pk,
        from_states=from_state,
        to_state=State.APPROVED,
        message=message,
        actor=approver,
        approved_by=approver,
        approved_at=now,
        expires_at=now + timedelta(seconds=seconds),
    ):
        raise ServiceError("This request was already decided by someone else.")
    enqueue_on_commit("provision", environment.pk)
    if approver is not None:
        notifications.send_later(notifications.APPROVED, environment.pk)


def is_own_request(user, environment: Environment, requested_by=None) -> bool:
    """Nobody decides on their own request or extension request (the environment is
    theirs, or they asked for the extension). A superuser may, unless
    ``FORBID_SELF_APPROVAL`` (on in production) forbids it too."""
    own = environment.owner_id == user.pk or (
        requested_by is not None and requested_by.pk == user.pk
    )
    return own and (settings.FORBID_SELF_APPROVAL or not user.is_superuser)


SELF_APPROVAL = "You cannot approve your own request; another approver must."


def _check_approver(user, environment: Environment, requested_by=None) -> None:
    """Approvers for every team, or for the environment's team; never their own."""
    if not is_any_approver(user):
        raise PermissionDenied("Only approvers can approve or reject requests.")
    if not can_approve_for(user, environment.team_id):
        raise PermissionDenied(f"You approve requests of other teams, not of {environment.team}.")
    if is_own_request(user, environment, requested_by):
        raise PermissionDenied(SELF_APPROVAL)


def _check_can_decide(user, environment: Environment) -> None:
    _check_approver(user, environment)
    if environment.state != State.PENDING_APPROVAL:
        raise ServiceError(
            f"This request is {environment.get_state_display().lower()}, not waiting for approval."
        )


@transaction.atomic
def approve_environment(*, environment: Environment, approver, ip: str | None = None) -> None:
    _check_can_decide(approver, environment)
    environment = Environment.objects.select_related("blueprint_version", "team", "owner").get(
        pk=environment.pk
    )
    seconds = int(environment.ttl.total_seconds())
    version = environment.blueprint_version
    if version.blueprint_spec.approval != "over-quota":
        # The approver vouches for the request, not for breaking the team's limits.
        quotas.require(
            team=environment.team,
            user=environment.owner,
            demand=demand_for(version, seconds),
            exclude=environment,
        )
    _approve(environment, approver=approver, seconds=seconds, from_state=State.PENDING_APPROVAL)
    audit.record(
        actor=approver,
        action="environment.approve",
        target=environment,
        before={"state": State.PENDING_APPROVAL},
        after={"state": State.APPROVED},
        ip=ip,
    )


@transaction.atomic
def reject_environment(
    *, environment: Environment, approver, reason: str, ip: str | None = None
) -> None:
    _check_can_decide(approver, environment)
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Say why the request is rejected; the requester will read it.")
    if not transition(
        environment.pk,
        from_states=State.PENDING_APPROVAL,
        to_state=State.REJECTED,
        message=f"Rejected by {audit.who(approver)}: {reason}",
        actor=approver,
        last_error=reason,
    ):
        raise ServiceError("This request was already decided by someone else.")
    audit.record(
        actor=approver,
        action="environment.reject",
        target=environment,
        before={"state": State.PENDING_APPROVAL},
        after={"state": State.REJECTED, "reason": reason},
        ip=ip,
    )
    notifications.send_later(notifications.REJECTED, environment.pk)


@transaction.atomic
def rename_environment(
    *, environment: Environment, user, display_name: str, ip: str | None = None
) -> Environment:
    """Give an environment a name people recognise ("acme demo"), or clear it ("").

    The owner, their team and admins may; the name is unique among the owner's
    environments that are not final. Audited with the name before and after.
    """
    if not can_change(user, environment):
        raise PermissionDenied("You cannot change this environment.")
    environment = (
        Environment.objects.select_for_update().select_related("owner").get(pk=environment.pk)
    )
    if environment.state in FINAL_STATES:
        raise ServiceError(
            f"This environment is {environment.get_state_display().lower()}; it cannot be renamed."
        )
    display_name = clean_display_name(display_name)
    before = environment.display_name
    if display_name == before:
        return environment
    owner = environment.owner
    _check_name_free(owner=owner, display_name=display_name, by=user, exclude=environment)
    environment.display_name = display_name
    environment.updated_at = timezone.now()  # the dashboards' rows show the name
    with _name_race(owner=owner, display_name=display_name, by=user):
        environment.save(update_fields=["display_name", "updated_at"])
    EnvironmentEvent.objects.create(
        environment=environment,
        kind=EnvironmentEvent.Kind.INFO,
        message=(f"Named '{display_name}'" if display_name else "Name removed")
        + f" by {audit.who(user)}.",
        actor=user,
    )
    audit.record(
        actor=user,
        action="environment.rename",
        target=environment,
        before={"display_name": before},
        after={"display_name": display_name},
        ip=ip,
    )
    return environment


def _extension_checks(environment: Environment, seconds: int, reason: str) -> int:
    """Refuse an extension that no approver could allow; the new time to live."""
    if environment.state not in EXTENDABLE_STATES:
        raise ServiceError(
            f"Only a running environment can be extended; this one is "
            f"{environment.get_state_display().lower()}."
        )
    if seconds < MIN_EXTENSION_SECONDS:
        raise ServiceError(
            f"Extend by at least {format_duration(MIN_EXTENSION_SECONDS)}; you asked for {seconds} s."
        )
    if environment.extension_count >= settings.MAX_EXTENSIONS:
        raise ServiceError(
            f"This environment was already extended {environment.extension_count} times, the "
            f"most allowed; request a new one instead."
        )
    version = environment.blueprint_version
    new_ttl = int(environment.ttl.total_seconds()) + seconds
    blueprint_max = version.blueprint_spec.ttl.max
    if new_ttl > blueprint_max:
        raise ServiceError(
            f"{version.title} may live at most {format_duration(blueprint_max)} in all; "
            f"extending by {format_duration(seconds)} would make it "
            f"{format_duration(new_ttl)}."
        )
    if new_ttl > version.blueprint_spec.ttl.default and not reason:
        raise ServiceError(
            f"Going past the usual {format_duration(version.blueprint_spec.ttl.default)} needs a "
            "reason; say why this environment should live longer."
        )
    return new_ttl


def _extension_demand(environment: Environment, seconds: int, new_ttl: int) -> quotas.Demand:
    return quotas.Demand(
        environments=0,
        cpu_millicores=0,
        memory_bytes=0,
        ttl_seconds=new_ttl,
        cost=(environment.hourly_price * Decimal(seconds) / 3600).quantize(Decimal("0.0001")),
        label=f"extending {environment.blueprint_version.title} by {format_duration(seconds)}",
    )


def _apply_extension(
    environment: Environment,
    *,
    actor,
    seconds: int,
    new_ttl: int,
    reason: str,
    ip: str | None,
    action: str = "environment.extend",
    extra: dict | None = None,
) -> None:
    before = _snapshot(environment)
    environment.expires_at = (environment.expires_at or timezone.now()) + timedelta(seconds=seconds)
    environment.ttl = timedelta(seconds=new_ttl)
    environment.extension_count += 1
    environment.expiry_warned_at = None
    if reason:  # the original purpose stays; each extension adds why it needs longer
        environment.reason = "\n".join(
            part for part in (environment.reason, f"Extended: {reason}") if part
        )
    environment.updated_at = timezone.now()
    environment.save(
        update_fields=[
            "expires_at",
            "ttl",
            "extension_count",
            "expiry_warned_at",
            "reason",
            "updated_at",
        ]
    )
    approved = action != "environment.extend"
    EnvironmentEvent.objects.create(
        environment=environment,
        kind=EnvironmentEvent.Kind.INFO,
        message=(
            f"Extension by {format_duration(seconds)} approved by {audit.who(actor)}"
            if approved
            else f"Extended by {format_duration(seconds)} by {audit.who(actor)}"
        )
        + (f": {reason}" if reason else "."),
        actor=actor,
    )
    audit.record(
        actor=actor,
        action=action,
        target=environment,
        before=before,
        after={
            **_snapshot(environment),
            "extended_by_seconds": seconds,
            "reason": reason,
            **(extra or {}),
        },
        ip=ip,
    )


@transaction.atomic
def extend_environment(
    *, environment: Environment, user, seconds: int, reason: str = "", ip: str | None = None
) -> Environment:
    """Push the expiry back, within the blueprint's max TTL, quotas and budget.

    An extension that takes the total time to live past what the blueprint's approval
    policy approves by itself (``quotas.decide``, the request's own rule) is not
    applied: it becomes a pending ``ExtensionRequest`` in the approval queue, returned
    as ``environment.queued_extension`` (None when the extension was applied). The
    environment keeps its current expiry meanwhile.
    """
    if not can_change(user, environment):
        raise PermissionDenied("You cannot change this environment.")
    environment = (
        Environment.objects.select_for_update()
        .select_related("blueprint_version", "team", "owner")
        .get(pk=environment.pk)
    )
    reason = (reason or "").strip()
    new_ttl = _extension_checks(environment, seconds, reason)
    version = environment.blueprint_version
    demand = _extension_demand(environment, seconds, new_ttl)
    quotas.lock(team=environment.team, user=environment.owner)
    outcome = quotas.decide(
        team=environment.team, user=environment.owner, version=version, demand=demand
    )
    if outcome.refused:
        raise ServiceError(outcome.message)
    environment.queued_extension = None  # type: ignore[attr-defined]
    if outcome.needs_approval:
        if environment.extension_requests.filter(state=ExtensionRequest.State.PENDING).exists():
            raise ServiceError(
                "An extension of this environment is already waiting for an approver."
            )
        extension = ExtensionRequest.objects.create(
            environment=environment,
            requested_by=user,
            seconds=seconds,
            reason=reason,
            why=outcome.because,
        )
        EnvironmentEvent.objects.create(
            environment=environment,
            kind=EnvironmentEvent.Kind.INFO,
            message=f"Extension by {format_duration(seconds)} requested by {audit.who(user)} "
            f"({outcome.because}); waiting for an approver" + (f": {reason}" if reason else "."),
            actor=user,
        )
        audit.record(
            actor=user,
            action="environment.extension_request",
            target=environment,
            after={
                "extension_request": str(extension.pk),
                "extended_by_seconds": seconds,
                "ttl_seconds": new_ttl,
                "reason": reason,
                "why": outcome.because,
            },
            ip=ip,
        )
        notifications.send_later(notifications.EXTENSION_REQUESTED, environment.pk)
        environment.queued_extension = extension  # type: ignore[attr-defined]
        return environment
    _apply_extension(
        environment, actor=user, seconds=seconds, new_ttl=new_ttl, reason=reason, ip=ip
    )
    return environment


def _pending_extension(extension: ExtensionRequest) -> ExtensionRequest:
    extension = ExtensionRequest.objects.select_related(
        "requested_by", "environment__team", "environment__owner"
    ).get(pk=extension.pk)
    if extension.state != ExtensionRequest.State.PENDING:
        raise ServiceError(
            f"This extension request is {extension.get_state_display().lower()}, "
            "not waiting for approval."
        )
    return extension


@transaction.atomic
def approve_extension(
    *, extension: ExtensionRequest, approver, ip: str | None = None
) -> ExtensionRequest:
    """An approver lets a queued extension happen: the limits that no approver can lift
    (the blueprint's maximum, ``MAX_EXTENSIONS``, and for ``required`` blueprints the
    quotas and budget) are checked again now."""
    extension = _pending_extension(extension)
    _check_approver(approver, extension.environment, extension.requested_by)
    environment = (
        Environment.objects.select_for_update()
        .select_related("blueprint_version", "team", "owner")
        .get(pk=extension.environment_id)
    )
    new_ttl = _extension_checks(environment, extension.seconds, extension.reason)
    if environment.blueprint_version.blueprint_spec.approval != "over-quota":
        quotas.require(
            team=environment.team,
            user=environment.owner,
            demand=_extension_demand(environment, extension.seconds, new_ttl),
        )
    now = timezone.now()
    if not decide_extension_request(
        extension.pk,
        to_state=ExtensionRequest.State.APPROVED,
        decided_by=approver,
        decided_at=now,
    ):
        raise ServiceError("This extension request was already decided by someone else.")
    _apply_extension(
        environment,
        actor=approver,
        seconds=extension.seconds,
        new_ttl=new_ttl,
        reason=extension.reason,
        ip=ip,
        action="environment.extension_approve",
        extra={
            "extension_request": str(extension.pk),
            "requested_by": audit.who(extension.requested_by),
        },
    )
    notifications.send_later(notifications.EXTENSION_APPROVED, environment.pk)
    extension.refresh_from_db()
    return extension


@transaction.atomic
def reject_extension(
    *, extension: ExtensionRequest, approver, reason: str, ip: str | None = None
) -> ExtensionRequest:
    extension = _pending_extension(extension)
    _check_approver(approver, extension.environment, extension.requested_by)
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Say why the extension is rejected; the requester will read it.")
    if not decide_extension_request(
        extension.pk,
        to_state=ExtensionRequest.State.REJECTED,
        decided_by=approver,
        decided_at=timezone.now(),
        decision_reason=reason,
    ):
        raise ServiceError("This extension request was already decided by someone else.")
    environment = extension.environment
    EnvironmentEvent.objects.create(
        environment=environment,
        kind=EnvironmentEvent.Kind.INFO,
        message=f"Extension by {format_duration(extension.seconds)} rejected by "
        f"{audit.who(approver)}: {reason}",
        actor=approver,
    )
    audit.record(
        actor=approver,
        action="environment.extension_reject",
        target=environment,
        after={
            "extension_request": str(extension.pk),
            "extended_by_seconds": extension.seconds,
            "requested_by": audit.who(extension.requested_by),
            "reason": reason,
        },
        ip=ip,
    )
    notifications.send_later(notifications.EXTENSION_REJECTED, environment.pk)
    extension.refresh_from_db()
    return extension


DELETABLE = (
    State.PENDING_APPROVAL,
    State.APPROVED,
    State.PROVISIONING,
    State.READY,
    State.FAILED,
)


@transaction.atomic
def delete_environment(
    *,
    environment: Environment,
    user=None,
    ip: str | None = None,
    message: str = "",
    expired_by: datetime | None = None,
) -> bool:
    """Start teardown. ``user`` None means the system (expiry, reconciler).

    ``expired_by`` (the reaper): only if the environment still expires by then, checked
    in the same guarded UPDATE; an extension that got there first wins (returns False).
    """
    if user is not None and not can_change(user, environment):
        raise PermissionDenied("You cannot delete this environment.")
    moved = transition(
        environment.pk,
        from_states=DELETABLE,
        to_state=State.TEARING_DOWN,
        message=message or (f"Deletion requested by {audit.who(user)}." if user else "Expired."),
        actor=user,
        expired_by=expired_by,
    )
    if not moved:
        current = Environment.objects.get(pk=environment.pk)
        if current.state in {State.TEARING_DOWN, State.DELETED}:
            return False  # already on its way: a double click is not an error
        if expired_by is not None and current.state in DELETABLE:
            return False  # extended since the reaper looked: it lives on
        raise ServiceError(
            f"This environment is {current.get_state_display().lower()} and cannot be deleted."
        )
    withdraw_extension_requests(environment.pk)  # nothing left to extend
    if user is not None:
        audit.record(
            actor=user,
            action="environment.delete",
            target=environment,
            before={"state": environment.state},
            after={"state": State.TEARING_DOWN},
            ip=ip,
        )
    enqueue_on_commit("teardown", environment.pk)
    return True


def _check_revival(environment: Environment) -> None:
    """A failed environment may run again only within its expiry and the quotas.

    It keeps its expiry (a retry is not a new lifetime), and it counts against quotas
    and budget again, since failed environments do not.
    """
    if environment.expires_at is None or environment.expires_at <= timezone.now():
        raise ServiceError("This environment has expired; clone it to start a new one.")
    remaining = int((environment.expires_at - timezone.now()).total_seconds())
    quotas.require(
        team=environment.team,
        user=environment.owner,
        demand=demand_for(environment.blueprint_version, remaining),
        exclude=environment,
    )


@transaction.atomic
def retry_environment(*, environment: Environment, user, ip: str | None = None) -> None:
    if not can_change(user, environment):
        raise PermissionDenied("You cannot retry this environment.")
    environment = Environment.objects.select_related("blueprint_version", "team", "owner").get(
        pk=environment.pk
    )
    if environment.state != State.FAILED:
        raise ServiceError("Only a failed environment can be retried.")
    _check_revival(environment)
    if not transition(
        environment.pk,
        from_states=State.FAILED,
        to_state=State.APPROVED,
        message=f"Retry requested by {audit.who(user)}.",
        actor=user,
        last_error="",
        lease_until=None,
        lease_owner=None,
        provision_started_at=None,
    ):
        raise ServiceError("Only a failed environment can be retried.")
    audit.record(actor=user, action="environment.retry", target=environment, ip=ip)
    enqueue_on_commit("provision", environment.pk)


def retry_after_outage(environment_id) -> bool:
    """The watcher's retry of an environment that failed only because the API server
    could not be reached, once the server answers again. At most
    ``OUTAGE_RETRY_LIMIT`` times in a row; an event says what was done, and why not.
    Returns True if it was retried."""
    limit = settings.OUTAGE_RETRY_LIMIT
    with transaction.atomic():
        environment = (
            Environment.objects.select_for_update()
            .select_related("blueprint_version", "team", "owner")
            .filter(pk=environment_id, state=State.FAILED, failed_unreachable=True)
            .first()
        )
        if environment is None:
            return False
        refusal = ""
        if environment.outage_retries >= limit:
            refusal = f"it was already retried {limit} times after an outage"
        else:
            try:
                _check_revival(environment)
            except ServiceError as exc:
                refusal = str(exc)
        if refusal:
            Environment.objects.filter(pk=environment_id).update(failed_unreachable=False)
            EnvironmentEvent.objects.create(
                environment_id=environment_id,
                kind=EnvironmentEvent.Kind.INFO,
                message=f"Not retried automatically: {refusal}. Retry it by hand.",
            )
            return False
        attempt = environment.outage_retries + 1
        if not transition(
            environment_id,
            from_states=State.FAILED,
            to_state=State.APPROVED,
            message="Retrying: it failed only because the Kubernetes API server could not "
            f"be reached, and the server answers again (automatic retry {attempt} of {limit}).",
            last_error="",
            failed_unreachable=False,
            outage_retries=attempt,
            lease_until=None,
            lease_owner=None,
            provision_started_at=None,
        ):
            return False
        enqueue_on_commit("provision", environment_id)
    return True


def clone_environment(*, environment: Environment, user, ip: str | None = None) -> Environment:
    """A new request with the same blueprint (its current version) and parameters."""
    if not can_change(user, environment):
        raise PermissionDenied("You cannot clone this environment.")
    version: BlueprintVersion | None = environment.blueprint_version
    if version is not None and version.deprecated:
        version = version.blueprint.current_version()
    if version is None:
        raise ServiceError("This blueprint has no version open to new requests.")
    return request_environment(
        user=user,
        version=version,
        parameters=environment.parameters,
        ttl_seconds=None,  # the blueprint's default: a clone starts afresh
        team=environment.team
        if Membership.objects.filter(team=environment.team, user=user).exists()
        else None,
        reason=environment.reason,  # the same work, usually for the same reason
        ip=ip,
        action="environment.clone",
    )


@transaction.atomic
def update_environment(
    *, environment: Environment, user, parameters: dict, ip: str | None = None
) -> Environment:
    """Change a running or failed environment's parameters and provision it again.

    Used by pull-request previews when a new commit arrives. The new manifests are
    rendered by the provision job; server-side apply changes only what differs.
    """
    if not can_change(user, environment):
        raise PermissionDenied("You cannot change this environment.")
    environment = Environment.objects.select_for_update().get(pk=environment.pk)
    version = environment.blueprint_version
    resolved = resolve_parameters(version.blueprint_spec, {**environment.parameters, **parameters})
    render_components(version.blueprint_spec, resolved)
    if resolved == environment.parameters and environment.state == State.READY:
        return environment  # nothing changed: a repeated event is a no-op
    before = {"parameters": environment.parameters}
    now = timezone.now()
    common: dict[str, Any] = {
        "parameters": resolved,
        "manifests": [],
        "lease_until": None,
        "lease_owner": None,
        "last_error": "",
    }
    if environment.state == State.READY:
        accrue(environment.pk)  # bill up to the update; resumes when ready again
        moved = transition(
            environment.pk,
            from_states=State.READY,
            to_state=State.PROVISIONING,
            message="Updating with new parameters.",
            actor=user,
            provision_started_at=now,
            **common,
        )
    elif environment.state == State.FAILED:
        _check_revival(environment)
        moved = transition(
            environment.pk,
            from_states=State.FAILED,
            to_state=State.APPROVED,
            message="Retrying with new parameters.",
            actor=user,
            provision_started_at=None,
            **common,
        )
    elif environment.state in {State.PENDING_APPROVAL, State.APPROVED, State.PROVISIONING}:
        # Not applied yet, or being applied: the provision job renders the new
        # parameters (it starts another round when it sees its manifests cleared).
        Environment.objects.filter(pk=environment.pk).update(
            parameters=resolved, manifests=[], updated_at=now
        )
        EnvironmentEvent.objects.create(
            environment=environment,
            kind=EnvironmentEvent.Kind.INFO,
            message="New parameters received; provisioning will use them.",
            actor=user,
        )
        moved = True
    else:
        raise ServiceError(
            f"This environment is {environment.get_state_display().lower()}; try again when "
            "it is ready or failed."
        )
    if moved and environment.state in {State.READY, State.FAILED}:
        enqueue_on_commit("provision", environment.pk)
    audit.record(
        actor=user,
        action="environment.update",
        target=environment,
        before=before,
        after={"parameters": resolved},
        ip=ip,
    )
    environment.refresh_from_db()
    return environment
