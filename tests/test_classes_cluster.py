"""Acceptance on the local control plane, with real worker, watcher and scheduler
(``manage.py cron``) processes: a class of 30 seats starting in two minutes, and a booked
demo that is ready before its start and gone after its end.

The warm-up lead is short (CLASS_WARMUP_LEAD_SECONDS) so the schedule's own tick starts
the seats; nothing is moved by hand and nothing sleeps.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, timedelta

import pytest
from django.test import Client
from django.utils import timezone
from icalendar import Calendar

from environments.lifecycle.states import State
from environments.models import Booking, Environment, Membership, TrainingClass
from environments.scheduling import calendar
from environments.scheduling import services as scheduling
from tests.conftest import (
    ROOT,
    client_for,
    database_url,
    make_user,
    start_watcher,
    start_worker,
    wait_for,
)

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("on_cluster"),
]

SEATS = 30
LEAD = 100  # seconds: the class starts in 120 s, so the schedule warms it up 20 s in


@pytest.fixture
def scheduled(kube_config, tmp_path, processes, settings, smtp_server):
    """A worker, a watcher and a scheduler, all with the short lead time, and all
    mailing the test's SMTP server (the worker sends the booking reminders)."""
    settings.CLASS_WARMUP_LEAD_SECONDS = LEAD
    settings.SIGNUP_OPEN = False
    env = {
        "CLASS_WARMUP_LEAD_SECONDS": str(LEAD),
        "CRON_INTERVAL_SCALE": "0.1",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(settings.EMAIL_PORT),
        "EMAIL_USE_TLS": "false",
        "SIGNUP_OPEN": "false",
    }
    processes.append(start_worker(kube_config, tmp_path / "worker.log", **env))
    processes.append(start_watcher(kube_config, tmp_path / "watcher.log", **env))
    from tests.conftest import subprocess_environ

    log = (tmp_path / "cron.log").open("w")
    processes.append(
        subprocess.Popen(
            [sys.executable, "manage.py", "cron"],
            cwd=ROOT,
            env=subprocess_environ(
                DATABASE_URL=database_url(),
                REDIS_URL=settings.REDIS_URL,
                KUBECONFIG=kube_config,
                EPHEMERA_INSTANCE=settings.EPHEMERA_INSTANCE,
                DEBUG="true",
                **env,
            ),
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    )
    log.close()
    return tmp_path


def test_a_class_of_30_seats_is_ready_by_its_start_private_per_attendee_and_torn_down(
    scheduled, sample_blueprints, team, smtp_server
):
    lab = sample_blueprints["training-lab"]
    trainer = make_user("trainer@example.com", roles=("trainer",))
    Membership.objects.create(team=team, user=trainer)
    roster = [f"attendee{n:02d}@example.com" for n in range(1, SEATS + 1)]
    starts_at = timezone.now() + timedelta(seconds=120)
    training_class = scheduling.create_class(
        trainer=trainer,
        version=lab,
        title="Kubernetes 101",
        starts_at=starts_at,
        ends_at=starts_at + timedelta(minutes=30),
        roster=roster,
    )
    assert training_class.status == TrainingClass.Status.SCHEDULED
    # Every attendee gets an invitation (invite-only sign-up: the roster is the invitation).
    wait_for(lambda: all(smtp_server.to(email) for email in roster), timeout=30)

    # The scheduler warms the class up LEAD seconds before its start; every seat is
    # ready by the start.
    def all_ready():
        seats = list(training_class.seats.select_related("environment"))
        return all(s.environment and s.environment.state == State.READY for s in seats)

    wait_for(all_ready, timeout=(starts_at - timezone.now()).total_seconds(), interval=1)
    ready_by = timezone.now()
    assert ready_by <= starts_at
    training_class.refresh_from_db()
    warmed_seconds = (ready_by - training_class.warmed_at).total_seconds()
    print(
        f"\n{SEATS} seats ready {warmed_seconds:.1f} s after warm-up, "
        f"{(starts_at - ready_by).total_seconds():.1f} s before the start"
    )

    # Each attendee signs in through their invitation and sees only their own seat.
    seats = {s.attendee_email: s for s in training_class.seats.all()}
    for number, email in enumerate(roster):
        body = smtp_server.to(email)[0].get_body(("plain",)).get_content()
        link = re.search(r"https?://[^/\s]+(/invitations/[^\s]+/)", body).group(1)
        client = Client()
        assert client.get(link).status_code == 302
        response = client.post(
            "/invitations/accept/",
            {"password1": "a-long-pass-phrase-1", "password2": "a-long-pass-phrase-1"},
        )
        assert response.status_code == 302
        assert response["Location"] == f"/seats/{seats[email].pk}/"
        page = client.get(response["Location"]).content.decode()
        assert seats[email].environment.urls["lab"] in page
        other = roster[(number + 1) % SEATS]
        assert client.get(f"/seats/{seats[other].pk}/").status_code == 404
        assert client.get(f"/environments/{seats[other].environment_id}/").status_code == 404

    # The trainer's grid shows all 30, ready.
    grid = client_for(trainer).get(f"/classes/{training_class.pk}/seats/").content.decode()
    assert grid.count('data-state="ready"') == SEATS

    # Ending the class tears everything down.
    assert client_for(trainer).post(f"/classes/{training_class.pk}/end/").status_code == 302
    ids = [s.environment_id for s in training_class.seats.all()]
    wait_for(
        lambda: (
            set(Environment.objects.filter(pk__in=ids).values_list("state", flat=True))
            == {State.DELETED}
        ),
        timeout=240,
        interval=1,
    )
    training_class.refresh_from_db()
    assert training_class.status == TrainingClass.Status.ENDED


def test_a_booked_demo_is_ready_before_its_start_and_gone_after_its_end(
    scheduled, sample_blueprints, owner, smtp_server
):
    shop = sample_blueprints["shop-demo"]
    starts_at = timezone.now() + timedelta(seconds=LEAD + 20)
    ends_at = starts_at + timedelta(seconds=30)
    booking = scheduling.book_demo(
        user=owner, version=shop, customer="Acme Corp", starts_at=starts_at, ends_at=ends_at
    )
    # The .ics opens in a calendar: parse it back.
    (event,) = Calendar.from_ical(calendar.booking_ics(booking)).walk("VEVENT")
    assert event.decoded("dtstart") == starts_at.replace(microsecond=0)
    assert str(event["summary"]) == "Demo for Acme Corp"

    def ready():
        booking.refresh_from_db()
        return booking.environment and booking.environment.state == State.READY

    wait_for(ready, timeout=(starts_at - timezone.now()).total_seconds(), interval=1)
    assert timezone.now() < starts_at
    # The owner gets a reminder once it is ready.
    reminder = wait_for(
        lambda: [m for m in smtp_server.to(owner.email) if m["Subject"].startswith("Reminder")],
        timeout=30,
    )[0]
    assert reminder["Subject"] == (f"Reminder: Acme Corp demo at {starts_at.astimezone(UTC):%H:%M}")
    assert "It is ready" in reminder.get_body(("plain",)).get_content()
    environment_id = booking.environment_id

    def gone():
        environment = Environment.objects.get(pk=environment_id)
        return environment.state == State.DELETED and environment

    environment = wait_for(
        gone, timeout=(ends_at - timezone.now()).total_seconds() + 120, interval=1
    )
    assert environment.deleted_at >= ends_at
    booking.refresh_from_db()
    assert booking.status == Booking.Status.ENDED
