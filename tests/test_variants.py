"""Variants of an environment (Qovery's clone) and the environment's own addresses in
templates (``{{ urls.x }}``, ``{{ hosts.x }}``, ``{{ env.name }}``): issue 17."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.conf import settings

from environments.access import tokens
from environments.catalog.publishing import publish_blueprint
from environments.catalog.spec import BlueprintInvalid, load_blueprint
from environments.catalog.variants import VariantInvalid, derive, select_components
from environments.kube import cluster
from environments.lifecycle import services
from environments.lifecycle.states import State
from environments.models import AuditEvent, Environment
from tests.conftest import cli_runner, client_for

# A storefront, its API, a database, and an optional search service. The web front
# reads its API's public URL and the database's Service name from its env.
FULLSTACK = """
name: fullstack
title: Full stack
purpose: e2e
ttl: {default: 2h, max: 1d}
parameters:
  - {name: tag, type: string, default: "1.27-alpine"}
components:
  - name: web
    image: nginxinc/nginx-unprivileged:{{ tag }}
    port: 8080
    resources: {cpu: 200m, memory: 128Mi}
    expose: true
    env:
      API_URL: "{{ urls.api }}"
      DB_HOST: "{{ hosts.db }}"
      ENV_NAME: "{{ env.name }}"
      LOG_LEVEL: info
    overridable: [LOG_LEVEL]
  - name: api
    image: hashicorp/http-echo:1.0
    port: 5678
    args: ["-text=db at {{ hosts.db }}"]
    resources: {cpu: 300m, memory: 256Mi}
    expose: true
  - name: db
    image: bitnami/redis:7.4
    port: 6379
    resources: {cpu: 100m, memory: 128Mi}
  - name: search
    image: hashicorp/http-echo:1.0
    port: 5679
    args: ["-listen=:5679", "-text=search"]
    resources: {cpu: 500m, memory: 512Mi}
    optional: true
quota: {cpu: "4", memory: 4Gi, pods: "10"}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(BlueprintInvalid) as caught:
        load_blueprint(text)
    return [f"{where}: {reason}" for where, reason in caught.value.errors]


@pytest.fixture
def fullstack(db):
    version, _ = publish_blueprint(source=FULLSTACK)
    return version


# --- the blueprint format ---------------------------------------------------------------


def test_optional_components_and_overridable_variables_load():
    spec = load_blueprint(FULLSTACK)
    assert [c.name for c in spec.components if c.optional] == ["search"]
    assert spec.components[0].overridable == ["LOG_LEVEL"]
    # The stored form of a component without them has neither key (digests stay).
    stored = spec.to_dict()["components"]
    assert "optional" not in stored[0] and stored[3]["optional"] is True
    assert "overridable" not in stored[1]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('API_URL: "{{ urls.api }}"', 'API_URL: "{{ urls.db }}"'),
            "components[0].env.API_URL: {{ urls.db }}: component 'db' is not exposed, so it "
            "has no URL",
        ),
        (
            ('DB_HOST: "{{ hosts.db }}"', 'DB_HOST: "{{ hosts.nope }}"'),
            "components[0].env.DB_HOST: {{ hosts.nope }} names no component",
        ),
        (
            ('ENV_NAME: "{{ env.name }}"', 'ENV_NAME: "{{ env.team }}"'),
            "components[0].env.ENV_NAME: {{ env.team }}: the environment has name, not 'team'",
        ),
        (
            ("image: nginxinc/nginx-unprivileged:{{ tag }}", "image: nginx:{{ env.name }}"),
            "components[0].image: {{ env.name }} may only be used in a component's env values "
            "and args",
        ),
        (
            ("overridable: [LOG_LEVEL]", "overridable: [LOG_LEVEL, COLOUR]"),
            "components[0].overridable[1]: 'COLOUR' is not one of this component's env variables",
        ),
        (
            ("    optional: true", "    optional: yes please"),
            "components[3].optional: must be true or false",
        ),
    ],
)
def test_bad_references_and_variant_fields_are_one_line_errors(change, expected):
    old, new = change
    assert old in FULLSTACK
    assert expected in problems(FULLSTACK.replace(old, new))


def test_a_component_without_a_port_has_no_service_name():
    text = FULLSTACK.replace("    port: 6379\n", "")
    assert (
        "components[0].env.DB_HOST: {{ hosts.db }}: component 'db' has no port, so it has no "
        "Service" in problems(text)
    )


