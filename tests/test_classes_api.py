"""Classes and bookings through the API (OpenAPI) and the CLI's `book` and `class seats`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from environments.access import tokens
from environments.models import Booking, Membership, Quota, TrainingClass
from environments.scheduling import services as scheduling
from tests.conftest import cli_runner, make_user

API = "/api/v1"


@pytest.fixture
def trainer(team):
    user = make_user("trainer@example.com", roles=("trainer",))
    Membership.objects.create(team=team, user=user)
    return user


def _headers(user, scope="write"):
    return {
        "HTTP_AUTHORIZATION": f"Bearer {tokens.create_token(user=user, name='t', scope=scope, days=1)[1]}"
    }


def _slot():
    start = (timezone.now() + timedelta(days=1)).replace(microsecond=0, second=0)
    return start, start + timedelta(hours=3)


@pytest.mark.django_db
def test_it_creates_a_class_and_lists_its_seats(client, trainer, sample_blueprints, outsider):
    start, end = _slot()
    response = client.post(
        f"{API}/classes",
        {
            "blueprint": "training-lab",
            "title": "K8s 101",
            "starts_at": start.replace(tzinfo=None).isoformat(),
            "ends_at": end.replace(tzinfo=None).isoformat(),
            "time_zone": "Europe/Paris",
            "roster": ["ada@example.com", "bob@example.com"],
        },
        content_type="application/json",
        **_headers(trainer),
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "scheduled"
    assert [s["attendee_email"] for s in body["seats"]] == ["ada@example.com", "bob@example.com"]
    training_class = TrainingClass.objects.get()
    # Naive times are read in the class's time zone.
    assert training_class.starts_at == start.replace(tzinfo=None).replace(
        tzinfo=__import__("zoneinfo").ZoneInfo("Europe/Paris")
    )
    seats = client.get(f"{API}/classes/{training_class.pk}/seats", **_headers(trainer, "read"))
    assert [s["state"] for s in seats.json()] == [None, None]
    # Someone else's class: 404.
    assert client.get(f"{API}/classes/{training_class.pk}", **_headers(outsider)).status_code == 404
    assert "/api/v1/classes" in client.get(f"{API}/openapi.json").json()["paths"]


@pytest.mark.django_db
def test_it_refuses_a_class_over_budget_with_the_numbers(client, trainer, team, sample_blueprints):
    from environments.catalog.publishing import publish_blueprint
    from tests.conftest import BLUEPRINTS

    source = (BLUEPRINTS / "training-lab.yaml").read_text()
    publish_blueprint(
        source=source.replace("name: training-lab", "name: auto-lab").replace(
            "approval: over-quota", "approval: auto"
        )
    )
    Quota.objects.create(team=team, monthly_budget="1.00")
    start, end = _slot()
    response = client.post(
        f"{API}/classes",
        {
            "blueprint": "auto-lab",
            "title": "Too big",
            "starts_at": start.isoformat(),
            "ends_at": end.isoformat(),
            "seats": 20,
        },
        content_type="application/json",
        **_headers(trainer),
    )
    assert response.status_code == 409
    assert response.json()["detail"].startswith("Team Sales has $1.00 of $1.00 left this month;")
    assert not TrainingClass.objects.exists()


@pytest.mark.django_db
def test_it_books_lists_and_cancels_a_demo(client, owner, teammate, sample_blueprints):
    start, end = _slot()
    response = client.post(
        f"{API}/bookings",
        {
            "blueprint": "shop-demo",
            "customer": "Acme",
            "starts_at": start.isoformat(),
            "ends_at": end.isoformat(),
        },
        content_type="application/json",
        **_headers(owner),
    )
    assert response.status_code == 201, response.content
    booking_id = response.json()["id"]
    listed = client.get(f"{API}/bookings", **_headers(teammate, "read")).json()
    assert [b["customer"] for b in listed] == ["Acme"]
    # A teammate sees it but does not cancel it.
    assert client.delete(f"{API}/bookings/{booking_id}", **_headers(teammate)).status_code == 403
    cancelled = client.delete(f"{API}/bookings/{booking_id}", **_headers(owner))
    assert cancelled.json()["status"] == "cancelled"
    assert Booking.objects.get().status == Booking.Status.CANCELLED


@pytest.mark.django_db(transaction=True)
def test_the_cli_books_a_demo_and_lists_a_class_s_seats(
    live_server, owner, trainer, sample_blueprints, tmp_path
):
    def cli(user, *args):
        return cli_runner(live_server.url, user, tmp_path)(*args, timeout=60)

    start, end = _slot()
    result = cli(
        owner,
        "book",
        "shop-demo",
        "--start",
        start.strftime("%Y-%m-%d %H:%M"),
        "--end",
        end.strftime("%Y-%m-%d %H:%M"),
        "--customer",
        "Acme Corp",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Booked shop-demo for Acme Corp:")
    assert Booking.objects.get().customer == "Acme Corp"

    result = cli(owner, "book", "shop-demo", "--start", "tomorrow", "--end", "x", "--customer", "A")
    assert result.returncode == 2  # a usage error
    assert "--start 'tomorrow': write it as 2026-12-01 14:00" in result.stderr

    training_class = scheduling.create_class(
        trainer=trainer,
        version=sample_blueprints["training-lab"],
        title="CLI class",
        starts_at=start,
        ends_at=end,
        roster=["ada@example.com"],
    )
    result = cli(trainer, "class", "seats", str(training_class.pk))
    assert result.returncode == 0, result.stderr
    assert "ada@example.com" in result.stdout
    assert result.stdout.strip().endswith("0 of 1 seats ready")
    result = cli(owner, "class", "seats", str(training_class.pk))
    assert result.returncode == 1 and "HTTP 404" in result.stderr
