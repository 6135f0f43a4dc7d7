"""Every write for classes and booked demos (docs/contributing.md, "Services").

A class or a booking is decided once, as a whole: the blueprint's approval policy and
the quota and budget rules of ``governance.quotas`` apply to all its seats together
(one ``Demand``: seats x resources, seats x price over its whole window). Its capacity
is then held by a ``CapacityReservation`` that the same quota rules count against any
request whose lifetime overlaps the window. At warm-up (``tick``, every minute from the
exactly-once scheduler) the reservation is released and the seats are requested in the
same transaction with ``decided=True``: from then on they count themselves.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import re
import secrets
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import EmailMessage
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from environments.access import people, roles
from environments.access.teams import can_approve_for, is_any_approver, team_for
from environments.catalog.choices import Purpose
from environments.catalog.pricing import price_for
from environments.catalog.rendering import render_components, resolve_parameters
from environments.governance import audit, quotas
from environments.lib.durations import format_duration
from environments.lib.errors import ServiceError
from environments.lifecycle import services as lifecycle
from environments.lifecycle import telemetry
from environments.lifecycle.states import LIVE_STATES, State
from environments.models import (
    BlueprintVersion,
    Booking,
    CalendarFeed,
    CapacityReservation,
    Environment,
    Seat,
    Team,
    TrainingClass,
)
from environments.scheduling import calendar

log = logging.getLogger(__name__)

MIN_LEAD_SECONDS = 300
MAX_ROSTER_CHARACTERS = 200_000
DELETABLE = lifecycle.DELETABLE


def _open(model) -> tuple[str, ...]:
    """The statuses of a class or booking that can still change, end or be cancelled."""
    return (model.Status.PENDING_APPROVAL, model.Status.SCHEDULED, model.Status.WARMING)


OPEN_CLASS = _open(TrainingClass)
OPEN_BOOKING = _open(Booking)


# --- Lead time ------------------------------------------------------------------------


def _measured_p95_seconds() -> float | None:
    """The 95th percentile of measured provisioning times (the histogram's bucket bound
    that holds it), or None before anything was measured."""
    try:
        buckets, _ = telemetry.durations("provision")
    except Exception:  # noqa: BLE001 - Redis down: fall back to the minimum
        return None
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    for bound, cumulative in buckets:
        if cumulative >= 0.95 * total:
            return float("inf") if bound == "+Inf" else float(bound)
    return None


def warmup_lead() -> timedelta:
    """How long before its start a class's seats or a booked demo are requested:
    ``CLASS_WARMUP_LEAD_SECONDS``, or else twice the measured p95 provisioning time,
    at least five minutes (a loaded cluster takes longer than its average)."""
    if settings.CLASS_WARMUP_LEAD_SECONDS:
        return timedelta(seconds=settings.CLASS_WARMUP_LEAD_SECONDS)
    p95 = _measured_p95_seconds()
    if p95 is None or math.isinf(p95):
        return timedelta(seconds=max(MIN_LEAD_SECONDS, 900 if p95 else MIN_LEAD_SECONDS))
    return timedelta(seconds=max(MIN_LEAD_SECONDS, math.ceil(2 * p95)))


# --- Input ----------------------------------------------------------------------------


def parse_roster(text: str) -> list[str]:
    """Attendee emails from pasted text or a CSV file: one per line, or comma or
    semicolon separated, or a CSV whose cells hold them (a header row is skipped).
    Every bad entry is named in one line; duplicates are refused too."""
    text = (text or "").strip()
    if len(text) > MAX_ROSTER_CHARACTERS:
        raise ServiceError("The roster is too long; paste at most a few thousand addresses.")
    emails: list[str] = []
    bad: list[str] = []
    for row in csv.reader(io.StringIO(text.replace(";", ","))):
        for cell in row:
            value = cell.strip().strip('"').strip().lower()
            if "<" in value and value.endswith(">"):  # "Ada Lovelace <ada@example.com>"
                value = value[value.rindex("<") + 1 : -1].strip()
            if not value or value in {"email", "e-mail", "email address", "name"}:
                continue
            if "@" not in value and " " in value:
                continue  # a name column
            try:
                validate_email(value)
            except ValidationError:
                bad.append(value[:60])
                continue
            emails.append(value)
    if bad:
        raise ServiceError(
            f"The roster has {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} that "
            f"{'is not an email address' if len(bad) == 1 else 'are not email addresses'}: "
            + ", ".join(bad[:5])
            + ("…" if len(bad) > 5 else "")
        )
    seen: set[str] = set()
    twice = [e for e in emails if e in seen or seen.add(e)]  # type: ignore[func-returns-value]
    if twice:
        raise ServiceError(f"The roster lists {', '.join(sorted(set(twice))[:5])} more than once.")
    return emails


def _one_line(value: str, missing: str) -> str:
    """A title or name as one line of at most 100 characters; ``missing`` if empty."""
    value = " ".join((value or "").split())[:100]
    if not value:
        raise ServiceError(missing)
    return value


def aware(value: datetime, zone_name: str) -> datetime:
    """A form's or API's naive local time in ``zone_name``, as an aware datetime."""
    if not people.valid_time_zone(zone_name):
        raise ServiceError(f"“{zone_name[:64]}” is not a time zone; choose one like Europe/Paris.")
    if timezone.is_aware(value):
        return value
    return value.replace(tzinfo=zoneinfo.ZoneInfo(zone_name))


def _window_start(starts_at: datetime) -> datetime:
    """When a slot's environments are requested: a lead time before the start, or now."""
    return max(timezone.now(), starts_at - warmup_lead())


