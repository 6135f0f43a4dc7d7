"""Classes and booked demos, at the service level: one decision for the whole class,
exact refusals, reserved capacity, warm-up and end by the schedule, attendees' seats,
calendar files (parsed back with icalendar)."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone
from icalendar import Calendar

from environments.catalog.pricing import money, money_pair, price_for
from environments.catalog.publishing import publish_blueprint
from environments.governance import quotas
from environments.lib.errors import ServiceError
from environments.lifecycle import services as lifecycle
from environments.lifecycle.states import State
from environments.models import (
    AuditEvent,
    Booking,
    CapacityReservation,
    Environment,
    Invitation,
    Membership,
    Quota,
    Seat,
    TrainingClass,
)
from environments.scheduling import calendar, selectors
from environments.scheduling import services as scheduling
from tests.conftest import BLUEPRINTS, client_for, make_user

pytestmark = pytest.mark.django_db(transaction=False)


@pytest.fixture(autouse=True)
def _short_lead(settings):
    settings.CLASS_WARMUP_LEAD_SECONDS = 600


@pytest.fixture
def lab(sample_blueprints):
    return sample_blueprints["training-lab"]


@pytest.fixture
def auto_lab(db):
    """The training lab, approved automatically: what breaks a limit is refused."""
    source = (BLUEPRINTS / "training-lab.yaml").read_text()
    source = source.replace("name: training-lab", "name: auto-lab").replace(
        "approval: over-quota", "approval: auto"
    )
    return publish_blueprint(source=source)[0]


@pytest.fixture
def trainer(team):
    user = make_user("trainer@example.com", roles=("trainer",))
    Membership.objects.create(team=team, user=user)
    return user


def _slot(hours_from_now: float = 24, hours: float = 8):
    start = (timezone.now() + timedelta(hours=hours_from_now)).replace(microsecond=0)
    return start, start + timedelta(hours=hours)


def test_it_creates_a_class_with_one_decision_and_reserves_its_capacity(trainer, lab, team):
    start, end = _slot()
    roster = scheduling.parse_roster(
        "ada@example.com\nGrace Hopper <grace@example.com>; bob@example.com"
    )
    training_class = scheduling.create_class(
        trainer=trainer,
        version=lab,
        title="Kubernetes 101",
        starts_at=start,
        ends_at=end,
        roster=roster,
    )
    assert training_class.status == TrainingClass.Status.SCHEDULED
    assert [s.attendee_email for s in training_class.seats.all()] == [
        "ada@example.com",
        "grace@example.com",
        "bob@example.com",
    ]
    held = CapacityReservation.objects.get(training_class=training_class)
    seconds = int((end - (start - timedelta(seconds=600))).total_seconds())
    assert held.environments == 3
    assert held.cpu_millicores == 3 * lab.cpu_millicores
    assert held.cost == 3 * price_for(lab.blueprint_spec, seconds)
    assert held.starts_at == start - timedelta(seconds=600)
    assert not Environment.objects.exists()  # nothing runs before the warm-up
    assert AuditEvent.objects.filter(action="class.create").count() == 1


def test_it_refuses_a_class_over_budget_with_exact_numbers_before_creating_anything(
    trainer, auto_lab, team
):
    lab = auto_lab
    Quota.objects.create(team=team, monthly_budget=Decimal("10.00"))
    start, end = _slot()
    seconds = int((end - (start - timedelta(seconds=600))).total_seconds())
    price = 30 * price_for(lab.blueprint_spec, seconds)
    assert price > Decimal("10")
    with pytest.raises(ServiceError) as refused:
        scheduling.create_class(
            trainer=trainer, version=lab, title="Big class", starts_at=start, ends_at=end, seats=30
        )
    shown_left, shown_cost = money_pair(Decimal("10.00"), price)
    assert str(refused.value) == (
        f"Team Sales has {shown_left} of {money(Decimal(10))} left this month; this class of 30 seats of "
        f"Training lab for 8h10m costs {shown_cost}."
    )
    assert not TrainingClass.objects.exists()
    assert not Seat.objects.exists()
    assert not CapacityReservation.objects.exists()


def test_it_counts_reserved_capacity_against_a_request_that_overlaps_it(
    trainer, owner, lab, shop, team
):
    Quota.objects.create(team=team, max_environments=3)
    start, end = _slot(hours_from_now=2, hours=3)
    scheduling.create_class(
        trainer=trainer, version=lab, title="Tomorrow", starts_at=start, ends_at=end, seats=3
    )
    # A 4-hour request made now would still run during the class: refused.
    with pytest.raises(ServiceError) as refused:
        lifecycle.request_environment(user=owner, version=shop, ttl_seconds=4 * 3600)
    assert "3 reserved for classes and bookings" in str(refused.value)
    assert "needs 1 more, and 0 are left" in str(refused.value)
    # One that ends before the class's warm-up is fine.
    environment = lifecycle.request_environment(user=owner, version=shop, ttl_seconds=3600)
    assert environment.state == State.APPROVED


def test_it_warms_up_the_seats_by_the_schedule_once_and_ends_them(trainer, lab, team):
    start, end = _slot(hours_from_now=0.1, hours=2)
    training_class = scheduling.create_class(
        trainer=trainer, version=lab, title="Soon", starts_at=start, ends_at=end, seats=4
    )
    assert scheduling.tick()["warmed"] == 1
    assert scheduling.tick()["warmed"] == 0  # exactly once
    training_class.refresh_from_db()
    assert training_class.status == TrainingClass.Status.WARMING
    seats = list(training_class.seats.select_related("environment"))
    assert all(s.environment and s.environment.state == State.APPROVED for s in seats)
    assert all(abs(s.environment.expires_at - end) < timedelta(seconds=5) for s in seats)
    held = CapacityReservation.objects.get(training_class=training_class)
    assert held.released_at is not None  # the seats count themselves now
    assert quotas.usage(team=team).environments == 4
    # At the end (plus grace) every seat is torn down.
    scheduling.tick(now=end + timedelta(seconds=1))
    training_class.refresh_from_db()
    assert training_class.status == TrainingClass.Status.ENDED
    assert set(
        Environment.objects.filter(pk__in=[s.environment_id for s in seats]).values_list(
            "state", flat=True
        )
    ) == {State.TEARING_DOWN}


def test_it_reserves_under_concurrency_exactly_what_fits(trainer, auto_lab, team):
    lab = auto_lab
    Quota.objects.create(team=team, max_environments=5)
    start, end = _slot()
    results: list[str] = []

    def book() -> None:
        try:
            scheduling.create_class(
                trainer=trainer, version=lab, title="Race", starts_at=start, ends_at=end, seats=2
            )
            results.append("ok")
        except ServiceError:
            results.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=book) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["ok", "ok", "refused", "refused", "refused", "refused"]


test_it_reserves_under_concurrency_exactly_what_fits = pytest.mark.django_db(transaction=True)(
    test_it_reserves_under_concurrency_exactly_what_fits
)


def test_it_holds_a_class_for_one_approval_and_frees_it_on_rejection(trainer, lab, team, approver):
    start, end = _slot(hours_from_now=24, hours=30)  # over the 1 d auto-approve time
    training_class = scheduling.create_class(
        trainer=trainer, version=lab, title="Long", starts_at=start, ends_at=end, seats=5
    )
    assert training_class.status == TrainingClass.Status.PENDING_APPROVAL
    scheduling.decide_class(
        training_class=training_class, approver=approver, approve=False, reason="Too long"
    )
    training_class.refresh_from_db()
    assert training_class.status == TrainingClass.Status.REJECTED
    assert CapacityReservation.objects.get(training_class=training_class).released_at
    assert scheduling.tick()["warmed"] == 0


def test_it_refuses_classes_to_people_without_the_trainer_role(owner, lab):
    start, end = _slot()
    with pytest.raises(Exception, match="Only trainers"):
        scheduling.create_class(
            trainer=owner, version=lab, title="x", starts_at=start, ends_at=end, seats=1
        )


@pytest.mark.parametrize(
    "roster, message",
    [
        ("ada@example.com, not-an-email", "1 entry that is not an email address: not-an-email"),
        ("ada@example.com\nADA@example.com", "lists ada@example.com more than once"),
    ],
)
def test_it_names_bad_roster_entries(roster, message):
    with pytest.raises(ServiceError, match=message):
        scheduling.parse_roster(roster)


def test_it_reads_a_csv_roster_with_a_header():
    assert scheduling.parse_roster(
        'name,email\n"Lovelace, Ada",ada@example.com\nBob Li,bob@example.com\n'
    ) == [
        "ada@example.com",
        "bob@example.com",
    ]


def test_it_invites_the_roster_and_shows_each_attendee_only_their_seat(
    trainer, lab, team, smtp_server, settings, django_capture_on_commit_callbacks
):
    settings.SIGNUP_OPEN = False
    member = make_user("member@example.com")
    start, end = _slot()
    with django_capture_on_commit_callbacks(execute=True):
        training_class = scheduling.create_class(
            trainer=trainer,
            version=lab,
            title="K8s 101",
            starts_at=start,
            ends_at=end,
            roster=["member@example.com", "newcomer@example.com"],
        )
    seats = list(training_class.seats.all())
    # Someone with an account gets the seat's link; a newcomer an invitation first.
    to_member = smtp_server.to("member@example.com")[0]
    assert f"/seats/{seats[0].pk}/" in to_member.get_body(("plain",)).get_content()
    to_newcomer = smtp_server.to("newcomer@example.com")[0]
    assert "/invitations/" in to_newcomer.get_body(("plain",)).get_content()
    invitation = Invitation.objects.get(email="newcomer@example.com")
    assert invitation.team == training_class.attendee_team
    attachment = next(part for part in to_member.iter_attachments())
    event = Calendar.from_ical(attachment.get_content()).walk("VEVENT")[0]
    assert event.decoded("dtstart") == start
    assert str(event["summary"]) == "Class: K8s 101"
    # The attendee sees their seat, not the other one's.
    client = client_for(member)
    assert client.get(f"/seats/{seats[0].pk}/").status_code == 200
    assert client.get(f"/seats/{seats[1].pk}/").status_code == 404
    assert client.get(f"/classes/{training_class.pk}/").status_code == 404
    assert selectors.seats_of(member).get() == seats[0]


def test_it_books_a_demo_and_parses_its_calendar_file_back(owner, shop, team):
    start, end = _slot(hours_from_now=0.1, hours=1)
    booking = scheduling.book_demo(
        user=owner, version=shop, customer="Acme Corp", starts_at=start, ends_at=end
    )
    assert booking.status == Booking.Status.SCHEDULED
    ics = Calendar.from_ical(calendar.booking_ics(booking))
    (event,) = ics.walk("VEVENT")
    assert str(event["summary"]) == "Demo for Acme Corp"
    assert event.decoded("dtstart") == start and event.decoded("dtend") == end
    assert str(event["uid"]) == f"booking-{booking.pk}@ephemera"
    scheduling.tick()
    booking.refresh_from_db()
    assert booking.status == Booking.Status.WARMING
    assert booking.environment.state == State.APPROVED
    scheduling.tick(now=end + timedelta(seconds=1))
    booking.refresh_from_db()
    assert booking.status == Booking.Status.ENDED
    assert booking.environment.state == State.TEARING_DOWN


def test_it_refuses_a_class_of_a_demo_blueprint_and_a_booking_in_the_past(trainer, owner, shop):
    start, end = _slot()
    with pytest.raises(ServiceError, match="classes use training blueprints"):
        scheduling.create_class(
            trainer=trainer, version=shop, title="x", starts_at=start, ends_at=end, seats=1
        )
    with pytest.raises(ServiceError, match="The start must be in the future"):
        scheduling.book_demo(
            user=owner,
            version=shop,
            customer="Acme",
            starts_at=timezone.now() - timedelta(hours=1),
            ends_at=timezone.now() + timedelta(hours=1),
        )


def test_it_serves_a_private_feed_and_stops_after_revoking(owner, shop, client):
    start, end = _slot()
    scheduling.book_demo(user=owner, version=shop, customer="Acme", starts_at=start, ends_at=end)
    token = scheduling.new_calendar_feed(user=owner)
    response = client.get(f"/calendar/feed/{token}.ics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/calendar")
    summaries = [str(e["summary"]) for e in Calendar.from_ical(response.content).walk("VEVENT")]
    assert summaries == ["Demo for Acme"]
    scheduling.revoke_calendar_feed(user=owner)
    assert client.get(f"/calendar/feed/{token}.ics").status_code == 404


def test_it_shows_each_seat_and_the_class_total_on_the_spend_report(
    trainer, lab, team, portal_admin
):
    from environments.models import CostEntry

    start, end = _slot(hours_from_now=0.1, hours=2)
    training_class = scheduling.create_class(
        trainer=trainer,
        version=lab,
        title="Costly",
        starts_at=start,
        ends_at=end,
        roster=["a@example.com", "b@example.com"],
    )
    scheduling.tick()
    for amount, seat in zip(("1.2500", "0.7500"), training_class.seats.all(), strict=True):
        CostEntry.objects.create(
            environment=seat.environment,
            team=team,
            owner=trainer,
            blueprint="training-lab",
            period_start=timezone.now() - timedelta(minutes=1),
            period_end=timezone.now(),
            amount=Decimal(amount),
        )
    (row,) = selectors.class_spend(
        start=timezone.now() - timedelta(days=1), end=timezone.now() + timedelta(days=1)
    )
    assert row["total"] == Decimal("2.0000")
    assert [(s["number"], s["attendee"], s["amount"]) for s in row["seats"]] == [
        (1, "a@example.com", Decimal("1.2500")),
        (2, "b@example.com", Decimal("0.7500")),
    ]
    page = client_for(portal_admin).get("/admin-portal/spend/").content.decode()
    assert "Costly" in page and "a@example.com" in page
    assert client_for(trainer).get(f"/classes/{training_class.pk}/").status_code == 200


def test_it_lets_an_approver_decide_a_whole_class_once(trainer, lab, approver, team):
    start, end = _slot(hours_from_now=24, hours=30)
    training_class = scheduling.create_class(
        trainer=trainer, version=lab, title="Needs a yes", starts_at=start, ends_at=end, seats=3
    )
    client = client_for(approver)
    assert "Needs a yes" in client.get("/approvals/").content.decode()
    response = client.post(f"/approvals/classes/{training_class.pk}/approve/")
    assert response.status_code == 302
    training_class.refresh_from_db()
    assert training_class.status == TrainingClass.Status.SCHEDULED
    assert client.post(f"/approvals/classes/{training_class.pk}/approve/").status_code == 302
    assert AuditEvent.objects.filter(action="class.approve").count() == 1


def test_outsiders_get_404_on_class_booking_and_seat_pages(trainer, lab, owner, shop, outsider):
    start, end = _slot()
    training_class = scheduling.create_class(
        trainer=trainer, version=lab, title="Private", starts_at=start, ends_at=end, seats=1
    )
    booking = scheduling.book_demo(
        user=owner, version=shop, customer="Acme", starts_at=start, ends_at=end
    )
    seat = training_class.seats.get()
    client = client_for(outsider)
    for url in (
        f"/classes/{training_class.pk}/",
        f"/classes/{training_class.pk}/seats/",
        f"/classes/{training_class.pk}/calendar.ics",
        f"/seats/{seat.pk}/",
        f"/bookings/{booking.pk}/",
        f"/bookings/{booking.pk}/calendar.ics",
    ):
        assert client.get(url).status_code == 404, url
    for url in (
        f"/classes/{training_class.pk}/end/",
        f"/classes/seats/{seat.pk}/reset/",
        f"/bookings/{booking.pk}/cancel/",
    ):
        assert client.post(url).status_code == 404, url
    training_class.refresh_from_db()
    assert training_class.status == TrainingClass.Status.SCHEDULED


def test_a_feed_token_never_reaches_a_log_line(owner, client, caplog):
    import logging

    from portal.logformat import RedactFeedTokens

    token = scheduling.new_calendar_feed(user=owner)
    record = logging.LogRecord(
        "django.server",
        logging.INFO,
        "",
        0,
        '"GET /calendar/feed/%s.ics HTTP/1.1" 200',
        (token,),
        None,
    )
    RedactFeedTokens().filter(record)
    assert token not in record.getMessage()
    assert "/calendar/feed/[redacted].ics" in record.getMessage()
    with caplog.at_level(logging.WARNING):
        assert client.get("/calendar/feed/not-a-real-token-at-all.ics").status_code == 404
    assert any(
        isinstance(f, RedactFeedTokens) for h in logging.getLogger().handlers for f in h.filters
    )


def test_the_approvals_page_still_routes_extension_decisions(client, approver, env):
    from django.urls import resolve

    assert (
        resolve("/approvals/extensions/00000000-0000-0000-0000-000000000000/approve/").url_name
        == "approve_extension"
    )
    assert resolve(f"/approvals/bookings/{env.pk}/reject/").url_name == "decide_booking"


def test_an_approver_rejects_a_booking_with_a_reason(owner, shop, approver, team):
    from environments.catalog.publishing import publish_blueprint

    source = (BLUEPRINTS / "shop-demo.yaml").read_text()
    strict = publish_blueprint(
        source=source.replace("name: shop-demo", "name: strict-demo").replace(
            "approval: auto", "approval: required"
        )
    )[0]
    start, end = _slot()
    booking = scheduling.book_demo(
        user=owner, version=strict, customer="Acme", starts_at=start, ends_at=end
    )
    assert booking.status == Booking.Status.PENDING_APPROVAL
    client = client_for(approver)
    assert "Demo for Acme" in client.get("/approvals/").content.decode()
    client.post(f"/approvals/bookings/{booking.pk}/reject/", {"reason": ""})
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING_APPROVAL  # a reason is needed
    client.post(f"/approvals/bookings/{booking.pk}/reject/", {"reason": "No slot that day"})
    booking.refresh_from_db()
    assert booking.status == Booking.Status.REJECTED
    assert booking.reservations.get().released_at is not None
