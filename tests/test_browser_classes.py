"""Classes and booked demos in a real browser, on the real local cluster.

A trainer creates a class from a pasted roster and watches the seats go ready (htmx
polls the grid; the page is never reloaded); an attendee opens their seat; a sales
engineer books a demo. The screenshots illustrate docs/trainer-guide.md and
docs/sales-engineer-guide.md.
"""

from __future__ import annotations

import re
from datetime import UTC, timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from environments.lifecycle.states import State
from environments.models import Booking, Membership, TrainingClass
from environments.scheduling import services as scheduling
from tests.browser import sign_in
from tests.conftest import ROOT, make_user

pytestmark = [
    pytest.mark.browser,
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
]

IMAGES = ROOT / "docs" / "images"
ROSTER = "ada@example.com\nGrace Hopper <grace@example.com>\nbob@example.com"


def _local(moment) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


@pytest.fixture
def trainer(team):
    user = make_user("trainer@example.com", roles=("trainer",))
    Membership.objects.create(team=team, user=user)
    return user


@pytest.fixture(autouse=True)
def _lead(settings):
    # Seats start an hour ahead, so a class 30 minutes away warms up at the next tick.
    settings.CLASS_WARMUP_LEAD_SECONDS = 3600


def test_a_trainer_creates_a_class_from_a_pasted_roster_and_watches_the_seats_go_ready(
    live_server, new_page, trainer, sample_blueprints, worker
):
    IMAGES.mkdir(exist_ok=True)
    attendee = make_user("ada@example.com")
    start = (timezone.now() + timedelta(minutes=30)).replace(second=0, microsecond=0)
    page = new_page()
    sign_in(page, live_server, trainer.email)
    page.goto(f"{live_server.url}/classes/")
    page.get_by_role("link", name="New class: Training lab").click()
    page.get_by_label("Class title").fill("Kubernetes 101")
    page.get_by_label("Start").fill(_local(start))
    page.get_by_label("End", exact=True).fill(_local(start + timedelta(hours=8)))
    page.get_by_label("Time zone").fill("UTC")
    page.get_by_label("Roster").fill(ROSTER)
    page.get_by_role("button", name="Check price").click()
    estimate = page.locator("#estimate")
    expect(estimate).to_contain_text("3 seats ×")
    expect(estimate).to_contain_text("Approved automatically")
    page.screenshot(path=IMAGES / "class-new.png", full_page=True)
    page.get_by_role("button", name="Create class").click()
    page.wait_for_url(re.compile(r"/classes/[0-9a-f-]{36}/$"))
    training_class = TrainingClass.objects.get()
    assert [s.attendee_email for s in training_class.seats.all()] == [
        "ada@example.com",
        "grace@example.com",
        "bob@example.com",
    ]

    # The schedule's tick warms the class up; the grid follows without a reload.
    page.evaluate("window.__stillHere = true")
    assert scheduling.tick()["warmed"] == 1
    expect(page.locator(".ready-count")).to_have_text("3", timeout=90_000)
    assert page.evaluate("window.__stillHere") is True
    expect(page.locator('.seat-row[data-state="ready"]')).to_have_count(3)
    page.screenshot(path=IMAGES / "class-seats.png", full_page=True)

    # An attendee opens their seat: its link is there, and nobody else's seat.
    seat = training_class.seats.get(attendee_email=attendee.email)
    seat.refresh_from_db()
    assert seat.environment.state == State.READY
    other = training_class.seats.exclude(pk=seat.pk).first()
    visitor = new_page()
    sign_in(visitor, live_server, attendee.email)
    visitor.goto(f"{live_server.url}/classes/")
    visitor.get_by_role("link", name="Kubernetes 101").click()
    visitor.wait_for_url(re.compile(r"/seats/[0-9a-f-]{36}/$"))
    expect(visitor.locator(".seat-urls")).to_contain_text(seat.environment.urls["lab"])
    visitor.screenshot(path=IMAGES / "seat.png", full_page=True)
    assert visitor.goto(f"{live_server.url}/seats/{other.pk}/").status == 404

    # End it now: every seat is torn down.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="End the class now").click()
    page.locator("#messages").get_by_text("Class ended").wait_for()
    training_class.refresh_from_db()
    assert training_class.status == TrainingClass.Status.ENDED


def test_a_sales_engineer_books_a_demo(live_server, new_page, owner, teammate, sample_blueprints):
    IMAGES.mkdir(exist_ok=True)
    start = (timezone.now() + timedelta(days=1)).replace(hour=14, minute=0, second=0, microsecond=0)
    page = new_page()
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server.url}/bookings/")
    page.get_by_role("link", name="Book a demo: Webshop sales demo").click()
    page.get_by_label("Customer", exact=True).fill("Acme Corp")
    page.get_by_label("Start").fill(_local(start))
    page.get_by_label("End", exact=True).fill(_local(start + timedelta(hours=1)))
    page.get_by_label("Time zone").fill("UTC")
    page.get_by_label("Grace after the end (minutes)").fill("30")
    page.get_by_role("button", name="Check price").click()
    expect(page.locator("#estimate")).to_contain_text("Approved automatically")
    page.screenshot(path=IMAGES / "booking-new.png", full_page=True)
    page.get_by_role("button", name="Book demo").click()
    page.wait_for_url(re.compile(r"/bookings/[0-9a-f-]{36}/$"))
    booking = Booking.objects.get()
    assert booking.customer == "Acme Corp"
    assert booking.starts_at == start
    assert booking.grace == timedelta(minutes=30)
    expect(page.locator(".booking-status")).to_have_text("Scheduled")
    page.screenshot(path=IMAGES / "booking.png", full_page=True)

    # The team calendar shows it to a teammate; the .ics downloads.
    other = new_page()
    sign_in(other, live_server, teammate.email)
    other.goto(f"{live_server.url}/bookings/")
    expect(other.locator(".booking")).to_contain_text("Acme Corp")
    other.get_by_role("button", name="Make a new feed address").click()
    expect(other.locator("#feed-url")).to_have_value(re.compile(r"/calendar/feed/.+\.ics$"))
    other.screenshot(path=IMAGES / "team-calendar.png", full_page=True)
    with page.expect_download() as download:
        page.get_by_role("link", name="Add to calendar (.ics)").click()
    assert download.value.suggested_filename == "demo.ics"
