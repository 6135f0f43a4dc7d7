"""Least privilege, proven on the local control plane with the chart's own identities.

The chart is installed (tests/helmchart.py); tokens for its service accounts come from
the TokenRequest API (the admin kubeconfig only mints them and asks SubjectAccessReview
questions). The real worker and watcher processes run with the controller's token, the
kubeconfig download and the logs panel with the web process's: never as system:masters.
"""

from __future__ import annotations

import uuid

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from environments.access import people
from environments.access.kubeconfig import kubeconfig_for
from environments.catalog.publishing import publish_blueprint
from environments.kube import cluster
from environments.kube.objects import INSTANCE_LABEL, MANAGED_BY, USER_ACCOUNT
from environments.lifecycle import services
from environments.lifecycle.states import State
from environments.models import Environment
from tests.conftest import start_watcher, start_worker, wait_for
from tests.helmchart import (
    token_kubeconfig,
)

pytestmark = [pytest.mark.cluster]


@pytest.fixture(scope="module")
def identities(chart_release, tmp_path_factory):
    """Kubeconfigs for the chart's controller and web service accounts."""
    folder = tmp_path_factory.mktemp("identities")
    return {
        "controller": token_kubeconfig(
            chart_release, chart_release.controller_sa, folder / "controller"
        ),
        "web": token_kubeconfig(chart_release, chart_release.web_sa, folder / "web"),
    }


def api(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


def who_am_i(kubeconfig: str) -> str:
    review = client.AuthenticationV1Api(api(kubeconfig)).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    return review.status.user_info.username


def can(
    kube_client,
    user: str,
    verb: str,
    resource: str,
    *,
    namespace: str = "",
    group: str = "",
    name: str = "",
) -> bool:
    """SubjectAccessReview for a service account (with its groups), asked as admin."""
    resource, _, subresource = resource.partition("/")
    sa_namespace = user.split(":")[2]
    review = client.AuthorizationV1Api(kube_client).create_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{sa_namespace}",
                    "system:authenticated",
                ],
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": subresource,
                    "namespace": namespace,
                    "name": name,
                },
            },
        }
    )
    return bool(review.status.allowed)


def edit_blueprint(sample_blueprints):
    """pr-preview whose kubeconfig may exec and scale (kube_access: edit)."""
    source = sample_blueprints["pr-preview"].source.replace(
        "approval: auto\n", "approval: auto\nkube_access: edit\n"
    )
    assert "kube_access: edit" in source
    version, _ = publish_blueprint(source=source)
    return version


def state_of(environment) -> str:
    return Environment.objects.get(pk=environment.pk).state


def start_controller(release, kubeconfig: str, tmp_path, processes) -> None:
    """The real worker and watcher processes, with the controller's credential only."""
    env = {"KUBE_USER_CLUSTER_ROLE_PREFIX": release.user_role_prefix}
    processes.append(start_worker(kubeconfig, tmp_path / "worker.log", **env))
    processes.append(start_watcher(kubeconfig, tmp_path / "watcher.log", **env))


def use_credential(settings, kubeconfig: str) -> None:
    """Point this process (the web side of the flows) at ``kubeconfig``."""
    settings.KUBECONFIG = kubeconfig
    cluster.reset_client()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("on_cluster")
