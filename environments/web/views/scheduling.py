"""Classes, seats, booked demos and calendars: permission -> form -> service -> render.

The trainer's class page polls its seat grid (one URL, one partial) until the class has
ended and every seat is gone. Attendees reach only their own seat (others: 404).
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HTMX_STOP_POLLING

from environments.access import people, roles
from environments.access.teams import requestable_teams
from environments.catalog import selectors as catalog_selectors
from environments.catalog.choices import Purpose
from environments.catalog.spec import ParametersInvalid
from environments.governance import audit, quotas
from environments.lib.errors import ServiceError
from environments.lifecycle.states import FINAL_STATES
from environments.models import BlueprintVersion, Seat, TrainingClass
from environments.scheduling import calendar, selectors
from environments.scheduling import services as scheduling
from environments.web.scheduling_forms import AddSeatForm, BookingForm, ClassForm, ExtendClassForm


def _zone(request) -> str:
    current = timezone.get_current_timezone_name()
    return current if people.valid_time_zone(current) else "UTC"


def _versions(purpose: str) -> list[BlueprintVersion]:
    return [
        version
        for _, versions in catalog_selectors.catalogue()
        for version in versions
        if version.purpose == purpose
    ]


def _ics(content: bytes, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type="text/calendar; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- Classes --------------------------------------------------------------------------


@login_required
@require_GET
def classes(request):
    """The classes you teach, and the seats you attend."""
    return render(
        request,
        "scheduling/classes.html",
        {
            "classes": selectors.classes_for(request.user)
            if roles.is_trainer(request.user)
            else [],
            "seats": selectors.seats_of(request.user),
            "is_trainer": roles.is_trainer(request.user),
            "versions": _versions(Purpose.TRAINING) if roles.is_trainer(request.user) else [],
        },
    )


def _slot(form, version: BlueprintVersion) -> dict:
    """What a class's or a booking's form gives its estimate and its creation alike."""
    data = form.cleaned_data
    return {
        "version": version,
        "starts_at": scheduling.aware(data["starts_at"], data["time_zone"]),
        "ends_at": scheduling.aware(data["ends_at"], data["time_zone"]),
        "grace_seconds": form.grace_seconds,
        "team": data.get("team"),
    }


def _slot_form(request, *, form, version: BlueprintVersion, template: str, act):
    """The class and booking forms' one flow. On a valid POST ``act(create)`` returns
    the page to go to once saved ("Create") or the estimate to show ("Check price");
    a refusal is shown on the form in one line."""
    estimate = None
    if request.method == "POST" and form.is_valid():
        try:
            outcome = act(request.POST.get("action") == "create")
        except ParametersInvalid as exc:
            form.add_parameter_errors(exc.errors)
        except (ServiceError, PermissionDenied) as exc:
            form.add_error(None, str(exc))
        else:
            if isinstance(outcome, HttpResponseBase):
                return outcome
            estimate = outcome
    return render(
        request,
        template,
        {
            "form": form,
            "version": version,
            "estimate": estimate,
            "zones": people.time_zone_names(),
            "budget": _budget(estimate, request.user, form),
        },
        status=400 if request.method == "POST" and form.errors else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def new_class(request, name: str):
    """One form: blueprint parameters, seats or roster, start and end in a time zone.
    "Check price" shows the whole class's price and what it needs; "Create" saves."""
    if not roles.is_trainer(request.user):
        raise PermissionDenied("Only trainers create classes; ask a portal admin for the role.")
    version = catalog_selectors.requestable_version(name)
    if version.purpose != Purpose.TRAINING:
        raise Http404("Not a training blueprint.")
    form = ClassForm(
        request.POST or None,
        request.FILES or None,
        version=version,
        teams=requestable_teams(request.user),
        zone=_zone(request),
    )

    def act(create: bool):
        data = form.cleaned_data
        try:
            text = form.roster_text()
        except forms.ValidationError as exc:  # the CSV upload's own checks
            form.add_error("roster_file", exc)
            return None
        roster = scheduling.parse_roster(text)
        slot = _slot(form, version)
        if not create:
            seats = len(roster) if roster else (data.get("seats") or 0)
            return scheduling.estimate_class(user=request.user, seats=seats, **slot)
        training_class = scheduling.create_class(
            trainer=request.user,
            title=data["title"],
            time_zone=data["time_zone"],
            seats=data.get("seats"),
            roster=roster,
            parameters=form.parameters(),
            ip=audit.client_ip(request),
            **slot,
        )
        messages.success(
            request,
            "Class created; it waits for an approver."
            if training_class.status == TrainingClass.Status.PENDING_APPROVAL
            else "Class created. Its seats start "
            f"{scheduling.warmup_lead().total_seconds() // 60:.0f} minutes before the start.",
        )
        return redirect("class_detail", pk=training_class.pk)

    return _slot_form(
        request, form=form, version=version, template="scheduling/class_form.html", act=act
    )


