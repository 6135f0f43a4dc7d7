"""Pure builders for an environment's Kubernetes objects (KubeSpawner's objects.py style).

Every function takes plain values and returns a manifest dict. Nothing here calls the
API server or reads the database, so each builder is tested by comparing dicts.
``build_manifests`` returns the complete, ordered list that provisioning applies and
that is recorded on the environment for teardown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from environments.catalog.spec import (
    DEFAULT_EGRESS_BLOCKED,
    SECRET_REF,
    blocked_within,
    component_totals,
    parse_cidr,
)
from environments.lib.naming import namespace_for
from environments.lib.quantities import cpu_to_millicores, memory_to_bytes

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
    # --- egress and scratch disk (issue 14, finding 1) ---
    egress: list[dict] = field(default_factory=list)  # the blueprint's EgressRuleSpec dicts
    egress_blocked: tuple[str, ...] = DEFAULT_EGRESS_BLOCKED  # settings.EGRESS_BLOCKED_CIDRS
    dns_namespace: str = "kube-system"  # settings.DNS_NAMESPACE
    storage_default: str = "1Gi"  # settings.EPHEMERAL_STORAGE_DEFAULT
    # Generated credentials declared by the blueprint: [{"name": ..., "length": ...}].
    secrets: list[dict] = field(default_factory=list)
    cluster_domain: str = "cluster.local"  # settings.CLUSTER_DOMAIN: Service DNS names
    # Data volumes (issue 15): the claims' StorageClass; "" for the cluster's default.
    storage_class: str = ""  # settings.VOLUME_STORAGE_CLASS

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


# --- quota and container limits (issue 14, finding 1) ----------------------------------
# Every container's limits equal its requests (cpu, memory, ephemeral-storage), so the
# ResourceQuota's requests.* and limits.* add up to the same numbers, and a tenant cannot
# fill a node's disk: the kubelet evicts a pod past its ephemeral-storage limit.


def container_resources(spec: EnvironmentSpec, component: dict) -> dict:
    """Requests and limits of a component's container."""
    resources = component["resources"]
    values = {
        "cpu": resources["cpu"],
        "memory": resources["memory"],
        "ephemeral-storage": resources.get("storage") or spec.storage_default,
    }
    return {"requests": dict(values), "limits": dict(values)}


def _storage_bytes(spec: EnvironmentSpec) -> int:
    return sum(
        memory_to_bytes(container_resources(spec, c)["limits"]["ephemeral-storage"]) * c["replicas"]
        for c in spec.components
    )


def _billed_quota(spec: EnvironmentSpec) -> dict[str, str]:
    """Exactly what the environment is billed for: its components' requests and pods
    (limits equal requests), and their scratch disk."""
    totals = component_totals(spec.components)
    cpu, memory, storage = totals.cpu_millicores, totals.memory_bytes, _storage_bytes(spec)
    return {
        "requests.cpu": f"{cpu}m",
        "limits.cpu": f"{cpu}m",
        "requests.memory": str(memory),
        "limits.memory": str(memory),
        "requests.ephemeral-storage": str(storage),
        "limits.ephemeral-storage": str(storage),
        "pods": str(totals.pods),
    }


def resource_quota(spec: EnvironmentSpec) -> dict:
    """The namespace's ResourceQuota, always made. With ``kube_access: edit`` exactly the
    billed resources, so people who may scale cannot run (or be billed for) more than
    they asked; otherwise the blueprint's ``quota``, and for what it leaves out twice
    the billed amount (room for a rolling update's new pods next to the old ones)."""
    billed = _billed_quota(spec)
    if spec.kube_access == "edit":
        hard = billed
    else:
        doubled = {
            "cpu": f"{2 * cpu_to_millicores(billed['requests.cpu'])}m",
            "memory": str(2 * int(billed["requests.memory"])),
            "storage": str(2 * int(billed["requests.ephemeral-storage"])),
            "pods": str(2 * int(billed["pods"])),
        }
        quota = {key: spec.quota.get(key) or doubled[key] for key in doubled}
        hard = {
            "requests.cpu": quota["cpu"],
            "limits.cpu": quota["cpu"],
            "requests.memory": quota["memory"],
            "limits.memory": quota["memory"],
            "requests.ephemeral-storage": quota["storage"],
            "limits.ephemeral-storage": quota["storage"],
            "pods": quota["pods"],
        }
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta(spec, "ephemera-quota"),
        "spec": {"hard": {**hard, **_volume_quota(spec)}},
    }


