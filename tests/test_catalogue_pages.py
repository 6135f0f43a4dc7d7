"""The catalogue page: what is on offer, at what price, and who may look."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from environments.catalog import pricing as costs
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def test_it_shows_the_catalogue_with_prices_and_request_links(owner, shop):
    response = client_for(owner).get(reverse("catalogue"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Webshop sales demo" in body
    assert "/hour" in body
    assert reverse("request", args=["shop-demo"]) in body
    assert "Approval required" in body  # the benchmark blueprint


def test_it_searches_the_catalogue_by_what_runs_inside(owner, sample_blueprints):
    body = client_for(owner).get(reverse("catalogue"), {"q": "postgresql"}).content.decode()
    assert reverse("request", args=["hotfix-test"]) in body
    assert reverse("request", args=["shop-demo"]) not in body


def test_it_sends_anonymous_people_to_sign_in(client, shop):
    response = client.get(reverse("catalogue"))
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


@pytest.mark.parametrize(
    ("price", "shown"),
    [
        ("0.0045", "$0.0045/hour"),
        ("0.0999", "$0.0999/hour"),
        ("0.1", "$0.10/hour"),
        ("0", "$0.00/hour"),
    ],
)
def test_it_shows_small_hourly_prices_without_rounding_them_to_zero(settings, price, shown):
    settings.COST_CURRENCY = "USD"
    assert costs.hourly_rate(Decimal(price)) == shown


ENV_VALUE_BLUEPRINT = """
name: oracle-probe
title: Oracle probe
purpose: demo
description: A database with a password in its env.
ttl: {default: 2h, max: 1d}
components:
  - name: db
    image: bitnami/postgresql:16
    resources: {cpu: 250m, memory: 256Mi}
    env: {POSTGRESQL_PASSWORD: "Sw0rdf1sh-9931"}
"""


def test_catalogue_search_is_no_oracle_for_env_values(owner):
    """Search looks at names, titles, descriptions, component names and images, never
    at what a component's env holds (a guessed password would otherwise "match")."""
    from environments.catalog.publishing import publish_blueprint

    publish_blueprint(source=ENV_VALUE_BLUEPRINT)
    client = client_for(owner)
    probe_link = reverse("request", args=["oracle-probe"])
    for probe in ("Sw0rdf1sh-9931", "Sw0rdf1sh", "9931", "POSTGRESQL_PASSWORD"):
        body = client.get(reverse("catalogue"), {"q": probe}).content.decode()
        assert probe_link not in body, probe
    # Still found by what runs inside (the image), and by a component's name.
    assert probe_link in client.get(reverse("catalogue"), {"q": "bitnami"}).content.decode()
    assert probe_link in client.get(reverse("catalogue"), {"q": "db"}).content.decode()
    assert probe_link in client.get(reverse("catalogue"), {"q": "probe"}).content.decode()
