"""Issue 12, defect 8's smaller points that need no browser: worded parameter formats,
clone's reason, a deleted environment's page, labels, the 404 with DEBUG on, the
shortest TTL, the CLI's TTL message and the approver's own request. The browser side of
them is in test_browser_details.py."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from django.urls import reverse
from django.utils import timezone

from environments.catalog.spec import (
    DEFAULT_PATTERN_HINT,
    BlueprintInvalid,
    BlueprintSpec,
    coerce_parameter,
    load_blueprint,
)
from environments.lib.durations import MIN_TTL_SECONDS
from environments.lifecycle import services
from environments.lifecycle.states import State
from environments.models import Environment
from tests.conftest import ROOT, client_for
from tests.factories import make_environment
from tests.test_blueprints import GOOD

pytestmark = pytest.mark.django_db


# --- worded formats -------------------------------------------------------------------


def test_it_words_a_parameters_format_from_its_hint_or_the_default_pattern():
    hinted = load_blueprint(
        GOOD.replace(
            'pattern: "^[A-Za-z0-9._-]{1,64}$"}',
            'pattern: "^[a-z0-9.-]{1,20}$", hint: "lowercase letters, digits, dots and dashes"}',
        )
    ).parameters[0]
    assert hinted.hint == "lowercase letters, digits, dots and dashes"
    assert hinted.format_hint == "lowercase letters, digits, dots and dashes"
    with pytest.raises(ValueError) as refused:
        coerce_parameter(hinted, "Bad Tag!")
    assert str(refused.value) == (
        "'Bad Tag!' is not in the right format: lowercase letters, digits, dots and dashes"
    )

    default = load_blueprint(GOOD.replace(', pattern: "^[A-Za-z0-9._-]{1,64}$"', "")).parameters[0]
    assert default.format_hint == DEFAULT_PATTERN_HINT
    assert DEFAULT_PATTERN_HINT == "letters, digits, dots, dashes and underscores, up to 63"
    with pytest.raises(ValueError, match="is not in the right format: letters, digits, dots"):
        coerce_parameter(default, "a b")

    # A pattern of one's own with no hint: no regex for the requester either.
    own = load_blueprint(GOOD).parameters[0]
    assert own.format_hint == ""
    with pytest.raises(ValueError) as refused:
        coerce_parameter(own, "a b")
    assert "[" not in str(refused.value) and "format this blueprint asks for" in str(refused.value)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ('default: "1.4.2",', 'default: "1.4.2", hint: 12,'),
        ('default: "1.4.2",', 'default: "1.4.2", hint: "' + "x" * 201 + '",'),
    ],
)
def test_it_refuses_a_bad_hint_in_one_line(change, error):
    with pytest.raises(BlueprintInvalid) as refused:
        load_blueprint(GOOD.replace(change, error))
    assert len(refused.value.errors) == 1
    path, reason = refused.value.errors[0]
    assert path == "parameters[0].hint"
    assert reason in ("must be one line of text", "is longer than 200 characters")


def test_it_refuses_a_hint_on_a_parameter_that_is_not_a_string():
    source = GOOD.replace(
        "parameters:\n", "parameters:\n  - {name: seats, type: integer, default: 1, hint: many}\n"
    )
    with pytest.raises(BlueprintInvalid) as refused:
        load_blueprint(source)
    assert refused.value.errors == [("parameters[0].hint", "only string parameters have a hint")]


def test_it_still_loads_a_stored_spec_written_before_hints(shop):
    stored = dict(shop.spec)
    stored["parameters"] = [
        {k: v for k, v in p.items() if k != "hint"} for p in stored["parameters"]
    ]
    spec = BlueprintSpec.model_validate(stored)
    customer = spec.parameters[0]
    assert customer.hint == "" and customer.format_hint == ""  # its own pattern, unworded


def test_it_shows_the_format_under_the_field_before_submitting(owner, shop):
    body = client_for(owner).get(reverse("request", args=["shop-demo"])).content.decode()
    assert "Format: lowercase letters, digits and dashes, up to 30." in body


# --- clone, deleted, labels -----------------------------------------------------------


def test_it_clones_with_the_previous_reason(owner, team, shop):
    source = make_environment(
        owner=owner, team=team, version=shop, reason="Globex call on Tuesday", parameters={}
    )
    client_for(owner).post(reverse("environment_clone", args=[source.pk]))
    clone = Environment.objects.exclude(pk=source.pk).get()
    assert clone.reason == "Globex call on Tuesday"


def test_a_deleted_environments_page_says_when_it_was_deleted(owner, team, shop):
    deleted_at = timezone.now()
    environment = make_environment(
        owner=owner,
        team=team,
        version=shop,
        state=State.DELETED,
        deleted_at=deleted_at,
        component_status={"web": {"ready": True, "available": 1, "replicas": 1}},
    )
    body = client_for(owner).get(environment.get_absolute_url()).content.decode()
    assert "<dt>Deleted at</dt>" in body and "Deleted at " in body
    assert "<dt>Expires</dt>" not in body and "Time left" not in body
    assert "Not started" not in body
    components = body.split('<ul class="readiness">')[1].split("</ul>")[0]
    assert components.count('<span class="badge muted">Deleted</span>') == len(shop.components)
    assert "Ready" not in components  # the last status seen is no longer true


def test_it_shows_parameters_by_their_labels(owner, team, shop):
    environment = make_environment(
        owner=owner, team=team, version=shop, parameters={"customer": "globex", "theme": "dark"}
    )
    body = client_for(owner).get(environment.get_absolute_url()).content.decode()
    assert "<dt>Customer name</dt><dd><code>globex</code>" in body
    assert "<dt>Theme</dt><dd><code>dark</code>" in body
    assert "<dt>customer</dt>" not in body


# --- 404, TTL, CLI, approvals ---------------------------------------------------------


def test_the_404_is_the_portals_own_page_even_with_debug_on(settings, owner, client):
    settings.DEBUG = True
    client.force_login(owner)
    for url in ("/no-such-page/", "/environments/00000000-0000-0000-0000-000000000000/"):
        response = client.get(url)
        assert response.status_code == 404
        body = response.content.decode()
        assert "There is nothing here, or it isn’t yours to see." in body
        assert "URLconf" not in body and "DEBUG = True" not in body
    # The API keeps its JSON answer.
    api = client.get("/api/v1/environments/00000000-0000-0000-0000-000000000000")
    assert api.status_code in (401, 404) and api["Content-Type"].startswith("application/json")


def test_the_shortest_ttl_offered_is_the_services_minimum(owner, shop):
    body = client_for(owner).get(reverse("request", args=["shop-demo"])).content.decode()
    select = body.split('name="ttl_seconds"')[1].split("</select>")[0]
    offered = [int(v) for v in re.findall(r'value="(\d+)"', select)]
    assert min(offered) == MIN_TTL_SECONDS == services.MIN_TTL_SECONDS


def test_the_cli_says_a_ttl_is_under_the_minimum(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ephemera_cli.main", "up", "shop-demo", "--ttl", "4m"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "EPHEMERA_URL": "http://127.0.0.1:9",  # never reached: refused before any call
            "EPHEMERA_TOKEN": "eph_00000000_unused",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2  # a usage error (ephemera --help: exit codes)
    assert result.stderr.strip() == "ephemera: --ttl 4m is under the 5m minimum"


def test_the_approvers_own_request_has_no_approve_button(approver, owner, team, shop):
    own = make_environment(owner=approver, team=team, version=shop, state=State.PENDING_APPROVAL)
    theirs = make_environment(owner=owner, team=team, version=shop, state=State.PENDING_APPROVAL)
    body = client_for(approver).get(reverse("approvals")).content.decode()
    own_card = body.split(f'id="approval-{own.pk}"')[1].split("</article>")[0]
    their_card = body.split(f'id="approval-{theirs.pk}"')[1].split("</article>")[0]
    assert "Approve" not in own_card and "Reject" not in own_card
    assert "another approver decides it" in own_card
    assert f'aria-label="Approve {theirs.namespace}"' in their_card
