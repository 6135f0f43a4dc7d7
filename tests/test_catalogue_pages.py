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
