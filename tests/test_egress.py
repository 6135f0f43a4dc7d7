"""What a tenant's code can reach and use (issue 14, finding 1), without a cluster.

The NetworkPolicy denies egress except DNS, the namespace itself and what the blueprint
declares, less the platform's blocked ranges; a blueprint asking for more than the
platform allows is refused at load time in one line. The ResourceQuota caps limits and
ephemeral storage too, and every container's limits fit it.
"""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from environments.catalog.rendering import spec_digest
from environments.catalog.spec import (
    BlueprintInvalid,
    EgressLimits,
    load_blueprint,
    parse_blueprint,
)
from environments.kube import objects
from tests.conftest import BLUEPRINTS
from tests.test_objects import SPEC

BASE = textwrap.dedent(
    """\
    name: shop
    title: Shop
    purpose: demo
    ttl: {default: 4h, max: 3d}
    components:
      - name: web
        image: nginxinc/nginx-unprivileged:1.27
        port: 8080
        resources: {cpu: 250m, memory: 256Mi}
    """
)
LIMITS = EgressLimits(
    allowed=("0.0.0.0/0", "::/0"),
    blocked=("169.254.0.0/16", "100.100.100.200/32", "fd00:ec2::254/128"),
)


def load(extra: str, limits: EgressLimits = LIMITS):
    return load_blueprint(BASE + textwrap.dedent(extra), egress_limits=limits)


def refusal(extra: str, limits: EgressLimits = LIMITS) -> list[str]:
    with pytest.raises(BlueprintInvalid) as caught:
        load(extra, limits)
    return caught.value.lines("shop.yaml")


def test_egress_is_denied_by_default_except_dns_and_the_namespace():
    policy = objects.network_policy(SPEC)["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["egress"] == [
        {"to": [{"podSelector": {}}]},
        {
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                    }
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        },
    ]


def test_a_declared_egress_rule_always_excludes_the_platforms_blocked_ranges():
    spec = load(
        """\
        egress:
          - {to: 0.0.0.0/0, except: [10.0.0.0/8], ports: [443]}
          - {to: 203.0.113.0/24, ports: [5432, 53], protocol: UDP}
        """
    )
    assert spec.to_dict()["egress"] == [
        {"to": "0.0.0.0/0", "excluded": ["10.0.0.0/8"], "ports": [443], "protocol": "TCP"},
        {"to": "203.0.113.0/24", "excluded": [], "ports": [53, 5432], "protocol": "UDP"},
    ]
    env = dataclasses.replace(
        SPEC, egress=[r.model_dump() for r in spec.egress], egress_blocked=LIMITS.blocked
    )
    rules = objects.network_policy(env)["spec"]["egress"][2:]
    assert rules == [
        {
            "to": [
                {
                    "ipBlock": {
                        "cidr": "0.0.0.0/0",
                        "except": ["10.0.0.0/8", "100.100.100.200/32", "169.254.0.0/16"],
                    }
                }
            ],
            "ports": [{"protocol": "TCP", "port": 443}],
        },
        {
            "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "UDP", "port": 5432}],
        },
    ]
    # A rule a later, stricter setting blocks entirely is left out rather than opened.
    stricter = dataclasses.replace(env, egress_blocked=("203.0.113.0/24",))
    assert len(objects.network_policy(stricter)["spec"]["egress"]) == 3


@pytest.mark.parametrize(
    ("extra", "limits", "line"),
    [
        (
            "egress: [{to: 169.254.169.254/32, ports: [80]}]",
            LIMITS,
            "shop.yaml: egress[0].to: 169.254.169.254/32 is in a range the platform blocks "
            "(169.254.0.0/16)",
        ),
        (
            "egress: [{to: 0.0.0.0/0, ports: [443]}]",
            EgressLimits(allowed=("203.0.113.0/24",), blocked=()),
            "shop.yaml: egress[0].to: 0.0.0.0/0 is outside what the platform allows "
            "(allowed: 203.0.113.0/24)",
        ),
        (
            "egress: [{to: 10.0.0.1/8, ports: [443]}]",
            LIMITS,
            "shop.yaml: egress[0].to: '10.0.0.1/8' is not a CIDR (such as 203.0.113.0/24 or "
            "0.0.0.0/0)",
        ),
        (
            "egress: [{to: 10.0.0.0/8, except: [192.168.0.0/16], ports: [443]}]",
            LIMITS,
            "shop.yaml: egress[0].except[0]: 192.168.0.0/16 is not inside 10.0.0.0/8",
        ),
        (
            "egress: [{to: 0.0.0.0/0, ports: [0]}]",
            LIMITS,
            "shop.yaml: egress[0].ports: 0 is not a port number (1-65535)",
        ),
        (
            "egress: [{to: 0.0.0.0/0, ports: [443], protocol: SCTP}]",
            LIMITS,
            "shop.yaml: egress[0].protocol: 'SCTP' is not one of TCP, UDP",
        ),
        (
            "egress: [{to: 0.0.0.0/0}]",
            LIMITS,
            "shop.yaml: egress[0].ports: missing required field",
        ),
        (
            "egress: [{to: 0.0.0.0/0, ports: [443], from: x}]",
            LIMITS,
            "shop.yaml: egress[0].from: unknown field",
        ),
    ],
)
def test_a_blueprint_asking_for_more_egress_than_allowed_is_refused_in_one_line(
    extra, limits, line
):
    assert refusal(extra, limits) == [line]