def _check_slot(
    *, starts_at: datetime, ends_at: datetime, grace: timedelta, version: BlueprintVersion
) -> int:
    """The seconds an environment of this slot lives (warm-up to teardown); refuse a
    slot in the past, the wrong way round, or longer than the blueprint allows."""
    now = timezone.now()
    if ends_at <= starts_at:
        raise ServiceError("The end must be after the start.")
    if starts_at <= now:
        raise ServiceError("The start must be in the future.")
    if grace < timedelta(0):
        raise ServiceError("The grace period cannot be negative.")
    window_start = _window_start(starts_at)
    seconds = int((ends_at + grace - window_start).total_seconds())
    blueprint_max = version.blueprint_spec.ttl.max
    if seconds > blueprint_max:
        raise ServiceError(
            f"{version.title} may live at most {format_duration(blueprint_max)}; from warm-up "
            f"({format_duration(int((starts_at - window_start).total_seconds()))} before the "
            f"start) to teardown this slot needs {format_duration(seconds)}."
        )
    return seconds


@dataclass(frozen=True)
class Estimate:
    """What a class or booking needs, and what it would come to (before saving)."""

    demand: quotas.Demand
    outcome: quotas.Outcome
    seats: int
    seat_price: Decimal
    lead: timedelta

    @property
    def total(self) -> Decimal:
        return self.demand.cost


def _seats_demand(
    version: BlueprintVersion, *, seats: int, seconds: int, starts_at: datetime, label: str
) -> quotas.Demand:
    """What ``seats`` environments of ``version`` living ``seconds`` from ``starts_at``
    need of the quotas and cost (a whole class, a booking, or one more seat)."""
    return quotas.Demand(
        environments=seats,
        cpu_millicores=seats * version.cpu_millicores,
        memory_bytes=seats * version.memory_bytes,
        ttl_seconds=seconds,
        cost=seats * price_for(version.blueprint_spec, seconds),
        label=label,
        starts_at=starts_at,
    )


def _estimate(
    *,
    user,
    team: Team,
    version: BlueprintVersion,
    seats: int,
    starts_at: datetime,
    ends_at: datetime,
    grace_seconds: int,
    what: str,
) -> Estimate:
    """The slot checked, priced and decided (``governance.quotas.decide``): what
    ``estimate_class`` and ``estimate_booking`` show and their creation re-checks."""
    seconds = _check_slot(
        starts_at=starts_at,
        ends_at=ends_at,
        grace=timedelta(seconds=grace_seconds),
        version=version,
    )
    demand = _seats_demand(
        version,
        seats=seats,
        seconds=seconds,
        starts_at=_window_start(starts_at),
        label=what.format(title=version.title, duration=format_duration(seconds)),
    )
    outcome = quotas.decide(team=team, user=user, version=version, demand=demand)
    return Estimate(
        demand, outcome, seats, price_for(version.blueprint_spec, seconds), warmup_lead()
    )


def _check_blueprint(version: BlueprintVersion, purpose: str, noun: str) -> None:
    if version.deprecated:
        raise ServiceError(f"{version} is deprecated; choose the current version instead.")
    if version.purpose != purpose:
        raise ServiceError(
            f"{version.title} is a {version.blueprint_spec.purpose.label.lower()} blueprint; "
            f"{noun} use {Purpose(purpose).label.lower()} blueprints."
        )


def estimate_class(
    *,
    user,
    version: BlueprintVersion,
    seats: int,
    starts_at: datetime,
    ends_at: datetime,
    grace_seconds: int = 0,
    team: Team | None = None,
) -> Estimate:
    """The whole class's price, what it needs of the quotas and budget, and whether it
    would be allowed, need approval or be refused: the same decision ``create_class``
    takes (``governance.quotas.decide``)."""
    _check_blueprint(version, Purpose.TRAINING, "classes")
    team = team_for(user, team)
    if seats < 1:
        raise ServiceError("A class needs at least one seat.")
    if seats > settings.CLASS_MAX_SEATS:
        raise ServiceError(
            f"A class has at most {settings.CLASS_MAX_SEATS} seats; you asked for {seats}."
        )
    return _estimate(
        user=user,
        team=team,
        version=version,
        seats=seats,
        starts_at=starts_at,
        ends_at=ends_at,
        grace_seconds=grace_seconds,
        what=f"this class of {seats} seat{'s' if seats != 1 else ''} of {{title}} for {{duration}}",
    )


