"""Environments people can tell apart (issue 12, defect 2): a name people give it
(optional, unique per owner among live environments, editable by the owner and the
team) and the blueprint's ``list_parameter``, with the same rules in the portal and the
API, shown on the dashboard, the team page, the approval queue and the API."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.urls import reverse

from environments.access import tokens
from environments.catalog.publishing import publish_blueprint
from environments.catalog.spec import BlueprintInvalid, BlueprintSpec, parse_blueprint
from environments.lib.errors import ServiceError
from environments.lifecycle import services
from environments.lifecycle.states import State
from environments.lifecycle.transitions import transition
from environments.models import AuditEvent, Environment
from tests.conftest import BLUEPRINTS, client_for
from tests.factories import make_environment

pytestmark = pytest.mark.django_db

API = "/api/v1"
SHOP = (BLUEPRINTS / "shop-demo.yaml").read_text()


def _request(user, version, name="", **parameters):
    return services.request_environment(
        user=user, version=version, display_name=name, parameters=parameters
    )


# --- The blueprint's list_parameter ------------------------------------------------------


def test_it_reads_list_parameter_and_refuses_one_that_names_no_parameter():
    assert parse_blueprint(SHOP)["list_parameter"] == "customer"
    with pytest.raises(BlueprintInvalid) as error:
        parse_blueprint(SHOP.replace("list_parameter: customer", "list_parameter: client"))
    assert error.value.lines("shop.yaml") == [
        "shop.yaml: list_parameter: 'client' names no declared parameter"
    ]


def test_it_still_loads_a_spec_stored_before_list_parameter_existed():
    stored = parse_blueprint(SHOP)
    del stored["list_parameter"]
    assert BlueprintSpec.model_validate(stored).list_parameter is None


# --- The service: one rule for the portal, the API and the CLI ---------------------------


def test_it_names_an_environment_and_refuses_the_same_name_twice(owner, shop):
    first = _request(owner, shop, "  Acme   demo ")
    assert first.display_name == "Acme demo"
    with pytest.raises(ServiceError) as error:
        _request(owner, shop, "acme demo")
    assert str(error.value) == "You already have an environment named 'acme demo'."
    assert Environment.objects.filter(owner=owner).count() == 1


def test_it_frees_a_name_once_its_environment_is_final(owner, shop):
    first = _request(owner, shop, "acme demo")
    transition(first.pk, from_states=State.APPROVED, to_state=State.TEARING_DOWN)
    with pytest.raises(ServiceError):  # tearing down is not final yet
        _request(owner, shop, "acme demo")
    transition(first.pk, from_states=State.TEARING_DOWN, to_state=State.DELETED)
    assert _request(owner, shop, "acme demo").display_name == "acme demo"


def test_it_lets_two_people_use_the_same_name(owner, teammate, shop):
    _request(owner, shop, "acme demo")
    assert _request(teammate, shop, "acme demo").display_name == "acme demo"


def test_the_database_refuses_a_duplicate_the_check_did_not_see(owner, team, shop):
    make_environment(owner=owner, team=team, version=shop, display_name="acme demo")
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        make_environment(owner=owner, team=team, version=shop, display_name="ACME demo")


def test_it_refuses_a_name_that_is_too_long(owner, shop):
    with pytest.raises(ServiceError) as error:
        _request(owner, shop, "x" * 61)
    assert str(error.value).startswith("A name has at most 60 characters;")


def test_a_teammate_renames_and_it_is_audited(owner, teammate, team, shop):
    team.change_policy = "any_member"  # today's rule, kept as a team's option
    team.save()
    environment = make_environment(owner=owner, team=team, version=shop)
    make_environment(owner=owner, team=team, version=shop, display_name="globex demo")
    services.rename_environment(environment=environment, user=teammate, display_name="acme demo")
    environment.refresh_from_db()
    assert environment.display_name == "acme demo"
    entry = AuditEvent.objects.get(action="environment.rename")
    assert (entry.before, entry.after) == ({"display_name": ""}, {"display_name": "acme demo"})
    assert entry.actor == teammate.email
    assert environment.events.filter(message__contains="Named 'acme demo'").exists()
    # The owner's other environment has that name: the teammate reads whose it is.
    with pytest.raises(ServiceError) as error:
        services.rename_environment(
            environment=environment, user=teammate, display_name="Globex Demo"
        )
    assert str(error.value) == f"{owner.email} has an environment named 'Globex Demo'."


def test_it_refuses_to_rename_a_deleted_environment(owner, team, shop):
    environment = make_environment(owner=owner, team=team, version=shop, state=State.DELETED)
    with pytest.raises(ServiceError, match="cannot be renamed"):
        services.rename_environment(environment=environment, user=owner, display_name="x")


# --- Pages -------------------------------------------------------------------------------


def test_the_dashboard_and_team_page_show_the_name_and_the_list_parameter(
    owner, teammate, team, shop
):
    make_environment(
        owner=owner,
        team=team,
        version=shop,
        display_name="acme demo",
        parameters={"customer": "acme"},
    )
    make_environment(owner=owner, team=team, version=shop, parameters={"customer": "globex"})
    for user, url in ((owner, "my_environments"), (teammate, "team_environments")):
        body = client_for(user).get(reverse(url)).content.decode()
        assert ">acme demo</a>" in body
        # By the parameter's label, not its name (issue 12, defect 8).
        assert "Customer name: acme" in body and "Customer name: globex" in body
        assert "customer: acme" not in body


def test_a_rename_shows_at_once_on_the_cached_rows(owner, team, shop):
    environment = make_environment(owner=owner, team=team, version=shop)
    client = client_for(owner)
    url = reverse("environment_rows") + "?scope=mine"
    cache.clear()
    assert "acme demo" not in client.get(url).content.decode()
    services.rename_environment(environment=environment, user=owner, display_name="acme demo")
    assert ">acme demo</a>" in client.get(url).content.decode()


def test_the_approval_queue_shows_the_name_and_the_list_parameter(owner, approver, team):
    version, _ = publish_blueprint(
        source=SHOP.replace("approval: auto", "approval: required").replace(
            "name: shop-demo", "name: shop-approved"
        )
    )
    _request(owner, version, "acme demo", customer="initech")
    body = client_for(approver).get(reverse("approvals")).content.decode()
    assert "acme demo" in body and "initech" in body


def test_the_owner_renames_through_the_form_and_sees_a_clear_error(owner, team, shop):
    environment = make_environment(owner=owner, team=team, version=shop)
    make_environment(owner=owner, team=team, version=shop, display_name="acme demo")
    client = client_for(owner)
    url = reverse("environment_rename", args=[environment.pk])
    assert 'name="display_name"' in client.get(environment.get_absolute_url()).content.decode()
    assert client.get(url).status_code == 200
    response = client.post(url, {"display_name": "Acme Demo"})
    assert response.status_code == 400
    assert (
        "You already have an environment named &#x27;Acme Demo&#x27;." in response.content.decode()
    )
    response = client.post(url, {"display_name": "initech demo"})
    assert response.status_code == 302
    environment.refresh_from_db()
    assert environment.display_name == "initech demo"


def test_the_request_form_takes_a_name_and_shows_the_duplicate_on_the_field(owner, team, shop):
    client = client_for(owner)
    url = reverse("request", args=["shop-demo"])
    response = client.post(
        url,
        {
            "display_name": "acme demo",
            "ttl_seconds": 14400,
            "team": team.pk,
            "param_customer": "acme",
            "param_theme": "light",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    response = client.post(
        url,
        {
            "display_name": "acme demo",
            "ttl_seconds": 14400,
            "team": team.pk,
            "param_customer": "acme",
            "param_theme": "light",
        },
    )
    assert response.status_code == 400
    assert "display_name_error" in response.content.decode()


@pytest.mark.parametrize("method", ["get", "post"])
def test_outsiders_get_404_on_rename(outsider, env, method):
    response = getattr(client_for(outsider), method)(
        reverse("environment_rename", args=[env.pk]), {"display_name": "mine now"}
    )
    assert response.status_code == 404
    env.refresh_from_db()
    assert env.display_name == ""


# --- API -----------------------------------------------------------------------------------


@pytest.fixture
def bearer(owner):
    return {
        "HTTP_AUTHORIZATION": f"Bearer {tokens.create_token(user=owner, name='ci', scope='write', days=1)[1]}"
    }


def test_the_api_takes_a_name_shows_it_with_the_list_value_and_renames(client, bearer, shop):
    body = {
        "blueprint": "shop-demo",
        "parameters": {"customer": "initech"},
        "display_name": "acme demo",
    }
    response = client.post(f"{API}/environments", body, content_type="application/json", **bearer)
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["display_name"] == "acme demo"
    assert (created["list_parameter"], created["list_value"]) == ("customer", "initech")
    again = client.post(f"{API}/environments", body, content_type="application/json", **bearer)
    assert again.status_code == 409
    assert again.json()["detail"] == "You already have an environment named 'acme demo'."
    listed = client.get(f"{API}/environments", **bearer).json()
    assert [(e["display_name"], e["list_value"]) for e in listed] == [("acme demo", "initech")]
    renamed = client.patch(
        f"{API}/environments/{created['id']}",
        {"display_name": "initech demo"},
        content_type="application/json",
        **bearer,
    )
    assert renamed.status_code == 200
    assert renamed.json()["display_name"] == "initech demo"


def test_the_api_gives_outsiders_404_on_rename(client, outsider, env):
    token = tokens.create_token(user=outsider, name="x", scope="write", days=1)[1]
    response = client.patch(
        f"{API}/environments/{env.pk}",
        {"display_name": "mine now"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 404
