"""Pure builders for an environment's Kubernetes objects (KubeSpawner's objects.py style).

Every function takes plain values and returns a manifest dict. Nothing here calls the
API server or reads the database, so each builder is tested by comparing dicts.
``build_manifests`` returns the complete, ordered list that provisioning applies and
that is recorded on the environment for teardown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from environments.catalog.spec import SECRET_REF, component_totals
from environments.lib.naming import namespace_for

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "ephemera"
ENV_LABEL = "ephemera.io/environment"
INSTANCE_LABEL = "ephemera.io/instance"
COMPONENT_LABEL = "ephemera.io/component"
EXPIRES_ANNOTATION = "ephemera.io/expires-at"
# Pod Security Standards version pinned so a cluster upgrade can't silently tighten it.
PSS_VERSION = "v1.33"
SERVICE_ACCOUNT = "ephemera-workload"
# The identity behind "Download kubeconfig": namespace-scoped, never cluster-wide.
USER_ACCOUNT = "ephemera-user"
# Its rights come from a ClusterRole per access level, "<prefix><level>" (e.g.
# ephemera-user-view), bound by a RoleBinding inside the environment's namespace only.
# The rules live in deploy/chart/files/access-rules.yaml: the Helm chart and the local
# cluster (`make cluster`) create those ClusterRoles, so the portal only needs the right
# to bind them, never the rights themselves (pods/exec and so on).
USER_CLUSTER_ROLE_PREFIX = "ephemera-user-"


@dataclass(frozen=True)
class EnvironmentSpec:
    """Everything the builders need, as plain values."""

    environment_id: str
    name: str  # short name; the namespace is eph-<name>
    owner_id: str
    team: str
    blueprint: str
    expires_at: str  # ISO 8601
    components: list[dict]  # rendered components (parameters substituted)
    quota: dict = field(default_factory=dict)
    base_domain: str = "ephemera.localhost"
    ingress_namespace: str = "ingress-nginx"
    ingress_class: str = ""
    instance: str = "default"  # which portal owns it; the reconciler only touches its own
    kube_access: str = "view"  # the access level behind the downloadable kubeconfig
    user_role_prefix: str = USER_CLUSTER_ROLE_PREFIX  # settings.KUBE_USER_CLUSTER_ROLE_PREFIX
    # Generated credentials declared by the blueprint: [{"name": ..., "length": ...}].
    secrets: list[dict] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return namespace_for(self.name)


def labels(spec: EnvironmentSpec) -> dict[str, str]:
    return {
        MANAGED_BY: MANAGER,
        ENV_LABEL: spec.environment_id,
        "ephemera.io/owner": spec.owner_id,
        "ephemera.io/team": spec.team,
        "ephemera.io/blueprint": spec.blueprint,
    }


def _meta(spec: EnvironmentSpec, name: str, extra_labels: dict | None = None) -> dict:
    return {
        "name": name,
        "namespace": spec.namespace,
        "labels": {**labels(spec), **(extra_labels or {})},
    }


def namespace(spec: EnvironmentSpec) -> dict:
    pss = {
        f"pod-security.kubernetes.io/{mode}{suffix}": value
        for mode in ("enforce", "warn", "audit")
        for suffix, value in (("", "restricted"), ("-version", PSS_VERSION))
    }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": spec.namespace,
            "labels": {**labels(spec), INSTANCE_LABEL: spec.instance, **pss},
            "annotations": {EXPIRES_ANNOTATION: spec.expires_at},
        },
    }


def _billed_quota(spec: EnvironmentSpec) -> dict[str, str]:
    """Exactly what the environment is billed for: its components' requests and pods."""
    totals = component_totals(spec.components)
    cpu, memory = totals.cpu_millicores, totals.memory_bytes
    return {
        "requests.cpu": f"{cpu}m",
        "requests.memory": str(memory),
        "limits.memory": str(memory),
        "pods": str(totals.pods),
    }


def resource_quota(spec: EnvironmentSpec) -> dict | None:
    """The blueprint's quota; with ``kube_access: edit`` exactly the billed resources,
    so people who may scale cannot run (or be billed for) more than they asked."""
    if spec.kube_access == "edit":
        hard = _billed_quota(spec)
    else:
        hard = {}
        if "cpu" in spec.quota:
            hard["requests.cpu"] = spec.quota["cpu"]
        if "memory" in spec.quota:
            hard["requests.memory"] = spec.quota["memory"]
            hard["limits.memory"] = spec.quota["memory"]
        if "pods" in spec.quota:
            hard["pods"] = spec.quota["pods"]
    if not hard:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta(spec, "ephemera-quota"),
        "spec": {"hard": hard},
    }