def _reserve(
    *, team: Team, owner, demand: quotas.Demand, ends_at: datetime, **target
) -> CapacityReservation:
    return CapacityReservation.objects.create(
        team=team,
        owner=owner,
        starts_at=demand.window()[0],
        ends_at=ends_at,
        environments=demand.environments,
        cpu_millicores=demand.cpu_millicores,
        memory_bytes=demand.memory_bytes,
        cost=demand.cost,
        **target,
    )


_RESERVED_AS = {TrainingClass: "training_class", Booking: "booking"}


def _release(**target) -> None:
    CapacityReservation.objects.filter(released_at__isnull=True, **target).update(
        released_at=timezone.now()
    )


def _create_decided(
    model,
    *,
    user,
    version: BlueprintVersion,
    starts_at: datetime,
    ends_at: datetime,
    time_zone: str,
    parameters: dict | None,
    grace_seconds: int,
    team: Team | None,
    estimate,
    **fields,
):
    """Save a class or a booking decided as a whole: its parameters rendered, the
    quotas locked and ``estimate`` (``estimate_class`` or ``estimate_booking``) refused
    (with its numbers) or allowed, the record saved scheduled or waiting for approval and its
    capacity reserved for its window. Returns the record and the estimate."""
    starts_at, ends_at = aware(starts_at, time_zone), aware(ends_at, time_zone)
    resolved = resolve_parameters(version.blueprint_spec, parameters or {})
    render_components(version.blueprint_spec, resolved)
    team = team_for(user, team)
    quotas.lock(team=team, user=user)
    decided: Estimate = estimate(
        user=user,
        version=version,
        starts_at=starts_at,
        ends_at=ends_at,
        grace_seconds=grace_seconds,
        team=team,
    )
    if decided.outcome.refused:
        raise ServiceError(decided.outcome.message)
    pending = decided.outcome.needs_approval
    record = model.objects.create(
        team=team,
        blueprint_version=version,
        parameters=resolved,
        starts_at=starts_at,
        ends_at=ends_at,
        time_zone=time_zone,
        grace=timedelta(seconds=grace_seconds),
        status=model.Status.PENDING_APPROVAL if pending else model.Status.SCHEDULED,
        **fields,
    )
    _reserve(
        team=team,
        owner=user,
        demand=decided.demand,
        ends_at=record.teardown_at,
        **{_RESERVED_AS[model]: record},
    )
    return record, decided


def _class_snapshot(training_class: TrainingClass) -> dict:
    return {
        "title": training_class.title,
        "blueprint": str(training_class.blueprint_version),
        "starts_at": training_class.starts_at.isoformat(),
        "ends_at": training_class.ends_at.isoformat(),
        "time_zone": training_class.time_zone,
        "grace_seconds": int(training_class.grace.total_seconds()),
        "status": training_class.status,
        "seats": training_class.seats.filter(removed_at__isnull=True).count(),
    }


# --- Classes --------------------------------------------------------------------------


@transaction.atomic
def create_class(
    *,
    trainer,
    version: BlueprintVersion,
    title: str,
    starts_at: datetime,
    ends_at: datetime,
    time_zone: str = "UTC",
    seats: int | None = None,
    roster: list[str] | None = None,
    parameters: dict | None = None,
    grace_seconds: int = 0,
    team: Team | None = None,
    ip: str | None = None,
) -> TrainingClass:
    """Create a class of ``seats`` (or one seat per roster email), decided once: refused
    with the quota check's exact numbers before anything is written, or scheduled (or
    waiting for one approval), its capacity reserved for its window."""
    if not roles.is_trainer(trainer):
        raise PermissionDenied("Only trainers create classes; ask a portal admin for the role.")
    title = _one_line(title, "Give the class a title; attendees see it in their invitation.")
    roster = list(roster or [])
    count = len(roster) if roster else (seats or 0)
    if roster and seats and seats != len(roster):
        raise ServiceError(
            f"The roster has {len(roster)} attendees but you asked for {seats} seats; "
            "leave the seat count empty to use the roster."
        )
    training_class, estimate = _create_decided(
        TrainingClass,
        user=trainer,
        version=version,
        starts_at=starts_at,
        ends_at=ends_at,
        time_zone=time_zone,
        parameters=parameters,
        grace_seconds=grace_seconds,
        team=team,
        estimate=partial(estimate_class, seats=count),
        title=title,
        trainer=trainer,
    )
    Seat.objects.bulk_create(
        Seat(training_class=training_class, number=number, attendee_email=email)
        for number, email in enumerate(roster or [""] * count, start=1)
    )
    audit.record(
        actor=trainer,
        action="class.create",
        target=training_class,
        after={**_class_snapshot(training_class), "price": str(estimate.total)},
        ip=ip,
    )
    if training_class.status == TrainingClass.Status.SCHEDULED:
        _invite_attendees(training_class, actor=trainer)
    return training_class


def _check_trainer(user, training_class: TrainingClass) -> None:
    if not (training_class.trainer_id == user.pk or roles.is_admin(user)):
        raise PermissionDenied("Only the class's trainer changes it.")