def test_a_blueprint_needs_one_component_that_is_not_optional():
    text = """
name: lonely
title: Lonely
purpose: e2e
ttl: {default: 1h, max: 2h}
components:
  - {name: a, image: nginx:1, resources: {cpu: 100m, memory: 64Mi}, optional: true}
"""
    assert "components: needs at least one component that is not optional" in problems(text)


# --- deriving a variant -----------------------------------------------------------------


def test_derive_removes_adds_retags_and_overrides():
    spec = load_blueprint(FULLSTACK)
    # web refers to {{ hosts.db }}: removing db alone is refused.
    with pytest.raises(VariantInvalid) as caught:
        derive(spec, {}, without=["db"])
    assert str(caught.value) == (
        "web refers to {{ hosts.db }}, but db is not in this environment: keep it or remove "
        "web too."
    )
    variant = derive(
        spec,
        {},
        without=["web"],
        with_=["search"],
        images={"api": "1.0-hotfix"},
    )
    assert variant == {"components": ["api", "db", "search"], "images": {"api": "1.0-hotfix"}}
    # Cloning the clone starts from it: web (a default component) may come back.
    again = derive(spec, variant, with_=["web"], without=["search"])
    assert "components" not in again  # the blueprint's own shape again
    assert again["images"] == {"api": "1.0-hotfix"}
    assert [c.name for c in select_components(spec, again)] == ["web", "api", "db"]
    env = derive(spec, {}, env={"web": {"LOG_LEVEL": "debug"}})
    assert env == {"env": {"web": {"LOG_LEVEL": "debug"}}}
    assert select_components(spec, env)[0].env["LOG_LEVEL"] == "debug"
    assert derive(spec, {}) == {}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"without": ["cache"]}, "without: 'cache' is not a component of Full stack."),
        ({"with_": ["api"]}, "with: 'api' is already in this environment."),
        ({"with_": ["nope"]}, "with: 'nope' is not a component of Full stack."),
        ({"images": {"api": "-bad"}}, "images: '-bad' is not a valid image tag for api"),
        ({"images": {"search": "1"}}, "images: 'search' is not a component of this environment."),
        (
            {"env": {"web": {"API_URL": "http://x"}}},
            "env: web.API_URL is not overridable in Full stack (it may change LOG_LEVEL).",
        ),
        ({"env": {"api": {"X": "1"}}}, "env: api.X is not overridable in Full stack."),
        ({"env": {"web": {"LOG_LEVEL": "a\x00b"}}}, "env: web.LOG_LEVEL has a control character."),
        (
            {"without": ["web", "api", "db"]},
            "without: an environment needs at least one component.",
        ),
    ],
)
def test_derive_refuses_what_the_blueprint_does_not_allow(changes, expected):
    with pytest.raises(VariantInvalid) as caught:
        derive(load_blueprint(FULLSTACK), {}, **changes)
    assert str(caught.value).startswith(expected), str(caught.value)


# --- services: price and quota ----------------------------------------------------------


def hand_price(components: list[tuple[str, str]], seconds: int = 3600) -> Decimal:
    """cpu x rate + memory x rate per hour, by hand (an hour: the hourly price)."""
    millicores = {"100m": 100, "200m": 200, "300m": 300, "500m": 500}
    mebibytes = {"128Mi": 128, "256Mi": 256, "512Mi": 512}
    hourly = sum(
        Decimal(millicores[cpu]) / 1000 * settings.COST_PER_CPU_HOUR
        + Decimal(mebibytes[memory]) / 1024 * settings.COST_PER_GIB_HOUR
        for cpu, memory in components
    )
    return (hourly * seconds / 3600).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def test_a_clone_costs_what_its_components_cost(owner, fullstack):
    source = services.request_environment(user=owner, version=fullstack)
    # Default shape: web, api and db (search is optional).
    assert source.hourly_price == hand_price(
        [("200m", "128Mi"), ("300m", "256Mi"), ("100m", "128Mi")]
    )
    clone = services.clone_environment(
        environment=source,
        user=owner,
        without=["web"],
        with_=["search"],
        images={"api": "1.0-hotfix"},
    )
    assert clone.variant == {
        "components": ["api", "db", "search"],
        "images": {"api": "1.0-hotfix"},
    }
    assert clone.parameters == source.parameters
    expected = hand_price([("300m", "256Mi"), ("100m", "128Mi"), ("500m", "512Mi")])
    assert clone.hourly_price == expected
    assert expected != source.hourly_price
    assert clone.cpu_millicores == 900 and clone.memory_bytes == 896 * 1024**2
    entry = AuditEvent.objects.filter(action="environment.clone").latest("created_at")
    assert entry.after["variant"] == clone.variant