def limit_range(spec: EnvironmentSpec) -> dict:
    """Defaults for containers that name no resources (the quota needs requests)."""
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _meta(spec, "ephemera-defaults"),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                    "default": {"memory": "256Mi"},
                }
            ]
        },
    }


def network_policy(spec: EnvironmentSpec) -> dict:
    """Default deny for ingress; allow the namespace itself and the ingress controller."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(spec, "ephemera-default-deny"),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {}},
                        {
                            "namespaceSelector": {
                                "matchLabels": {
                                    "kubernetes.io/metadata.name": spec.ingress_namespace
                                }
                            }
                        },
                    ]
                }
            ],
        },
    }


def service_account(spec: EnvironmentSpec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(spec, SERVICE_ACCOUNT),
        "automountServiceAccountToken": False,
    }


def user_service_account(spec: EnvironmentSpec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(spec, USER_ACCOUNT),
        "automountServiceAccountToken": False,
    }


def user_cluster_role(spec: EnvironmentSpec) -> str:
    """The name of the ClusterRole behind the environment's kubeconfig."""
    return f"{spec.user_role_prefix}{spec.kube_access}"


def user_role_binding(spec: EnvironmentSpec) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(spec, USER_ACCOUNT),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": user_cluster_role(spec),
        },
        "subjects": [{"kind": "ServiceAccount", "name": USER_ACCOUNT, "namespace": spec.namespace}],
    }


def without_own_role(spec: EnvironmentSpec, manifests: list[dict]) -> list[dict]:
    """Manifests recorded by an older release, which gave the kubeconfig account a Role
    of its own, as this release applies them: no Role (the portal may no longer make
    one), and the RoleBinding pointing at the shipped ClusterRole instead."""
    if not any(m["kind"] == "Role" for m in manifests):
        return manifests
    return [
        user_role_binding(spec)
        if m["kind"] == "RoleBinding" and m["metadata"]["name"] == USER_ACCOUNT
        else m
        for m in manifests
        if m["kind"] != "Role"
    ]


def env_var(name: str, value: str) -> dict:
    """One container env entry; ``{{ secrets.<key> }}`` becomes a secretKeyRef to the
    environment's generated Secret, so the value is never in a manifest."""
    ref = SECRET_REF.match(value)
    if ref:
        return {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": GENERATED_SECRET, "key": ref.group(1)}},
        }
    return {"name": name, "value": value}


def _security_context() -> dict:
    # Satisfies the Pod Security Standards "restricted" profile.
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def deployment(spec: EnvironmentSpec, component: dict) -> dict:
    selector = {ENV_LABEL: spec.environment_id, COMPONENT_LABEL: component["name"]}
    container: dict = {
        "name": component["name"],
        "image": component["image"],
        "resources": {
            "requests": {
                "cpu": component["resources"]["cpu"],
                "memory": component["resources"]["memory"],
            },
            "limits": {"memory": component["resources"]["memory"]},
        },
        "securityContext": _security_context(),
    }
    if component.get("port"):
        container["ports"] = [{"name": "http", "containerPort": component["port"]}]
    if component.get("env"):
        container["env"] = [env_var(k, v) for k, v in sorted(component["env"].items())]
    if component.get("args"):
        container["args"] = list(component["args"])
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec, component["name"], {COMPONENT_LABEL: component["name"]}),
        "spec": {
            "replicas": component["replicas"],
            # With a quota of exactly the billed pods there is no room for a surge pod.
            **({"strategy": {"type": "Recreate"}} if spec.kube_access == "edit" else {}),
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": {**labels(spec), COMPONENT_LABEL: component["name"]},
                    **(
                        {"annotations": dict(component["annotations"])}
                        if component.get("annotations")
                        else {}
                    ),
                },
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    # Throwaway environments: no 30 s drain on teardown.
                    "terminationGracePeriodSeconds": 5,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                },
            },
        },
    }


def service(spec: EnvironmentSpec, component: dict) -> dict | None:
    if not component.get("port"):
        return None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, component["name"], {COMPONENT_LABEL: component["name"]}),
        "spec": {
            "selector": {ENV_LABEL: spec.environment_id, COMPONENT_LABEL: component["name"]},
            "ports": [{"name": "http", "port": component["port"], "targetPort": component["port"]}],
        },
    }