def _locked_class(training_class: TrainingClass) -> TrainingClass:
    return (
        TrainingClass.objects.select_for_update()
        .select_related("blueprint_version", "team", "trainer")
        .get(pk=training_class.pk)
    )


def _set_status(model, pk, *, from_states, to_state: str, **fields) -> bool:
    """The guarded UPDATE for a class's or booking's status: of two callers (two
    schedulers, a trainer and the schedule), one wins."""
    return bool(
        model.objects.filter(pk=pk, status__in=list(from_states)).update(status=to_state, **fields)
    )


def _start_warming(model, pk) -> bool:
    """Scheduled -> warming, once: the caller then releases the reservation and
    requests what replaces it, in the same transaction."""
    return _set_status(
        model,
        pk,
        from_states=[model.Status.SCHEDULED],
        to_state=model.Status.WARMING,
        warmed_at=timezone.now(),
    )


def _close(model, pk, to_state: str) -> bool:
    """An open class or booking ends (or is cancelled), once."""
    return _set_status(
        model, pk, from_states=_open(model), to_state=to_state, ended_at=timezone.now()
    )


def _check_decider(user, *, team: Team, requester) -> None:
    if not is_any_approver(user):
        raise PermissionDenied("Only approvers can approve or reject requests.")
    if not can_approve_for(user, team.pk):
        raise PermissionDenied(f"You approve requests of other teams, not of {team.name}.")
    if requester.pk == user.pk and (settings.FORBID_SELF_APPROVAL or not user.is_superuser):
        raise PermissionDenied(lifecycle.SELF_APPROVAL)


def _decide(
    record, *, requester, approver, approve: bool, reason: str, ip, noun: str, reader: str
) -> str:
    """One approver's decision on a class or a booking waiting for approval (``noun``
    names it in messages and audit actions): rejecting needs a reason for the
    ``reader`` and frees the reserved capacity. Returns the stripped reason."""
    model = type(record)
    _check_decider(approver, team=record.team, requester=requester)
    reason = (reason or "").strip()
    if not approve and not reason:
        raise ServiceError(f"Say why the {noun} is rejected; the {reader} will read it.")
    to_state = model.Status.SCHEDULED if approve else model.Status.REJECTED
    if not _set_status(
        model,
        record.pk,
        from_states=[model.Status.PENDING_APPROVAL],
        to_state=to_state,
        decided_by=approver,
        decided_at=timezone.now(),
        decision_reason=reason,
    ):
        raise ServiceError(f"This {noun} was already decided by someone else.")
    if not approve:
        _release(**{_RESERVED_AS[model]: record})
    audit.record(
        actor=approver,
        action=f"{noun}.approve" if approve else f"{noun}.reject",
        target=record,
        before={"status": model.Status.PENDING_APPROVAL},
        after={"status": to_state, **({"reason": reason} if reason else {})},
        ip=ip,
    )
    return reason


@transaction.atomic
def decide_class(
    *, training_class: TrainingClass, approver, approve: bool, reason: str = "", ip=None
) -> None:
    """One decision for every seat. Its capacity was reserved when it was requested, so
    approving needs no new check; rejecting frees it."""
    reason = _decide(
        training_class,
        requester=training_class.trainer,
        approver=approver,
        approve=approve,
        reason=reason,
        ip=ip,
        noun="class",
        reader="trainer",
    )
    training_class.refresh_from_db()
    if approve:
        _invite_attendees(training_class, actor=approver)
    _mail_later(
        f"Your class {training_class.title} was {'approved' if approve else 'rejected'}",
        f"{audit.who(approver)} {'approved' if approve else 'rejected'} your class "
        f"{training_class.title}" + (f": {reason}" if reason else ".") + "\n\n"
        f"{settings.SITE_URL}{training_class.get_absolute_url()}\n",
        [training_class.trainer.email],
    )


def _request_until(record, *, owner, teardown_at: datetime, reason: str, action: str):
    """Request ``record``'s environment (decided with the class or booking) to live
    until ``teardown_at``; None once that has passed."""
    seconds = int((teardown_at - timezone.now()).total_seconds())
    if seconds <= 0:
        return None
    # A short slot still gets the shortest lifetime; the schedule ends it on time anyway.
    seconds = max(seconds, lifecycle.MIN_TTL_SECONDS)
    return lifecycle.request_environment(
        user=owner,
        version=record.blueprint_version,
        parameters=record.parameters,
        ttl_seconds=seconds,
        team=record.team,
        reason=reason,
        action=action,
        decided=True,
    )


def _start_seat(training_class: TrainingClass, seat: Seat) -> Environment | None:
    """Request the seat's environment (decided as part of the class); None once the
    class is over."""
    environment = _request_until(
        training_class,
        owner=training_class.trainer,
        teardown_at=training_class.teardown_at,
        reason=f"Seat {seat.number} of the class {training_class.title}"
        + (f" ({seat.attendee_email})" if seat.attendee_email else ""),
        action="class.seat",
    )
    if environment is None:
        return None
    seat.environment = environment
    seat.save(update_fields=["environment"])
    seat.environments.add(environment)
    return environment


