"""Generated credentials: declared by a blueprint, made per environment in its namespace,
referred to by secretKeyRef, shown to the owner on request, stored nowhere else."""

from __future__ import annotations

import base64
import json

import pytest
import yaml
from django.db import connection
from django.urls import reverse
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from environments.access.kubeconfig import kubeconfig_for
from environments.catalog.spec import BlueprintInvalid, as_blueprint_spec, parse_blueprint
from environments.kube import objects
from environments.lifecycle import services
from environments.lifecycle.states import State
from tests.conftest import BLUEPRINTS, client_for
from tests.test_provisioning import request
from tests.test_provisioning import run_worker_and_watcher as run_worker

HOTFIX = (BLUEPRINTS / "hotfix.yaml").read_text()


@pytest.mark.parametrize(
    ("secrets", "reference", "error"),
    [
        ("[{name: Db_pw}]", "Db_pw", "secrets[0].name: 'Db_pw' is not a valid DNS-1123 label"),
        ("[{name: pw, length: 8}]", "pw", "secrets[0].length: 8 is not a whole number 16-128"),
        ("[{name: pw, length: 500}]", "pw", "secrets[0].length: 500 is not a whole number"),
        ("[{name: pw}, {name: pw}]", "pw", "secrets[1].name: 'pw' is declared twice"),
        ("{pw: 24}", "pw", "secrets: must be a list, got a mapping"),
        ("[{name: pw}]", "nope", "{{ secrets.nope }} names no declared secret"),
        ("[{name: pw, size: 3}]", "pw", "secrets[0].size"),
    ],
)
def test_it_validates_generated_secrets_in_one_line(secrets, reference, error):
    source = HOTFIX.replace("secrets.db-password", f"secrets.{reference}").replace(
        "  - {name: db-password, length: 24}", f"  {secrets}"
    )
    source = source.replace("secrets:\n  [", "secrets: [").replace("secrets:\n  {", "secrets: {")
    with pytest.raises(BlueprintInvalid) as excinfo:
        parse_blueprint(source)
    assert error in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_a_secret_is_only_ever_a_whole_value():
    source = HOTFIX.replace('"{{ secrets.db-password }}"}', '"pw={{ secrets.db-password }}"}')
    with pytest.raises(BlueprintInvalid, match="a secret may only be the whole value"):
        parse_blueprint(source)


def test_the_manifests_hold_a_secret_key_ref_never_a_value():
    spec = as_blueprint_spec(parse_blueprint(HOTFIX))
    assert [s.model_dump() for s in spec.secrets] == [{"name": "db-password", "length": 24}]
    from environments.catalog.rendering import render_components

    env = objects.EnvironmentSpec(
        environment_id="e1",
        name="abc",
        owner_id="1",
        team="t",
        blueprint="hotfix-test",
        expires_at="2030-01-01T00:00:00+00:00",
        components=render_components(spec, {"image_tag": "1.0"}),
        secrets=[{"name": "db-password", "length": 24}],
    )
    manifests = objects.build_manifests(env)
    db = next(m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == "db")
    assert db["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {
            "name": "POSTGRESQL_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "ephemera-secrets", "key": "db-password"}},
        }
    ]
    assert "Secret" not in [m["kind"] for m in manifests]
    readers = [m for m in manifests if m["metadata"]["name"] == objects.SECRETS_READER]
    assert [m["kind"] for m in readers] == ["ServiceAccount", "RoleBinding"]
    assert readers[1]["roleRef"]["name"] == "ephemera-user-secrets"
    # Without declared secrets, no reader.
    plain = objects.EnvironmentSpec(**{**env.__dict__, "secrets": []})
    assert objects.SECRETS_READER not in json.dumps(objects.build_manifests(plain))


def everything_stored() -> str:
    """Every row of every table of the portal's database, as text."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
        )
        tables = [row[0] for row in cursor.fetchall()]
        dump = []
        for table in tables:
            cursor.execute(f'SELECT t::text FROM "{table}" t')  # noqa: S608 (our own tables)
            dump += [row[0] for row in cursor.fetchall()]
    return "\n".join(dump)


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("on_cluster")
def test_a_generated_secret_lives_in_the_namespace_only_and_the_owner_sees_it(
    owner, outsider, sample_blueprints, kube_client
):
    environment = request(owner, sample_blueprints["hotfix"])
    run_worker()
    environment.refresh_from_db()
    assert environment.state == State.READY, environment.last_error
    core = client.CoreV1Api(kube_client)

    # In the namespace: 24 letters and digits, made for this environment.
    secret = core.read_namespaced_secret("ephemera-secrets", environment.namespace)
    value = base64.b64decode(secret.data["db-password"]).decode()
    assert len(value) == 24 and value.isalnum()
    db = client.AppsV1Api(kube_client).read_namespaced_deployment("db", environment.namespace)
    (var,) = db.spec.template.spec.containers[0].env
    assert var.value is None
    assert (var.value_from.secret_key_ref.name, var.value_from.secret_key_ref.key) == (
        "ephemera-secrets",
        "db-password",
    )

    # Nowhere in the portal: not the recorded manifests, the database, the audit log, the
    # environment page (which shows the manifests) or a catalogue search.
    assert value not in json.dumps(environment.manifests)
    owner_client = client_for(owner)
    page = owner_client.get(reverse("environment_detail", args=[environment.pk]))
    assert page.status_code == 200 and value not in page.content.decode()
    found = owner_client.get(reverse("catalogue"), {"q": value}).content.decode()
    assert reverse("request", args=["hotfix-test"]) not in found

    # The owner reveals it on request (never cached); an outsider gets 404.
    shown = owner_client.post(reverse("environment_credentials", args=[environment.pk]))
    assert shown.status_code == 200
    assert value in shown.content.decode() and "Database password" in shown.content.decode()
    assert shown["Cache-Control"] == "no-store"
    refused = client_for(outsider).post(reverse("environment_credentials", args=[environment.pk]))
    assert refused.status_code == 404
    assert value not in everything_stored()

    # A kubeconfig (view) cannot read it.
    holder = client.CoreV1Api(
        config.new_client_from_config_dict(
            yaml.safe_load(kubeconfig_for(environment=environment, user=owner))
        )
    )
    with pytest.raises(ApiException) as excinfo:
        holder.read_namespaced_secret("ephemera-secrets", environment.namespace)
    assert excinfo.value.status == 403

    # An update keeps it (a database keeps its password); it dies with the namespace.
    services.update_environment(
        environment=environment, user=owner, parameters={"image_tag": "6.7.2"}
    )
    run_worker()
    again = core.read_namespaced_secret("ephemera-secrets", environment.namespace)
    assert base64.b64decode(again.data["db-password"]).decode() == value
    services.delete_environment(environment=environment, user=owner)
    run_worker()
    with pytest.raises(ApiException) as excinfo:
        core.read_namespaced_secret("ephemera-secrets", environment.namespace)
    assert excinfo.value.status == 404
    assert value not in everything_stored()