def _volume_quota(spec: EnvironmentSpec) -> dict[str, str]:
    """Exactly the declared data volumes: their claims and the storage they request
    (nothing at all without volumes, so older manifests stay as they were)."""
    volumes = [c["volume"] for c in spec.components if c.get("volume")]
    if not volumes:
        return {}
    return {
        "persistentvolumeclaims": str(len(volumes)),
        "requests.storage": str(sum(memory_to_bytes(v["size"]) for v in volumes)),
    }


def limit_range(spec: EnvironmentSpec) -> dict:
    """Defaults for containers that name no resources (the quota needs requests and
    limits of cpu, memory and ephemeral-storage on every container)."""
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _meta(spec, "ephemera-defaults"),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "defaultRequest": {
                        "cpu": "100m",
                        "memory": "128Mi",
                        "ephemeral-storage": spec.storage_default,
                    },
                    "default": {
                        "cpu": "250m",
                        "memory": "256Mi",
                        "ephemeral-storage": spec.storage_default,
                    },
                }
            ]
        },
    }


# --- network policy (issue 14, finding 1) -----------------------------------------------
# Default deny both ways. Ingress: the namespace itself and the ingress controller.
# Egress: the namespace itself, DNS (port 53 to the cluster DNS namespace, kube-system:
# CoreDNS/kube-dns run there in every mainstream distribution) and the blueprint's
# `egress` rules, each less the platform's blocked ranges (EGRESS_BLOCKED_CIDRS).


def dns_egress_rule(spec: EnvironmentSpec) -> dict:
    return {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": spec.dns_namespace}
                }
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def blueprint_egress_rules(spec: EnvironmentSpec) -> list[dict]:
    """The blueprint's rules as NetworkPolicy egress rules, the blocked ranges inside
    each rule's CIDR excluded. A rule inside a blocked range (the setting changed after
    the blueprint was published) is left out."""
    rules = []
    for rule in spec.egress:
        to = parse_cidr(rule["to"])
        if any(
            to.version == parse_cidr(b).version and to.subnet_of(parse_cidr(b))  # type: ignore[arg-type]
            for b in spec.egress_blocked
        ):
            continue
        excluded = [*rule.get("excluded", []), *blocked_within(rule["to"], spec.egress_blocked)]
        block: dict = {"cidr": str(to)}
        if excluded:
            block["except"] = sorted(set(excluded))
        rules.append(
            {
                "to": [{"ipBlock": block}],
                "ports": [
                    {"protocol": rule.get("protocol", "TCP"), "port": port}
                    for port in rule["ports"]
                ],
            }
        )
    return rules


def network_policy(spec: EnvironmentSpec) -> dict:
    """Default deny, ingress and egress (see above)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(spec, "ephemera-default-deny"),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
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
            "egress": [
                {"to": [{"podSelector": {}}]},
                dns_egress_rule(spec),
                *blueprint_egress_rules(spec),
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
        "resources": container_resources(spec, component),
        "securityContext": _security_context(),
    }
    if component.get("port"):
        container["ports"] = [{"name": "http", "containerPort": component["port"]}]
    if component.get("env"):
        container["env"] = [env_var(k, v) for k, v in sorted(component["env"].items())]
    if component.get("args"):
        container["args"] = list(component["args"])
    volume = component.get("volume")
    pod_volumes: dict = {}
    if volume:
        container["volumeMounts"] = [{"name": DATA_VOLUME, "mountPath": volume["path"]}]
        pod_volumes = {
            "volumes": [
                {
                    "name": DATA_VOLUME,
                    "persistentVolumeClaim": {"claimName": volume_claim_name(component["name"])},
                }
            ]
        }
    # With a quota of exactly the billed pods there is no room for a surge pod; a
    # ReadWriteOnce claim cannot be mounted by the old and the new pod on two nodes.
    recreate = spec.kube_access == "edit" or bool(volume)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec, component["name"], {COMPONENT_LABEL: component["name"]}),
        "spec": {
            "replicas": component["replicas"],
            **({"strategy": {"type": "Recreate"}} if recreate else {}),
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
                    **pod_volumes,
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


def service_host(spec: EnvironmentSpec, component_name: str) -> str:
    """The cluster DNS name of a component's Service."""
    return f"{component_name}.{spec.namespace}.svc.{spec.cluster_domain}"