@transaction.atomic
def warm_up_class(class_id) -> int:
    """Request every seat's environment (the schedule calls this a lead time before the
    start). Exactly once: the status moves with a guarded UPDATE first, and the
    reservation is released in the same transaction as the seats that replace it."""
    if not _start_warming(TrainingClass, class_id):
        return 0
    training_class = _locked_class(TrainingClass(pk=class_id))
    _release(training_class=training_class)
    started = 0
    for seat in training_class.seats.filter(removed_at__isnull=True, environment__isnull=True):
        if _start_seat(training_class, seat) is not None:
            started += 1
    log.info("class %s: %d seats requested", class_id, started)
    return started


@transaction.atomic
def end_class(*, training_class: TrainingClass, user=None, ip: str | None = None) -> int:
    """Tear every seat down now (the trainer's "End now", or the schedule at the end
    plus grace). Twice is not an error."""
    if user is not None:
        _check_trainer(user, training_class)
    before = training_class.status
    if not _close(TrainingClass, training_class.pk, TrainingClass.Status.ENDED):
        return 0
    _release(training_class=training_class)
    message = f"The class ended: ended by {audit.who(user)}." if user else "The class ended."
    ended = 0
    for environment in _seat_environments(training_class, DELETABLE):
        if lifecycle.delete_environment(environment=environment, message=message):
            ended += 1
    if user is not None:
        audit.record(
            actor=user,
            action="class.end",
            target=training_class,
            before={"status": before},
            after={"status": TrainingClass.Status.ENDED, "seats_torn_down": ended},
            ip=ip,
        )
    return ended


def _seat_environments(training_class: TrainingClass, states):
    return Environment.objects.filter(
        pk__in=training_class.seats.exclude(environment=None).values("environment"),
        state__in=states,
    )


def _seat_demand(training_class: TrainingClass) -> quotas.Demand:
    version = training_class.blueprint_version
    start = _window_start(training_class.starts_at)
    seconds = max(int((training_class.teardown_at - start).total_seconds()), 0)
    return _seats_demand(
        version,
        seats=1,
        seconds=seconds,
        starts_at=start,
        label=f"one more seat of {version.title} for {format_duration(seconds)}",
    )


def _check_open(training_class: TrainingClass) -> None:
    if training_class.status not in OPEN_CLASS:
        raise ServiceError(
            f"This class is {training_class.get_status_display().lower()}; it cannot change."
        )


@transaction.atomic
def add_seat(
    *, training_class: TrainingClass, user, attendee_email: str = "", ip: str | None = None
) -> Seat:
    """One more seat, checked against the quotas and budget like a request; started at
    once if the class has warmed up, else its capacity is added to the reservation."""
    _check_trainer(user, training_class)
    training_class = _locked_class(training_class)
    _check_open(training_class)
    email = ""
    if attendee_email.strip():
        (email,) = parse_roster(attendee_email)
        if training_class.seats.filter(attendee_email__iexact=email, removed_at=None).exists():
            raise ServiceError(f"{email} already has a seat in this class.")
    demand = _seat_demand(training_class)
    quotas.require(team=training_class.team, user=training_class.trainer, demand=demand)
    number = (training_class.seats.aggregate(n=Max("number"))["n"] or 0) + 1
    seat = Seat.objects.create(training_class=training_class, number=number, attendee_email=email)
    if training_class.status == TrainingClass.Status.WARMING:
        _start_seat(training_class, seat)
    else:
        _reserve(
            team=training_class.team,
            owner=training_class.trainer,
            demand=demand,
            ends_at=training_class.teardown_at,
            training_class=training_class,
        )
    audit.record(
        actor=user,
        action="class.add_seat",
        target=training_class,
        after={"seat": number, "attendee": email},
        ip=ip,
    )
    if email and training_class.status != TrainingClass.Status.PENDING_APPROVAL:
        _invite_attendees(training_class, actor=user, seats=[seat])
    return seat


@transaction.atomic
def remove_seat(*, seat: Seat, user, ip: str | None = None) -> None:
    """Take a seat out: its environment is torn down, its capacity freed."""
    training_class = _locked_class(seat.training_class)
    _check_trainer(user, training_class)
    _check_open(training_class)
    if not Seat.objects.filter(pk=seat.pk, removed_at=None).update(removed_at=timezone.now()):
        return
    if seat.environment_id:
        _delete_environment(
            seat.environment_id, message=f"Seat {seat.number} removed by {audit.who(user)}."
        )
    elif training_class.status != TrainingClass.Status.WARMING:
        # One seat less held: shrink the class's reservations by one seat's worth.
        one = _seat_demand(training_class)
        held = CapacityReservation.objects.filter(
            training_class=training_class, released_at=None, environments__gte=1
        ).first()
        if held is not None:
            held.environments -= 1
            held.cpu_millicores = max(held.cpu_millicores - one.cpu_millicores, 0)
            held.memory_bytes = max(held.memory_bytes - one.memory_bytes, 0)
            held.cost = max(held.cost - one.cost, Decimal(0))
            held.save()
    audit.record(
        actor=user,
        action="class.remove_seat",
        target=training_class,
        before={"seat": seat.number, "attendee": seat.attendee_email},
        ip=ip,
    )


