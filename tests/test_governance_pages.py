"""The admin pages inside the portal: spend CSV, audit search and CSV, quotas, blueprints."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from environments.governance.billing import accrue
from environments.models import AuditEvent, BlueprintVersion, CostEntry, Quota
from tests.factories import make_environment
from tests.test_blueprints import GOOD

PAGES = [
    "/admin-portal/spend/",
    "/admin-portal/audit/",
    "/admin-portal/quotas/",
    "/admin-portal/blueprints/",
    "/admin-portal/quotas/team/sales/",
]


@pytest.mark.parametrize("url", PAGES)
def test_it_refuses_the_admin_pages_to_others(client, owner, url):
    client.force_login(owner)
    assert client.get(url).status_code == 403


@pytest.mark.parametrize("url", PAGES)
def test_it_shows_the_admin_pages_to_admins(client, portal_admin, team, url):
    client.force_login(portal_admin)
    assert client.get(url).status_code == 200


def test_it_exports_spend_per_team_user_and_blueprint(
    client, portal_admin, owner, team, sample_blueprints
):
    environment = make_environment(owner=owner, team=team, version=sample_blueprints["shop-demo"])
    start = timezone.now() - timedelta(hours=2)
    environment.accrued_until = start
    environment.save(update_fields=["accrued_until"])
    period_end = start + timedelta(hours=1)
    accrue(environment.pk, now=period_end)
    client.force_login(portal_admin)
    # The report files cost under the month its period ended in (local time).
    month = timezone.localtime(period_end).strftime("%Y-%m")
    response = client.get(f"/admin-portal/spend/?month={month}&format=csv")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["month", "team", "user", "blueprint", "amount", "currency"]
    assert rows[1][:4] == [month, "Sales", "owner@example.com", "shop-demo"]
    assert Decimal(rows[1][4]) == environment.hourly_price
    assert rows[1][5] == settings.COST_CURRENCY  # issue 12, defect 8: which money it is


def test_its_spend_total_is_the_sum_of_the_rows_shown(
    client, portal_admin, owner, teammate, team, sample_blueprints
):
    now = timezone.now()
    for person in (owner, teammate):
        environment = make_environment(
            owner=person, team=team, version=sample_blueprints["shop-demo"]
        )
        CostEntry.objects.create(
            environment=environment,
            team=team,
            owner=person,
            blueprint="shop-demo",
            period_start=now - timedelta(minutes=1),
            period_end=now,
            amount=Decimal("0.2440"),
        )
    client.force_login(portal_admin)
    page = client.get("/admin-portal/spend/").content.decode()
    assert page.count("$0.24") >= 2
    assert "Total $0.48." in page  # not $0.49, the rounded exact sum


def test_it_searches_and_exports_the_audit_log(client, portal_admin):
    AuditEvent.objects.create(
        actor="alice@example.com",
        action="environment.extend",
        object_type="environment",
        object_id="1",
        ip="192.0.2.7",
    )
    AuditEvent.objects.create(
        actor="bob@example.com",
        action="quota.change",
        object_type="quota",
        object_id="2",
        before={"monthly_budget": None},
        after={"monthly_budget": "150.00"},
    )
    client.force_login(portal_admin)
    page = client.get("/admin-portal/audit/?q=alice").content.decode()
    assert "alice@example.com" in page and "bob@example.com" not in page
    page = client.get("/admin-portal/audit/?q=192.0.2").content.decode()  # by IP
    assert "alice@example.com" in page and "bob@example.com" not in page
    page = client.get("/admin-portal/audit/?q=150.00").content.decode()  # in "after"
    assert "bob@example.com" in page and "alice@example.com" not in page
    response = client.get("/admin-portal/audit/?action=quota.change&format=csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert [r[1] for r in rows[1:]] == ["bob@example.com"]
    # Before and after are JSON, readable back as they were.
    assert json.loads(rows[1][7]) == {"monthly_budget": None}
    assert json.loads(rows[1][8]) == {"monthly_budget": "150.00"}


def test_it_says_when_a_spend_month_is_not_a_month(client, portal_admin):
    client.force_login(portal_admin)
    page = client.get("/admin-portal/spend/?month=2026-13").content.decode()
    assert "is not a month like 2026-11" in page
    response = client.get("/admin-portal/spend/?month=abc&format=csv")
    assert response.status_code == 400


def test_it_changes_a_quota_and_audits_it(client, portal_admin, team):
    client.force_login(portal_admin)
    response = client.post(
        "/admin-portal/quotas/team/sales/",
        {
            "max_environments": "3",
            "max_cpu": "2",
            "max_memory_gib": "4",
            "max_ttl": "8h",
            "monthly_budget": "150",
        },
    )
    assert response.status_code == 302
    quota = Quota.objects.get(team=team)
    assert quota.max_cpu_millicores == 2000
    assert quota.max_memory_bytes == 4 * 1024**3
    assert quota.max_ttl == timedelta(hours=8)
    entry = AuditEvent.objects.get(action="quota.change")
    assert entry.after["monthly_budget"] == "150.00"
    assert entry.ip == "127.0.0.1"

    bad = client.post("/admin-portal/quotas/team/sales/", {"max_ttl": "forever"})
    assert bad.status_code == 400
    assert "is not a duration" in bad.content.decode()


def test_it_publishes_and_deprecates_blueprint_versions(client, portal_admin):
    client.force_login(portal_admin)
    bad = client.post(
        "/admin-portal/blueprints/", {"source": GOOD.replace("cpu: 250m", "cpu: lots")}
    )
    assert bad.status_code == 400
    assert "components[0].resources.cpu" in bad.content.decode()
    assert client.post("/admin-portal/blueprints/", {"source": GOOD}).status_code == 302
    assert BlueprintVersion.objects.get().number == 1
    newer = GOOD.replace("port: 8080", "port: 9090")
    assert client.post("/admin-portal/blueprints/", {"source": newer}).status_code == 302
    page = client.get("/admin-portal/blueprints/").content.decode()
    assert "Current: new requests use it" in page and "Superseded by v2" in page

    v2 = BlueprintVersion.objects.get(number=2)
    response = client.post(
        f"/admin-portal/blueprints/{v2.pk}/deprecate/", {"deprecated": "1"}, follow=True
    )
    v2.refresh_from_db()
    assert v2.deprecated
    assert AuditEvent.objects.filter(action="blueprint.deprecate").exists()
    # The admin is told that requests fall back to v1.
    assert "New requests for shop use v1." in response.content.decode()


def test_it_answers_bad_admin_input_with_messages_not_errors(client, portal_admin, team, owner):
    client.force_login(portal_admin)
    assert client.get("/admin-portal/spend/?month=9999-12").status_code == 200
    response = client.post(
        "/admin-portal/quotas/team/sales/",
        {"max_environments": "99999999999999", "max_ttl": "9999999999d", "monthly_budget": "1e20"},
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "At most a year" in page or "not a duration" in page
    assert client.get(f"/admin-portal/quotas/user/{owner.pk}/").status_code == 200
    assert client.get("/admin-portal/quotas/user/nobody@example.com/").status_code == 404


def governance_state() -> dict:
    """Everything a governance page could change, to compare before and after."""
    return {
        "quotas": list(Quota.objects.order_by("pk").values()),
        "versions": list(BlueprintVersion.objects.order_by("pk").values()),
        "audit": AuditEvent.objects.count(),
    }


@pytest.mark.parametrize("user_fixture", ["owner", "approver"])
def test_it_refuses_to_deprecate_a_blueprint_version_for_non_admins(
    request, client, user_fixture, sample_blueprints
):
    version = sample_blueprints["shop-demo"]
    client.force_login(request.getfixturevalue(user_fixture))
    before = governance_state()
    response = client.post(f"/admin-portal/blueprints/{version.pk}/deprecate/", {"deprecated": "1"})
    assert response.status_code == 403
    version.refresh_from_db()
    assert not version.deprecated
    assert not AuditEvent.objects.filter(action="blueprint.deprecate").exists()
    assert governance_state() == before


POSTS = [
    ("/admin-portal/spend/", {"month": "2026-11"}),
    ("/admin-portal/audit/", {"q": "x"}),
    ("/admin-portal/quotas/", {"max_environments": "1"}),
    (
        "/admin-portal/quotas/team/sales/",
        {"max_environments": "1", "max_ttl": "1h", "monthly_budget": "1"},
    ),
    (
        "/admin-portal/quotas/user/{owner_pk}/",
        {"max_environments": "1", "max_ttl": "1h", "monthly_budget": "1"},
    ),
    ("/admin-portal/blueprints/", {"source": GOOD}),
]


@pytest.mark.parametrize(("url", "data"), POSTS, ids=[url for url, _ in POSTS])
@pytest.mark.parametrize("user_fixture", ["owner", "approver", "outsider"])
def test_it_refuses_admin_page_posts_to_others_and_changes_nothing(
    request, client, user_fixture, owner, team, sample_blueprints, url, data
):
    Quota.objects.create(team=team, monthly_budget=Decimal("100.00"), max_environments=5)
    client.force_login(request.getfixturevalue(user_fixture))
    before = governance_state()
    response = client.post(url.format(owner_pk=owner.pk), data)
    assert response.status_code in (403, 404)
    assert governance_state() == before


def test_it_finds_request_and_extension_reasons_in_the_audit_search(
    client, portal_admin, owner, shop
):
    from environments.lifecycle import services

    environment = services.request_environment(
        user=owner, version=shop, reason="Globex pilot, board demo"
    )
    services.extend_environment(
        environment=environment, user=owner, seconds=3600, reason="Customer call moved to Friday"
    )
    client.force_login(portal_admin)

    def found(query: str) -> list[str]:
        page = client.get("/admin-portal/audit/", {"q": query}).content.decode()
        rows = page[page.index("<tbody>") : page.index("</tbody>")] if "<tbody>" in page else ""
        return re.findall(r"<td><code>([a-z_.]+)</code></td>", rows)

    # Every word, anywhere in the entry, in any order (docs/governance.md).
    assert found("move call") == ["environment.extend"]
    assert found("board demo") == ["environment.request"]
    assert found("move call nowhere") == []