def test_the_real_flows_run_with_the_chart_identities(
    chart_release,
    identities,
    owner,
    teammate,
    portal_admin,
    sample_blueprints,
    kube_client,
    processes,
    settings,
    tmp_path,
):
    assert who_am_i(identities["controller"]) == chart_release.username(chart_release.controller_sa)
    assert who_am_i(identities["web"]) == chart_release.username(chart_release.web_sa)
    start_controller(chart_release, identities["controller"], tmp_path, processes)

    # Provision: the controller binds the release's "edit" ClusterRole in the namespace
    # (and makes the access of those who may hold a kubeconfig: the owner, a team lead).
    teammate.memberships.update(lead=True)
    environment = services.request_environment(
        user=owner, version=edit_blueprint(sample_blueprints)
    )
    wait_for(lambda: state_of(environment) in {State.READY, State.FAILED}, timeout=180)
    environment.refresh_from_db()
    assert environment.state == State.READY, environment.last_error
    rbac = client.RbacAuthorizationV1Api(kube_client)
    binding = rbac.read_namespaced_role_binding(USER_ACCOUNT, environment.namespace)
    assert (binding.role_ref.kind, binding.role_ref.name) == (
        "ClusterRole",
        f"{chart_release.user_role_prefix}edit",
    )

    # Update: new parameters, applied again by the controller.
    services.update_environment(
        environment=environment, user=owner, parameters={"head_sha": "abcdef1"}
    )
    wait_for(
        lambda: (
            (e := Environment.objects.get(pk=environment.pk)).state == State.READY
            and e.manifests
            and e.parameters["head_sha"] == "abcdef1"
        ),
        timeout=180,
    )
    app = client.AppsV1Api(kube_client).read_namespaced_deployment("app", environment.namespace)
    env = {e.name: e.value for e in app.spec.template.spec.containers[0].env}
    assert env["GIT_SHA"] == "abcdef1"

    # Download kubeconfig, as the web process: a token for ephemera-user, which may exec
    # into its own pods (edit) and nothing outside the namespace.
    use_credential(settings, identities["web"])
    environment.refresh_from_db()
    text = kubeconfig_for(environment=environment, user=owner)
    user_api = config.new_client_from_config_dict(yaml.safe_load(text))
    pods = client.CoreV1Api(user_api).list_namespaced_pod(environment.namespace).items
    assert [p.metadata.labels["ephemera.io/component"] for p in pods] == ["app"]
    user = f"system:serviceaccount:{environment.namespace}:{USER_ACCOUNT}"
    assert can(kube_client, user, "create", "pods/exec", namespace=environment.namespace)
    assert not can(kube_client, user, "create", "pods/exec", namespace="kube-system")
    assert not can(kube_client, user, "get", "secrets", namespace=environment.namespace)

    # Each person's kubeconfig is revocable on its own: the controller deleted the
    # teammate's identity when they left the team, and the owner's when deactivated;
    # the API server then refuses their tokens outright (401).
    teammate_core = client.CoreV1Api(
        config.new_client_from_config_dict(
            yaml.safe_load(kubeconfig_for(environment=environment, user=teammate))
        )
    )
    owner_core = client.CoreV1Api(user_api)
    assert teammate_core.list_namespaced_pod(environment.namespace).items
    people.remove_member(actor=portal_admin, user=teammate, team=environment.team)
    wait_for(lambda: status_of(teammate_core, environment.namespace) == 401, timeout=60)
    assert status_of(owner_core, environment.namespace) == 200
    people.deactivate(actor=portal_admin, user=owner)
    wait_for(lambda: status_of(owner_core, environment.namespace) == 401, timeout=60)
    people.reactivate(actor=portal_admin, user=owner)

    # The logs panel, as the web process: with the environment user's token it works; with
    # the web account's own credential it could not even list the pods.
    settings.KUBE_LOGS_AS_ENVIRONMENT_USER = True
    logs = cluster.pod_logs(environment.namespace, "app")
    assert len(logs) == 1 and not logs[0].problem and logs[0].lines, logs
    settings.KUBE_LOGS_AS_ENVIRONMENT_USER = False
    with pytest.raises(cluster.ClusterError) as refused:
        cluster.pod_logs(environment.namespace, "app")
    assert refused.value.status == 403

    # Teardown, by the controller again.
    services.delete_environment(environment=environment, user=owner)
    wait_for(lambda: state_of(environment) == State.DELETED, timeout=180)
    assert not Environment.objects.filter(state=State.FAILED).exists()


def status_of(core, namespace: str) -> int:
    """What the API server answers ``core``'s token when it lists pods in ``namespace``."""
    try:
        core.list_namespaced_pod(namespace)
        return 200
    except ApiException as exc:
        return exc.status