def test_a_clone_over_the_budget_is_refused_at_the_variants_price(owner, team, fullstack):
    from environments.models import Quota

    source = services.request_environment(user=owner, version=fullstack)
    # Room for the default shape's price again, not for the clone with search added.
    default_cost = source.hourly_price * 2
    Quota.objects.create(team=team, monthly_budget=default_cost * 2 + Decimal("0.0010"))
    with pytest.raises(services.ServiceError) as caught:
        services.clone_environment(environment=source, user=owner, with_=["search"])
    assert "left this month; this Full stack for 2h costs" in str(caught.value)
    services.clone_environment(environment=source, user=owner)  # the same shape fits


def test_outsiders_cannot_clone(owner, outsider, fullstack):
    from django.core.exceptions import PermissionDenied

    source = services.request_environment(user=owner, version=fullstack)
    with pytest.raises(PermissionDenied):
        services.clone_environment(environment=source, user=outsider, with_=["search"])


# --- the API ----------------------------------------------------------------------------


@pytest.fixture
def api(owner):
    _, plaintext = tokens.create_token(user=owner, name="ci", scope="write", days=1)
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")

    def call(method: str, path: str, body=None):
        return getattr(client, method.lower())(
            "/api/v1" + path,
            data=json.dumps(body) if body is not None else None,
            content_type="application/json",
        )

    return call


def test_the_api_clones_a_variant(api, owner, outsider, fullstack):
    source = services.request_environment(user=owner, version=fullstack)
    answer = api(
        "POST",
        f"/environments/{source.name}/clone",
        {"without": ["web"], "with": ["search"], "images": {"api": "1.0-hotfix"}},
    )
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["components"] == ["api", "db", "search"]
    assert body["variant"]["images"] == {"api": "1.0-hotfix"}

    refused = api("POST", f"/environments/{source.name}/clone", {"with": ["api"]})
    assert refused.status_code == 422
    assert refused.json()["detail"] == "with: 'api' is already in this environment."
    misspelt = api("POST", f"/environments/{source.name}/clone", {"withut": ["web"]})
    assert misspelt.status_code == 422 and "withut" in misspelt.json()["detail"]

    theirs = services.request_environment(user=outsider, version=fullstack)
    hidden = api("POST", f"/environments/{theirs.name}/clone", {})
    assert hidden.status_code == 404
    assert Environment.objects.count() == 3


# --- the web form -----------------------------------------------------------------------


def test_the_clone_form_offers_the_components_and_prices_the_variant(owner, fullstack):
    source = services.request_environment(user=owner, version=fullstack)
    client = client_for(owner)
    page = client.get(f"/blueprints/fullstack/request/?from={source.pk}")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="component_search"' in html and 'name="image_api"' in html
    assert 'name="envvar_web__LOG_LEVEL"' in html
    # The live estimate prices the variant: with search, more than without.
    plain = client.get(
        f"/blueprints/fullstack/estimate/?clone_of={source.pk}&ttl_seconds=7200"
        "&variant_shown=1&component_web=on&component_api=on&component_db=on"
    )
    more = client.get(
        f"/blueprints/fullstack/estimate/?clone_of={source.pk}&ttl_seconds=7200"
        "&variant_shown=1&component_web=on&component_api=on&component_db=on&component_search=on"
    )
    # Two hours at the hourly price (to a hundredth of a cent, as the price shows it).
    assert plain.context["estimate_price"] == 2 * hand_price(
        [("200m", "128Mi"), ("300m", "256Mi"), ("100m", "128Mi")]
    )
    assert more.context["estimate_price"] == 2 * hand_price(
        [("200m", "128Mi"), ("300m", "256Mi"), ("100m", "128Mi"), ("500m", "512Mi")]
    )
    form = {
        "clone_of": str(source.pk),
        "variant_shown": "1",
        "ttl_seconds": "7200",
        "param_tag": "1.27-alpine",
        "component_web": "on",
        "component_api": "on",
        "component_db": "on",
        "component_search": "on",
        "image_api": "1.0-hotfix",
        "envvar_web__LOG_LEVEL": "debug",
    }
    made = client.post("/blueprints/fullstack/request/", form)
    assert made.status_code == 302, made.content.decode()[:2000]
    clone = Environment.objects.exclude(pk=source.pk).get()
    assert clone.variant == {
        "components": ["web", "api", "db", "search"],
        "images": {"api": "1.0-hotfix"},
        "env": {"web": {"LOG_LEVEL": "debug"}},
    }
    detail = client.get(clone.get_absolute_url()).content.decode()
    assert "api image tag: 1.0-hotfix" in detail
    # Leaving db out while web still needs it: one sentence, nothing created.
    refused = client.post("/blueprints/fullstack/request/", {**form, "component_db": ""})
    assert refused.status_code == 400
    assert "web refers to {{ hosts.db }}, but db is not in this environment" in (
        refused.content.decode()
    )
    assert Environment.objects.count() == 2