def test_the_platform_limits_come_from_the_settings(settings):
    settings.EGRESS_BLOCKED_CIDRS = ["169.254.0.0/16", "10.96.0.0/12"]
    settings.EGRESS_ALLOWED_CIDRS = ["0.0.0.0/0"]
    with pytest.raises(BlueprintInvalid) as caught:
        load_blueprint(BASE + "egress: [{to: 10.96.0.1/32, ports: [443]}]\n")
    assert (
        str(caught.value)
        == "egress[0].to: 10.96.0.1/32 is in a range the platform blocks (10.96.0.0/12)"
    )


def test_blueprints_without_egress_or_storage_keep_their_digest():
    # Stored specs of earlier versions have no egress/storage keys; unchanged files
    # must not publish a new version.
    stored = parse_blueprint(BASE)
    assert "egress" not in stored
    assert "storage" not in stored["components"][0]["resources"]
    assert spec_digest(stored) == spec_digest(load_blueprint(BASE))


def test_containers_have_limits_of_cpu_memory_and_scratch_disk_matching_the_quota():
    spec = dataclasses.replace(
        SPEC,
        storage_default="1Gi",
        components=[
            {
                **SPEC.components[0],
                "resources": {"cpu": "250m", "memory": "256Mi", "storage": "2Gi"},
            },
            SPEC.components[1],
        ],
    )
    web = objects.deployment(spec, spec.components[0])["spec"]["template"]["spec"]["containers"][0]
    values = {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "2Gi"}
    assert web["resources"] == {"requests": values, "limits": values}
    worker = objects.deployment(spec, spec.components[1])["spec"]["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["ephemeral-storage"] == "1Gi"

    # Blueprint quota {cpu: 1, memory: 1Gi, pods: 5}: limits mirror requests; storage
    # (not in the quota) is twice the billed 2 x 2Gi + 1Gi.
    assert objects.resource_quota(spec)["spec"]["hard"] == {
        "requests.cpu": "1",
        "limits.cpu": "1",
        "requests.memory": "1Gi",
        "limits.memory": "1Gi",
        "requests.ephemeral-storage": str(2 * 5 * 1024**3),
        "limits.ephemeral-storage": str(2 * 5 * 1024**3),
        "pods": "5",
    }
    # Edit access: exactly what is billed, limits included.
    edit = dataclasses.replace(spec, kube_access="edit")
    assert objects.resource_quota(edit)["spec"]["hard"] == {
        "requests.cpu": "600m",
        "limits.cpu": "600m",
        "requests.memory": str((2 * 256 + 64) * 1024**2),
        "limits.memory": str((2 * 256 + 64) * 1024**2),
        "requests.ephemeral-storage": str(5 * 1024**3),
        "limits.ephemeral-storage": str(5 * 1024**3),
        "pods": "3",
    }
    # A blueprint without a quota still gets one (twice the billed amounts).
    bare = dataclasses.replace(spec, quota={})
    assert objects.resource_quota(bare)["spec"]["hard"]["limits.cpu"] == "1200m"
    assert objects.limit_range(spec)["spec"]["limits"] == [
        {
            "type": "Container",
            "defaultRequest": {"cpu": "100m", "memory": "128Mi", "ephemeral-storage": "1Gi"},
            "default": {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
        }
    ]


def test_storage_is_checked_like_the_other_quantities():
    assert refusal(
        """\
        quota: {storage: lots}
        """
    ) == [
        "shop.yaml: quota.storage: 'lots' is not a valid Kubernetes quantity (such as 250m or 1Gi)"
    ]
    text = BASE.replace("memory: 256Mi}", "memory: 256Mi, storage: 0}")
    with pytest.raises(BlueprintInvalid) as caught:
        load_blueprint(text, egress_limits=LIMITS)
    assert caught.value.lines("shop.yaml") == [
        "shop.yaml: components[0].resources.storage: '0' must be greater than zero"
    ]


def test_a_storage_quota_must_hold_the_components_scratch_disk(settings):
    settings.EPHEMERAL_STORAGE_DEFAULT = "2Gi"
    text = BASE.replace("memory: 256Mi}", "memory: 256Mi}\n    replicas: 2")
    assert load_blueprint(text + "quota: {storage: 4Gi}\n").quota.storage == "4Gi"
    with pytest.raises(BlueprintInvalid) as caught:
        load_blueprint(text + "quota: {storage: 3Gi}\n")
    assert str(caught.value) == "quota.storage: components use 4 GiB of scratch disk, more than 3Gi"


def test_the_sample_that_calls_an_external_api_declares_https_egress():
    spec = load_blueprint((BLUEPRINTS / "shop-demo.yaml").read_text())
    assert [(r.to, r.ports) for r in spec.egress] == [("0.0.0.0/0", [443])]