def make_it_old(kube_client, environment) -> list[dict]:
    """Make a ready environment look as the previous release made it (as admin): a Role
    of its own and a RoleBinding to it, on the cluster and in the recorded manifests."""
    namespace = environment.namespace
    meta = {"name": USER_ACCOUNT, "namespace": namespace, "labels": {MANAGED_BY: "ephemera"}}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta,
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
    }
    old_binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": USER_ACCOUNT},
        "subjects": [{"kind": "ServiceAccount", "name": USER_ACCOUNT, "namespace": namespace}],
    }
    rbac = client.RbacAuthorizationV1Api(kube_client)
    rbac.delete_namespaced_role_binding(USER_ACCOUNT, namespace)
    try:
        rbac.create_namespaced_role(namespace, role)
    except ApiException as exc:
        if exc.status != 409:
            raise
    rbac.create_namespaced_role_binding(namespace, old_binding)
    environment.refresh_from_db()
    manifests = [m for m in environment.manifests if m["kind"] not in {"Role", "RoleBinding"}] + [
        role,
        old_binding,
    ]
    Environment.objects.filter(pk=environment.pk).update(manifests=manifests)
    return manifests


def bound_to(kube_client, namespace: str) -> tuple[str, str]:
    binding = client.RbacAuthorizationV1Api(kube_client).read_namespaced_role_binding(
        USER_ACCOUNT, namespace
    )
    return binding.role_ref.kind, binding.role_ref.name


def settled(environment, **parameters):
    def done():
        e = Environment.objects.get(pk=environment.pk)
        return e.state in {State.READY, State.FAILED} and all(
            e.parameters.get(k) == v for k, v in parameters.items()
        )

    wait_for(done, timeout=180)
    environment.refresh_from_db()
    assert environment.state == State.READY, environment.last_error


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("on_cluster")
def test_an_environment_made_with_its_own_role_retries_updates_and_tears_down(
    chart_release,
    identities,
    owner,
    sample_blueprints,
    kube_client,
    processes,
    tmp_path,
):
    """Environments provisioned before this release bound a Role of their own; the
    controller may no longer make Roles, yet it retries, updates and deletes them."""
    start_controller(chart_release, identities["controller"], tmp_path, processes)
    environment = services.request_environment(user=owner, version=sample_blueprints["pr-preview"])
    settled(environment)
    namespace = environment.namespace
    view = ("ClusterRole", f"{chart_release.user_role_prefix}view")
    assert bound_to(kube_client, namespace) == view

    # A retry applies the recorded manifests again: the old Role is left out and the
    # binding replaced (a RoleBinding's roleRef cannot change).
    make_it_old(kube_client, environment)
    Environment.objects.filter(pk=environment.pk).update(state=State.FAILED)
    services.retry_environment(environment=environment, user=owner)
    settled(environment)
    assert bound_to(kube_client, namespace) == view
    assert "Role" not in [m["kind"] for m in environment.manifests]

    # An update renders anew.
    make_it_old(kube_client, environment)
    services.update_environment(
        environment=environment, user=owner, parameters={"head_sha": "1234567"}
    )
    settled(environment, head_sha="1234567")
    assert bound_to(kube_client, namespace) == view

    # And one that is simply deleted goes too (its Role with the namespace).
    make_it_old(kube_client, environment)
    services.delete_environment(environment=environment, user=owner)
    wait_for(lambda: state_of(environment) == State.DELETED, timeout=180)