# --- on the cluster ---------------------------------------------------------------------


def deployments(namespace: str) -> dict[str, dict]:
    from kubernetes import client

    apps = client.AppsV1Api(cluster.api_client())
    return {
        d.metadata.name: {
            "image": d.spec.template.spec.containers[0].image,
            "env": {e.name: e.value for e in d.spec.template.spec.containers[0].env or []},
            "args": d.spec.template.spec.containers[0].args or [],
        }
        for d in apps.list_namespaced_deployment(namespace).items
    }


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("on_cluster")
def test_a_variant_has_exactly_its_deployments_and_urls_reach_the_components(owner):
    from tests.test_provisioning import run_worker_and_watcher, settle

    version, _ = publish_blueprint(source=FULLSTACK)
    source = services.request_environment(user=owner, version=version)
    clone = services.clone_environment(
        environment=source,
        user=owner,
        without=["web"],
        with_=["search"],
        images={"api": "1.0-hotfix"},
    )
    settle(source, clone)
    assert source.state == State.READY, source.last_error
    assert clone.state == State.READY, clone.last_error

    live = deployments(source.namespace)
    assert sorted(live) == ["api", "db", "web"]
    web = live["web"]["env"]
    # The environment's own addresses, filled in on the cluster.
    assert web["API_URL"] == f"https://api-{source.name}.{settings.BASE_DOMAIN}/"
    assert web["API_URL"] == source.urls["api"]
    assert web["DB_HOST"] == f"db.{source.namespace}.svc.cluster.local"
    assert web["ENV_NAME"] == source.name
    assert live["api"]["args"] == [f"-text=db at db.{source.namespace}.svc.cluster.local"]

    cloned = deployments(clone.namespace)
    assert sorted(cloned) == ["api", "db", "search"]
    assert cloned["api"]["image"] == "hashicorp/http-echo:1.0-hotfix"
    assert cloned["db"]["image"] == "bitnami/redis:7.4"
    assert cloned["api"]["args"] == [f"-text=db at db.{clone.namespace}.svc.cluster.local"]
    assert sorted(clone.urls) == ["api"]

    for environment in (source, clone):
        services.delete_environment(environment=environment, user=owner)
    run_worker_and_watcher()


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("on_cluster")
def test_the_cli_clones_a_variant(live_server, owner):
    version, _ = publish_blueprint(source=FULLSTACK)
    source = services.request_environment(user=owner, version=version)
    cli = cli_runner(live_server.url, owner, "/nonexistent")

    made = cli(
        "clone",
        source.name,
        "--with",
        "search",
        "--image",
        "api=1.0-hotfix",
        "--set",
        "web.LOG_LEVEL=debug",
    )
    assert made.returncode == 0, made.stderr
    clone = Environment.objects.exclude(pk=source.pk).get()
    assert f"Cloned {source.name} as {clone.name} (web, api, db, search)" in made.stdout
    assert clone.variant["env"] == {"web": {"LOG_LEVEL": "debug"}}

    refused = cli("clone", source.name, "--set", "web.API_URL=x")
    assert refused.returncode != 0
    assert "env: web.API_URL is not overridable in Full stack" in refused.stderr
    bad = cli("clone", source.name, "--image", "api")
    assert bad.returncode != 0 and "write it as COMPONENT=VALUE" in bad.stderr
    assert Environment.objects.count() == 2
