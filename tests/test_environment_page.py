"""One environment's page and its actions: who sees it, status polling, extend,
delete, clone, retry, kubeconfig."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from environments.lifecycle.states import State
from environments.models import Environment
from tests.conftest import client_for
from tests.factories import make_environment

pytestmark = pytest.mark.django_db


ENVIRONMENT_URLS = [
    ("get", "environment_detail"),
    ("get", "environment_status"),
    ("get", "environment_delete"),
    ("post", "environment_extend"),
    ("post", "environment_delete"),
    ("post", "environment_clone"),
    ("post", "environment_retry"),
]


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
    assert "Admin user" in body and "demo" in body  # the access text
    # A generated credential is never in the page: a button reveals it on request.
    assert reverse("environment_credentials", args=[env.pk]) in body


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


@pytest.mark.parametrize("state", [State.READY, State.FAILED])
def test_it_keeps_polling_status_slowly_while_alive(owner, team, shop, state):
    # Ready or failed is not the end: expiry, a teammate's delete or extension must show.
    environment = make_environment(owner=owner, team=team, version=shop, state=state)
    response = client_for(owner).get(reverse("environment_status", args=[environment.pk]))
    assert response.status_code == 200
    assert 'hx-trigger="every 5s"' in response.content.decode()


@pytest.mark.parametrize("state", [State.DELETED, State.REJECTED])
def test_it_stops_polling_status_when_final(owner, team, shop, state):
    environment = make_environment(owner=owner, team=team, version=shop, state=state)
    response = client_for(owner).get(reverse("environment_status", args=[environment.pk]))
    assert response.status_code == 286
    assert "hx-trigger" not in response.content.decode()


def test_it_updates_the_expiry_date_in_the_header_without_a_reload(owner, team, shop):
    # A teammate extends it: the next poll swaps the header's date in out of band.
    environment = make_environment(owner=owner, team=team, version=shop, state=State.READY)
    later = timezone.now() + timedelta(days=3)
    Environment.objects.filter(pk=environment.pk).update(expires_at=later)
    response = client_for(owner).get(
        reverse("environment_status", args=[environment.pk]), HTTP_HX_REQUEST="true"
    )
    body = response.content.decode()
    assert '<div id="env-when" hx-swap-oob="true"><dt>Expires</dt>' in body
    assert later.strftime("%b %-d") in body
    # Once deleted, the same place says when it went.
    Environment.objects.filter(pk=environment.pk).update(
        state=State.DELETED, deleted_at=timezone.now()
    )
    response = client_for(owner).get(
        reverse("environment_status", args=[environment.pk]), HTTP_HX_REQUEST="true"
    )
    assert '<div id="env-when" hx-swap-oob="true"><dt>Deleted at</dt>' in response.content.decode()


def test_it_shows_expired_when_the_time_is_up(owner, team, shop):
    environment = make_environment(
        owner=owner, team=team, version=shop, expires_at=timezone.now() - timedelta(seconds=1)
    )
    response = client_for(owner).get(reverse("environment_status", args=[environment.pk]))
    assert "Expired</time>" in response.content.decode()


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


def test_it_polls_a_pending_request_slowly_until_it_is_decided(owner, team, shop):
    environment = make_environment(
        owner=owner, team=team, version=shop, state=State.PENDING_APPROVAL
    )
    response = client_for(owner).get(reverse("environment_status", args=[environment.pk]))
    assert response.status_code == 200
    assert 'hx-trigger="every 5s"' in response.content.decode()
    Environment.objects.filter(pk=environment.pk).update(state=State.REJECTED)
    response = client_for(owner).get(reverse("environment_status", args=[environment.pk]))
    assert response.status_code == 286


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


def test_it_does_not_redirect_to_another_site_after_an_action(owner, env):
    response = client_for(owner).post(
        reverse("environment_extend", args=[env.pk]),
        {"seconds": 3600, "reason": "x", "next": "/\\evil.example.com/"},
    )
    assert response.status_code == 302
    assert "evil" not in response["Location"]


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


def test_it_refuses_an_outsider_a_kubeconfig(outsider, env):
    response = client_for(outsider).post(reverse("environment_kubeconfig", args=[env.pk]))
    assert response.status_code == 404
