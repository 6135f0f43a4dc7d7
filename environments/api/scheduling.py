"""API endpoints for classes and booked demos (mounted at /api/v1/classes and
/api/v1/bookings by urls.py). The same services as the pages: one decision per class,
quota and budget checked and capacity reserved at booking time.

The schemas live here with their endpoints (they are used nowhere else).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.http import Http404, HttpRequest
from ninja import Router, Schema, Status
from ninja.errors import HttpError
from pydantic import Field

from environments.api.app import _require_write, _token, bearer
from environments.api.schemas import ERRORS, READ_ERRORS
from environments.catalog.selectors import requestable_version
from environments.governance import audit
from environments.models import ApiToken, Booking, Seat, Team, TrainingClass
from environments.scheduling import selectors
from environments.scheduling import services as scheduling

classes_router = Router(auth=bearer, tags=["classes"])
bookings_router = Router(auth=bearer, tags=["bookings"])


class SlotIn(Schema):
    blueprint: str = Field(..., max_length=63, description="The blueprint's name.")
    starts_at: datetime = Field(..., description="Start; without an offset, in `time_zone`.")
    ends_at: datetime = Field(..., description="End; without an offset, in `time_zone`.")
    time_zone: str = Field("UTC", max_length=64, description="An IANA zone, e.g. Europe/Paris.")
    grace_seconds: int = Field(0, ge=0, le=86400, description="Kept this long after the end.")
    parameters: dict[str, Any] = Field(default_factory=dict)
    team: str | None = Field(None, max_length=50, description="Team slug; default: your only team.")


class ClassIn(SlotIn):
    title: str = Field(..., min_length=1, max_length=100)
    seats: int | None = Field(None, ge=1, le=1000, description="A count, or give `roster`.")
    roster: list[str] = Field(
        default_factory=list, max_length=1000, description="Attendees' email addresses."
    )


class BookingIn(SlotIn):
    customer: str = Field(..., min_length=1, max_length=100)


class SeatOut(Schema):
    id: uuid.UUID
    number: int
    attendee_email: str
    state: str | None = Field(None, description="The seat's environment's state, if started.")
    environment_id: uuid.UUID | None = None
    urls: dict[str, str] = Field(default_factory=dict)
    expires_at: datetime | None = None


class ClassOut(Schema):
    id: uuid.UUID
    title: str
    status: str
    blueprint: str
    team: str
    trainer: str
    starts_at: datetime
    ends_at: datetime
    time_zone: str
    grace_seconds: int
    seats: list[SeatOut]
    url: str


class BookingOut(Schema):
    id: uuid.UUID
    customer: str
    status: str
    blueprint: str
    team: str
    owner: str
    starts_at: datetime
    ends_at: datetime
    time_zone: str
    grace_seconds: int
    environment_id: uuid.UUID | None = None
    url: str


def _seat_out(seat: Seat) -> dict[str, Any]:
    environment = seat.environment
    return {
        "id": seat.pk,
        "number": seat.number,
        "attendee_email": seat.attendee_email,
        "state": environment.state if environment else None,
        "environment_id": environment.pk if environment else None,
        "urls": (environment.urls or {}) if environment else {},
        "expires_at": environment.expires_at if environment else None,
    }


def _class_out(training_class: TrainingClass) -> dict[str, Any]:
    seats = training_class.seats.filter(removed_at=None).select_related("environment")
    return {
        "id": training_class.pk,
        "title": training_class.title,
        "status": training_class.status,
        "blueprint": training_class.blueprint_version.blueprint.name,
        "team": training_class.team.slug,
        "trainer": training_class.trainer.email,
        "starts_at": training_class.starts_at,
        "ends_at": training_class.ends_at,
        "time_zone": training_class.time_zone,
        "grace_seconds": int(training_class.grace.total_seconds()),
        "seats": [_seat_out(seat) for seat in seats],
        "url": training_class.get_absolute_url(),
    }


def _booking_out(booking: Booking) -> dict[str, Any]:
    return {
        "id": booking.pk,
        "customer": booking.customer,
        "status": booking.status,
        "blueprint": booking.blueprint_version.blueprint.name,
        "team": booking.team.slug,
        "owner": booking.owner.email,
        "starts_at": booking.starts_at,
        "ends_at": booking.ends_at,
        "time_zone": booking.time_zone,
        "grace_seconds": int(booking.grace.total_seconds()),
        "environment_id": booking.environment_id,
        "url": booking.get_absolute_url(),
    }


def _team(token: ApiToken, slug: str | None) -> Team | None:
    """The team asked for; a team (CI) token acts for its own team only."""
    team: Team | None = token.team
    if slug:
        team = Team.objects.filter(slug=slug).first()
        if team is None:
            raise Http404(f"No team {slug!r}.")
        if token.team is not None and team.pk != token.team.pk:
            raise HttpError(403, f"This token acts for team {token.team.slug} only.")
    return team


def _times(payload: SlotIn) -> tuple[datetime, datetime]:
    return (
        scheduling.aware(payload.starts_at, payload.time_zone),
        scheduling.aware(payload.ends_at, payload.time_zone),
    )


def _slot(
    request: HttpRequest, token: ApiToken, payload: SlotIn, times: tuple[datetime, datetime]
) -> dict[str, Any]:
    """What creating a class and booking a demo take alike from a ``SlotIn``: the
    blueprint (404 if unknown), the times, the team (checked against the token)."""
    return {
        "version": requestable_version(payload.blueprint),
        "starts_at": times[0],
        "ends_at": times[1],
        "time_zone": payload.time_zone,
        "parameters": payload.parameters,
        "grace_seconds": payload.grace_seconds,
        "team": _team(token, payload.team),
        "ip": audit.client_ip(request),
    }


@classes_router.get(
    "", response={200: list[ClassOut], **READ_ERRORS}, summary="The classes you teach"
)
def list_classes(request: HttpRequest) -> list[dict[str, Any]]:
    return [_class_out(c) for c in selectors.classes_for(_token(request).user)[:200]]


@classes_router.post(
    "",
    response={201: ClassOut, **ERRORS},
    summary="Create a class: seats of a training blueprint from start to end",
    description=(
        "Priced, checked against the quotas and budget and decided (approved, waiting for "
        "one approval, or refused with the numbers) as a whole; its capacity is reserved "
        "for its window. Seats start a lead time before `starts_at` and are removed at "
        "`ends_at` plus `grace_seconds`. Each roster address gets an invitation."
    ),
)
def create_class(request: HttpRequest, payload: ClassIn) -> Status[dict[str, Any]]:
    token = _require_write(request)
    times = _times(payload)
    roster = scheduling.parse_roster("\n".join(payload.roster)) if payload.roster else []
    training_class = scheduling.create_class(
        trainer=token.user,
        title=payload.title,
        seats=payload.seats,
        roster=roster,
        **_slot(request, token, payload, times),
    )
    return Status(201, _class_out(training_class))


@classes_router.get(
    "/{class_id}", response={200: ClassOut, **READ_ERRORS}, summary="One class and its seats"
)
def get_class(request: HttpRequest, class_id: uuid.UUID) -> dict[str, Any]:
    return _class_out(selectors.class_for(_token(request).user, class_id))


@classes_router.get(
    "/{class_id}/seats",
    response={200: list[SeatOut], **READ_ERRORS},
    summary="A class's seats: attendee, state, URLs, expiry",
)
def list_seats(request: HttpRequest, class_id: uuid.UUID) -> list[dict[str, Any]]:
    training_class = selectors.class_for(_token(request).user, class_id)
    return _class_out(training_class)["seats"]


@classes_router.post(
    "/{class_id}/end", response={200: ClassOut, **ERRORS}, summary="End the class now"
)
def end_class(request: HttpRequest, class_id: uuid.UUID) -> dict[str, Any]:
    token = _require_write(request)
    training_class = selectors.class_for(token.user, class_id)
    scheduling.end_class(
        training_class=training_class, user=token.user, ip=audit.client_ip(request)
    )
    training_class.refresh_from_db()
    return _class_out(training_class)


@bookings_router.get(
    "", response={200: list[BookingOut], **READ_ERRORS}, summary="Your teams' booked demos"
)
def list_bookings(request: HttpRequest) -> list[dict[str, Any]]:
    token = _token(request)
    bookings = selectors.bookings_for_team_calendar(token.user)
    if token.team_id is not None:
        bookings = bookings.filter(team_id=token.team_id)
    return [_booking_out(b) for b in bookings[:500]]


@bookings_router.post(
    "",
    response={201: BookingOut, **ERRORS},
    summary="Book a demo for a customer's slot",
    description=(
        "Quota and budget are checked and capacity reserved now; the environment is ready "
        "a lead time before `starts_at` (the owner gets a reminder) and removed after "
        "`ends_at` plus `grace_seconds`."
    ),
)
def create_booking(request: HttpRequest, payload: BookingIn) -> Status[dict[str, Any]]:
    token = _require_write(request)
    times = _times(payload)
    booking = scheduling.book_demo(
        user=token.user, customer=payload.customer, **_slot(request, token, payload, times)
    )
    return Status(201, _booking_out(booking))


@bookings_router.get(
    "/{booking_id}", response={200: BookingOut, **READ_ERRORS}, summary="One booked demo"
)
def get_booking(request: HttpRequest, booking_id: uuid.UUID) -> dict[str, Any]:
    return _booking_out(selectors.booking_for(_token(request).user, booking_id))


@bookings_router.delete(
    "/{booking_id}", response={200: BookingOut, **ERRORS}, summary="Cancel a booked demo"
)
def cancel_booking(request: HttpRequest, booking_id: uuid.UUID) -> dict[str, Any]:
    token = _require_write(request)
    booking = selectors.booking_for(token.user, booking_id)
    scheduling.cancel_booking(booking=booking, user=token.user, ip=audit.client_ip(request))
    booking.refresh_from_db()
    return _booking_out(booking)
