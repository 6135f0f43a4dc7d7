"""The pure manifest builders, compared to dicts (KubeSpawner's test_objects style)."""

from __future__ import annotations

import json

from environments.kube import objects

SPEC = objects.EnvironmentSpec(
    environment_id="0b3e8c3e-0000-4000-8000-000000000001",
    name="a1b2c3d4",
    owner_id="7",
    team="sales",
    blueprint="shop",
    expires_at="2026-11-23T18:00:00+00:00",
    components=[
        {
            "name": "web",
            "image": "nginxinc/nginx-unprivileged:1.27",
            "port": 8080,
            "replicas": 2,
            "resources": {"cpu": "250m", "memory": "256Mi"},
            "env": {"B": "2", "A": "1"},
            "args": [],
            "annotations": {},
            "expose": True,
        },
        {
            "name": "worker",
            "image": "busybox:1.36",
            "port": None,
            "replicas": 1,
            "resources": {"cpu": "100m", "memory": "64Mi"},
            "env": {},
            "args": ["sleep", "3600"],
            "annotations": {"example.com/x": "y"},
            "expose": False,
        },
    ],
    quota={"cpu": "1", "memory": "1Gi", "pods": "5"},
    base_domain="env.example.com",
    ingress_namespace="ingress",
)
LABELS = {
    "app.kubernetes.io/managed-by": "ephemera",
    "ephemera.io/environment": SPEC.environment_id,
    "ephemera.io/owner": "7",
    "ephemera.io/team": "sales",
    "ephemera.io/blueprint": "shop",
}


def test_it_builds_the_namespace_with_pss_restricted():
    assert objects.namespace(SPEC) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "eph-a1b2c3d4",
            "labels": {
                **LABELS,
                "ephemera.io/instance": "default",
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "v1.33",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/warn-version": "v1.33",
                "pod-security.kubernetes.io/audit": "restricted",
                "pod-security.kubernetes.io/audit-version": "v1.33",
            },
            "annotations": {"ephemera.io/expires-at": "2026-11-23T18:00:00+00:00"},
        },
    }


def test_it_builds_a_restricted_deployment():
    deployment = objects.deployment(SPEC, SPEC.components[0])
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["spec"]["replicas"] == 2
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    # Limits equal requests (the quota caps both), scratch disk included.
    values = {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"}
    assert container["resources"] == {"requests": values, "limits": values}
    worker = objects.deployment(SPEC, SPEC.components[1])
    assert worker["spec"]["template"]["metadata"]["annotations"] == {"example.com/x": "y"}
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"] == ["sleep", "3600"]


def test_it_builds_quota_network_policy_and_ingress():
    assert objects.resource_quota(SPEC)["spec"] == {
        "hard": {
            "requests.cpu": "1",
            "limits.cpu": "1",
            "requests.memory": "1Gi",
            "limits.memory": "1Gi",
            # Not in the blueprint's quota: twice the billed 2 x 1Gi + 1Gi.
            "requests.ephemeral-storage": str(6 * 1024**3),
            "limits.ephemeral-storage": str(6 * 1024**3),
            "pods": "5",
        }
    }
    policy = objects.network_policy(SPEC)["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"][0]["from"][1] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}
    }
    ingress = objects.ingress(SPEC)
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == ["web-a1b2c3d4.env.example.com"]
    assert objects.urls(SPEC) == {"web": "http://web-a1b2c3d4.env.example.com/"}


def test_it_orders_the_manifests_namespace_first():
    kinds = [m["kind"] for m in objects.build_manifests(SPEC)]
    assert kinds == [
        "Namespace",
        "ResourceQuota",
        "LimitRange",
        "NetworkPolicy",
        "ServiceAccount",
        "ServiceAccount",
        "RoleBinding",
        "Service",
        "Deployment",
        "Deployment",
        "Ingress",
    ]
    assert objects.service(SPEC, SPEC.components[1]) is None