def _budget(estimate, user, form):
    if estimate is None:
        return None
    team = form.cleaned_data.get("team") if hasattr(form, "cleaned_data") else None
    teams = requestable_teams(user)
    team = team or (teams[0] if teams else None)
    return quotas.budget_summary(team=team) if team else None


def _grid_context(training_class: TrainingClass) -> dict:
    rows = selectors.seat_rows(training_class)
    settled = training_class.status in (
        TrainingClass.Status.ENDED,
        TrainingClass.Status.REJECTED,
    ) and all(row.environment is None or row.environment.state in FINAL_STATES for row in rows)
    ready = sum(1 for row in rows if row.environment and row.environment.state == "ready")
    return {"training_class": training_class, "rows": rows, "settled": settled, "ready": ready}


@login_required
@require_GET
def class_detail(request, pk):
    training_class = selectors.class_for(request.user, pk)
    total = selectors.class_total(training_class)
    return render(
        request,
        "scheduling/class_detail.html",
        {
            **_grid_context(training_class),
            "extend_form": ExtendClassForm(
                initial={
                    "ends_at": timezone.localtime(training_class.ends_at).strftime("%Y-%m-%dT%H:%M")
                }
            ),
            "add_form": AddSeatForm(),
            "total_cost": total,
            "lead": scheduling.warmup_lead(),
        },
    )


@login_required
@require_GET
def class_seats(request, pk):
    """The seat grid partial; htmx polls it every 2 s, 286 once everything is over."""
    training_class = selectors.class_for(request.user, pk)
    context = _grid_context(training_class)
    response = render(request, "scheduling/_seat_grid.html", context)
    if context["settled"]:
        response.status_code = HTMX_STOP_POLLING
    return response


def _class_action(request, pk, act, done: str):
    """Run ``act(training_class=, user=, ip=)`` on a class you may see, then back to its
    page with the outcome in one line."""
    training_class = selectors.class_for(request.user, pk)
    try:
        act(training_class=training_class, user=request.user, ip=audit.client_ip(request))
    except ParametersInvalid as exc:
        messages.error(request, "; ".join(f"{k}: {v}" for k, v in exc.errors.items()))
    except (ServiceError, PermissionDenied) as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done)
    return redirect("class_detail", pk=training_class.pk)


@login_required
@require_POST
def class_end(request, pk):
    return _class_action(
        request, pk, scheduling.end_class, "Class ended; every seat is being removed."
    )


@login_required
@require_POST
def class_extend(request, pk):
    form = ExtendClassForm(request.POST)
    if not form.is_valid():
        training_class = selectors.class_for(request.user, pk)
        messages.error(request, "Give the new end as a date and a time.")
        return redirect("class_detail", pk=training_class.pk)
    ends_at = form.cleaned_data["ends_at"].replace(tzinfo=None)
    return _class_action(
        request, pk, partial(scheduling.extend_class, ends_at=ends_at), "Class extended."
    )


@login_required
@require_POST
def class_add_seat(request, pk):
    form = AddSeatForm(request.POST)
    email = form.data.get("attendee_email", "") if form.is_valid() else ""
    return _class_action(
        request, pk, partial(scheduling.add_seat, attendee_email=email), "Seat added."
    )


def _seat_action(request, pk, act, done: str):
    """``act(seat=, user=, ip=)`` on a seat of a class you teach (404 for anyone else);
    ``done`` may name the seat's {number}."""
    seat = get_object_or_404(Seat.objects.select_related("training_class"), pk=pk)
    selectors.class_for(request.user, seat.training_class_id)  # 404 for anyone else
    return _class_action(
        request,
        seat.training_class_id,
        lambda training_class, **who: act(seat=seat, **who),
        done.format(number=seat.number),
    )


@login_required
@require_POST
def seat_reset(request, pk):
    return _seat_action(request, pk, scheduling.reset_seat, "Seat {number} is being recreated.")


@login_required
@require_POST
def seat_remove(request, pk):
    return _seat_action(request, pk, scheduling.remove_seat, "Seat {number} removed.")


