"""Reads for the class, seat, booking and calendar pages and the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from allauth.account.models import EmailAddress
from django.db.models import Max, Q, QuerySet, Sum
from django.http import Http404

from environments.access import roles
from environments.models import (
    Booking,
    CostEntry,
    Environment,
    EnvironmentEvent,
    Seat,
    TrainingClass,
)


def classes_for(user) -> QuerySet[TrainingClass]:
    """The classes ``user`` teaches (admins: every class), newest start first."""
    classes = TrainingClass.objects.select_related("blueprint_version__blueprint", "trainer")
    if not roles.is_admin(user):
        classes = classes.filter(trainer=user)
    return classes.order_by("-starts_at")


def class_for(user, pk) -> TrainingClass:
    """A class its trainer (or an admin) may manage; anyone else gets 404."""
    training_class = classes_for(user).filter(pk=pk).select_related("team").first()
    if training_class is None:
        raise Http404("No such class.")
    return training_class


@dataclass
class SeatRow:
    seat: Seat
    environment: Environment | None
    last_activity: datetime | None


def seat_rows(training_class: TrainingClass) -> list[SeatRow]:
    """The trainer's grid: each seat with its environment's state, URL, time left and
    the time of its last recorded event (its last activity)."""
    seats = list(
        training_class.seats.filter(removed_at=None).select_related(
            "environment__blueprint_version"
        )
    )
    env_ids = [seat.environment_id for seat in seats if seat.environment_id]
    last = dict(
        EnvironmentEvent.objects.filter(environment_id__in=env_ids)
        .values("environment_id")
        .annotate(at=Max("created_at"))
        .values_list("environment_id", "at")
    )
    return [
        SeatRow(
            seat,
            seat.environment,
            last.get(seat.environment_id) if seat.environment_id else None,
        )
        for seat in seats
    ]


def _verified_emails(user) -> set[str]:
    return {
        email.lower()
        for email in EmailAddress.objects.filter(user=user, verified=True).values_list(
            "email", flat=True
        )
    }


def seat_for(user, pk) -> Seat:
    """A seat its attendee (by a verified email address), the class's trainer or an
    admin may open; anyone else, another attendee included, gets 404."""
    seat = (
        Seat.objects.select_related(
            "training_class__trainer",
            "training_class__blueprint_version",
            "environment__blueprint_version",
        )
        .filter(pk=pk, removed_at=None)
        .first()
    )
    if seat is None:
        raise Http404("No such seat.")
    if roles.is_admin(user) or seat.training_class.trainer_id == user.pk:
        return seat
    email = (seat.attendee_email or "").lower()
    if email and email in _verified_emails(user):
        return seat
    raise Http404("No such seat.")


def seats_of(user) -> QuerySet[Seat]:
    """The seats ``user`` attends (verified addresses only), newest class first."""
    emails = _verified_emails(user)
    if not emails:
        return Seat.objects.none()
    query = Q()
    for email in emails:
        query |= Q(attendee_email__iexact=email)
    return (
        Seat.objects.filter(query, removed_at=None)
        .exclude(training_class__status__in=["rejected"])
        .select_related("training_class", "environment")
        .order_by("-training_class__starts_at")
    )


def bookings_for_team_calendar(user, *, start: datetime | None = None) -> QuerySet[Booking]:
    """Bookings of the teams ``user`` is in (admins: every team), by start."""
    bookings = Booking.objects.select_related(
        "owner", "team", "blueprint_version__blueprint", "environment"
    ).exclude(status__in=["cancelled", "rejected"])
    if not roles.is_admin(user):
        bookings = bookings.filter(team__memberships__user=user).distinct()
    if start is not None:
        bookings = bookings.filter(ends_at__gte=start)
    return bookings.order_by("starts_at")


def booking_for(user, pk) -> Booking:
    """A booking its owner's teammates (and admins) see; anyone else gets 404."""
    booking = bookings_for_team_calendar(user).filter(pk=pk).first()
    if booking is None:
        booking = (
            Booking.objects.filter(pk=pk, owner=user)
            .select_related("owner", "team", "blueprint_version__blueprint", "environment")
            .first()
        )
    if booking is None:
        raise Http404("No such booking.")
    return booking


def class_spend(*, start: datetime, end: datetime) -> list[dict]:
    """For the spend report: each class with cost in [start, end), its seats' costs
    (every environment a seat had, resets included) and its total, largest first."""
    rows: dict = {}
    entries = (
        CostEntry.objects.filter(
            period_end__gt=start, period_end__lte=end, environment__seats__isnull=False
        )
        .values(
            "environment__seats__training_class_id",
            "environment__seats__training_class__title",
            "environment__seats__number",
            "environment__seats__attendee_email",
        )
        .annotate(amount=Sum("amount"))
    )
    for entry in entries:
        key = entry["environment__seats__training_class_id"]
        row = rows.setdefault(
            key,
            {
                "id": key,
                "title": entry["environment__seats__training_class__title"],
                "seats": [],
                "total": Decimal(0),
            },
        )
        row["seats"].append(
            {
                "number": entry["environment__seats__number"],
                "attendee": entry["environment__seats__attendee_email"],
                "amount": entry["amount"],
            }
        )
        row["total"] += entry["amount"]
    for row in rows.values():
        row["seats"].sort(key=lambda seat: seat["number"])
    return sorted(rows.values(), key=lambda row: (-row["total"], row["title"]))


def pending_decisions(user) -> tuple[list[TrainingClass], list[Booking]]:
    """Classes and bookings waiting for one decision that ``user`` may take, each with
    ``outcome`` (why it waits, the quota rules' words) and ``is_own``."""
    from django.conf import settings

    from environments.access.teams import approver_team_ids
    from environments.governance import quotas

    teams = approver_team_ids(user)
    found: list = []
    for model in (TrainingClass, Booking):
        rows = model.objects.filter(status="pending_approval").select_related(
            "team", "blueprint_version"
        )
        if teams is not None:
            rows = rows.filter(team_id__in=teams)
        found.append(list(rows.order_by("starts_at")))
    classes, bookings = found
    for item, requester in [(c, c.trainer) for c in classes] + [(b, b.owner) for b in bookings]:
        held = item.reservations.filter(released_at=None).first()
        item.price = held.cost if held else Decimal(0)
        item.seat_count = held.environments if held else 0
        item.outcome_text = "; ".join(
            breach.short
            for breach in quotas.breaches(
                team=item.team,
                user=requester,
                demand=quotas.Demand(
                    environments=0,
                    cpu_millicores=0,
                    memory_bytes=0,
                    ttl_seconds=int((item.ends_at + item.grace - item.starts_at).total_seconds()),
                    cost=Decimal(0),
                    label="",
                    starts_at=item.starts_at,
                ),
            )
        )
        item.is_own = requester.pk == user.pk and (
            settings.FORBID_SELF_APPROVAL or not user.is_superuser
        )
    return classes, bookings


def class_total(training_class: TrainingClass) -> Decimal:
    """What every environment the class's seats ever had has cost so far."""
    return CostEntry.objects.filter(environment__seats__training_class=training_class).aggregate(
        total=Sum("amount")
    )["total"] or Decimal(0)