def test_what_each_identity_may_and_may_not_do(chart_release, kube_client):
    controller = chart_release.username(chart_release.controller_sa)
    web = chart_release.username(chart_release.web_sa)
    scheduler = chart_release.username(chart_release.scheduler_sa)
    rbac = "rbac.authorization.k8s.io"
    prefix = chart_release.user_role_prefix
    env_ns = "eph-anything"

    # What the controller needs (so this matrix can tell a broken chart from a good one).
    for verb, resource, namespace, group, name in [
        ("create", "namespaces", "", "", ""),
        ("delete", "namespaces", "", "", ""),
        ("patch", "deployments", env_ns, "apps", ""),
        ("watch", "pods", "", "", ""),
        ("create", "rolebindings", env_ns, rbac, ""),
        ("bind", "clusterroles", "", rbac, f"{prefix}view"),
        ("bind", "clusterroles", "", rbac, f"{prefix}edit"),
        # Each person's kubeconfig identity: written and deleted, never read.
        ("create", "secrets", env_ns, "", ""),
        ("delete", "secrets", env_ns, "", ""),
        # Data volumes and their snapshots (issue 15).
        ("create", "persistentvolumeclaims", env_ns, "", ""),
        ("patch", "persistentvolumeclaims", env_ns, "", ""),
        ("create", "volumesnapshots", env_ns, "snapshot.storage.k8s.io", ""),
        ("get", "volumesnapshots", env_ns, "snapshot.storage.k8s.io", ""),
        ("delete", "volumesnapshots", env_ns, "snapshot.storage.k8s.io", ""),
        # Drift repair: the watcher watches every kind it applies.
        ("watch", "services", "", "", ""),
        ("watch", "serviceaccounts", "", "", ""),
        ("watch", "resourcequotas", "", "", ""),
        ("watch", "limitranges", "", "", ""),
        ("watch", "networkpolicies", "", "networking.k8s.io", ""),
        ("watch", "ingresses", "", "networking.k8s.io", ""),
        ("watch", "rolebindings", "", rbac, ""),
        # Verified teardown: what may outlive a namespace is listed, never read or changed.
        ("list", "persistentvolumes", "", "", ""),
        ("list", "persistentvolumeclaims", "", "", ""),
        ("list", "clusterroles", "", rbac, ""),
        ("list", "clusterrolebindings", "", rbac, ""),
        ("list", "volumesnapshotcontents", "", "snapshot.storage.k8s.io", ""),
    ]:
        assert can(
            kube_client, controller, verb, resource, namespace=namespace, group=group, name=name
        ), (
            verb,
            resource,
        )
    # What it must never do.
    for verb, resource, namespace, group, name in [
        ("get", "secrets", "kube-system", "", ""),
        ("list", "secrets", "kube-system", "", ""),
        ("get", "secrets", "default", "", ""),
        ("list", "secrets", "", "", ""),
        ("watch", "secrets", env_ns, "", ""),
        ("get", "secrets", env_ns, "", ""),
        ("list", "secrets", env_ns, "", ""),
        ("update", "secrets", env_ns, "", ""),
        ("patch", "secrets", env_ns, "", ""),
        ("create", "pods", "kube-system", "", ""),
        ("delete", "pods", "kube-system", "", ""),
        ("create", "pods/exec", "kube-system", "", ""),
        ("create", "pods/exec", env_ns, "", ""),
        ("get", "pods/log", "kube-system", "", ""),
        ("escalate", "clusterroles", "", rbac, ""),
        ("escalate", "roles", env_ns, rbac, ""),
        ("bind", "clusterroles", "", rbac, "cluster-admin"),
        ("bind", "clusterroles", "", rbac, "admin"),
        ("bind", "clusterroles", "", rbac, "ephemera-user-edit-other"),
        ("bind", "roles", env_ns, rbac, "ephemera-user"),
        ("create", "roles", env_ns, rbac, ""),
        ("create", "clusterrolebindings", "", rbac, ""),
        ("create", "clusterroles", "", rbac, ""),
        ("impersonate", "users", "", "", ""),
        ("impersonate", "groups", "", "", ""),
        ("impersonate", "serviceaccounts", "", "", ""),
        ("create", "serviceaccounts/token", env_ns, "", "ephemera-user"),
        ("create", "validatingadmissionpolicies", "", "admissionregistration.k8s.io", ""),
        ("delete", "validatingadmissionpolicybindings", "", "admissionregistration.k8s.io", ""),
        ("create", "nodes", "", "", ""),
        ("create", "persistentvolumes", "", "", ""),
        ("delete", "persistentvolumes", "", "", ""),
        ("create", "volumesnapshotcontents", "", "snapshot.storage.k8s.io", ""),
        ("delete", "volumesnapshotcontents", "", "snapshot.storage.k8s.io", ""),
        ("create", "volumesnapshotclasses", "", "snapshot.storage.k8s.io", ""),
        ("get", "persistentvolumes", "", "", ""),
        ("delete", "persistentvolumes", "", "", ""),
        ("get", "clusterroles", "", rbac, "cluster-admin"),
        ("watch", "clusterrolebindings", "", rbac, ""),
        ("delete", "clusterrolebindings", "", rbac, ""),
        ("list", "configmaps", "", "", ""),
        ("watch", "secrets", "", "", ""),
    ]:
        assert not can(
            kube_client, controller, verb, resource, namespace=namespace, group=group, name=name
        ), (
            verb,
            resource,
            namespace,
            name,
        )

    # The web account: tokens for ephemera-user (and the generated-credentials reader),
    # and nothing else.
    for account in ("ephemera-user", "ephemera-secrets-reader"):
        assert can(
            kube_client, web, "create", "serviceaccounts/token", namespace=env_ns, name=account
        )
    assert can(kube_client, controller, "bind", "clusterroles", group=rbac, name=f"{prefix}secrets")
    for verb, resource, namespace, group, name in [
        ("create", "serviceaccounts/token", env_ns, "", "ephemera-workload"),
        ("create", "serviceaccounts/token", "kube-system", "", "default"),
        (
            "create",
            "serviceaccounts/token",
            chart_release.namespace,
            "",
            chart_release.controller_sa,
        ),
        ("get", "serviceaccounts", env_ns, "", "ephemera-user"),
        ("get", "secrets", env_ns, "", ""),
        ("list", "pods", env_ns, "", ""),
        ("get", "pods/log", env_ns, "", ""),
        ("list", "namespaces", "", "", ""),
        ("create", "namespaces", "", "", ""),
        ("create", "deployments", env_ns, "apps", ""),
        ("bind", "clusterroles", "", rbac, f"{prefix}edit"),
        ("impersonate", "serviceaccounts", "", "", ""),
    ]:
        assert not can(
            kube_client, web, verb, resource, namespace=namespace, group=group, name=name
        ), (
            verb,
            resource,
            name,
        )
    # The scheduler's account (no token is mounted anyway) may do nothing at all.
    for verb, resource, namespace in [
        ("get", "pods", chart_release.namespace),
        ("create", "serviceaccounts/token", env_ns),
        ("list", "namespaces", ""),
        ("get", "secrets", chart_release.namespace),
    ]:
        assert not can(kube_client, scheduler, verb, resource, namespace=namespace)