def _restore_from_baseline(seat: Seat) -> bool:
    """The seam for snapshots: once ``environments.recovery`` can restore a class's
    baseline snapshot into a seat, do it here and return True. Until then a reset
    recreates the seat from its blueprint."""
    return False


@transaction.atomic
def reset_seat(*, seat: Seat, user, ip: str | None = None) -> Environment | None:
    """Give an attendee a fresh seat: the old environment is torn down and a new one is
    requested at once (the same capacity, decided with the class)."""
    training_class = _locked_class(seat.training_class)
    _check_trainer(user, training_class)
    if training_class.status != TrainingClass.Status.WARMING:
        raise ServiceError("Seats can be reset once the class has started its seats.")
    seat = Seat.objects.select_for_update().get(pk=seat.pk)
    if seat.removed_at is not None:
        raise ServiceError("This seat was removed from the class.")
    if _restore_from_baseline(seat):
        return seat.environment
    old = seat.environment
    if old is not None and old.state in DELETABLE:
        lifecycle.delete_environment(
            environment=old, message=f"Seat {seat.number} reset by {audit.who(user)}."
        )
    environment = _start_seat(training_class, seat)
    audit.record(
        actor=user,
        action="class.reset_seat",
        target=training_class,
        before={"seat": seat.number, "environment": str(old.pk) if old else None},
        after={"environment": str(environment.pk) if environment else None},
        ip=ip,
    )
    return environment


@transaction.atomic
def extend_class(
    *, training_class: TrainingClass, user, ends_at: datetime, ip: str | None = None
) -> TrainingClass:
    """Move the end later: the extra time of every seat is checked against the budget
    like an extension, then the seats (or the reservation) follow."""
    _check_trainer(user, training_class)
    training_class = _locked_class(training_class)
    _check_open(training_class)
    ends_at = aware(ends_at, training_class.time_zone)
    if ends_at <= training_class.ends_at:
        raise ServiceError("The new end must be after the current end.")
    version = training_class.blueprint_version
    added = ends_at - training_class.ends_at
    start = training_class.warmed_at or _window_start(training_class.starts_at)
    seconds = int((ends_at + training_class.grace - start).total_seconds())
    if seconds > version.blueprint_spec.ttl.max:
        raise ServiceError(
            f"{version.title} may live at most {format_duration(version.blueprint_spec.ttl.max)}; "
            f"the class's seats would then live {format_duration(seconds)}."
        )
    seats = training_class.seats.filter(removed_at=None).count()
    cost = seats * price_for(version.blueprint_spec, added.total_seconds())
    quotas.require(
        team=training_class.team,
        user=training_class.trainer,
        demand=quotas.Demand(
            environments=0,
            cpu_millicores=0,
            memory_bytes=0,
            ttl_seconds=seconds,
            cost=cost,
            label=f"extending the class's {seats} seats by {format_duration(added.total_seconds())}",
        ),
    )
    before = training_class.ends_at
    training_class.ends_at = ends_at
    training_class.save(update_fields=["ends_at"])
    held = CapacityReservation.objects.filter(training_class=training_class, released_at=None)
    for reservation in held:
        reservation.ends_at = training_class.teardown_at
        reservation.cost += cost
        reservation.save(update_fields=["ends_at", "cost"])
    # The seats' expiry follows the class (a time, not a state: no transition).
    for environment in _seat_environments(training_class, LIVE_STATES):
        Environment.objects.filter(pk=environment.pk).update(
            expires_at=training_class.teardown_at,
            ttl=environment.ttl + added,
            updated_at=timezone.now(),
        )
    audit.record(
        actor=user,
        action="class.extend",
        target=training_class,
        before={"ends_at": before.isoformat()},
        after={"ends_at": ends_at.isoformat(), "cost": str(cost)},
        ip=ip,
    )
    return training_class


# --- Invitations ----------------------------------------------------------------------


