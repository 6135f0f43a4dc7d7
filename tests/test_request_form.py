"""The request form: fields from the blueprint, errors, the live estimate, cloning."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from environments.lifecycle.states import State
from environments.models import AuditEvent, Environment, Quota
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
    assert "does not match the pattern" in body
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
    assert "does not match the pattern" in body  # the course code, in the same answer
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
