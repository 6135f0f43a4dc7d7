"""The Django admin: blueprints are edited as YAML with the same validation."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from environments.governance.quotas import QUOTA_FIELDS, set_quota
from environments.models import AuditEvent, BlueprintVersion, Quota
from tests.conftest import make_user
from tests.test_blueprints import GOOD


def superuser_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root@example.com", "root@example.com", "pw")
    client.force_login(admin)
    return client


def test_it_publishes_a_blueprint_from_yaml(client, django_user_model):
    superuser_client(client, django_user_model)
    response = client.post("/admin/environments/blueprint/add/", {"source": GOOD})
    assert response.status_code == 302, response.content.decode()[:2000]
    version = BlueprintVersion.objects.get()
    assert version.blueprint.name == "shop"
    assert AuditEvent.objects.filter(action="blueprint.publish").count() == 1


def test_it_shows_validation_errors_and_writes_nothing(client, django_user_model):
    superuser_client(client, django_user_model)
    bad = GOOD.replace("cpu: 250m", "cpu: 2 cores")
    response = client.post("/admin/environments/blueprint/add/", {"source": bad})
    assert response.status_code == 200
    assert (
        "components[0].resources.cpu: &#x27;2 cores&#x27; is not a valid Kubernetes quantity"
        in (response.content.decode())
    )
    assert BlueprintVersion.objects.count() == 0


def test_it_publishes_a_new_version_when_edited(client, django_user_model):
    superuser_client(client, django_user_model)
    client.post("/admin/environments/blueprint/add/", {"source": GOOD})
    blueprint = BlueprintVersion.objects.get().blueprint
    url = f"/admin/environments/blueprint/{blueprint.pk}/change/"
    page = client.get(url)
    assert "registry.example.com/shop" in page.content.decode()
    client.post(url, {"source": GOOD.replace("port: 8080", "port: 9090")})
    assert list(blueprint.versions.order_by("number").values_list("number", flat=True)) == [1, 2]


def test_it_refuses_to_change_the_audit_log(client, django_user_model):
    superuser_client(client, django_user_model)
    client.post("/admin/environments/blueprint/add/", {"source": GOOD})
    entry = AuditEvent.objects.first()
    response = client.post(f"/admin/environments/auditevent/{entry.pk}/change/", {"action": "x"})
    assert response.status_code == 403
    response = client.post(f"/admin/environments/auditevent/{entry.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert AuditEvent.objects.get(pk=entry.pk).action == "blueprint.publish"


def test_it_has_an_admin_page_for_every_model(client, django_user_model):
    from django.apps import apps
    from django.contrib import admin

    superuser_client(client, django_user_model)
    for model in apps.get_app_config("environments").get_models():
        if model._meta.model_name == "membership":
            continue  # edited inline on its team
        assert admin.site.is_registered(model), model
        url = f"/admin/environments/{model._meta.model_name}/"
        assert client.get(url).status_code == 200, url


def test_it_audits_role_changes_made_to_a_user(client, django_user_model):
    from django.contrib.auth.models import Group

    superuser_client(client, django_user_model)
    tina = make_user("tina@example.com")
    approvers = Group.objects.get_or_create(name="approver")[0]
    requesters = Group.objects.get(name="requester")  # everyone's default role
    url = f"/admin/auth/user/{tina.pk}/change/"
    response = client.post(
        url,
        {
            "username": tina.username,
            "email": tina.email,
            "is_active": "on",
            "groups": [requesters.pk, approvers.pk],
            "date_joined_0": "2026-11-01",
            "date_joined_1": "09:00:00",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    entry = AuditEvent.objects.get(action="user.change")
    assert entry.actor == "root@example.com"
    assert entry.before["groups"] == ["requester"]
    assert sorted(entry.after["groups"]) == ["approver", "requester"]
    assert entry.after["password"] == "(secret)"
    assert "pbkdf2" not in str(entry.before) + str(entry.after)


def test_it_audits_team_membership_changes_made_inline(client, django_user_model, team):
    superuser_client(client, django_user_model)
    sam = make_user("sam@example.com")
    url = f"/admin/environments/team/{team.pk}/change/"
    response = client.post(
        url,
        {
            "name": team.name,
            "slug": team.slug,
            "change_policy": team.change_policy,
            "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
            "memberships-0-user": sam.pk,
            "memberships-0-team": team.pk,
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    entry = AuditEvent.objects.get(action="team.change")
    assert entry.before["members"] == []
    assert entry.after["members"] == ["sam@example.com"]


QUOTA_FORM = {
    "max_environments": "3",
    "max_cpu_millicores": "2000",
    "max_memory_bytes": str(4 * 1024**3),
    "max_ttl": "08:00:00",
    "monthly_budget": "150.00",
}


def test_it_saves_quotas_through_the_quota_service_with_the_same_audit_entry(
    client, django_user_model, team, other_team
):
    superuser_client(client, django_user_model)
    response = client.post("/admin/environments/quota/add/", {**QUOTA_FORM, "team": team.pk})
    assert response.status_code == 302, response.content.decode()[:3000]
    quota = Quota.objects.get(team=team)
    assert quota.max_ttl == timedelta(hours=8)
    added = AuditEvent.objects.get(action="quota.change")
    assert added.actor == "root@example.com"
    assert (added.object_type, added.object_id) == ("quota", str(quota.pk))

    # The same values through the service the portal's quota page uses: the same entry.
    reference = set_quota(
        actor=django_user_model.objects.get(username="root@example.com"),
        team=other_team,
        values={
            "max_environments": 3,
            "max_cpu_millicores": 2000,
            "max_memory_bytes": 4 * 1024**3,
            "max_ttl": timedelta(hours=8),
            "monthly_budget": Decimal("150.00"),
        },
    )
    expected = AuditEvent.objects.get(action="quota.change", object_id=str(reference.pk))
    assert added.before is None and expected.before is None
    assert added.after == expected.after
    assert set(added.after) == set(QUOTA_FIELDS)

    response = client.post(
        f"/admin/environments/quota/{quota.pk}/change/",
        {**QUOTA_FORM, "max_environments": "5", "monthly_budget": ""},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    changed = AuditEvent.objects.filter(action="quota.change", object_id=str(quota.pk)).latest("pk")
    assert changed.pk != added.pk
    assert changed.before == added.after
    assert changed.after == {**added.after, "max_environments": 5, "monthly_budget": None}
    assert Quota.objects.filter(team=team).count() == 1


def test_it_adds_a_user_by_the_email_they_sign_in_with(client, django_user_model):
    from django.test import Client

    superuser_client(client, django_user_model)
    page = client.get("/admin/auth/user/add/").content.decode()
    assert 'name="email"' in page and 'name="username"' not in page
    response = client.post(
        "/admin/auth/user/add/",
        {
            "email": "Fresh@Example.com",
            "usable_password": "true",
            "password1": "a-long-new-password-42",
            "password2": "a-long-new-password-42",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    user = django_user_model.objects.get(email="fresh@example.com")
    assert user.username == "fresh@example.com"
    assert AuditEvent.objects.filter(action="user.add", object_id=str(user.pk)).exists()
    # They can sign in at once, by email, with no second form.
    newcomer = Client()
    response = newcomer.post(
        "/accounts/login/", {"login": "fresh@example.com", "password": "a-long-new-password-42"}
    )
    assert response.status_code == 302
    assert "_auth_user_id" in newcomer.session
