"""The portal's pages: who sees what, forms, htmx partials, query counts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from environments.catalog import pricing as costs
from environments.lifecycle.states import State
from environments.lifecycle.transitions import transition
from environments.models import AuditEvent, Environment, Quota
from environments.web.templatetags.portal import duration
from tests.conftest import make_user
from tests.factories import make_environment

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(sample_blueprints):
    return sample_blueprints["shop-demo"]


@pytest.fixture
def env(owner, team, shop):
    return make_environment(owner=owner, team=team, version=shop, state=State.READY)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


ENVIRONMENT_URLS = [
    ("get", "environment_detail"),
    ("get", "environment_status"),
    ("get", "environment_delete"),
    ("post", "environment_extend"),
    ("post", "environment_delete"),
    ("post", "environment_clone"),
    ("post", "environment_retry"),
]


# --- Catalogue and request form ---------------------------------------------------------


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
    assert "Over budget: this request would be refused" in body


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


def test_it_sends_an_htmx_poll_with_an_ended_session_to_the_sign_in_page(owner, env):
    # htmx must navigate the whole page, not swap the sign-in page into the fragment.
    response = Client().get(
        reverse("environment_status", args=[env.pk]),
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL=f"http://testserver/environments/{env.pk}/",
    )
    assert response.status_code == 204
    assert response["HX-Redirect"] == f"/accounts/login/?next=%2Fenvironments%2F{env.pk}%2F"
    # Without htmx, the usual redirect.
    plain = Client().get(reverse("environment_status", args=[env.pk]))
    assert plain.status_code == 302


# --- Dashboards -------------------------------------------------------------------------


def test_it_lists_my_environments(owner, env):
    response = client_for(owner).get(reverse("my_environments"))
    assert response.status_code == 200
    assert env.namespace in response.content.decode()


def test_it_shows_an_empty_dashboard(owner, shop):
    response = client_for(owner).get(reverse("my_environments"))
    assert response.status_code == 200
    assert "You have no environments" in response.content.decode()


def test_it_shows_team_environments_to_a_teammate(teammate, env):
    response = client_for(teammate).get(reverse("team_environments"))
    assert response.status_code == 200
    assert env.namespace in response.content.decode()


def test_it_hides_team_environments_from_outsiders(outsider, env):
    response = client_for(outsider).get(reverse("team_environments"))
    assert env.namespace not in response.content.decode()
    response = client_for(outsider).get(reverse("environment_rows"), {"scope": "team"})
    assert env.namespace not in response.content.decode()


def test_it_stops_polling_rows_when_all_are_settled(owner, env):
    response = client_for(owner).get(reverse("environment_rows"), {"scope": "mine"})
    assert response.status_code == 286
    assert "hx-trigger" not in response.content.decode()


def test_it_keeps_polling_rows_while_one_is_changing(owner, team, shop, env):
    make_environment(owner=owner, team=team, version=shop, state=State.PROVISIONING)
    response = client_for(owner).get(reverse("environment_rows"), {"scope": "mine"})
    assert response.status_code == 200
    assert 'hx-trigger="every 2s"' in response.content.decode()


def _bulk_environments(count: int, *, owner, team, version) -> None:
    template = make_environment(owner=owner, team=team, version=version, state=State.PROVISIONING)
    fields = {
        f.attname: getattr(template, f.attname)
        for f in Environment._meta.concrete_fields
        if f.attname not in {"id", "name"}
    }
    base = Environment.objects.count()  # unique names without random collisions
    Environment.objects.bulk_create(
        [Environment(**fields, name=f"z{base + i:07d}") for i in range(count - 1)]
    )


@pytest.mark.parametrize("url_name", ["my_environments", "environment_rows", "team_environments"])
def test_it_makes_the_same_number_of_queries_for_10_and_1000_rows(
    owner, team, shop, url_name, django_assert_num_queries
):
    client = client_for(owner)
    url = reverse(url_name)
    _bulk_environments(10, owner=owner, team=team, version=shop)
    client.get(url)  # warm the session
    cache.clear()  # measure the rendering path, not the cached one
    with CaptureQueriesContext(connection) as ten:
        assert client.get(url).status_code in (200, 286)
    _bulk_environments(990, owner=owner, team=team, version=shop)
    assert Environment.objects.filter(owner=owner).count() == 1000
    cache.clear()
    with django_assert_num_queries(len(ten.captured_queries)):
        assert client.get(url).status_code in (200, 286)


def test_it_serves_unchanged_rows_from_the_cache_and_notices_changes(owner, team, shop):
    client = client_for(owner)
    environment = make_environment(owner=owner, team=team, version=shop, state=State.PROVISIONING)
    url = reverse("environment_rows") + "?scope=mine"
    client.get(url)
    with CaptureQueriesContext(connection) as cached:
        assert "Provisioning" in client.get(url).content.decode()
    assert not any("environments_blueprintversion" in q["sql"] for q in cached.captured_queries)
    # A state change (a guarded UPDATE through the state machine) shows at once.
    transition(environment.pk, from_states=State.PROVISIONING, to_state=State.READY)
    response = client.get(url)
    assert "Ready" in response.content.decode()
    assert response.status_code == 286


# --- One environment --------------------------------------------------------------------


def test_it_shows_the_detail_page_to_the_owner(owner, env):
    env.urls = {"web": "http://web-x.example.test"}
    env.manifests = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "eph-x"}}]
    env.parameters = {"customer": "globex", "theme": "light"}
    env.save()
    response = client_for(owner).get(reverse("environment_detail", args=[env.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "http://web-x.example.test" in body
    assert "kind: Namespace" in body
    assert "demo-globex" in body  # the access text with parameters filled in


def test_it_shows_the_detail_page_to_a_teammate(teammate, env):
    response = client_for(teammate).get(reverse("environment_detail", args=[env.pk]))
    assert response.status_code == 200


def test_it_shows_any_environment_to_a_portal_admin(portal_admin, env):
    response = client_for(portal_admin).get(reverse("environment_detail", args=[env.pk]))
    assert response.status_code == 200


@pytest.mark.parametrize(("method", "url_name"), ENVIRONMENT_URLS)
def test_it_returns_404_to_outsiders_on_every_environment_url(outsider, env, method, url_name):
    client = client_for(outsider)
    response = getattr(client, method)(reverse(url_name, args=[env.pk]), {"seconds": 3600})
    assert response.status_code == 404
    env.refresh_from_db()
    assert env.state == State.READY
    assert Environment.objects.count() == 1


def test_it_stops_polling_status_when_settled(owner, env):
    response = client_for(owner).get(reverse("environment_status", args=[env.pk]))
    assert response.status_code == 286


def test_it_polls_status_while_provisioning(owner, team, shop):
    environment = make_environment(
        owner=owner,
        team=team,
        version=shop,
        state=State.PROVISIONING,
        component_status={"web": {"ready": False, "available": 0, "replicas": 1}},
    )
    response = client_for(owner).get(
        reverse("environment_status", args=[environment.pk]), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert 'hx-trigger="every 2s"' in body
    assert "<progress" in body
    assert 'hx-swap-oob="true"' in body  # the actions follow the state


def test_it_extends_an_environment(owner, env):
    response = client_for(owner).post(
        reverse("environment_extend", args=[env.pk]), {"seconds": 3600, "reason": "customer call"}
    )
    assert response.status_code == 302
    env.refresh_from_db()
    assert env.extension_count == 1


def test_it_shows_an_extension_refusal_as_a_message(owner, env):
    client = client_for(owner)
    response = client.post(
        reverse("environment_extend", args=[env.pk]), {"seconds": 3 * 86400}, follow=True
    )
    assert "may live at most" in response.content.decode()
    env.refresh_from_db()
    assert env.extension_count == 0


def test_it_asks_before_deleting(owner, env):
    client = client_for(owner)
    response = client.get(reverse("environment_delete", args=[env.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert f'action="{reverse("environment_delete", args=[env.pk])}"' in body
    assert f">Delete {env.namespace}</button>" in body
    assert f'href="{reverse("environment_detail", args=[env.pk])}">Keep it' in body
    env.refresh_from_db()
    assert env.state == State.READY
    response = client.post(reverse("environment_delete", args=[env.pk]))
    assert response.status_code == 302
    env.refresh_from_db()
    assert env.state == State.TEARING_DOWN


def test_it_clones_an_environment(owner, env):
    response = client_for(owner).post(reverse("environment_clone", args=[env.pk]))
    assert response.status_code == 302
    clone = Environment.objects.exclude(pk=env.pk).get()
    assert response["Location"] == reverse("environment_detail", args=[clone.pk])


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


def test_it_retries_a_failed_environment(owner, team, shop):
    environment = make_environment(
        owner=owner, team=team, version=shop, state=State.FAILED, last_error="Image pull failed"
    )
    client = client_for(owner)
    assert (
        "Image pull failed"
        in client.get(reverse("environment_detail", args=[environment.pk])).content.decode()
    )
    response = client.post(reverse("environment_retry", args=[environment.pk]))
    assert response.status_code == 302
    environment.refresh_from_db()
    assert environment.state == State.APPROVED


def test_it_says_why_a_retry_is_refused(owner, env):
    response = client_for(owner).post(reverse("environment_retry", args=[env.pk]), follow=True)
    assert "Only a failed environment can be retried." in response.content.decode()


# --- Approvals --------------------------------------------------------------------------


@pytest.fixture
def pending(owner, team, sample_blueprints):
    return make_environment(
        owner=owner,
        team=team,
        version=sample_blueprints["benchmark"],
        state=State.PENDING_APPROVAL,
        expires_at=None,
        reason="load test for release 7",
    )


def test_it_lists_pending_requests_for_approvers(approver, pending):
    response = client_for(approver).get(reverse("approvals"))
    assert response.status_code == 200
    body = response.content.decode()
    assert pending.namespace in body
    assert "load test for release 7" in body
    assert "quotas and budget." in body and "Approval will be refused" not in body


def test_it_tells_approvers_what_approving_would_exceed(approver, team, pending):
    Quota.objects.create(team=team, monthly_budget=Decimal("0.01"))
    body = client_for(approver).get(reverse("approvals")).content.decode()
    assert "Team Sales has $0.01 of $0.01 left this month" in body
    policy = pending.blueprint_version.spec["approval"]
    assert (
        "Approving goes over this" if policy == "over-quota" else "Approval will be refused"
    ) in body


def test_it_shows_an_empty_approval_queue(approver, shop):
    response = client_for(approver).get(reverse("approvals"))
    assert "No requests are waiting" in response.content.decode()


@pytest.mark.parametrize("user_fixture", ["outsider", "owner"])
def test_it_refuses_the_approval_queue_to_non_approvers(request, user_fixture, pending):
    client = client_for(request.getfixturevalue(user_fixture))
    assert client.get(reverse("approvals")).status_code == 403
    assert client.post(reverse("approve", args=[pending.pk])).status_code == 403
    assert client.post(reverse("reject", args=[pending.pk]), {"reason": "no"}).status_code == 403
    pending.refresh_from_db()
    assert pending.state == State.PENDING_APPROVAL


def test_it_approves_a_request(approver, pending):
    response = client_for(approver).post(reverse("approve", args=[pending.pk]))
    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.state == State.APPROVED
    assert pending.approved_by == approver


def test_it_needs_a_reason_to_reject(approver, pending):
    client = client_for(approver)
    response = client.post(reverse("reject", args=[pending.pk]), {"reason": ""}, follow=True)
    assert "Say why" in response.content.decode()
    pending.refresh_from_db()
    assert pending.state == State.PENDING_APPROVAL
    client.post(reverse("reject", args=[pending.pk]), {"reason": "Use the staging rig"})
    pending.refresh_from_db()
    assert pending.state == State.REJECTED


def test_it_shows_the_approvals_link_only_to_approvers(approver, owner, shop):
    assert reverse("approvals") in client_for(approver).get(reverse("catalogue")).content.decode()
    assert reverse("approvals") not in client_for(owner).get(reverse("catalogue")).content.decode()


# --- Portal admin -----------------------------------------------------------------------


def test_it_filters_all_environments_for_admins(portal_admin, owner, team, shop, env):
    failed = make_environment(owner=owner, team=team, version=shop, state=State.FAILED)
    client = client_for(portal_admin)
    response = client.get(reverse("admin_environments"), {"state": "failed"})
    assert response.status_code == 200
    body = response.content.decode()
    assert failed.namespace in body
    assert env.namespace not in body


def test_it_refuses_the_admin_list_to_others(owner, env):
    assert client_for(owner).get(reverse("admin_environments")).status_code == 403


def test_it_lets_a_user_in_no_team_see_the_catalogue(shop):
    loner = make_user("loner@example.com")
    response = client_for(loner).get(reverse("request", args=["shop-demo"]))
    assert response.status_code == 200
    assert "not in a team yet" in response.content.decode()


def test_it_polls_a_pending_request_slowly_until_it_is_decided(owner, team, shop):
    environment = make_environment(
        owner=owner, team=team, version=shop, state=State.PENDING_APPROVAL
    )
    response = client_for(owner).get(reverse("environment_status", args=[environment.pk]))
    assert response.status_code == 200
    assert 'hx-trigger="every 10s"' in response.content.decode()
    Environment.objects.filter(pk=environment.pk).update(state=State.REJECTED)
    response = client_for(owner).get(reverse("environment_status", args=[environment.pk]))
    assert response.status_code == 286


def test_it_refuses_an_outsider_a_kubeconfig(outsider, env):
    response = client_for(outsider).post(reverse("environment_kubeconfig", args=[env.pk]))
    assert response.status_code == 404


def test_it_does_not_redirect_to_another_site_after_an_action(owner, env):
    response = client_for(owner).post(
        reverse("environment_extend", args=[env.pk]),
        {"seconds": 3600, "reason": "x", "next": "/\\evil.example.com/"},
    )
    assert response.status_code == 302
    assert "evil" not in response["Location"]


def test_it_explains_why_an_approver_cannot_approve_their_own_request(approver, shop, team):
    environment = make_environment(
        owner=approver, team=team, version=shop, state=State.PENDING_APPROVAL
    )
    response = client_for(approver).post(reverse("approve", args=[environment.pk]), follow=True)
    assert response.status_code == 200
    assert "your own request" in response.content.decode()
    environment.refresh_from_db()
    assert environment.state == State.PENDING_APPROVAL
