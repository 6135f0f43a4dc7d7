"""The portal admins' list of every environment."""

from __future__ import annotations

import pytest
from django.urls import reverse

from environments.lifecycle.states import State
from tests.conftest import client_for
from tests.factories import make_environment

pytestmark = pytest.mark.django_db


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
