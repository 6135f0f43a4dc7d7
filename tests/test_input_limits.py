"""Input limits: parameter values, blueprint patterns, YAML aliases, the GitHub hook.

Each of these once let a small input cost a worker minutes or gigabytes, or gave an
unauthenticated 500. The slow ones run in a forked child with a deadline and a memory
cap, so a regression fails the test instead of hanging or swapping the machine.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import textwrap

import pytest

from environments.access import tokens
from environments.catalog.spec import (
    MAX_PARAMETER_VALUE,
    BlueprintInvalid,
    ParameterSpec,
    coerce_parameter,
    load_blueprint,
)
from environments.lib.signing import sign
from environments.models import Environment, RepositoryHook
from environments.services import publish_blueprint

API = "/api/v1"
EVIL_PATTERN = "^([a-z0-9]+-?)+$"

BLUEPRINT = textwrap.dedent(
    """\
    name: notes
    title: Notes
    purpose: demo
    ttl: {default: 4h, max: 3d}
    parameters:
      - {name: note, type: string, default: "hello", pattern: "PATTERN"}
    components:
      - name: web
        image: "registry.example.com/notes:1"
        port: 8080
        resources: {cpu: 100m, memory: 64Mi}
        env: {NOTE: "{{ note }}"}
    """
)


def _in_child(target, *args, seconds: float = 20, memory_bytes: int = 1 << 30) -> str:
    """Run ``target(*args)`` in a forked child capped in memory; its outcome as text."""
    context = multiprocessing.get_context("fork")
    queue = context.SimpleQueue()

    def run():
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        try:
            queue.put(f"ok: {target(*args)}"[:2000])
        except BaseException as exc:  # the outcome is the test's to judge
            queue.put(f"{type(exc).__name__}: {exc}"[:2000])

    child = context.Process(target=run)
    child.start()
    child.join(seconds)
    if child.is_alive():
        child.kill()
        child.join()
        return "timeout"
    return queue.get() if not queue.empty() else f"died ({child.exitcode})"


def _match(pattern: str, value: str) -> str:
    param = ParameterSpec(name="p", type="string", pattern=pattern)
    try:
        return repr(coerce_parameter(param, value))
    except ValueError as exc:
        return f"refused: {exc}"


# --- parameter values ------------------------------------------------------------


@pytest.fixture
def notes(db):
    version, _ = publish_blueprint(source=BLUEPRINT.replace("PATTERN", "^.*$"))
    return version


@pytest.fixture
def token(owner):
    return tokens.create_token(user=owner, name="ci", scope="write", days=1)[1]


def test_api_parameter_values_are_capped_like_the_form(client, owner, token, notes):
    def request(value):
        return client.post(
            f"{API}/environments",
            {"blueprint": "notes", "parameters": {"note": value}},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )

    response = request("x" * (MAX_PARAMETER_VALUE + 1))
    assert response.status_code == 422, response.content[:300]
    body = response.json()
    assert body["errors"]["note"] == f"is longer than {MAX_PARAMETER_VALUE} characters"
    assert len(response.content) < 1000  # the value is not echoed back
    assert not Environment.objects.exists()
    assert request("x" * MAX_PARAMETER_VALUE).status_code == 201


def test_the_form_uses_the_same_cap(notes, team):
    from environments.web.forms import PARAM_PREFIX, RequestForm

    form = RequestForm(version=notes, teams=[team])
    assert form.fields[PARAM_PREFIX + "note"].max_length == MAX_PARAMETER_VALUE


def test_numbers_are_capped_too():
    param = ParameterSpec(name="n", type="integer")
    with pytest.raises(ValueError, match=f"longer than {MAX_PARAMETER_VALUE}"):
        coerce_parameter(param, "9" * 5000)


# --- patterns --------------------------------------------------------------------


def test_a_backtracking_pattern_answers_at_once():
    outcome = _in_child(_match, EVIL_PATTERN, "a" * 40 + "!", seconds=10)
    assert outcome.startswith("ok: refused:"), outcome
    assert _match(EVIL_PATTERN, "abc-def") == "'abc-def'"


def test_a_pattern_the_engine_cannot_run_is_one_blueprint_error():
    text = BLUEPRINT.replace("PATTERN", "^(a)\\\\1$")  # a backreference
    with pytest.raises(BlueprintInvalid) as caught:
        load_blueprint(text)
    [line] = caught.value.lines("notes.yaml")
    assert line.startswith("notes.yaml: parameters[0].pattern: '^(a)\\\\1$' ")
    assert "backreference" in line or "not supported" in line
    assert "\n" not in line


# --- YAML aliases ------------------------------------------------------------------

LAUGHS = textwrap.dedent(
    """\
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
    name: *i
    """
)


def _load(text: str) -> str:
    try:
        load_blueprint(text)
    except BlueprintInvalid as exc:
        return "\n".join(exc.lines("laughs.yaml"))
    return "loaded"


def test_yaml_aliases_are_refused_in_one_line():
    outcome = _in_child(_load, LAUGHS, seconds=20, memory_bytes=1 << 30)
    assert outcome.startswith("ok: laughs.yaml: line 2, column"), outcome
    assert "aliases" in outcome
    assert len(outcome) < 300


def test_an_alias_in_an_ordinary_blueprint_is_refused_too():
    text = BLUEPRINT.replace("PATTERN", "^.*$") + "tags: &t [a]\nmore: *t\n"
    with pytest.raises(BlueprintInvalid) as caught:
        load_blueprint(text)
    [line] = caught.value.lines("notes.yaml")
    assert "aliases" in line


# --- the GitHub hook -----------------------------------------------------------------

HOOK = f"{API}/hooks/github/"


@pytest.fixture
def hook(owner, team, sample_blueprints):
    return RepositoryHook.objects.create(
        repository="acme/shop",
        secret="hook-secret",
        blueprint=sample_blueprints["pr-preview"].blueprint,
        team=team,
        owner=owner,
    )


def _deliver(client, body: bytes, signature: str):
    return client.post(
        HOOK,
        body,
        content_type="application/json",
        HTTP_X_GITHUB_EVENT="pull_request",
        HTTP_X_GITHUB_DELIVERY="d-1",
        HTTP_X_HUB_SIGNATURE_256=signature,
    )


def test_a_deeply_nested_unsigned_body_is_refused_before_parsing(client, hook):
    body = b"[" * 200_000 + b"]" * 200_000
    response = _deliver(client, body, "sha256=" + "0" * 64)
    assert response.status_code == 401
    assert response.json()["detail"] == (
        "The signature does not match this repository's hook secret."
    )


def test_a_signed_body_that_does_not_parse_is_400(client, hook):
    for body in (b"[" * 200_000 + b"]" * 200_000, b"{not json", b"\xff\xfe", b"[]"):
        response = _deliver(client, body, sign("hook-secret", body))
        assert response.status_code == 400, (body[:10], response.content[:200])
        assert "\n" not in response.json()["detail"]


def test_a_signature_for_another_repository_is_refused(client, hook, owner, team):
    RepositoryHook.objects.create(
        repository="acme/other",
        secret="other-secret",
        blueprint=hook.blueprint,
        team=team,
        owner=owner,
    )
    # Signed with acme/other's secret but naming acme/shop: refused.
    payload = {"action": "opened", "number": 1, "repository": {"full_name": "acme/shop"}}
    body = json.dumps(payload).encode()
    response = _deliver(client, body, sign("other-secret", body))
    assert response.status_code == 401
