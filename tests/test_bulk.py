"""Bulk actions (issue 16): extend or delete several environments at once, each with
its own permission check and audit entry, from the dashboard, the API and the CLI."""

from __future__ import annotations

import pytest

from environments.access import tokens
from environments.lifecycle import bulk
from environments.lifecycle.states import State
from environments.models import AuditEvent, Environment
from ephemera_cli.main import build_parser
from tests.conftest import cli_runner, client_for
from tests.factories import make_environment

pytestmark = pytest.mark.django_db

API = "/api/v1"


@pytest.fixture
def mixed(owner, teammate, outsider, team, other_team, shop):
    """Two of the owner's, a teammate's (the owner may not change it: owner-and-leads),
    and an outsider's (the owner may not even see it)."""
    return {
        "mine": [
            make_environment(owner=owner, team=team, version=shop, ttl_hours=1, display_name=n)
            for n in ("first", "second")
        ],
        "teammate": make_environment(owner=teammate, team=team, version=shop, ttl_hours=1),
        "outsider": make_environment(owner=outsider, team=other_team, version=shop, ttl_hours=1),
    }


def _ids(mixed):
    return [
        *(str(e.pk) for e in mixed["mine"]),
        mixed["teammate"].name,
        str(mixed["outsider"].pk),
    ]


def test_it_extends_many_with_one_audit_entry_each_and_names_the_refused(owner, mixed):
    before = {e.pk: e.expires_at for e in mixed["mine"]}
    result = bulk.extend_many(owner, _ids(mixed), 1800)
    assert [o.done for o in result.outcomes] == [True, True, False, False]
    assert [o.label for o in result.refused] == [mixed["teammate"].name, str(mixed["outsider"].pk)]
    assert result.refused[0].message == "You cannot change this environment."
    assert result.refused[1].message == "no such environment, or you may not see it"
    assert "Extended 2 of 4 environments." in result.summary
    for environment in mixed["mine"]:
        environment.refresh_from_db()
        assert (environment.expires_at - before[environment.pk]).total_seconds() == 1800
        entries = AuditEvent.objects.filter(action="environment.extend", object_id=environment.pk)
        assert entries.count() == 1 and entries[0].actor == owner.email
    assert not AuditEvent.objects.filter(
        object_id__in=[mixed["teammate"].pk, mixed["outsider"].pk]
    ).exists()
    # Each environment's own limits still apply: past the blueprint's maximum, refused.
    too_long = bulk.extend_many(owner, [mixed["mine"][0].pk], 30 * 86400)
    assert not too_long.outcomes[0].done and "may live at most" in too_long.outcomes[0].message


def test_it_deletes_many_and_a_lead_may_delete_a_teammates(owner, teammate, mixed, team):
    result = bulk.delete_many(owner, _ids(mixed))
    assert [o.done for o in result.outcomes] == [True, True, False, False]
    for environment in mixed["mine"]:
        environment.refresh_from_db()
        assert environment.state == State.TEARING_DOWN
        assert (
            AuditEvent.objects.filter(action="environment.delete", object_id=environment.pk).count()
            == 1
        )
    assert Environment.objects.get(pk=mixed["teammate"].pk).state == State.READY
    # Twice is not an error; a lead of the team may delete the teammate's.
    again = bulk.delete_many(owner, [mixed["mine"][0].pk])
    assert again.outcomes[0].done and again.outcomes[0].message == "already being deleted"
    team.memberships.filter(user=owner).update(lead=True)
    assert bulk.delete_many(owner, [mixed["teammate"].pk]).outcomes[0].done


def test_it_refuses_empty_and_oversized_selections(owner):
    with pytest.raises(Exception, match="Select at least one environment."):
        bulk.extend_many(owner, [], 3600)
    with pytest.raises(Exception, match="Select at most 100 environments at once; you chose 101."):
        bulk.delete_many(owner, [f"name{n}" for n in range(101)])


