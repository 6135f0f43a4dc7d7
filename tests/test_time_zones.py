"""Times in the viewer's zone: the profile's choice, else the browser's (the ``tz``
cookie portal.js sets), else UTC; UTC is always in the title, for hovering."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.test import Client

from environments.access import people
from environments.models import AuditEvent, Environment, Profile
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

CREATED = datetime(2026, 7, 1, 12, 30, tzinfo=UTC)


@pytest.fixture
def dated_env(env):
    Environment.objects.filter(pk=env.pk).update(created_at=CREATED)
    return env


def requested_cell(html: str) -> str:
    match = re.search(r"<dt>Requested</dt><dd>(.*?)</dd>", html)
    assert match, html
    return match.group(1)


def test_it_shows_times_in_utc_without_a_choice(owner, dated_env):
    cell = requested_cell(client_for(owner).get(dated_env.get_absolute_url()).content.decode())
    assert cell == (
        '<time datetime="2026-07-01T12:30:00+00:00" title="2026-07-01 12:30:00 UTC">'
        "Jul 1, 12:30 UTC</time>"
    )


def test_it_uses_the_browser_zone_by_default(owner, dated_env):
    client = client_for(owner)
    client.cookies["tz"] = "America/New_York"
    cell = requested_cell(client.get(dated_env.get_absolute_url()).content.decode())
    assert "Jul 1, 08:30 EDT" in cell
    assert 'title="2026-07-01 12:30:00 UTC"' in cell
    client.cookies["tz"] = "Not/A_Zone"  # ignored: UTC
    assert "12:30 UTC" in requested_cell(client.get(dated_env.get_absolute_url()).content.decode())


def test_it_uses_the_profile_zone_over_the_browser_zone(owner, dated_env):
    client = client_for(owner)
    client.cookies["tz"] = "America/New_York"
    page = client.get("/profile/")
    assert page.status_code == 200
    assert "Your browser’s zone (America/New_York)" in page.content.decode()
    response = client.post("/profile/", {"time_zone": "Asia/Tokyo"})
    assert response.status_code == 302
    assert Profile.objects.get(user=owner).time_zone == "Asia/Tokyo"
    entry = AuditEvent.objects.get(action="profile.update")
    assert entry.before == {"time_zone": "browser"} and entry.after == {"time_zone": "Asia/Tokyo"}
    cell = requested_cell(client.get(dated_env.get_absolute_url()).content.decode())
    assert "Jul 1, 21:30 JST" in cell and 'title="2026-07-01 12:30:00 UTC"' in cell
    # Back to the browser's zone.
    client.post("/profile/", {"time_zone": ""})
    assert "08:30 EDT" in requested_cell(client.get(dated_env.get_absolute_url()).content.decode())


def test_it_refuses_an_unknown_time_zone_in_one_line(owner):
    response = client_for(owner).post("/profile/", {"time_zone": "Mars/Olympus_Mons"})
    assert response.status_code == 400
    assert "“Mars/Olympus_Mons” is not a time zone, such as Europe/Amsterdam." in (
        response.content.decode()
    )
    assert not Profile.objects.filter(time_zone="Mars/Olympus_Mons").exists()
    assert people.valid_time_zone("Europe/Amsterdam")


def test_it_keeps_the_profile_for_people_signed_in(owner):
    response = Client().get("/profile/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    response = Client().post("/profile/", {"time_zone": "Asia/Tokyo"})
    assert response.status_code == 302
    assert not Profile.objects.exists()


def test_it_renders_cached_dashboard_rows_in_each_viewer_zone(owner, env):
    client = client_for(owner)
    client.cookies["tz"] = "Asia/Tokyo"
    html = client.get("/environments/").content.decode()
    assert re.search(r'title="Expires [0-9-]+ [0-9:]+ JST \([0-9-]+ [0-9:]+ UTC\)"', html)
    client.cookies["tz"] = "America/New_York"  # the cached rows must not answer
    html = client.get("/environments/").content.decode()
    assert "JST" not in html and re.search(r"E[SD]T \(", html)
