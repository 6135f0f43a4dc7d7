"""The Helm chart (deploy/chart): lint, render, a server-side dry run, a real install,
upgrade and rollback on the local control plane (kwok simulates the pods)."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import wait_for
from tests.helmchart import (
    CHART,
    KUBE_VERSION,
    REQUIRED_VALUES,
    chart_copy,
    helm,
    render,
)

pytestmark = [pytest.mark.cluster]


def by_kind(manifests: list[dict], kind: str) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def test_helm_lint_passes_strictly():
    result = helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, *REQUIRED_VALUES)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "database: set database.url or database.existingSecret.name"),
        (["--set", "bogus=1"], "additional properties 'bogus' not allowed"),
        (["--set", "database.url=mysql://x/y"], "does not match pattern"),
        (["--set", "secretKey.value=short"], "secretKey/value"),
        (["--set", "web.replicas=-1"], "web/replicas"),
        (["--set", "config.ingressUrlScheme=ftp"], "ingressUrlScheme"),
        (["--set", "ingress.enabled=true"], "ingress.host: set the portal's host name"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(values, message):
    args = ["template", "t", str(CHART), "--kube-version", KUBE_VERSION]
    if values:  # the first case leaves out the required values on purpose
        args += REQUIRED_VALUES
    result = helm(*args, *values, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_it_renders_the_processes_identities_and_policy():
    manifests = render("--set", "ingress.enabled=true", "--set", "ingress.host=e.example.com")
    deployments = by_kind(manifests, "Deployment")
    assert sorted(deployments) == [
        f"t-ephemera-{c}" for c in ("scheduler", "watcher", "web", "worker")
    ]
    replicas = {name.rsplit("-", 1)[1]: d["spec"]["replicas"] for name, d in deployments.items()}
    assert replicas == {"web": 2, "worker": 2, "watcher": 2, "scheduler": 1}
    accounts = {}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        component = name.rsplit("-", 1)[1]
        assert container["args"] == [component]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert pod["securityContext"]["runAsUser"] == 10001
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert container["resources"]["requests"]
        env = {e["name"]: e for e in container["env"]}
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "t-ephemera-secrets"
        assert env["KUBE_USER_CLUSTER_ROLE_PREFIX"]["value"] == "t-ephemera-user-"
        accounts[component] = (pod["serviceAccountName"], pod["automountServiceAccountToken"])
        if component == "web":
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert env["KUBE_LOGS_AS_ENVIRONMENT_USER"]["value"] == "true"
        else:
            assert "livenessProbe" not in container and "ports" not in container
    assert accounts == {
        "web": ("t-ephemera-web", True),
        "worker": ("t-ephemera-controller", True),
        "watcher": ("t-ephemera-controller", True),
        "scheduler": ("t-ephemera-scheduler", False),
    }
    (job,) = by_kind(manifests, "Job").values()
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert sorted(by_kind(manifests, "PodDisruptionBudget")) == [
        "t-ephemera-watcher",
        "t-ephemera-web",
        "t-ephemera-worker",
    ]
    assert (
        by_kind(manifests, "Ingress")["t-ephemera"]["spec"]["rules"][0]["host"] == "e.example.com"
    )
    # Cluster-scoped objects carry the release's name.
    for kind in ("ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy"):
        assert all(name.startswith("t-ephemera-") for name in by_kind(manifests, kind)), kind
    roles = by_kind(manifests, "ClusterRole")
    assert sorted(roles) == [
        "t-ephemera-controller",
        "t-ephemera-user-edit",
        "t-ephemera-user-secrets",
        "t-ephemera-user-view",
        "t-ephemera-web",
    ]
    # The user ClusterRoles are exactly the shared rules the local cluster uses too.
    from tests.kubecluster import load_launcher

    rules = load_launcher().access_rules()
    assert roles["t-ephemera-user-edit"]["rules"] == rules["edit"]
    assert roles["t-ephemera-user-view"]["rules"] == rules["view"]
    assert roles["t-ephemera-user-secrets"]["rules"] == rules["secrets"]


def test_existing_secrets_replace_the_charts_own_secret():
    manifests = render(
        "--set",
        "database.url=",
        "--set",
        "database.existingSecret.name=db",
        "--set",
        "redis.url=",
        "--set",
        "redis.existingSecret.name=cache",
        "--set",
        "redis.existingSecret.key=url",
        "--set",
        "secretKey.existingSecret.name=keys",
    )
    assert "Secret" not in [m["kind"] for m in manifests]
    web = by_kind(manifests, "Deployment")["t-ephemera-web"]
    env = {e["name"]: e for e in web["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "db", "key": "DATABASE_URL"}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "cache", "key": "url"}
    assert env["SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "keys", "key": "SECRET_KEY"}


def test_the_prometheus_rule_comes_from_files_alerts_yaml_and_renders_without_it(tmp_path):
    chart = chart_copy(tmp_path)
    alerts = chart / "files" / "alerts.yaml"
    alerts.unlink(missing_ok=True)
    on = ("--set", "metrics.prometheusRule.enabled=true")
    assert "PrometheusRule" not in [m["kind"] for m in render(*on, chart=chart)]
    alerts.write_text(
        "groups:\n- name: ephemera\n  rules:\n  - alert: EphemeraDown\n    expr: up == 0\n"
    )
    (rule,) = [m for m in render(*on, chart=chart) if m["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"][0]["rules"][0]["alert"] == "EphemeraDown"
    # A whole PrometheusRule in the file: its spec is used.
    alerts.write_text(
        "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: x}\n"
        "spec:\n  groups:\n  - name: g\n    rules:\n    - alert: QueueStuck\n      expr: 'x > 1'\n"
    )
    (rule,) = [m for m in render(*on, chart=chart) if m["kind"] == "PrometheusRule"]
    assert rule["spec"] == {
        "groups": [{"name": "g", "rules": [{"alert": "QueueStuck", "expr": "x > 1"}]}]
    }
    assert "PrometheusRule" not in [m["kind"] for m in render(chart=chart)]  # off by default


def test_the_rendered_chart_passes_a_server_side_dry_run(kube_client, kube_namespace):
    from kubernetes.dynamic import DynamicClient

    manifests = render(
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.host=e.example.com",
        release="dry",
        namespace=kube_namespace,
    )
    dynamic = DynamicClient(kube_client)
    for manifest in manifests:
        resource = dynamic.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
        namespace = kube_namespace if resource.namespaced else None
        created = resource.create(body=manifest, namespace=namespace, dry_run="All")
        assert created.metadata.name == manifest["metadata"]["name"]
    # A dry run: nothing was made.
    from kubernetes import client

    apps = client.AppsV1Api(kube_client)
    assert not apps.list_namespaced_deployment(kube_namespace).items


def deployments_of(kube_client, namespace: str) -> dict[str, dict]:
    from kubernetes import client

    items = client.AppsV1Api(kube_client).list_namespaced_deployment(namespace).items
    return {d.metadata.name: d for d in items}


def available(deployment) -> bool:
    return (
        any(
            c.type == "Available" and c.status == "True" for c in deployment.status.conditions or []
        )
        and (deployment.status.available_replicas or 0) == deployment.spec.replicas
    )


def test_an_install_brings_every_deployment_to_available(chart_release, kube_client):
    from kubernetes import client

    namespace = chart_release.namespace
    names = [f"{chart_release.fullname}-{c}" for c in ("web", "worker", "watcher", "scheduler")]
    wait_for(
        lambda: all(
            (d := deployments_of(kube_client, namespace).get(n)) is not None and available(d)
            for n in names
        ),
        timeout=180,
    )
    status = helm(
        "status",
        chart_release.name,
        "-n",
        namespace,
        "-o",
        "yaml",
        kubeconfig=chart_release.kubeconfig,
    ).stdout
    assert yaml.safe_load(status)["info"]["status"] == "deployed"
    # The migrate hook ran to completion (a succeeded hook Job is deleted) before the
    # Deployments were made; kwok completed its pod.
    hooks = yaml.safe_load(status).get("hooks", [])
    assert any(h["name"] == f"{chart_release.fullname}-migrate" for h in hooks)
    assert not client.BatchV1Api(kube_client).list_namespaced_job(namespace).items
    pods = client.CoreV1Api(kube_client).list_namespaced_pod(namespace).items
    scheduler = [p for p in pods if p.metadata.labels["app.kubernetes.io/component"] == "scheduler"]
    assert scheduler and all(not p.spec.automount_service_account_token for p in scheduler)
    assert all(not any(v.projected for v in p.spec.volumes or []) for p in scheduler), (
        "the scheduler must get no service account token"
    )


def test_upgrade_and_rollback(chart_release, kube_client):
    namespace = chart_release.namespace
    web = f"{chart_release.fullname}-web"
    helm(
        "upgrade",
        chart_release.name,
        str(CHART),
        "-n",
        namespace,
        "--reuse-values",
        "--set",
        "web.replicas=3",
        "--wait",
        "--timeout",
        "5m",
        kubeconfig=chart_release.kubeconfig,
    )
    deployment = deployments_of(kube_client, namespace)[web]
    assert deployment.spec.replicas == 3 and available(deployment)
    helm(
        "rollback",
        chart_release.name,
        "1",
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "5m",
        kubeconfig=chart_release.kubeconfig,
    )
    wait_for(
        lambda: (
            available(d := deployments_of(kube_client, namespace)[web]) and d.spec.replicas == 2
        ),
        timeout=120,
    )
    history = helm(
        "history",
        chart_release.name,
        "-n",
        namespace,
        "-o",
        "yaml",
        kubeconfig=chart_release.kubeconfig,
    ).stdout
    assert [h["revision"] for h in yaml.safe_load(history)] == [1, 2, 3]