def test_the_dashboard_confirms_once_then_acts(owner, mixed):
    client = client_for(owner)
    page = client.get("/environments/team/").content.decode()
    assert 'id="bulk-form"' in page and f'value="{mixed["mine"][0].pk}"' in page
    form = {
        "action": "extend",
        "seconds": "3600",
        "scope": "team",
        "environment": [str(mixed["mine"][0].pk), str(mixed["teammate"].pk)],
    }
    confirm = client.post("/environments/bulk/", form)
    text = confirm.content.decode()
    assert confirm.status_code == 200 and "Extend 1 environment by 1h?" in text
    assert "Skipped:</strong> you cannot change it" in text
    assert not AuditEvent.objects.filter(action="environment.extend").exists()  # not yet
    done = client.post("/environments/bulk/", {**form, "confirmed": "1"}, follow=True)
    assert done.redirect_chain[-1][0] == "/environments/team/"
    shown = [str(m) for m in done.context["messages"]]
    assert shown[0] == "Extended 1 of 2: first (extended by 1h)."
    assert shown[1] == f"Not changed: {mixed['teammate'].name}: You cannot change this environment."
    assert AuditEvent.objects.filter(action="environment.extend").count() == 1
    # A bad choice is one line, nothing done.
    bad = client.post("/environments/bulk/", {**form, "seconds": "soon"}, follow=True)
    assert [str(m) for m in bad.context["messages"]] == [
        "Extend by: 'soon' is not a duration like 30m, 4h or 3d."
    ]


def test_an_outsider_changes_nothing_through_the_dashboard(outsider, mixed):
    client = client_for(outsider)
    form = {"action": "delete", "environment": [str(e.pk) for e in mixed["mine"]]}
    done = client.post("/environments/bulk/", {**form, "confirmed": "1"}, follow=True)
    assert all("no such environment" in str(m) for m in done.context["messages"])
    assert {Environment.objects.get(pk=e.pk).state for e in mixed["mine"]} == {State.READY}
    assert client_for(outsider).get("/environments/bulk/").status_code == 405


def test_the_api_bulk_endpoint_and_a_team_token(owner, team, mixed, client):
    token = tokens.create_token(user=owner, name="me", scope="write", days=1)[1]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    response = client.post(
        f"{API}/environments/bulk",
        {"action": "extend", "environments": _ids(mixed), "seconds": 1800},
        content_type="application/json",
        **headers,
    )
    assert response.status_code == 200
    answer = response.json()
    assert (answer["done"], answer["refused"]) == (2, 2)
    assert answer["results"][2]["message"] == "You cannot change this environment."
    missing = client.post(
        f"{API}/environments/bulk",
        {"action": "extend", "environments": _ids(mixed)},
        content_type="application/json",
        **headers,
    )
    assert missing.status_code == 409 and missing.json()["detail"] == (
        "Say by how much to extend: seconds."
    )
    read_only = tokens.create_token(user=owner, name="ro", scope="read", days=1)[1]
    assert (
        client.post(
            f"{API}/environments/bulk",
            {"action": "delete", "environments": _ids(mixed)},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {read_only}",
        ).status_code
        == 403
    )
    assert {Environment.objects.get(pk=e.pk).state for e in mixed["mine"]} == {State.READY}
    # A team token acts on its team's environments only.
    team_token = tokens.create_token(user=owner, name="ci", scope="write", days=1, team=team)[1]
    answer = client.post(
        f"{API}/environments/bulk",
        {"action": "delete", "environments": _ids(mixed)},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {team_token}",
    ).json()
    assert [r["done"] for r in answer["results"]] == [True, True, False, False]


def test_the_cli_takes_several_environments():
    parser = build_parser()
    extend = parser.parse_args(["extend", "abc12345", "def67890", "1h"])
    assert extend.env == ["abc12345", "def67890"] and extend.duration == "1h"
    assert parser.parse_args(["extend", "abc12345", "30m"]).env == ["abc12345"]
    assert parser.parse_args(["down", "a1", "b2", "c3"]).env == ["a1", "b2", "c3"]


@pytest.mark.django_db(transaction=True)
def test_the_cli_extends_and_deletes_several_through_the_api(live_server, owner, mixed, tmp_path):
    import django_rq

    cli = cli_runner(live_server.url, owner, tmp_path)

    first, second = (e.name for e in mixed["mine"])
    extended = cli("extend", first, second, mixed["teammate"].name, "30m")
    assert extended.returncode == 4  # one was not changed (refused)
    assert extended.stdout.splitlines() == [
        f"{first}: extended by 30m",
        f"{second}: extended by 30m",
    ]
    assert extended.stderr.strip() == (
        f"{mixed['teammate'].name}: You cannot change this environment."
    )
    down = cli("down", first, second)
    assert down.returncode == 0, down.stderr
    assert down.stdout.splitlines() == [f"{first}: deleting", f"{second}: deleting"]
    assert AuditEvent.objects.filter(action="environment.delete").count() == 2
    django_rq.get_queue("teardown").empty()