def test_it_caps_an_edit_environment_at_exactly_what_is_billed():
    import dataclasses

    spec = dataclasses.replace(SPEC, kube_access="edit", quota={})
    # web: 2 x (250m, 256Mi); worker: 1 x (100m, 64Mi)
    assert objects.resource_quota(spec)["spec"]["hard"] == {
        "requests.cpu": "600m",
        "limits.cpu": "600m",
        "requests.memory": str((2 * 256 + 64) * 1024**2),
        "limits.memory": str((2 * 256 + 64) * 1024**2),
        "requests.ephemeral-storage": str(3 * 1024**3),
        "limits.ephemeral-storage": str(3 * 1024**3),
        "pods": "3",
    }
    assert objects.deployment(spec, spec.components[0])["spec"]["strategy"] == {"type": "Recreate"}
    assert "strategy" not in objects.deployment(SPEC, SPEC.components[0])["spec"]
    # Edit binds the ClusterRole of that level; the rules themselves live in the chart.
    assert objects.user_role_binding(spec)["roleRef"]["name"] == "ephemera-user-edit"


def test_the_kubeconfig_account_is_bound_to_a_shipped_cluster_role_inside_its_namespace():
    import dataclasses

    binding = objects.user_role_binding(SPEC)
    # A RoleBinding (never a ClusterRoleBinding): the rules apply in this namespace only.
    assert binding["kind"] == "RoleBinding"
    assert binding["metadata"]["namespace"] == SPEC.namespace
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "ephemera-user-view",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ephemera-user", "namespace": SPEC.namespace}
    ]
    # The chart names them after its release and sets the prefix.
    renamed = dataclasses.replace(SPEC, user_role_prefix="acme-ephemera-user-")
    assert objects.user_role_binding(renamed)["roleRef"]["name"] == "acme-ephemera-user-view"
    # No Role of its own any more: the portal needs no rights it would hand out.
    assert "Role" not in [m["kind"] for m in objects.build_manifests(SPEC)]


def test_manifests_recorded_with_an_own_role_lose_it_and_bind_the_cluster_role():
    new = objects.build_manifests(SPEC)
    assert objects.without_own_role(SPEC, new) is new  # nothing to change
    binding = objects.user_role_binding(SPEC)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": binding["metadata"],
    }
    old_binding = {
        **binding,
        "roleRef": {**binding["roleRef"], "kind": "Role", "name": "ephemera-user"},
    }
    old = [m for m in new if m["kind"] != "RoleBinding"]
    old[6:6] = [role, old_binding]
    assert objects.without_own_role(SPEC, old) == new


def test_every_access_level_has_rules_in_the_one_shared_file():
    from environments.catalog.choices import KubeAccess
    from tests.kubecluster import load_launcher

    rules = load_launcher().access_rules()
    # Plus "secrets": what each environment's generated-credentials reader may do, which
    # is exactly reading the one Secret of generated credentials, by name.
    assert sorted(rules) == sorted([level.value for level in KubeAccess] + ["secrets"])
    assert rules.pop("secrets") == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get"],
            "resourceNames": [objects.GENERATED_SECRET],
        }
    ]
    resources = lambda level: {r for rule in rules[level] for r in rule["resources"]}  # noqa: E731
    assert "pods/exec" in resources("edit")
    assert "pods/exec" not in resources("view")
    for level in rules:
        assert not {"secrets", "serviceaccounts/token", "roles", "rolebindings"} & resources(level)
        assert not any(
            {"escalate", "bind", "impersonate", "*"} & set(rule["verbs"]) for rule in rules[level]
        )


def test_it_retries_the_apiservers_own_allocation_failure_but_not_real_rejections():
    # What kube-apiserver answered a Service create while shutting down (seen in CI).
    from kubernetes.client.exceptions import ApiException

    from environments.kube.cluster import _transient

    def answer(status, message):
        exc = ApiException(status=status, reason="x")
        exc.body = json.dumps({"kind": "Status", "message": message})
        return exc

    allocation = answer(
        422,
        'Service "web" is invalid: spec.clusterIPs: Invalid value: [""]: failed to allocate '
        'IP: Post "https://127.0.0.1:36443/apis/networking.k8s.io/v1/ipaddresses": dial tcp '
        "127.0.0.1:36443: connect: connection refused",
    )
    assert _transient(allocation)
    assert _transient(answer(503, "unavailable"))
    assert not _transient(answer(422, 'Deployment "web" is invalid: spec.replicas: must be >= 0'))
    assert not _transient(answer(403, "forbidden"))
