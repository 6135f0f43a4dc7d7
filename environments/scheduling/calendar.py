"""iCalendar (.ics, RFC 5545) files for classes, booked demos and a person's private feed.

Written with the ``icalendar`` library (not by hand): it folds long lines, escapes
commas and semicolons and writes UTC times the way every calendar reads them. Each event
has a stable UID, so a calendar that imports the file again updates the event instead of
adding a second one.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from icalendar import Calendar, Event

from environments.lifecycle.states import LIVE_STATES
from environments.models import Booking, Environment, Seat, TrainingClass

PRODID = "-//Ephemera//Classes and booked demos//EN"


def _calendar(name: str) -> Calendar:
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", name)
    return cal


def _event(uid: str, summary: str, start, end, description: str, url: str) -> Event:
    event = Event()
    event.add("uid", f"{uid}@ephemera")
    event.add("dtstamp", timezone.now())
    event.add("dtstart", start)
    event.add("dtend", end)
    event.add("summary", summary)
    event.add("description", description)
    event.add("url", url)
    return event


def _class_event(training_class: TrainingClass, url: str) -> Event:
    return _event(
        f"class-{training_class.pk}",
        f"Class: {training_class.title}",
        training_class.starts_at,
        training_class.ends_at,
        f"{training_class.blueprint_version.title}. Your environment is ready at the start "
        f"and removed {'at the end' if not training_class.grace else 'shortly after the end'}."
        f"\n{url}",
        url,
    )


def _booking_event(booking: Booking) -> Event:
    url = f"{settings.SITE_URL}{booking.get_absolute_url()}"
    return _event(
        f"booking-{booking.pk}",
        f"Demo for {booking.customer}",
        booking.starts_at,
        booking.ends_at,
        f"{booking.blueprint_version.title}, booked by {booking.owner.email}.\n{url}",
        url,
    )


def class_ics(training_class: TrainingClass, seat: Seat | None = None) -> bytes:
    """The class as one event; for an attendee, the link goes to their seat."""
    target = seat.get_absolute_url() if seat is not None else training_class.get_absolute_url()
    cal = _calendar(training_class.title)
    cal.add_component(_class_event(training_class, f"{settings.SITE_URL}{target}"))
    return cal.to_ical()


def booking_ics(booking: Booking) -> bytes:
    cal = _calendar(f"Demo for {booking.customer}")
    cal.add_component(_booking_event(booking))
    return cal.to_ical()


FEED_STATUSES_HIDDEN = ("cancelled", "rejected")


def feed_ics(user) -> bytes:
    """A person's feed: their bookings, the classes they teach or attend, and when each
    of their environments expires (a 15-minute event at the expiry)."""
    cal = _calendar("Ephemera")
    for booking in (
        Booking.objects.filter(owner=user)
        .exclude(status__in=FEED_STATUSES_HIDDEN)
        .select_related("blueprint_version", "owner")
    ):
        cal.add_component(_booking_event(booking))
    for training_class in (
        TrainingClass.objects.filter(trainer=user)
        .exclude(status__in=FEED_STATUSES_HIDDEN)
        .select_related("blueprint_version")
    ):
        url = f"{settings.SITE_URL}{training_class.get_absolute_url()}"
        cal.add_component(_class_event(training_class, url))
    if user.email:
        for seat in Seat.objects.filter(
            attendee_email__iexact=user.email, removed_at=None
        ).select_related("training_class__blueprint_version"):
            url = f"{settings.SITE_URL}{seat.get_absolute_url()}"
            cal.add_component(_class_event(seat.training_class, url))
    for environment in Environment.objects.filter(
        owner=user, state__in=LIVE_STATES, expires_at__isnull=False
    ).select_related("blueprint_version__blueprint"):
        assert environment.expires_at is not None
        name = environment.display_name or environment.name
        url = f"{settings.SITE_URL}{environment.get_absolute_url()}"
        cal.add_component(
            _event(
                f"expiry-{environment.pk}",
                f"Expires: {name} ({environment.blueprint_version.title})",
                environment.expires_at,
                environment.expires_at + timedelta(minutes=15),
                f"The environment {name} is torn down at this time unless extended.\n{url}",
                url,
            )
        )
    return cal.to_ical()
