"""Issue 14, finding 5: separation of duties and least privilege among people.

Nobody approves their own request (superusers included, when FORBID_SELF_APPROVAL is
on, as it is in production); approvers can be scoped to teams; and teammates see each
other's environments but only the owner and the team's leads change them (unless the
team keeps today's "any member" policy).
"""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from environments.access import tokens
from environments.access.kubeconfig import kubeconfig_for
from environments.catalog.publishing import publish_blueprint
from environments.integrations import notifications
from environments.lifecycle import services
from environments.lifecycle.states import State
from environments.models import AuditEvent, Environment, Membership, Team
from tests.conftest import client_for, make_user
from tests.factories import make_environment
from tests.test_blueprints import GOOD
from tests.test_settings import PRODUCTION, run_manage

API = "/api/v1"


@pytest.fixture
def required():
    version, _ = publish_blueprint(
        source=GOOD.replace("purpose: demo", "purpose: demo\napproval: required\n")
    )
    return version


@pytest.fixture
def shop():
    version, _ = publish_blueprint(source=GOOD)
    return version


# --- self-approval ------------------------------------------------------------------------


def test_forbid_self_approval_stops_a_superuser_approving_their_own_request(
    settings, team, required
):
    settings.FORBID_SELF_APPROVAL = True
    boss = make_user("boss@example.com")
    boss.is_superuser = True
    boss.save()
    Membership.objects.create(team=team, user=boss)
    environment = services.request_environment(user=boss, version=required)
    with pytest.raises(PermissionDenied) as refused:
        services.approve_environment(environment=environment, approver=boss)
    assert str(refused.value) == "You cannot approve your own request; another approver must."
    environment.refresh_from_db()
    assert environment.state == State.PENDING_APPROVAL
    # The queue shows no Approve button for it either.
    page = client_for(boss).get(reverse("approvals")).content.decode()
    assert "Your own request" in page and f"Approve {environment.namespace}" not in page


def test_forbid_self_approval_covers_extension_requests(settings, team, required, approver):
    settings.FORBID_SELF_APPROVAL = True
    environment = make_environment(owner=approver, team=team, version=required, ttl_hours=2)
    services.extend_environment(environment=environment, user=approver, seconds=3600, reason="r")
    extension = environment.extension_requests.get()
    with pytest.raises(PermissionDenied, match="your own request"):
        services.approve_extension(extension=extension, approver=approver)


def test_forbid_self_approval_is_on_by_default_in_production():
    result = run_manage(
        "shell",
        "-c",
        "from django.conf import settings; print('forbid', settings.FORBID_SELF_APPROVAL)",
        extra_env=PRODUCTION,
    )
    assert "forbid True" in result.stdout, result.stdout + result.stderr


# --- scoped approvers ---------------------------------------------------------------------


def test_a_team_approver_approves_and_is_told_about_their_team_only(
    team, other_team, owner, outsider, approver, required
):
    scoped = make_user("sales-approver@example.com")
    Membership.objects.create(team=team, user=scoped, approver=True)
    ours = services.request_environment(user=owner, version=required)
    theirs = services.request_environment(user=outsider, version=required)

    page = client_for(scoped).get(reverse("approvals"))
    assert page.status_code == 200
    assert ours.namespace in page.content.decode()
    assert theirs.namespace not in page.content.decode()
    with pytest.raises(PermissionDenied):
        services.approve_environment(environment=theirs, approver=scoped)
    services.approve_environment(environment=ours, approver=scoped)

    # Emails: the team's own approver for its requests, not for other teams'; the
    # global approver (the approver role) for every team's.
    _, _, for_ours = notifications.message_for(notifications.REQUESTED, ours)
    _, _, for_theirs = notifications.message_for(notifications.REQUESTED, theirs)
    assert scoped.email in for_ours and scoped.email not in for_theirs
    assert approver.email in for_ours and approver.email in for_theirs


