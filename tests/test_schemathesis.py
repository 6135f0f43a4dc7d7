"""The API against its own OpenAPI document (schemathesis): no 5xx, no schema violations.

Two runs: every operation on its own (stateless), and stateful, following the links
the document declares (create -> get -> extend / change -> delete) with the real ids
the server answered.

Requests go to the live server with a real write token, so generated input passes
through authentication, the services and PostgreSQL like any client's.

The document is built at collection time from the same NinjaAPI object that serves
/api/v1/openapi.json (the live server is not up yet then; and schemathesis 4.32's
``pytest.from_fixture`` loader breaks on pytest 9's node ids). A separate test checks
that the served document is this one.
"""

from __future__ import annotations

import copy
import json
import uuid

import django_rq
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from ninja.responses import NinjaJSONEncoder
from schemathesis.specs.openapi.checks import negative_data_rejection

from environments.access import tokens
from environments.api.urls import api
from environments.lifecycle.states import FINAL_STATES, State
from environments.models import Environment, IdempotencyKey

pytestmark = pytest.mark.django_db(transaction=True)

DOCUMENT = json.loads(
    json.dumps(api.get_openapi_schema(path_prefix="/api/v1/"), cls=NinjaJSONEncoder)
)
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture(autouse=True)
def _short_waits(settings):  # noqa: F811 (pytest-django's settings, not hypothesis')
    """A generated ?wait= must not hold the run for minutes."""
    settings.API_WAIT_MAX_SECONDS = 0.2


@pytest.fixture
def write_token(owner, sample_blueprints):
    token = tokens.create_token(user=owner, name="schemathesis", scope="write", days=1)[1]
    yield token
    # Generated requests may have queued provision jobs for rows that go with this test.
    for name in ("default", "provision", "teardown"):
        django_rq.get_queue(name).empty()


def test_it_serves_the_document_under_test(live_server):
    import urllib.request

    with urllib.request.urlopen(f"{live_server.url}/api/v1/openapi.json") as response:
        assert json.loads(response.read()) == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    # The same examples on every run, so CI is red only for a real regression. To explore
    # further, run locally with derandomize off and more max_examples.
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_it_conforms_to_its_openapi_document(case, live_server, write_token):
    case.call_and_validate(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {write_token}"},
        # Negative cases that drop the Authorization header get it back from ``headers``
        # here, and unknown query parameters are ignored on purpose, so this check would
        # only report those. Status codes, content types and bodies are all checked.
        excluded_checks=[negative_data_rejection],
    )


def _stateful_document() -> dict:
    """The document with the request body of create narrowed to what can succeed here:
    the test's blueprints and no parameters (random names would all be refused), so the
    run reaches the links. Every other input is generated from the document as served."""
    document = copy.deepcopy(DOCUMENT)
    body = document["components"]["schemas"]["EnvironmentIn"]["properties"]
    body["blueprint"] = {"type": "string", "enum": ["pr-preview", "shop-demo"]}
    body["parameters"] = {"type": "object", "maxProperties": 0}
    body["team"] = {"type": "null"}
    return document


STATEFUL = schemathesis.openapi.from_dict(_stateful_document())


def test_the_document_declares_links_from_create_to_the_next_steps():
    created = DOCUMENT["paths"]["/api/v1/environments"]["post"]["responses"]["201"]
    steps = {link["operationId"] for link in created["links"].values()}
    assert {
        "environments_api_routes_get_environment",
        "environments_api_routes_extend_environment",
        "environments_api_routes_delete_environment",
    } <= steps
    for link in created["links"].values():
        assert link["parameters"] == {"ref": "$response.body#/id"}
    got = DOCUMENT["paths"]["/api/v1/environments/{ref}"]["get"]["responses"]["200"]
    assert "ExtendEnvironment" in got["links"]


def test_it_follows_the_links_statefully(live_server, write_token):
    followed: list[str] = []

    class Machine(STATEFUL.as_state_machine()):  # type: ignore[misc]
        def setup(self):
            # Each scenario starts from the same server state (no environment counts
            # against quotas, no key is taken), so a derandomized run is repeatable.
            Environment.objects.exclude(state__in=FINAL_STATES).update(state=State.DELETED)
            IdempotencyKey.objects.all().delete()

        def before_call(self, case):
            # A generated key may repeat with another body: a 422 by contract
            # (test_api_pipelines checks it), which schemathesis would count as valid
            # input refused. A fresh key per call keeps the header exercised.
            if case.headers and "Idempotency-Key" in case.headers:
                case.headers["Idempotency-Key"] = f"st-{uuid.uuid4()}"

        def get_call_kwargs(self, case):
            return {
                "base_url": live_server.url,
                "headers": {"Authorization": f"Bearer {write_token}"},
            }

        def after_call(self, response, case):
            if "{ref}" in case.path and response.status_code < 300:
                followed.append(f"{case.method} {case.path}")

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(
                response,
                excluded_checks=[negative_data_rejection],
                transport_kwargs=kwargs,
            )

    Machine.run(
        settings=settings_for_stateful,
    )
    # The run reached environments it created, by the ids the server gave.
    assert any(step.startswith("GET ") for step in followed), followed
    assert any(step.startswith(("POST ", "DELETE ", "PATCH ")) for step in followed), followed


settings_for_stateful = settings(
    max_examples=12,
    stateful_step_count=5,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