def host(spec: EnvironmentSpec, component_name: str) -> str:
    return f"{component_name}-{spec.name}.{spec.base_domain}"


def ingress(spec: EnvironmentSpec) -> dict | None:
    exposed = [c for c in spec.components if c.get("expose")]
    if not exposed:
        return None
    body: dict = {
        "rules": [
            {
                "host": host(spec, c["name"]),
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {
                                "service": {"name": c["name"], "port": {"number": c["port"]}}
                            },
                        }
                    ]
                },
            }
            for c in exposed
        ]
    }
    if spec.ingress_class:
        body["ingressClassName"] = spec.ingress_class
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _meta(spec, "ephemera"),
        "spec": body,
    }


def urls(spec: EnvironmentSpec, scheme: str = "http") -> dict[str, str]:
    """component name -> URL, for exposed components."""
    return {
        c["name"]: f"{scheme}://{host(spec, c['name'])}/"
        for c in spec.components
        if c.get("expose")
    }


def build_manifests(spec: EnvironmentSpec) -> list[dict]:
    """All objects, in the order they are applied (namespace first)."""
    objects: list[dict | None] = [
        namespace(spec),
        resource_quota(spec),
        limit_range(spec),
        network_policy(spec),
        service_account(spec),
        user_service_account(spec),
        user_role_binding(spec),
    ]
    objects += [service(spec, c) for c in spec.components]
    objects += [deployment(spec, c) for c in spec.components]
    objects.append(ingress(spec))
    objects += secrets_reader(spec)  # generated credentials (issue 14, finding 4)
    return [o for o in objects if o is not None]


# --- Per-person credentials (issue 14, finding 4) --------------------------------------
# Each person's kubeconfig token is bound (TokenRequest boundObjectRef) to a Secret of
# their own in the namespace, which holds nothing. Deleting that Secret revokes every
# token bound to it at once: the API server refuses them with 401. The controller makes
# and deletes these Secrets (create and delete only, never read); the web only mints
# tokens for USER_ACCOUNT bound to one of them.

ACCESS_SECRET_PREFIX = "ephemera-access-"
PERSON_LABEL = "ephemera.io/person"


def access_secret_name(person_id: int | str) -> str:
    return f"{ACCESS_SECRET_PREFIX}{person_id}"


def access_secret(namespace: str, environment_id: str, person_id: int | str) -> dict:
    """The empty Secret a person's kubeconfig tokens are bound to (their revocable
    identity in this namespace). Not recorded with the environment's manifests: it
    comes and goes with the person's access, and dies with the namespace."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": access_secret_name(person_id),
            "namespace": namespace,
            "labels": {
                MANAGED_BY: MANAGER,
                ENV_LABEL: environment_id,
                PERSON_LABEL: str(person_id),
            },
        },
    }


# --- Generated credentials (issue 14, finding 4) ---------------------------------------
# One Secret per environment holds every credential its blueprint declares. The provision
# job creates it once (create-only: the controller never reads Secrets) with values made
# then; it is never recorded with the manifests, and dies with the namespace.

GENERATED_SECRET = "ephemera-secrets"


def generated_secret(spec: EnvironmentSpec, values: dict[str, str]) -> dict:
    """The Secret holding the generated ``values`` (key -> value). Not recorded."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(spec, GENERATED_SECRET),
        "stringData": dict(values),
    }


# Who may read that Secret: only a ServiceAccount of its own, bound (in the namespace) to
# the ClusterRole "<prefix>secrets" (get on this one Secret name; the "secrets" entry of
# deploy/chart/files/access-rules.yaml). The web mints a short-lived token for it to
# show the owner the values; kubeconfig holders (USER_ACCOUNT) never get them.
SECRETS_READER = "ephemera-secrets-reader"
SECRETS_READER_LEVEL = "secrets"


def secrets_reader(spec: EnvironmentSpec) -> list[dict]:
    """The reader account and its RoleBinding, when the blueprint declares secrets."""
    if not spec.secrets:
        return []
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(spec, SECRETS_READER),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(spec, SECRETS_READER),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"{spec.user_role_prefix}{SECRETS_READER_LEVEL}",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": SECRETS_READER, "namespace": spec.namespace}
            ],
        },
    ]