def test_admins_make_someone_an_approver_for_one_team_on_the_people_page(
    portal_admin, teammate, team
):
    response = client_for(portal_admin).post(
        reverse("person_team_role", args=[teammate.pk, team.pk, "approver"]),
        {"value": "on"},
        follow=True,
    )
    assert "is now an approver of team Sales" in response.content.decode()
    assert Membership.objects.get(user=teammate, team=team).approver
    entry = AuditEvent.objects.get(action="person.grant_team_approver")
    assert entry.object_repr == teammate.email and entry.after == {
        "team": "Sales",
        "approver": True,
    }
    assert client_for(teammate).get(reverse("approvals")).status_code == 200
    client_for(portal_admin).post(
        reverse("person_team_role", args=[teammate.pk, team.pk, "lead"]), {"value": "on"}
    )
    assert Membership.objects.get(user=teammate, team=team).lead


# --- who may change a teammate's environment ----------------------------------------------


def test_a_teammate_sees_but_cannot_change_anothers_environment(
    client, owner, teammate, outsider, team, shop
):
    environment = make_environment(owner=owner, team=team, version=shop)
    assert team.change_policy == Team.ChangePolicy.OWNER_AND_LEADS  # the default
    with pytest.raises(PermissionDenied):
        services.extend_environment(environment=environment, user=teammate, seconds=3600)
    with pytest.raises(PermissionDenied):
        services.delete_environment(environment=environment, user=teammate)
    with pytest.raises(PermissionDenied):
        kubeconfig_for(environment=environment, user=teammate)
    assert Environment.objects.get(pk=environment.pk).state == State.READY

    # The page shows it, without the actions they may not take.
    page = client_for(teammate).get(reverse("environment_detail", args=[environment.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Delete…" not in text and "Download kubeconfig" not in text
    assert 'name="seconds"' not in text
    assert "Delete…" in client_for(owner).get(environment.get_absolute_url()).content.decode()
    assert client_for(teammate).get(environment.delete_url).status_code == 403
    # The team list shows the row, without its Delete link.
    rows = client_for(teammate).get(reverse("team_environments")).content.decode()
    assert f"Open {environment.namespace}" in rows
    assert f"Delete {environment.namespace}" not in rows

    # The API: 403 for the teammate (who can see it), 404 for an outsider.
    def token_of(user):
        return tokens.create_token(user=user, name="t", scope="write", days=1)[1]

    path = f"{API}/environments/{environment.name}"
    for user, status in ((teammate, 403), (outsider, 404)):
        auth = {"HTTP_AUTHORIZATION": f"Bearer {token_of(user)}"}
        extend = client.post(
            path + "/extend", {"seconds": 3600}, content_type="application/json", **auth
        )
        assert extend.status_code == status, extend.content
        assert client.delete(path, **auth).status_code == status
        assert client.post(path + "/kubeconfig", **auth).status_code == status
    assert client.get(path, HTTP_AUTHORIZATION=f"Bearer {token_of(teammate)}").status_code == 200


def test_a_team_lead_changes_teammates_environments(owner, teammate, team, shop):
    Membership.objects.filter(user=teammate, team=team).update(lead=True)
    environment = make_environment(owner=owner, team=team, version=shop)
    rows = client_for(teammate).get(reverse("team_environments")).content.decode()
    assert f"Delete {environment.namespace}" in rows
    services.extend_environment(environment=environment, user=teammate, seconds=3600, reason="r")
    assert services.delete_environment(environment=environment, user=teammate)


def test_the_any_member_policy_keeps_todays_behaviour(owner, teammate, team, shop):
    team.change_policy = Team.ChangePolicy.ANY_MEMBER
    team.save()
    environment = make_environment(owner=owner, team=team, version=shop)
    services.extend_environment(environment=environment, user=teammate, seconds=3600, reason="r")
    assert services.delete_environment(environment=environment, user=teammate)
