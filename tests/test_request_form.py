"""The request form: fields from the blueprint, errors, the live estimate, cloning."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from environments.lifecycle.states import State
from environments.models import AuditEvent, Environment, Membership, Quota, Team
from environments.web.templatetags.portal import duration
from tests.conftest import client_for, make_user
from tests.factories import make_environment

pytestmark = pytest.mark.django_db


def test_it_builds_the_request_form_from_the_blueprint(owner, shop):
    response = client_for(owner).get(reverse("request", args=["shop-demo"]))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'name="param_customer"' in body
    assert 'name="param_theme"' in body
    assert 'name="ttl_seconds"' in body
    assert "Customer name" in body
    assert 'id="estimate"' in body


def test_it_returns_404_for_an_unknown_blueprint(owner, shop):
    response = client_for(owner).get(reverse("request", args=["no-such-thing"]))
    assert response.status_code == 404


def test_it_requests_an_environment_and_redirects_to_it(owner, shop):
    response = client_for(owner).post(
        reverse("request", args=["shop-demo"]),
        {"param_customer": "globex", "param_theme": "dark", "ttl_seconds": 3600, "reason": "demo"},
    )
    environment = Environment.objects.get(owner=owner)
    assert response.status_code == 302
    assert response["Location"] == reverse("environment_detail", args=[environment.pk])
    assert environment.parameters == {"customer": "globex", "theme": "dark"}
    assert environment.state == State.APPROVED


def test_it_shows_parameter_errors_inline(owner, shop):
    response = client_for(owner).post(
        reverse("request", args=["shop-demo"]),
        {"param_customer": "Not Valid!", "param_theme": "light", "ttl_seconds": 3600},
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="id_param_customer_error"' in body
    assert "is not in the right format: lowercase letters, digits and dashes" in body
    # The format is shown before submitting, and the error says the same words, never
    # the regular expression (issue 12, defect 8).
    assert '<p class="help" id="id_param_customer_helptext">' in body
    assert "Format: lowercase letters, digits and dashes, up to 30." in body
    error = body.split('id="id_param_customer_error">')[1].split("</p>")[0]
    assert "[a-z" not in error and "pattern" not in error
    assert not Environment.objects.exists()


def test_it_shows_service_errors_on_the_form(owner, shop):
    response = client_for(owner).post(
        reverse("request", args=["shop-demo"]),
        {"param_customer": "acme", "param_theme": "light", "ttl_seconds": 30 * 86400},
    )
    # 30 days is not among the choices for a 3-day blueprint: the form refuses it.
    assert response.status_code == 400
    assert not Environment.objects.exists()


def test_it_estimates_the_price_for_a_ttl(owner, shop):
    response = client_for(owner).get(reverse("estimate", args=["shop-demo"]), {"ttl_seconds": 7200})
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="estimate"' in body
    assert "for 2h" in body
    assert "Team Sales" in body


def test_its_estimate_counts_what_running_environments_will_still_cost(owner, team, shop):
    # The same sums as the budget check: an estimate never promises what is then refused.
    Quota.objects.create(team=team, monthly_budget=Decimal("1.00"))
    make_environment(
        owner=owner,
        team=team,
        version=shop,
        hourly_price=Decimal("0.10"),
        ttl_hours=4,
        accrued_until=timezone.now(),
    )  # about $0.40 still to come
    url = reverse("estimate", args=["shop-demo"])
    body = client_for(owner).get(url, {"ttl_seconds": 3600}).content.decode()
    assert "$0.60 of $1.00 left this month" in body
    assert "$0.40 committed to running environments" in body
    assert "After this request:" in body

    assert shop.hourly_price * 72 > Decimal("0.60")  # so three days are over budget
    body = client_for(owner).get(url, {"ttl_seconds": 3 * 86400}).content.decode()
    assert "Would be refused: over budget." in body  # shop-demo's policy is auto


def test_it_reports_every_parameter_problem_in_one_round(owner, sample_blueprints):
    response = client_for(owner).post(
        reverse("request", args=["training-lab"]),
        {"param_seats": "500", "param_course": "Bad Course!", "ttl_seconds": 3600},
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "seats" in body.lower() and "30" in body  # the range
    assert "is not in the right format" in body  # the course code, in the same answer
    assert not Environment.objects.exists()
    # Keyboard focus lands on the first field to fix, not the top of the page.
    first = body.index('name="param_seats"')
    tag = body[body.rindex("<", 0, first) : body.index(">", first)]
    assert "autofocus" in tag
    assert body.count("autofocus") == 1


def test_it_never_prices_a_ttl_beyond_the_blueprint_maximum(owner, shop):
    # A tampered form (TTL not among the choices) is refused, and its estimate shows the
    # maximum the policy allows, not the tampered value.
    response = client_for(owner).post(
        reverse("request", args=["shop-demo"]),
        {"param_customer": "acme", "param_theme": "light", "ttl_seconds": 999999},
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "999999 is not one of the available choices" in body
    maximum = shop.spec["ttl"]["max"]
    assert f"for {duration(maximum)}" in body
    assert "11d" not in body


def test_it_refuses_a_post_without_csrf_token(owner, shop):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    response = client.post(
        reverse("request", args=["shop-demo"]),
        {"param_customer": "acme", "param_theme": "light", "ttl_seconds": 3600},
    )
    assert response.status_code == 403
    assert not Environment.objects.exists()
    # In the portal's look, saying what to do, not Django's bare CSRF page.
    assert "This page was out of date" in response.content.decode()
    assert "CSRF verification failed" not in response.content.decode()


def test_it_clones_through_the_request_form_filled_in(owner, outsider, team, shop):
    source = make_environment(
        owner=owner,
        team=team,
        version=shop,
        parameters={"customer": "globex", "theme": "dark"},
        reason="Globex demo",
    )
    client = client_for(owner)
    detail = client.get(reverse("environment_detail", args=[source.pk])).content.decode()
    form_url = reverse("request", args=["shop-demo"]) + f"?from={source.pk}"
    assert form_url in detail  # "Clone…" opens the form, creating nothing yet
    page = client.get(form_url).content.decode()
    assert 'value="globex"' in page and "Globex demo" in page
    assert f"A copy of {source.namespace}" in page
    assert Environment.objects.count() == 1

    response = client.post(
        reverse("request", args=["shop-demo"]),
        {
            "param_customer": "globex",
            "param_theme": "dark",
            "ttl_seconds": 3600,
            "reason": "Globex demo",
            "clone_of": source.pk,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    clone = Environment.objects.exclude(pk=source.pk).get()
    assert clone.parameters["customer"] == "globex"
    assert AuditEvent.objects.filter(action="environment.clone").exists()

    # Someone who may not see the source learns nothing from ?from=.
    assert client_for(outsider).get(form_url).status_code == 404
    assert client.get(reverse("request", args=["shop-demo"]) + "?from=nonsense").status_code == 200


def test_it_lets_a_user_in_no_team_see_the_catalogue(shop):
    loner = make_user("loner@example.com")
    response = client_for(loner).get(reverse("request", args=["shop-demo"]))
    assert response.status_code == 200
    assert "not in a team yet" in response.content.decode()


def test_its_estimate_shows_an_outsider_only_their_own_teams_budget(
    outsider, team, other_team, shop
):
    # Asking for another team's estimate (?team=<its id>) tells nothing about that team.
    Quota.objects.create(team=team, monthly_budget=Decimal("123.45"))
    Quota.objects.create(team=other_team, monthly_budget=Decimal("50.00"))
    url = reverse("estimate", args=["shop-demo"])
    response = client_for(outsider).get(url, {"ttl_seconds": 3600, "team": team.pk})
    assert response.status_code == 200
    body = response.content.decode()
    assert "Team Research: $50.00 of $50.00 left this month" in body
    assert "Sales" not in body and "123.45" not in body


def test_its_estimate_sends_anonymous_people_to_sign_in(team, shop):
    Quota.objects.create(team=team, monthly_budget=Decimal("123.45"))
    response = Client().get(reverse("estimate", args=["shop-demo"]), {"team": team.pk})
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
    assert "123.45" not in response.content.decode()


# --- the estimate and the choices match what will happen (issue 12, item 4) ---


def _ttl_options(body: str) -> list[int]:
    select = body[body.index('name="ttl_seconds"') :]
    select = select[: select.index("</select>")]
    return [int(v) for v in re.findall(r'<option value="(\d+)"', select)]


def test_it_offers_only_ttls_within_the_teams_max_ttl_and_says_why(owner, team, shop):
    Quota.objects.create(team=team, max_ttl=timedelta(days=1))  # shop-demo allows 3d
    body = client_for(owner).get(reverse("request", args=["shop-demo"])).content.decode()
    options = _ttl_options(body)
    assert max(options) == 86400 and 3 * 86400 not in options
    assert "at most 1d: your team&#x27;s limit." in body
    # A user limit below the team's caps it further, and says it is theirs.
    Quota.objects.create(user=owner, max_ttl=timedelta(hours=8))
    body = client_for(owner).get(reverse("request", args=["shop-demo"])).content.decode()
    assert max(_ttl_options(body)) == 8 * 3600
    assert "at most 8h: your limit." in body


def test_it_offers_only_extensions_within_the_teams_max_ttl(owner, team, shop):
    Quota.objects.create(team=team, max_ttl=timedelta(days=2))
    env = make_environment(owner=owner, team=team, version=shop, ttl_hours=4)
    body = client_for(owner).get(reverse("environment_detail", args=[env.pk])).content.decode()
    select = body[body.index('id="extend-seconds"') :]
    select = select[: select.index("</select>")]
    offered = [int(v) for v in re.findall(r'<option value="(\d+)"', select)]
    assert max(offered) == 2 * 86400 - 4 * 3600  # 1d20h, not the blueprint's 3d less 4h
    assert "At most 1d20h more: your team&#x27;s limit." in body


def test_its_estimate_says_needs_approval_for_an_over_quota_blueprint_over_budget(
    owner, team, sample_blueprints
):
    Quota.objects.create(team=team, monthly_budget=Decimal("0.01"))
    url = reverse("estimate", args=["training-lab"])  # approval: over-quota
    body = client_for(owner).get(url, {"ttl_seconds": 3600}).content.decode()
    assert "Needs approval: over budget." in body
    assert "would be refused" not in body.lower()


def test_its_estimate_checks_every_limit_the_service_checks(owner, team, shop):
    Quota.objects.create(team=team, max_environments=1, max_cpu_millicores=100)
    make_environment(owner=owner, team=team, version=shop, state=State.PENDING_APPROVAL)
    url = reverse("estimate", args=["shop-demo"])
    body = client_for(owner).get(url, {"ttl_seconds": 3600}).content.decode()
    assert (
        "Would be refused: over the team&#x27;s environment limit; over the team&#x27;s CPU quota."
        in body
    )
    # The same sentences the service refuses with, posted from the same form.
    response = client_for(owner).post(
        reverse("request", args=["shop-demo"]),
        {"param_customer": "acme", "param_theme": "light", "ttl_seconds": 3600},
    )
    assert response.status_code == 400
    posted = response.content.decode()
    refusal = "Team Sales already has 1 of 1 environments (0 running, 1 approved or pending)"
    assert refusal in body and refusal in posted


def test_its_estimate_shows_sub_cent_amounts_so_the_sum_makes_sense(owner, team, shop, settings):
    settings.COST_PER_CPU_HOUR = Decimal("0.0001")
    settings.COST_PER_GIB_HOUR = Decimal("0.0001")
    Quota.objects.create(team=team, monthly_budget=Decimal("0.50"))
    url = reverse("estimate", args=["shop-demo"])
    body = client_for(owner).get(url, {"ttl_seconds": 3600}).content.decode()
    price = re.search(r"<strong>([^<]+)</strong> for 1h", body).group(1)
    assert price != "$0.00" and re.fullmatch(r"\$0\.00\d\d", price), price
    assert "$0.50 of $0.50 left this month" in body
    assert "Approved automatically: within every limit." in body


def test_its_estimate_says_a_ttl_over_another_teams_limit_would_be_refused(owner, team, shop):
    # A person in two teams picks a TTL the first team allows, then the stricter team:
    # the estimate must not price a clamped TTL but say what the service will say.
    strict = Team.objects.create(name="Support")
    Membership.objects.create(team=strict, user=owner)
    Quota.objects.create(team=strict, max_ttl=timedelta(hours=2))
    url = reverse("estimate", args=["shop-demo"])
    body = client_for(owner).get(url, {"ttl_seconds": 8 * 3600, "team": strict.pk}).content.decode()
    assert "for 8h" in body
    assert "Would be refused: over the team&#x27;s time limit." in body
    assert "Team Support may keep an environment for at most 2h" in body
