"""Who may request an environment for a team: decided once (access.teams.team_for), so
the request form, the services and the API give the same answer."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from environments.access import tokens
from environments.lifecycle import services
from environments.models import Environment
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

FORM = {"param_head_sha": "abc1234", "ttl_seconds": 3600, "reason": "check"}


def api_request(client, user, team_slug: str):
    _, plaintext = tokens.create_token(user=user, name="ci", scope="write", days=1)
    return client.post(
        "/api/v1/environments",
        {"blueprint": "pr-preview", "team": team_slug},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {plaintext}",
    )


def test_the_ui_and_the_api_agree_that_a_portal_admin_may_request_for_any_team(
    client, portal_admin, team, sample_blueprints
):
    assert not team.memberships.filter(user=portal_admin).exists()
    version = sample_blueprints["pr-preview"]
    # The service the request form calls.
    made = services.request_environment(user=portal_admin, version=version, team=team)
    assert made.team == team
    # The API (it used to answer 403 here).
    response = api_request(client, portal_admin, team.slug)
    assert response.status_code == 201, response.json()
    assert response.json()["team"] == "sales"
    assert Environment.objects.filter(owner=portal_admin, team=team).count() == 2


def test_the_ui_and_the_api_agree_that_a_non_member_may_not_request_for_a_team(
    client, outsider, team, sample_blueprints
):
    assert not outsider.is_superuser and not team.memberships.filter(user=outsider).exists()
    version = sample_blueprints["pr-preview"]
    # The service the request form calls.
    with pytest.raises(PermissionDenied, match="You are not a member of team Sales"):
        services.request_environment(user=outsider, version=version, team=team)
    # The request form: refused, with the error on the form.
    response = client_for(outsider).post(
        reverse("request", args=["pr-preview"]), {**FORM, "team": team.pk}
    )
    assert response.status_code == 400
    assert 'class="form-errors" role="alert"' in response.content.decode()
    # The API.
    response = api_request(client, outsider, team.slug)
    assert response.status_code == 403
    assert response.json()["detail"] == "You are not a member of team Sales."
    assert not Environment.objects.exists()


def test_the_request_form_gives_team_fors_answer(outsider, portal_admin, team, sample_blueprints):
    url = reverse("request", args=["pr-preview"])
    refused = client_for(outsider).post(url, {**FORM, "team": team.pk})
    assert refused.status_code == 400
    assert "You are not a member of team Sales." in refused.content.decode()
    allowed = client_for(portal_admin).post(url, {**FORM, "team": team.pk})
    assert allowed.status_code == 302
    assert Environment.objects.get(owner=portal_admin).team == team
