"""The Helm chart in deploy/chart, for tests: the real helm binary and real installs.

helm is built from its Go module by deploy/localcluster/build.sh into
~/.cache/ephemera/bin (``make test`` and ``make cluster`` build it). A missing helm
fails the test with the command that builds it; nothing is skipped.

``chart_release`` installs the chart into a fresh namespace (a unique release name, so
its cluster-scoped objects never collide with another run's) and uninstalls it after.
On the local cluster kwok simulates the pods: they never run the image, they are just
marked running and ready (and Job pods complete), so an install shows what Kubernetes
does with the chart's objects, not what the portal's processes do.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "chart"
CACHE = Path(os.environ.get("EPHEMERA_CACHE", "~/.cache/ephemera")).expanduser()
HELM = CACHE / "bin" / "helm"
KUBE_VERSION = "1.37.2"  # the local control plane's (deploy/localcluster/build.sh)

# The smallest values that render: an external database and Redis (never reached on the
# simulated cluster) and the portal's host name.
REQUIRED_VALUES = [
    "--set",
    "config.allowedHosts={ephemera.example.com}",
    "--set",
    "database.url=postgresql://ephemera:pw@db.example.com:5432/ephemera",
    "--set",
    "redis.url=redis://redis.example.com:6379/0",
]


def helm(*args: str, kubeconfig: str | None = None, check: bool = True, timeout: float = 600):
    """Run helm; returns the CompletedProcess (stdout/stderr as text)."""
    if not os.access(HELM, os.X_OK):
        pytest.fail(
            f"helm is not built ({HELM} is missing). Build it with: "
            "bash deploy/localcluster/build.sh  (or: make cluster)",
            pytrace=False,
        )
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["HELM_CACHE_HOME"] = str(CACHE / "helm" / "cache")
    env["HELM_CONFIG_HOME"] = str(CACHE / "helm" / "config")
    env["HELM_DATA_HOME"] = str(CACHE / "helm" / "data")
    command = [str(HELM), *args]
    if kubeconfig:
        command += ["--kubeconfig", kubeconfig]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(
            f"helm {' '.join(args[:2])} failed ({result.returncode}):\n{result.stderr}",
            pytrace=False,
        )
    return result


def render(*values: str, release: str = "t", namespace: str = "ephemera", chart=CHART):
    """``helm template``: the manifests as a list of dicts."""
    out = helm(
        "template",
        release,
        str(chart),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *REQUIRED_VALUES,
        *values,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    fullname: str
    kubeconfig: str  # admin: only for installing, minting tokens and checking

    @property
    def controller_sa(self) -> str:
        return f"{self.fullname}-controller"

    @property
    def web_sa(self) -> str:
        return f"{self.fullname}-web"

    @property
    def scheduler_sa(self) -> str:
        return f"{self.fullname}-scheduler"

    @property
    def user_role_prefix(self) -> str:
        return f"{self.fullname}-user-"

    def username(self, service_account: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{service_account}"


def install(kubeconfig: str, *values: str) -> Release:
    """A fresh namespace and release; ``uninstall`` removes both."""
    suffix = uuid.uuid4().hex[:8]
    release = Release(
        name=f"eph{suffix}",
        namespace=f"chart-{suffix}",
        fullname=f"eph{suffix}-ephemera",
        kubeconfig=kubeconfig,
    )
    helm(
        "install",
        release.name,
        str(CHART),
        "--namespace",
        release.namespace,
        "--create-namespace",
        "--wait",
        "--timeout",
        "5m",
        *REQUIRED_VALUES,
        *values,
        kubeconfig=kubeconfig,
    )
    return release


def uninstall(release: Release) -> None:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    helm(
        "uninstall",
        release.name,
        "--namespace",
        release.namespace,
        "--wait",
        "--timeout",
        "3m",
        kubeconfig=release.kubeconfig,
        check=False,
    )
    api = config.new_client_from_config(config_file=release.kubeconfig)
    try:
        client.CoreV1Api(api).delete_namespace(release.namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
    finally:
        api.close()


@pytest.fixture(scope="module")
def chart_release(kube_config):
    """The chart installed (--wait) in a fresh namespace, for this test session's portal
    instance (its admission policy only lets the controller touch that instance's
    namespaces); uninstalled afterwards."""
    from django.conf import settings

    release = install(kube_config, "--set", f"config.instance={settings.EPHEMERA_INSTANCE}")
    try:
        yield release
    finally:
        uninstall(release)


def token_kubeconfig(release: Release, service_account: str, path: Path) -> str:
    """A kubeconfig for ``service_account``'s token (TokenRequest, one hour), written to
    ``path``: the cluster and CA of the admin kubeconfig, nothing else of it."""
    from kubernetes import client, config

    admin = yaml.safe_load(Path(release.kubeconfig).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    api = config.new_client_from_config(config_file=release.kubeconfig)
    try:
        token = (
            client.CoreV1Api(api)
            .create_namespaced_service_account_token(
                service_account,
                release.namespace,
                {"spec": {"expirationSeconds": 3600}},
            )
            .status.token
        )
    finally:
        api.close()
    entry = dict(cluster["cluster"])
    if "certificate-authority" in entry:  # inline the CA file: the kubeconfig stands alone
        ca = Path(entry.pop("certificate-authority")).read_bytes()
        entry["certificate-authority-data"] = base64.b64encode(ca).decode()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": entry}],
                "users": [{"name": service_account, "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": service_account}}],
                "current-context": "c",
            }
        )
    )
    path.chmod(0o600)
    return str(path)


def chart_copy(tmp_path: Path) -> Path:
    """A copy of the chart to change (e.g. add or remove files/alerts.yaml)."""
    target = tmp_path / "chart"
    shutil.copytree(CHART, target)
    return target