def addresses(spec: EnvironmentSpec, scheme: str = "http") -> dict[str, str]:
    """What ``{{ urls.x }}``, ``{{ hosts.x }}`` and ``{{ env.name }}`` become in this
    environment's templates (``catalog.rendering.render_text``'s ``dynamic``)."""
    values = {"env.name": spec.name}
    for name, url in urls(spec, scheme).items():
        values[f"urls.{name}"] = url
    for component in spec.components:
        if component.get("port"):
            values[f"hosts.{component['name']}"] = service_host(spec, component["name"])
    return values


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
        # Claims early (after the quota that counts them): the storage binds them while
        # the rest is applied, before their pods are scheduled.
        *[persistent_volume_claim(spec, c) for c in spec.components],
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


# --- Data volumes and their snapshots (issue 15) -------------------------------------
# A component's ``volume`` is a PersistentVolumeClaim "<component>-data" in the
# namespace, mounted at its path. An environment snapshot takes a VolumeSnapshot of each
# claim whose volume says ``snapshot: true`` (where the cluster serves
# snapshot.storage.k8s.io/v1); a restore makes the claims with ``dataSource`` naming
# those VolumeSnapshots.

DATA_VOLUME = "data"
VOLUME_SNAPSHOT_API = "snapshot.storage.k8s.io/v1"
SNAPSHOT_LABEL = "ephemera.io/snapshot"


def volume_claim_name(component_name: str) -> str:
    return f"{component_name}-data"


def persistent_volume_claim(spec: EnvironmentSpec, component: dict) -> dict | None:
    volume = component.get("volume")
    if not volume:
        return None
    body: dict = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": volume["size"]}},
    }
    if spec.storage_class:
        body["storageClassName"] = spec.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(
            spec, volume_claim_name(component["name"]), {COMPONENT_LABEL: component["name"]}
        ),
        "spec": body,
    }


def volume_snapshot_name(claim_name: str, snapshot_id: str) -> str:
    """The VolumeSnapshot of one claim for one environment snapshot (a DNS subdomain:
    the claim's name is at most 45 characters, the id's first 12 are kept)."""
    return f"{claim_name}-{snapshot_id.replace('-', '')[:12]}"


def volume_snapshot(claim: dict, *, name: str, snapshot_id: str, snapshot_class: str = "") -> dict:
    """A VolumeSnapshot of the claim ``claim`` (its manifest), in its namespace."""
    meta = claim["metadata"]
    body: dict = {"source": {"persistentVolumeClaimName": meta["name"]}}
    if snapshot_class:
        body["volumeSnapshotClassName"] = snapshot_class
    return {
        "apiVersion": VOLUME_SNAPSHOT_API,
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {**meta.get("labels", {}), SNAPSHOT_LABEL: snapshot_id},
        },
        "spec": body,
    }


def volume_snapshot_from_content(
    *, namespace: str, name: str, content: str, labels: dict[str, str]
) -> dict:
    """The same VolumeSnapshot in another namespace (a restore elsewhere): bound to the
    VolumeSnapshotContent the original was cut into (pre-provisioned)."""
    return {
        "apiVersion": VOLUME_SNAPSHOT_API,
        "kind": "VolumeSnapshot",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {"source": {"volumeSnapshotContentName": content}},
    }


def restored_claims(manifests: list[dict], sources: dict[str, str]) -> list[dict]:
    """``manifests`` with each claim named in ``sources`` (claim name -> VolumeSnapshot
    name) made from that VolumeSnapshot (``dataSource``); everything else unchanged."""
    restored = []
    for manifest in manifests:
        name = manifest["metadata"]["name"]
        if manifest["kind"] == "PersistentVolumeClaim" and name in sources:
            manifest = {
                **manifest,
                "spec": {
                    **manifest["spec"],
                    "dataSource": {
                        "apiGroup": VOLUME_SNAPSHOT_API.split("/")[0],
                        "kind": "VolumeSnapshot",
                        "name": sources[name],
                    },
                },
            }
        restored.append(manifest)
    return restored
