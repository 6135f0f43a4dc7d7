"""Egress and resource limits of a real environment on the cluster (issue 14, finding 1).

The local control plane has no network plugin, so a NetworkPolicy is not enforced
here: what is checked is the object the API server stored (both policy types, the DNS
rule, the blocked ranges in every ``except``). The ResourceQuota and LimitRange are
enforced by the API server's admission, so they are checked by their effect.
"""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from environments.catalog.publishing import publish_blueprint
from environments.catalog.spec import BlueprintInvalid
from environments.kube import cluster
from environments.kube.objects import build_manifests
from environments.lifecycle import services
from environments.lifecycle.provisioning import environment_spec
from environments.lifecycle.states import State
from tests.test_provisioning import request, settle

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("on_cluster"),
]


def bare_pod(name: str, resources: dict | None = None) -> dict:
    """A pod that passes the namespace's "restricted" Pod Security level."""
    container: dict = {
        "name": "main",
        "image": "busybox:1.36",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 0},
    }


def test_a_provisioned_environment_denies_egress_and_its_quota_and_defaults_hold(
    owner, sample_blueprints, kube_client
):
    environment = request(owner, sample_blueprints["shop-demo"])
    try:
        settle(environment)
        assert environment.state == State.READY, environment.last_error
        namespace = environment.namespace
        networking = client.NetworkingV1Api(kube_client)
        core = client.CoreV1Api(kube_client)

        policy = kube_client.sanitize_for_serialization(
            networking.read_namespaced_network_policy("ephemera-default-deny", namespace)
        )["spec"]
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        to_namespace, dns, https = policy["egress"]
        assert to_namespace == {"to": [{"podSelector": {}}]}
        assert dns["to"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
        ]
        assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [
            ("TCP", 53),
            ("UDP", 53),
        ]
        # The sample's HTTPS rule, with the platform's blocked ranges added to except.
        block = https["to"][0]["ipBlock"]
        assert block["cidr"] == "0.0.0.0/0"
        assert {"169.254.0.0/16", "100.100.100.200/32", "10.0.0.0/8"} <= set(block["except"])
        assert https["ports"] == [{"protocol": "TCP", "port": 443}]

        quota = core.read_namespaced_resource_quota("ephemera-quota", namespace)
        for key in ("limits.cpu", "limits.memory", "requests.ephemeral-storage"):
            assert key in quota.spec.hard
        assert quota.spec.hard["limits.ephemeral-storage"] == str(2 * 3 * 1024**3)

        # A pod naming no resources gets the LimitRange's defaults, so it fits the quota.
        core.create_namespaced_pod(namespace, bare_pod("no-resources"))
        pod = core.read_namespaced_pod("no-resources", namespace)
        resources = pod.spec.containers[0].resources
        assert resources.requests == {"cpu": "100m", "memory": "128Mi", "ephemeral-storage": "1Gi"}
        assert resources.limits == {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"}

        # A pod asking for more scratch disk (or memory) than the quota leaves is refused.
        for resource, amount in (("ephemeral-storage", "100Gi"), ("memory", "100Gi")):
            values = {"cpu": "100m", "memory": "128Mi", "ephemeral-storage": "1Gi"}
            values[resource] = amount
            with pytest.raises(ApiException) as refused:
                core.create_namespaced_pod(
                    namespace, bare_pod("too-big", {"requests": values, "limits": values})
                )
            assert refused.value.status == 403
            assert "exceeded quota: ephemera-quota" in refused.value.body
            assert f"limits.{resource}" in refused.value.body

        # The manifests of a blueprint with allowed egress are valid on the server
        # (server-side apply, dryRun=All: nothing is stored).
        allowed, _ = publish_blueprint(
            source=environment.blueprint_version.source.replace(
                "ports: [443]}",
                "ports: [443]}\n  - {to: 203.0.113.0/24, except: [203.0.113.128/25], "
                "ports: [53, 5432], protocol: UDP}",
            )
        )
        assert len(allowed.blueprint_spec.egress) == 2
        environment.blueprint_version = allowed
        for manifest in build_manifests(environment_spec(environment)):
            cluster._request(
                "PATCH",
                cluster.object_path(manifest),
                query=[("fieldManager", "ephemera-dry-run"), ("dryRun", "All"), ("force", "true")],
                body=manifest,
                content_type="application/apply-patch+yaml",
            )
        live = networking.read_namespaced_network_policy("ephemera-default-deny", namespace)
        assert len(live.spec.egress) == 3  # the dry run stored nothing
    finally:
        services.delete_environment(environment=environment, user=owner)
        settle(environment)
    assert environment.state == State.DELETED


def test_a_blueprint_asking_for_more_egress_than_the_platform_allows_is_refused_in_one_line(
    sample_blueprints, settings
):
    source = sample_blueprints["shop-demo"].source
    settings.EGRESS_ALLOWED_CIDRS = ["203.0.113.0/24"]
    calls = cluster.request_count
    with pytest.raises(BlueprintInvalid) as refused:
        publish_blueprint(source=source)
    assert refused.value.lines("shop-demo.yaml") == [
        "shop-demo.yaml: egress[0].to: 0.0.0.0/0 is outside what the platform allows "
        "(allowed: 203.0.113.0/24)"
    ]
    settings.EGRESS_ALLOWED_CIDRS = ["0.0.0.0/0"]
    metadata = source.replace(
        "to: 0.0.0.0/0, except: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]",
        "to: 169.254.169.254/32",
    )
    with pytest.raises(BlueprintInvalid) as refused:
        publish_blueprint(source=metadata)
    assert str(refused.value) == (
        "egress[0].to: 169.254.169.254/32 is in a range the platform blocks (169.254.0.0/16)"
    )
    assert cluster.request_count == calls  # refused before any API call