def _invite_attendees(training_class: TrainingClass, *, actor, seats=None) -> None:
    """Email each attendee a link to their seat, with the class's .ics. Under invite-only
    sign-up an attendee without an account gets an invitation link instead (the roster
    is the invitation): they join the class's own attendee team, which holds no
    environments, so they see their seat and nothing else."""
    seats = list(
        seats
        if seats is not None
        else training_class.seats.filter(removed_at=None, invited_at=None).exclude(
            attendee_email=""
        )
    )
    if not seats:
        return
    for seat in seats:
        ics = calendar.class_ics(training_class, seat)
        link = f"{settings.SITE_URL}{seat.get_absolute_url()}"
        sign_up = ""
        if people.find_account(seat.attendee_email) is None and not settings.SIGNUP_OPEN:
            if training_class.attendee_team is None:
                training_class.attendee_team = Team.objects.create(
                    name=f"Class: {training_class.title[:70]} ({str(training_class.pk)[:8]})",
                    slug=f"class-{str(training_class.pk)[:8]}-{secrets.token_hex(2)}",
                )
                training_class.save(update_fields=["attendee_team"])
            _, token = people.invite_attendee(
                actor=actor, email=seat.attendee_email, team=training_class.attendee_team
            )
            sign_up = (
                "You do not have an account yet: open this link first to set your password "
                f"(it works once):\n\n{people.invitation_url(token)}\n\nThen your seat is here:"
            )
        Seat.objects.filter(pk=seat.pk).update(invited_at=timezone.now())
        start = timezone.localtime(
            training_class.starts_at, zoneinfo.ZoneInfo(training_class.time_zone)
        )
        body = (
            f"{audit.who(training_class.trainer)} invited you to the class "
            f"{training_class.title}, {start:%A %d %B %Y, %H:%M} ({training_class.time_zone}).\n"
            f"Your own environment (seat {seat.number}) will be ready when the class starts.\n\n"
            + (sign_up or "Your seat:")
            + f"\n\n{link}\n\nThe attached calendar file adds the class to your calendar.\n"
        )
        _mail_later(
            f"Invitation: {training_class.title}",
            body,
            [seat.attendee_email],
            attachment=("class.ics", ics),
        )


def _mail_later(subject: str, body: str, to: list[str], attachment=None) -> None:
    """Send on commit, from this process: invitation links must not wait in Redis."""

    def send() -> None:
        try:
            message = EmailMessage(subject, body, None, to)
            if attachment is not None:
                message.attach(attachment[0], attachment[1], "text/calendar")
            message.send()
        except Exception:  # noqa: BLE001 - the class stands; the trainer can re-send
            log.exception("scheduling: the email %r to %s could not be sent", subject, to)

    transaction.on_commit(send)


# --- Bookings -------------------------------------------------------------------------


def estimate_booking(
    *,
    user,
    version: BlueprintVersion,
    starts_at: datetime,
    ends_at: datetime,
    grace_seconds: int = 0,
    team: Team | None = None,
) -> Estimate:
    _check_blueprint(version, Purpose.DEMO, "booked demos")
    team = team_for(user, team)
    return _estimate(
        user=user,
        team=team,
        version=version,
        seats=1,
        starts_at=starts_at,
        ends_at=ends_at,
        grace_seconds=grace_seconds,
        what="this booked {title} for {duration}",
    )


@transaction.atomic
def book_demo(
    *,
    user,
    version: BlueprintVersion,
    customer: str,
    starts_at: datetime,
    ends_at: datetime,
    time_zone: str = "UTC",
    parameters: dict | None = None,
    grace_seconds: int = 0,
    team: Team | None = None,
    ip: str | None = None,
) -> Booking:
    """Book a demo for a customer's slot: quota and budget checked and capacity reserved
    now; the environment is requested a lead time before the start."""
    customer = _one_line(customer, "Name the customer; the team calendar shows it.")
    booking, estimate = _create_decided(
        Booking,
        user=user,
        version=version,
        starts_at=starts_at,
        ends_at=ends_at,
        time_zone=time_zone,
        parameters=parameters,
        grace_seconds=grace_seconds,
        team=team,
        estimate=estimate_booking,
        owner=user,
        customer=customer,
    )
    audit.record(
        actor=user,
        action="booking.create",
        target=booking,
        after={
            "customer": customer,
            "blueprint": str(version),
            "starts_at": booking.starts_at.isoformat(),
            "ends_at": booking.ends_at.isoformat(),
            "price": str(estimate.total),
            "status": booking.status,
        },
        ip=ip,
    )
    return booking


@transaction.atomic
def decide_booking(*, booking: Booking, approver, approve: bool, reason: str = "", ip=None) -> None:
    _decide(
        booking,
        requester=booking.owner,
        approver=approver,
        approve=approve,
        reason=reason,
        ip=ip,
        noun="booking",
        reader="requester",
    )


@transaction.atomic
def cancel_booking(*, booking: Booking, user, ip: str | None = None) -> None:
    """The owner (or an admin) cancels: capacity freed, the environment torn down."""
    if not (booking.owner_id == user.pk or roles.is_admin(user)):
        raise PermissionDenied("Only the person who booked this demo cancels it.")
    before = booking.status
    if not _close(Booking, booking.pk, Booking.Status.CANCELLED):
        raise ServiceError(f"This booking is {booking.get_status_display().lower()} already.")
    _end_booking_environment(booking, message=f"Booking cancelled by {audit.who(user)}.")
    audit.record(
        actor=user,
        action="booking.cancel",
        target=booking,
        before={"status": before},
        after={"status": Booking.Status.CANCELLED},
        ip=ip,
    )


def _end_booking_environment(booking: Booking, *, message: str) -> None:
    _release(booking=booking)
    if booking.environment_id:
        _delete_environment(booking.environment_id, message=message)


def _delete_environment(environment_id, *, message: str) -> None:
    """Tear a seat's or a booking's environment down, unless it is gone or going."""
    environment = Environment.objects.get(pk=environment_id)
    if environment.state in DELETABLE:
        lifecycle.delete_environment(environment=environment, message=message)