def rules_of(kubeconfig: str, namespace: str) -> list[tuple]:
    """What the API server says this identity may do in ``namespace``
    (SelfSubjectRulesReview, asked with the identity's own token)."""
    review = client.AuthorizationV1Api(api(kubeconfig)).create_self_subject_rules_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": namespace},
        }
    )
    return sorted(
        (
            tuple(r.api_groups or []),
            tuple(r.resources or []),
            tuple(r.verbs),
            tuple(r.resource_names or []),
        )
        for r in review.status.resource_rules
    )


def test_the_web_account_has_no_rule_but_the_token_one(chart_release, identities, tmp_path):
    """Everything the web account may do in an environment namespace, compared with an
    account the chart binds to nothing (the scheduler's): what every identity on this
    cluster may do (ask about itself, read public CA bundles) plus exactly one rule."""
    baseline = rules_of(
        token_kubeconfig(chart_release, chart_release.scheduler_sa, tmp_path / "scheduler"),
        "eph-anything",
    )
    extra = [r for r in rules_of(identities["web"], "eph-anything") if r not in baseline]
    assert extra == [
        (
            ("",),
            ("serviceaccounts/token",),
            ("create",),
            ("ephemera-user", "ephemera-secrets-reader"),
        )
    ]


def test_the_admission_policy_keeps_the_controller_in_its_own_namespaces(
    chart_release,
    identities,
    kube_client,
    settings,
):
    core = client.CoreV1Api(api(identities["controller"]))
    name = f"eph-rbac-{uuid.uuid4().hex[:8]}"
    managed = {
        MANAGED_BY: "ephemera",
        INSTANCE_LABEL: settings.EPHEMERA_INSTANCE,
        "pod-security.kubernetes.io/enforce": "restricted",
    }

    def refused(call) -> str:
        with pytest.raises(ApiException) as excinfo:
            call()
        assert excinfo.value.status == 403, excinfo.value.body
        assert f"{chart_release.fullname}-controller-scope" in excinfo.value.body
        return excinfo.value.body

    # RBAC lets it create namespaces and service accounts anywhere; the policy does not.
    body = refused(lambda: core.create_namespace({"metadata": {"name": name}}))
    assert "may only change its own namespaces" in body
    refused(lambda: core.create_namespace({"metadata": {"name": f"x{name}", "labels": managed}}))
    # Another portal's namespaces (another instance label) are not its own either.
    body = refused(
        lambda: core.create_namespace(
            {"metadata": {"name": name, "labels": {**managed, INSTANCE_LABEL: "another-portal"}}}
        )
    )
    assert f"ephemera.io/instance={settings.EPHEMERA_INSTANCE}" in body
    refused(
        lambda: core.create_namespace(
            {"metadata": {"name": name, "labels": {MANAGED_BY: "ephemera"}}}
        )
    )  # without the restricted Pod Security Standard
    body = refused(
        lambda: core.create_namespaced_service_account("default", {"metadata": {"name": name}})
    )
    assert "not in default" in body
    refused(lambda: core.delete_namespaced_service_account("default", "default"))
    # Its right to write Secrets stops at its own namespaces too.
    refused(
        lambda: core.create_namespaced_secret(
            "default", {"metadata": {"name": name}, "stringData": {"k": "v"}}
        )
    )
    admin_core = client.CoreV1Api(kube_client)
    admin_core.create_namespaced_secret(
        chart_release.namespace, {"metadata": {"name": name}, "stringData": {"k": "v"}}
    )
    try:
        refused(lambda: core.delete_namespaced_secret(name, chart_release.namespace))
    finally:
        admin_core.delete_namespaced_secret(name, chart_release.namespace)
    refused(lambda: core.delete_namespace(chart_release.namespace))
    refused(
        lambda: core.patch_namespace(
            "kube-system", {"metadata": {"labels": {MANAGED_BY: "ephemera"}}}
        )
    )
    # Its own kind of namespace: allowed, and so is deleting it.
    core.create_namespace({"metadata": {"name": name, "labels": managed}})
    try:
        core.create_namespaced_service_account(name, {"metadata": {"name": "ok"}})
        core.create_namespaced_secret(name, {"metadata": {"name": "ok"}})
        core.delete_namespaced_secret("ok", name)
    finally:
        core.delete_namespace(name)
    # Nobody else is affected: the admin may still make an unlabelled namespace.
    admin = client.CoreV1Api(kube_client)
    other = f"t-{uuid.uuid4().hex[:10]}"
    admin.create_namespace({"metadata": {"name": other}})
    admin.delete_namespace(other)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("on_cluster")