@login_required
@require_GET
def class_ics(request, pk):
    training_class = selectors.class_for(request.user, pk)
    return _ics(calendar.class_ics(training_class), "class.ics")


@login_required
@require_GET
def seat_detail(request, pk):
    """An attendee's own seat: the class, its times, the environment's links when ready."""
    seat = selectors.seat_for(request.user, pk)
    template = "scheduling/_seat.html" if request.htmx else "scheduling/seat.html"
    response = render(request, template, {"seat": seat, "training_class": seat.training_class})
    environment = seat.environment
    if (
        request.htmx
        and seat.training_class.status == TrainingClass.Status.ENDED
        and (environment is None or environment.state in FINAL_STATES)
    ):
        response.status_code = HTMX_STOP_POLLING
    return response


@login_required
@require_GET
def seat_ics(request, pk):
    seat = selectors.seat_for(request.user, pk)
    return _ics(calendar.class_ics(seat.training_class, seat), "class.ics")


# --- Bookings -------------------------------------------------------------------------


@login_required
@require_GET
def team_calendar(request):
    return _calendar_page(request)


def _calendar_page(request, feed_url: str | None = None):
    """The team calendar: every booking of your teams, upcoming first, by day."""
    bookings = selectors.bookings_for_team_calendar(
        request.user, start=timezone.now() - timedelta(days=1)
    )
    days: dict = {}
    for booking in bookings:
        days.setdefault(timezone.localtime(booking.starts_at).date(), []).append(booking)
    response = render(
        request,
        "scheduling/calendar.html",
        {
            "days": sorted(days.items()),
            "versions": _versions(Purpose.DEMO),
            "feed_url": feed_url,
        },
    )
    if feed_url:
        response["Cache-Control"] = "no-store"  # the page holds the feed's secret address
    return response


@login_required
@require_http_methods(["GET", "POST"])
def new_booking(request, name: str):
    version = catalog_selectors.requestable_version(name)
    if version.purpose != Purpose.DEMO:
        raise Http404("Not a demo blueprint.")
    form = BookingForm(
        request.POST or None,
        version=version,
        teams=requestable_teams(request.user),
        zone=_zone(request),
    )

    def act(create: bool):
        slot = _slot(form, version)
        if not create:
            return scheduling.estimate_booking(user=request.user, **slot)
        booking = scheduling.book_demo(
            user=request.user,
            customer=form.cleaned_data["customer"],
            time_zone=form.cleaned_data["time_zone"],
            parameters=form.parameters(),
            ip=audit.client_ip(request),
            **slot,
        )
        messages.success(request, f"Demo booked for {booking.customer}.")
        return redirect("booking_detail", pk=booking.pk)

    return _slot_form(
        request, form=form, version=version, template="scheduling/booking_form.html", act=act
    )


@login_required
@require_GET
def booking_detail(request, pk):
    booking = selectors.booking_for(request.user, pk)
    return render(
        request,
        "scheduling/booking_detail.html",
        {"booking": booking, "lead": scheduling.warmup_lead()},
    )


@login_required
@require_POST
def booking_cancel(request, pk):
    booking = selectors.booking_for(request.user, pk)
    try:
        scheduling.cancel_booking(booking=booking, user=request.user, ip=audit.client_ip(request))
    except (ServiceError, PermissionDenied) as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Booking cancelled.")
    return redirect("booking_detail", pk=booking.pk)


@login_required
@require_GET
def booking_ics(request, pk):
    booking = selectors.booking_for(request.user, pk)
    return _ics(calendar.booking_ics(booking), "demo.ics")


# --- Calendar feed --------------------------------------------------------------------


@login_required
@require_POST
def feed_create(request):
    token = scheduling.new_calendar_feed(user=request.user, ip=audit.client_ip(request))
    # Shown once, in this response only (like API tokens): stored nowhere in clear.
    return _calendar_page(
        request, feed_url=request.build_absolute_uri(f"/calendar/feed/{token}.ics")
    )


@login_required
@require_POST
def feed_revoke(request):
    if scheduling.revoke_calendar_feed(user=request.user, ip=audit.client_ip(request)):
        messages.success(request, "Your calendar feed address no longer works.")
    return redirect("team_calendar")


@never_cache
@require_GET
def feed(request, token: str):
    """The private feed: no session, the token in the URL is the key (404 otherwise)."""
    user = scheduling.feed_owner(token)
    if user is None:
        raise Http404("No such calendar feed.")
    return HttpResponse(calendar.feed_ics(user), content_type="text/calendar; charset=utf-8")