@transaction.atomic
def warm_up_booking(booking_id) -> bool:
    if not _start_warming(Booking, booking_id):
        return False
    booking = Booking.objects.select_related("blueprint_version", "team", "owner").get(
        pk=booking_id
    )
    _release(booking=booking)
    environment = _request_until(
        booking,
        owner=booking.owner,
        teardown_at=booking.teardown_at,
        reason=f"Booked demo for {booking.customer}",
        action="booking.environment",
    )
    if environment is None:
        return False
    booking.environment = environment
    booking.save(update_fields=["environment"])
    return True


@transaction.atomic
def end_booking(booking_id) -> bool:
    if not _close(Booking, booking_id, Booking.Status.ENDED):
        return False
    _end_booking_environment(Booking.objects.get(pk=booking_id), message="The booked slot ended.")
    return True


def _remind(booking: Booking) -> bool:
    """Tell the owner their demo is ready (or, at the start, that it is not yet)."""
    if not Booking.objects.filter(pk=booking.pk, reminded_at=None).update(
        reminded_at=timezone.now()
    ):
        return False
    environment = booking.environment
    start = timezone.localtime(booking.starts_at, zoneinfo.ZoneInfo(booking.time_zone))
    ready = environment is not None and environment.state == State.READY
    urls = (
        "\n".join(f"  {name}: {url}" for name, url in (environment.urls or {}).items())
        if (environment)
        else ""
    )
    body = (
        f"Your {booking.blueprint_version.title} demo for {booking.customer} starts at "
        f"{start:%H:%M} ({booking.time_zone}) on {start:%A %d %B}.\n\n"
        + ("It is ready:\n" + urls if ready else "It is still starting; its page shows why.")
        + (
            f"\n\n{settings.SITE_URL}{environment.get_absolute_url()}\n"
            if environment is not None
            else "\n"
        )
    )
    _mail_later(
        f"Reminder: {booking.customer} demo at {start:%H:%M}",
        body,
        [booking.owner.email],
        attachment=("demo.ics", calendar.booking_ics(booking)),
    )
    return True


# --- The schedule ---------------------------------------------------------------------


def tick(now: datetime | None = None) -> dict[str, int]:
    """Run every minute by the exactly-once scheduler (``tasks.run_schedule``): warm up
    what starts within the lead time, remind booking owners, end what is over. Every
    step is a guarded UPDATE, so a tick run twice changes nothing."""
    now = now or timezone.now()
    lead = warmup_lead()
    done = {"warmed": 0, "reminded": 0, "ended": 0}
    for class_id in TrainingClass.objects.filter(
        status=TrainingClass.Status.SCHEDULED, starts_at__lte=now + lead
    ).values_list("pk", flat=True):
        done["warmed"] += bool(warm_up_class(class_id))
    for booking_id in Booking.objects.filter(
        status=Booking.Status.SCHEDULED, starts_at__lte=now + lead
    ).values_list("pk", flat=True):
        done["warmed"] += warm_up_booking(booking_id)
    for booking in Booking.objects.filter(
        status=Booking.Status.WARMING, reminded_at=None
    ).select_related("environment", "owner", "blueprint_version"):
        environment = booking.environment
        if (environment is not None and environment.state == State.READY) or (
            booking.starts_at <= now
        ):
            done["reminded"] += _remind(booking)
    for training_class in TrainingClass.objects.filter(status__in=OPEN_CLASS):
        if training_class.teardown_at <= now:
            done["ended"] += end_class(training_class=training_class)
    for booking in Booking.objects.filter(status__in=OPEN_BOOKING):
        if booking.teardown_at <= now:
            done["ended"] += end_booking(booking.pk)
    return done


# --- Calendar feeds -------------------------------------------------------------------


def hash_feed_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def new_calendar_feed(*, user, ip: str | None = None) -> str:
    """A new private feed URL's token (shown once); any older feed stops working."""
    CalendarFeed.objects.filter(user=user, revoked_at=None).update(revoked_at=timezone.now())
    token = secrets.token_urlsafe(32)
    feed = CalendarFeed.objects.create(user=user, token_hash=hash_feed_token(token))
    audit.record(actor=user, action="calendar_feed.create", target=feed, ip=ip)
    return token


@transaction.atomic
def revoke_calendar_feed(*, user, ip: str | None = None) -> bool:
    changed = CalendarFeed.objects.filter(user=user, revoked_at=None).update(
        revoked_at=timezone.now()
    )
    if changed:
        audit.record(
            actor=user,
            action="calendar_feed.revoke",
            object_type="calendarfeed",
            object_id=str(user.pk),
            ip=ip,
        )
    return bool(changed)


def feed_owner(token: str):
    """The person whose feed ``token`` opens, or None (unknown, revoked, inactive)."""
    if not token or len(token) > 100 or not re.fullmatch(r"[A-Za-z0-9_-]+", token):
        return None
    feed = (
        CalendarFeed.objects.select_related("user")
        .filter(token_hash=hash_feed_token(token), revoked_at=None, user__is_active=True)
        .first()
    )
    return feed.user if feed else None