def test_generated_credentials_are_written_by_the_controller_and_read_only_through_the_reader(
    chart_release,
    identities,
    owner,
    sample_blueprints,
    kube_client,
    processes,
    settings,
    tmp_path,
):
    """The controller creates the Secret of generated credentials without being able to
    read it back; the web shows it to the owner with the environment's reader account."""
    from environments.access.credentials import generated_values

    start_controller(chart_release, identities["controller"], tmp_path, processes)
    environment = services.request_environment(user=owner, version=sample_blueprints["hotfix"])
    wait_for(lambda: state_of(environment) in {State.READY, State.FAILED}, timeout=180)
    environment.refresh_from_db()
    assert environment.state == State.READY, environment.last_error
    stored = client.CoreV1Api(kube_client).read_namespaced_secret(
        "ephemera-secrets", environment.namespace
    )
    assert set(stored.data) == {"db-password"}
    assert bound_to_reader(kube_client, environment.namespace) == (
        "ClusterRole",
        f"{chart_release.user_role_prefix}secrets",
    )

    # As the web process: revealed through the reader's token only.
    use_credential(settings, identities["web"])
    values = generated_values(environment, owner)
    assert values is not None and len(values["db-password"]) == 24
    # The controller itself may not read it back.
    with pytest.raises(ApiException) as excinfo:
        client.CoreV1Api(api(identities["controller"])).read_namespaced_secret(
            "ephemera-secrets", environment.namespace
        )
    assert excinfo.value.status == 403

    use_credential(settings, identities["controller"])
    services.delete_environment(environment=environment, user=owner)
    wait_for(lambda: state_of(environment) == State.DELETED, timeout=180)


def bound_to_reader(kube_client, namespace: str) -> tuple[str, str]:
    binding = client.RbacAuthorizationV1Api(kube_client).read_namespaced_role_binding(
        "ephemera-secrets-reader", namespace
    )
    return binding.role_ref.kind, binding.role_ref.name
