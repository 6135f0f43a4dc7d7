#!/usr/bin/env python3
"""Local Kubernetes control plane for Ephemera: etcd + kube-apiserver +
kube-controller-manager + kube-scheduler + kwok (fake node), all on loopback.

    python deploy/localcluster/localcluster.py start [--timeout S]
    python deploy/localcluster/localcluster.py stop [--wipe]
    python deploy/localcluster/localcluster.py status
    python deploy/localcluster/localcluster.py kubeconfig

Binaries come from ${EPHEMERA_CACHE:-~/.cache/ephemera}/bin, built by
``make cluster`` (``bash deploy/localcluster/build.sh``). State (certs, etcd
data, logs, pid files, admin kubeconfig) lives in
${EPHEMERA_CLUSTER_STATE:-~/.cache/ephemera/cluster}.

Importable API (stdlib only; load this file by path, deploy/ is not a package):
    ensure_running() -> Path   kubeconfig path; starts the cluster if needed
    stop(wipe=False)
    kubeconfig_path() -> Path
    binaries_missing() -> list[str]
    access_rules() -> dict     the "Download kubeconfig" rules per access level
    ensure_user_cluster_roles()  the ClusterRoles environments bind (see below)
    ensure_storage()           the VolumeSnapshot CRDs, StorageClass and volume pool

Simulated storage (issue 15): a second kwok process, "kwok-storage", managing no
nodes, plays kwok-storage-stages.yaml: VolumeSnapshots become readyToUse, and the pool
of PersistentVolumes made by ensure_storage() is reused once a claim lets go. PVC
binding itself is the real PV controller's (static provisioning from that pool).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES_FILE = HERE / "kwok-stages.yaml"
STORAGE_STAGES_FILE = HERE / "kwok-storage-stages.yaml"
# snapshot.storage.k8s.io/v1 CRDs, vendored from github.com/kubernetes-csi/external-snapshotter
# client/v8 v8.7.0 (config/crd), unchanged.
SNAPSHOT_CRDS_DIR = HERE / "volumesnapshot-crds"
LOGS_TEMPLATE = HERE / "kwok-logs.yaml"  # ClusterLogs: what `kubectl logs` shows
# The one home of the per-environment user rights; the Helm chart reads it too.
ACCESS_RULES_FILE = HERE.parent / "chart" / "files" / "access-rules.yaml"
USER_CLUSTER_ROLE_PREFIX = "ephemera-user-"  # settings.KUBE_USER_CLUSTER_ROLE_PREFIX
BUILD_HINT = "make cluster  (or: bash deploy/localcluster/build.sh)"

HOST = "127.0.0.1"
ETCD_CLIENT_PORT = 36379
ETCD_PEER_PORT = 36380
APISERVER_PORT = 36443
KCM_PORT = 36257
SCHEDULER_PORT = 36259
KWOK_PORT = 36247  # kwok's fake-kubelet server (logs/exec/healthz); loopback only
KWOK_STORAGE_PORT = 36248  # the storage kwok's server (unused, but kwok always serves)

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # first IP of SERVICE_CIDR: the `kubernetes` Service
POD_CIDR = "10.244.0.0/16"  # fake pod IPs handed out by kwok; nothing connects to them
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

NODE_NAME = "kwok-node-0"
# Environments' containers request ephemeral-storage (scratch disk): the node has some.
NODE_RESOURCES = {"cpu": "1000", "memory": "4000Gi", "pods": "1000", "ephemeral-storage": "4000Gi"}
NODE_MANIFEST = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": NODE_NAME,
        "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        "labels": {
            "type": "kwok",
            "kubernetes.io/hostname": NODE_NAME,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/role": "agent",
            "node-role.kubernetes.io/agent": "",
        },
    },
    "spec": {},  # no taints: ordinary pods schedule here
    "status": {
        "capacity": NODE_RESOURCES,
        "allocatable": NODE_RESOURCES,
    },
}
# Where kube-apiserver finds the node's "kubelet" (kwok's server) for pod logs: it dials
# the InternalIP (--kubelet-preferred-address-types) on the kubelet endpoint port.
NODE_KUBELET_STATUS = {
    "status": {
        "addresses": [
            {"type": "InternalIP", "address": HOST},
            {"type": "Hostname", "address": NODE_NAME},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KWOK_PORT}},
    }
}

COMPONENTS = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kwok-storage",
]
# A component run from another component's binary.
BINARIES = {"kwok-storage": "kwok"}

# --- simulated storage (issue 15) ---
STORAGE_CLASS = "ephemera-simulated"
SIMULATED_VOLUME_LABEL = "ephemera.io/simulated-volume"
VOLUME_POOL_SIZE = 100
VOLUME_POOL_CAPACITY = "100Gi"
SNAPSHOT_CLASS = "ephemera-simulated"


def binary(name: str) -> str:
    """The file name of a component's binary."""
    return BINARIES.get(name, name)


class ClusterError(RuntimeError):
    pass


class BinariesMissing(ClusterError):
    pass


# ------------------------------------------------------------------ paths


def cache_dir() -> Path:
    return Path(os.environ.get("EPHEMERA_CACHE") or Path.home() / ".cache" / "ephemera")


def bin_dir() -> Path:
    return cache_dir() / "bin"


def state_dir() -> Path:
    return Path(
        os.environ.get("EPHEMERA_CLUSTER_STATE") or Path.home() / ".cache" / "ephemera" / "cluster"
    )


def kubeconfig_path() -> Path:
    """Path of the admin kubeconfig (exists once the cluster was started)."""
    return state_dir() / "kubeconfig"


def _pki() -> Path:
    return state_dir() / "pki"


def _logs() -> Path:
    return state_dir() / "logs"


def _run() -> Path:
    return state_dir() / "run"


def log_file(name: str) -> Path:
    return _logs() / f"{name}.log"


def _pid_file(name: str) -> Path:
    return _run() / f"{name}.pid"


def simulated_log_file() -> Path:
    """The file kwok serves as every container's log (``kubectl logs``, the portal).

    Lines are in the CRI log format (``<RFC 3339 time> stdout F <text>``); append one and
    a following reader (``kubectl logs -f``) sees it."""
    return state_dir() / "kwok" / "containers.log"


def _logs_config() -> Path:
    return state_dir() / "kwok" / "kwok-logs.yaml"


def binaries_missing() -> list[str]:
    """Paths of required binaries that are not built yet (empty list: all there)."""
    names = sorted({binary(c) for c in COMPONENTS})
    return [str(bin_dir() / b) for b in names if not os.access(bin_dir() / b, os.X_OK)]


def _say(msg: str) -> None:
    print(f"[localcluster] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ certificates


def _openssl(*args: str) -> None:
    r = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args)} failed:\n{r.stderr}")


def _new_ca(name: str, cn: str) -> None:
    pki = _pki()
    args = f"req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 -subj /CN={cn}".split()
    args += ["-keyout", str(pki / f"{name}.key"), "-out", str(pki / f"{name}.crt")]
    for ext in (
        "basicConstraints=critical,CA:TRUE",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "subjectKeyIdentifier=hash",
    ):
        args += ["-addext", ext]
    _openssl(*args)


def _issue(name: str, subj: str, ext: str, ca: str = "ca") -> None:
    """Key + certificate `name` signed by CA `ca`, valid 10 years."""
    pki = _pki()
    key, csr, crt = pki / f"{name}.key", pki / f"{name}.csr", pki / f"{name}.crt"
    extfile = pki / f"{name}.ext"
    extfile.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" + ext
    )
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", subj)  # fmt: skip
    serial = str(int.from_bytes(os.urandom(8), "big"))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / f"{ca}.crt"),
             "-CAkey", str(pki / f"{ca}.key"), "-set_serial", serial, "-days", "3650",
             "-sha256", "-extfile", str(extfile), "-out", str(crt))  # fmt: skip
    csr.unlink()
    extfile.unlink()
    key.chmod(0o600)


def ensure_certs() -> None:
    """Create the PKI once: cluster CA; apiserver serving cert; admin (system:masters),
    controller-manager and scheduler client certs; service-account RSA key pair; and a
    separate front-proxy CA + client cert (requestheader authn for aggregated APIs)."""
    pki = _pki()
    if not shutil.which("openssl") and not (pki / ".complete").exists():
        raise ClusterError("the `openssl` CLI is needed to generate cluster certificates")
    if not (pki / ".complete").exists():
        _say("generating certificates in " + str(pki))
        shutil.rmtree(pki, ignore_errors=True)
        pki.mkdir(parents=True, mode=0o700)
        _new_ca("ca", "ephemera-local-ca")
        sans = ",".join([
            "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local",
            f"IP:{HOST}", f"IP:{SERVICE_IP}",
        ])  # fmt: skip
        server = f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n"
        client = "extendedKeyUsage=clientAuth\n"
        _issue("apiserver", "/CN=kube-apiserver", server)
        _issue("admin", "/O=system:masters/CN=ephemera-admin", client)
        _issue("controller-manager", "/CN=system:kube-controller-manager", client)
        _issue("scheduler", "/CN=system:kube-scheduler", client)
        _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
        _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
        (pki / "sa.key").chmod(0o600)
        (pki / ".complete").write_text("ok\n")
    if not (pki / "front-proxy-client.crt").exists():
        _new_ca("front-proxy-ca", "ephemera-front-proxy-ca")
        _issue("front-proxy-client", "/CN=front-proxy-client", "extendedKeyUsage=clientAuth\n",
               ca="front-proxy-ca")  # fmt: skip
    for k in pki.glob("*.key"):
        k.chmod(0o600)


def _write_kubeconfig(path: Path, user: str, cert: str) -> None:
    import base64

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    pki = _pki()
    text = f"""apiVersion: v1
kind: Config
clusters:
- name: ephemera-local
  cluster:
    server: https://{HOST}:{APISERVER_PORT}
    certificate-authority-data: {b64(pki / "ca.crt")}
users:
- name: {user}
  user:
    client-certificate-data: {b64(pki / f"{cert}.crt")}
    client-key-data: {b64(pki / f"{cert}.key")}
contexts:
- name: ephemera-local
  context:
    cluster: ephemera-local
    user: {user}
current-context: ephemera-local
"""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)


def ensure_kubeconfigs() -> None:
    _write_kubeconfig(kubeconfig_path(), "ephemera-admin", "admin")
    _write_kubeconfig(
        _pki() / "controller-manager.kubeconfig",
        "system:kube-controller-manager",
        "controller-manager",
    )
    _write_kubeconfig(_pki() / "scheduler.kubeconfig", "system:kube-scheduler", "scheduler")


# ------------------------------------------------------------------ simulated logs

# What every container "prints" on the local control plane (there are no containers).
SIMULATED_LOG_LINES = [
    "stdout starting (simulated log: kwok serves this file for every container)",
    "stdout configuration loaded",
    "stdout listening on 0.0.0.0",
    'stdout GET /healthz 200 0.4ms "kube-probe"',
    'stdout GET / 200 2.1ms "Mozilla/5.0"',
    'stdout GET /api/items 200 5.8ms "Mozilla/5.0"',
    "stderr warning: cache miss ratio 0.12 is above 0.10",
    'stdout GET /healthz 200 0.3ms "kube-probe"',
    "stdout ready",
]


def ensure_simulated_logs() -> None:
    """Write the simulated container log (once: lines appended later are kept) and the
    ClusterLogs config that points kwok at it (rewritten when it differs)."""
    log = simulated_log_file()
    log.parent.mkdir(parents=True, exist_ok=True)
    if not log.exists():
        start = time.time() - len(SIMULATED_LOG_LINES)
        lines = []
        for i, line in enumerate(SIMULATED_LOG_LINES):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + i))
            stream, text = line.split(" ", 1)
            lines.append(f"{stamp}.000000000Z {stream} F {text}\n")
        tmp = log.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        tmp.replace(log)
    config = LOGS_TEMPLATE.read_text().replace("@LOGS_FILE@", str(log))
    if not _logs_config().exists() or _logs_config().read_text() != config:
        _logs_config().write_text(config)


# ------------------------------------------------------------------ processes


def _cmdline(name: str) -> list[str]:
    b, pki, st = bin_dir(), _pki(), state_dir()
    if name == "etcd":
        peer = f"http://{HOST}:{ETCD_PEER_PORT}"
        client = f"http://{HOST}:{ETCD_CLIENT_PORT}"
        return [
            str(b / "etcd"),
            "--name=ephemera",
            f"--data-dir={st / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=ephemera={peer}",
            "--initial-cluster-state=new",
            # a throw-away dev cluster: trade crash-durability for speed
            "--unsafe-no-fsync=true",
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=1h",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ]
    if name == "kube-apiserver":
        return [
            str(b / "kube-apiserver"),
            f"--etcd-servers=http://{HOST}:{ETCD_CLIENT_PORT}",
            f"--bind-address={HOST}",
            f"--advertise-address={HOST}",
            f"--secure-port={APISERVER_PORT}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            # front proxy (aggregation layer) + requestheader authn, as kubeadm sets it up;
            # the controller-manager and scheduler read this CA for delegated authn.
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            # PodSecurity is on by default; ResourceQuota is default too, made explicit here.
            "--enable-admission-plugins=NodeRestriction,ResourceQuota",
            "--allow-privileged=true",  # so a privileged pod reaches PodSecurity admission
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--endpoint-reconciler-type=none",  # 127.0.0.1 is not a valid Endpoints address
            # etcd 3.5.1 (< 3.5.13) lacks RequestWatchProgress, so the watch cache refuses
            # streaming watch-list requests. With the WatchList gate on, the apiserver turns
            # every watch from resourceVersion "" or "0" that asks for bookmarks into one
            # (sendInitialEvents defaulting), and it ends at once with an error. kwok v0.8
            # watches that way, so it would only notice new pods on relist (10-30 s later).
            "--feature-gates=WatchList=false",
            "--profiling=false",
            "--event-ttl=30m",
            # Pod logs come from kwok's fake-kubelet server on the node's InternalIP
            # (127.0.0.1:KWOK_PORT); the node's Hostname does not resolve. With no
            # --kubelet-certificate-authority the apiserver does not verify kwok's
            # self-signed serving certificate (loopback only).
            "--kubelet-preferred-address-types=InternalIP",
        ]
    if name == "kube-controller-manager":
        kc = pki / "controller-manager.kubeconfig"
        return [
            str(b / "kube-controller-manager"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            f"--bind-address={HOST}",
            f"--secure-port={KCM_PORT}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--use-service-account-credentials=true",
            "--controllers=*",
            "--leader-elect=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # one fake node, local API: no need to throttle the controllers
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            # Empty deleted namespaces 50 at a time (default 10): a class ending, or a
            # user deleting many one by one, should not queue behind the 5 s wait.
            "--concurrent-namespace-syncs=50",
            "--profiling=false",
        ]
    if name == "kube-scheduler":
        kc = pki / "scheduler.kubeconfig"
        return [
            str(b / "kube-scheduler"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            f"--bind-address={HOST}",
            f"--secure-port={SCHEDULER_PORT}",
            "--leader-elect=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--profiling=false",
        ]
    if name == "kwok":
        return [
            str(b / "kwok"),
            f"--kubeconfig={kubeconfig_path()}",
            f"--config={STAGES_FILE}",
            f"--config={_logs_config()}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-lease-duration-seconds=40",
            f"--node-ip={HOST}",
            f"--cidr={POD_CIDR}",
            f"--server-address={HOST}:{KWOK_PORT}",
            # the node's kubelet endpoint port, kept by kwok's node stages
            f"--node-port={KWOK_PORT}",
        ]
    if name == "kwok-storage":
        return [
            str(b / "kwok"),
            f"--kubeconfig={kubeconfig_path()}",
            f"--config={STORAGE_STAGES_FILE}",
            # No node is managed by this one: the annotation is on none.
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=storage-only",
            f"--server-address={HOST}:{KWOK_STORAGE_PORT}",
        ]
    raise KeyError(name)


def _ports(name: str) -> list[int]:
    return {
        "etcd": [ETCD_CLIENT_PORT, ETCD_PEER_PORT],
        "kube-apiserver": [APISERVER_PORT],
        "kube-controller-manager": [KCM_PORT],
        "kube-scheduler": [SCHEDULER_PORT],
        "kwok": [KWOK_PORT],
        "kwok-storage": [KWOK_STORAGE_PORT],
    }[name]


def _read_pid(name: str) -> int | None:
    try:
        return int(_pid_file(name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, name: str | None = None) -> bool:
    """True if pid runs (not a zombie) and, when name is given, is that binary.

    The binary is read from /proc/<pid>/exe, which is stable for the life of the
    process; /proc/<pid>/cmdline (the fallback) can read empty for an instant.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
    except (OSError, IndexError):
        return False
    if name is None:
        return True
    try:
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
        return Path(exe).name == binary(name)
    except OSError:
        pass
    for _ in range(3):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
        except OSError:
            return False
        if argv0:
            return Path(argv0).name == binary(name)
        time.sleep(0.05)
    return False


def component_pid(name: str) -> int | None:
    pid = _read_pid(name)
    return pid if pid and _alive(pid, name) else None


def _flags(argv: list[str]) -> list[str]:
    """A command line's flags with paths reduced to file names, so a cluster started from
    another checkout (or another EPHEMERA_CACHE) does not count as started differently."""
    flags = []
    for arg in argv[1:]:
        flag, eq, value = arg.partition("=")
        flags.append(f"{flag}={Path(value).name}" if eq and "/" in value else arg)
    return flags


def started_differently(name: str) -> bool:
    """The running component's flags differ from what ``_cmdline`` asks for now (this
    file changed since it started): ``start`` restarts it."""
    pid = component_pid(name)
    if not pid:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    argv = [a for a in argv if a]
    return bool(argv) and _flags(argv) != _flags(_cmdline(name))


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def _orphans(name: str) -> list[int]:
    """Our own binary serving this state dir, with no pid file pointing at it (left
    behind by a launcher that was killed mid-start)."""
    found = []
    path = str(bin_dir() / binary(name))
    port = str(_ports(name)[0])  # two components may share a binary (kwok)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe").removesuffix(" (deleted)")
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if exe == path and str(state_dir()) in cmdline and port in cmdline:
            found.append(int(entry.name))
    return found


def _spawn(name: str) -> int:
    busy = [p for p in _ports(name) if _port_in_use(p)]
    if busy:
        for sig, seconds in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            for pid in _orphans(name):
                _say(f"stopping a left-over {name} (pid {pid}) that holds port(s) {busy}")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + seconds
            while _orphans(name) and time.monotonic() < deadline:
                time.sleep(0.2)
            busy = [p for p in _ports(name) if _port_in_use(p)]
            if not busy:
                break
    if busy:
        raise ClusterError(
            f"cannot start {name}: port(s) {busy} on {HOST} already in use by another process "
            f"(another local cluster with a different EPHEMERA_CLUSTER_STATE?)"
        )
    argv = _cmdline(name)
    lf = log_file(name)
    if lf.exists() and lf.stat().st_size > 50 * 1024 * 1024:
        lf.replace(lf.with_suffix(".log.1"))
    with open(lf, "ab") as out:
        out.write(
            f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode()
        )
        out.flush()
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=state_dir(),
            start_new_session=True,
            close_fds=True,
        )
    p.returncode = 0  # detached: never reaped here, silence Popen's ResourceWarning
    _pid_file(name).write_text(f"{p.pid}\n")
    return p.pid


def _kill(name: str, sig: int) -> None:
    pid = _read_pid(name)
    if pid and _alive(pid, name):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)  # started with start_new_session: pgid == pid


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _wait_dead(names: list[str], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for n in names:
            pid = _read_pid(n)
            if pid:
                _reap(pid)
                if _alive(pid, n):
                    left.append(n)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _stop_components(names: list[str], timeout: float = 20) -> None:
    running = [n for n in names if component_pid(n)]
    for n in running:
        _kill(n, signal.SIGTERM)
    left = _wait_dead(running, timeout)
    for n in left:
        _say(f"{n} did not exit after SIGTERM, sending SIGKILL")
        _kill(n, signal.SIGKILL)
    _wait_dead(left, 5)
    for n in names:
        with contextlib.suppress(FileNotFoundError):
            _pid_file(n).unlink()


# ------------------------------------------------------------------ health


def _ssl_ctx(verify: bool = True) -> ssl.SSLContext:
    pki = _pki()
    if verify:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    else:  # controller-manager/scheduler serve self-signed certs made at startup
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def _http(
    method: str,
    url: str,
    body: dict | None = None,
    timeout: float = 3,
    verify: bool = True,
    content_type: str = "application/json",
    raw: bytes | None = None,
) -> tuple[int, bytes]:
    data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    ctx = _ssl_ctx(verify) if url.startswith("https") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError, ssl.SSLError) as e:
        return 0, str(e).encode()


def _api(
    method: str,
    path: str,
    body: dict | None = None,
    timeout: float = 3,
    content_type: str = "application/json",
    raw: bytes | None = None,
) -> tuple[int, bytes]:
    return _http(
        method,
        f"https://{HOST}:{APISERVER_PORT}{path}",
        body,
        timeout,
        content_type=content_type,
        raw=raw,
    )


def etcd_healthy() -> bool:
    code, body = _http("GET", f"http://{HOST}:{ETCD_CLIENT_PORT}/health", timeout=2)
    return code == 200 and b'"true"' in body


def apiserver_ready() -> bool:
    if not (_pki() / ".complete").exists():
        return False
    code, _ = _api("GET", "/readyz", timeout=2)
    return code == 200


def _component_healthy(port: int) -> bool:
    code, _ = _http("GET", f"https://{HOST}:{port}/healthz", timeout=2, verify=False)
    return code == 200


LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE_NAME}"


def node_ready() -> bool:
    """The fake node is Ready and kwok holds its lease (so kwok is managing it).

    kwok sets Ready on a new node (node-initialize stage) and creates the node lease; on a
    warm restart Ready is the persisted condition and the lease, deleted just before kwok
    starts, proves the new kwok process has taken the node over."""
    code, body = _api("GET", f"/api/v1/nodes/{NODE_NAME}")
    if code != 200:
        return False
    conds = json.loads(body).get("status", {}).get("conditions") or []
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
        return False
    code, body = _api("GET", LEASE_PATH)
    return code == 200 and bool(json.loads(body).get("spec", {}).get("holderIdentity"))


def _wait(what: str, check, timeout: float, names: list[str], respawn=None) -> None:
    """Poll ``check`` until true. A component that exits meanwhile fails the start,
    unless ``respawn(name)`` returns True: it was a process this run found already
    running (e.g. an apiserver still shutting down after SIGTERM, which takes up to a
    minute) and has now started afresh."""
    deadline = time.monotonic() + timeout
    misses = dict.fromkeys(names, 0)
    while not check():
        for n in names:
            # Gone on three polls in a row, not one: a single odd /proc read is no exit.
            misses[n] = 0 if component_pid(n) else misses[n] + 1
            if misses[n] >= 3 and respawn is not None and respawn(n):
                misses[n] = 0
                continue
            if misses[n] >= 3:
                raise ClusterError(
                    f"{n} exited while waiting for {what}; see {log_file(n)}:\n"
                    + _tail(log_file(n))
                )
        if time.monotonic() > deadline:
            raise ClusterError(
                f"timed out after {timeout:.0f}s waiting for {what}; logs in {_logs()}"
            )
        time.sleep(0.1)


def node_serves_logs() -> bool:
    """The fake node names kwok's server as its kubelet (address and port), so
    kube-apiserver can fetch pod logs from it."""
    code, body = _api("GET", f"/api/v1/nodes/{NODE_NAME}")
    if code != 200:
        return False
    status = json.loads(body).get("status", {})
    port = status.get("daemonEndpoints", {}).get("kubeletEndpoint", {}).get("Port")
    addresses = status.get("addresses") or []
    return port == KWOK_PORT and {"type": "InternalIP", "address": HOST} in addresses


def node_has_storage() -> bool:
    """The fake node offers ephemeral-storage (a node made by an older release did not)."""
    code, body = _api("GET", f"/api/v1/nodes/{NODE_NAME}")
    if code != 200:
        return False
    return "ephemeral-storage" in json.loads(body).get("status", {}).get("allocatable", {})


def _give_node_storage() -> None:
    resources = {"capacity": NODE_RESOURCES, "allocatable": NODE_RESOURCES}
    code, body = _api(
        "PATCH",
        f"/api/v1/nodes/{NODE_NAME}/status",
        {"status": resources},
        content_type="application/merge-patch+json",
    )
    if code != 200:
        raise ClusterError(f"patching node {NODE_NAME} status failed: HTTP {code} {body[:500]!r}")


def _point_node_at_kwok() -> None:
    code, body = _api(
        "PATCH",
        f"/api/v1/nodes/{NODE_NAME}/status",
        NODE_KUBELET_STATUS,
        content_type="application/merge-patch+json",
    )
    if code != 200:
        raise ClusterError(f"patching node {NODE_NAME} status failed: HTTP {code} {body[:500]!r}")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def healthy() -> bool:
    return (
        all(component_pid(n) for n in COMPONENTS)
        and apiserver_ready()
        and _component_healthy(KCM_PORT)
        and _component_healthy(SCHEDULER_PORT)
        and node_ready()
        and node_serves_logs()
        and _logs_config().exists()
        and not any(started_differently(n) for n in COMPONENTS)
    )


# ------------------------------------------------------------------ start / stop


@contextlib.contextmanager
def _lock():
    state_dir().mkdir(parents=True, exist_ok=True)
    with open(state_dir() / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def access_rules() -> dict[str, list[dict]]:
    """Access level -> RBAC rules, from deploy/chart/files/access-rules.yaml (JSON syntax,
    # comment lines)."""
    text = "".join(
        line
        for line in ACCESS_RULES_FILE.read_text().splitlines(keepends=True)
        if not line.lstrip().startswith("#")
    )
    return json.loads(text)


def user_cluster_roles(prefix: str = USER_CLUSTER_ROLE_PREFIX) -> list[dict]:
    """The ClusterRoles each environment's RoleBinding points at, one per access level.
    The Helm chart ships its own (named after the release); development and tests on
    this cluster run as admin with the default names, made here."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": f"{prefix}{level}",
                "labels": {"app.kubernetes.io/managed-by": "ephemera-localcluster"},
            },
            "rules": rules,
        }
        for level, rules in access_rules().items()
    ]


def ensure_user_cluster_roles() -> None:
    """Create or update the default user ClusterRoles (server-side apply, idempotent)."""
    for role in user_cluster_roles():
        path = (
            f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role['metadata']['name']}"
            "?fieldManager=ephemera-localcluster&force=true"
        )
        for attempt in range(5):
            code, body = _api(
                "PATCH", path, role, timeout=10, content_type="application/apply-patch+yaml"
            )
            if code in (200, 201) or 400 <= code < 500:
                break
            time.sleep(0.5 * (attempt + 1))  # 0 (no answer) or 5xx: the server is busy
        if code not in (200, 201):
            raise ClusterError(
                f"applying ClusterRole {role['metadata']['name']} failed: HTTP {code} {body[:300]!r}"
            )


def _apply(path: str, body: dict | None = None, raw: bytes | None = None) -> None:
    """Server-side apply (idempotent), retried while the server is busy."""
    url = f"{path}?fieldManager=ephemera-localcluster&force=true"
    for attempt in range(5):
        code, answer = _api(
            "PATCH", url, body, timeout=10, content_type="application/apply-patch+yaml", raw=raw
        )
        if code in (200, 201) or 400 <= code < 500:
            break
        time.sleep(0.5 * (attempt + 1))
    if code not in (200, 201):
        raise ClusterError(f"applying {path} failed: HTTP {code} {answer[:300]!r}")


def snapshot_crds_served() -> bool:
    code, _ = _api("GET", "/apis/snapshot.storage.k8s.io/v1")
    return code == 200


def storage_objects() -> list[dict]:
    """The default StorageClass and VolumeSnapshotClass of the simulated data plane."""
    labels = {"app.kubernetes.io/managed-by": "ephemera-localcluster"}
    return [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "labels": labels,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            # Static provisioning: claims bind to the pool's volumes (the PV controller).
            "provisioner": "kubernetes.io/no-provisioner",
            "reclaimPolicy": "Retain",
            "volumeBindingMode": "Immediate",
        },
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotClass",
            "metadata": {
                "name": SNAPSHOT_CLASS,
                "labels": labels,
                "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"},
            },
            "driver": "simulated.ephemera.io",
            "deletionPolicy": "Delete",
        },
    ]


def pool_volume(index: int) -> dict:
    name = f"{STORAGE_CLASS}-{index:03d}"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/managed-by": "ephemera-localcluster",
                SIMULATED_VOLUME_LABEL: "true",
            },
        },
        "spec": {
            "capacity": {"storage": VOLUME_POOL_CAPACITY},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
            # Never mounted: kwok runs no containers.
            "hostPath": {"path": f"/var/lib/ephemera-simulated/{name}"},
        },
    }


def ensure_storage(timeout: float = 30) -> None:
    """The simulated storage data plane (idempotent): the VolumeSnapshot CRDs (served
    once Established), the default StorageClass and VolumeSnapshotClass, and a pool of
    PersistentVolumes for claims to bind to."""
    for crd in sorted(SNAPSHOT_CRDS_DIR.glob("*.yaml")):
        name = crd.name.split("_", 1)[1].removesuffix(".yaml") + ".snapshot.storage.k8s.io"
        text = crd.read_text().removeprefix("---\n")
        _apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", raw=text.encode())
    deadline = time.monotonic() + timeout
    while not snapshot_crds_served():
        if time.monotonic() > deadline:
            raise ClusterError("snapshot.storage.k8s.io/v1 is not served after installing its CRDs")
        time.sleep(0.2)
    storage_class, snapshot_class = storage_objects()
    _apply(f"/apis/storage.k8s.io/v1/storageclasses/{STORAGE_CLASS}", storage_class)
    # The VolumeSnapshot CRD's discovery may lag its Established condition a moment.
    for attempt in range(20):
        try:
            _apply(f"/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses/{SNAPSHOT_CLASS}",
                   snapshot_class)  # fmt: skip
            break
        except ClusterError:
            if attempt == 19:
                raise
            time.sleep(0.25)
    code, body = _api(
        "GET",
        f"/api/v1/persistentvolumes?labelSelector={SIMULATED_VOLUME_LABEL}%3Dtrue",
        timeout=10,
    )
    have = (
        {item["metadata"]["name"] for item in json.loads(body).get("items", [])}
        if code == 200
        else set()
    )
    for index in range(VOLUME_POOL_SIZE):
        volume = pool_volume(index)
        if volume["metadata"]["name"] in have:
            continue
        code, answer = _api("POST", "/api/v1/persistentvolumes", volume, timeout=10)
        if code not in (201, 409):
            raise ClusterError(f"creating PersistentVolume failed: HTTP {code} {answer[:300]!r}")


def _create_node() -> None:
    code, body = _api("POST", "/api/v1/nodes", NODE_MANIFEST)
    if code not in (201, 409):
        raise ClusterError(f"creating node {NODE_NAME} failed: HTTP {code} {body[:500]!r}")


def start(timeout: float = 120) -> Path:
    """Start whatever is not running; return the admin kubeconfig path."""
    missing = binaries_missing()
    if missing:
        raise BinariesMissing(
            "local cluster binaries are missing:\n  "
            + "\n  ".join(missing)
            + f"\nBuild them with: {BUILD_HINT}"
        )
    with _lock():
        if healthy():
            ensure_user_cluster_roles()
            ensure_storage()
            _say(f"already running and healthy; kubeconfig: {kubeconfig_path()}")
            return kubeconfig_path()
        t0 = time.monotonic()
        elapsed = lambda: f"{time.monotonic() - t0:5.1f}s"  # noqa: E731
        for d in (_logs(), _run(), state_dir() / "etcd"):
            d.mkdir(parents=True, exist_ok=True)
        (state_dir() / "etcd").chmod(0o700)
        ensure_certs()
        ensure_kubeconfigs()
        ensure_simulated_logs()
        # Started with other flags (this file changed): restart those, etcd's data kept.
        stale = [n for n in COMPONENTS if started_differently(n)]
        if stale:
            _say(f"{elapsed()} restarting {', '.join(stale)}: started with other flags")
            _stop_components(list(reversed(stale)))

        started: list[str] = []
        found_running: set[str] = set()

        def up(name: str) -> None:
            if component_pid(name):
                found_running.add(name)  # healthy, starting, or still shutting down
                return
            pid = _spawn(name)
            started.append(name)
            _say(f"{elapsed()} started {name} (pid {pid}, log {log_file(name)})")

        def respawn(name: str) -> bool:
            """One we found running has exited (it was shutting down): start it again."""
            if name not in found_running or name in started:
                return False
            found_running.discard(name)
            _say(f"{elapsed()} {name} we found running has exited (it was stopping); starting it")
            up(name)
            return True

        try:
            up("etcd")
            _wait("etcd health", etcd_healthy, 30, ["etcd"])
            _say(f"{elapsed()} etcd healthy")
            up("kube-apiserver")
            _wait(
                "kube-apiserver /readyz",
                apiserver_ready,
                timeout,
                ["etcd", "kube-apiserver"],
                respawn=respawn,
            )
            t_ready = time.monotonic() - t0
            _say(f"{elapsed()} kube-apiserver /readyz ok")
            if not component_pid("kwok"):
                # The lease left by the previous kwok process names that process as holder;
                # a new kwok waits for it to expire (up to 40 s) before it manages the node
                # and its pods. Removing it lets the new process take over at once.
                _api("DELETE", LEASE_PATH)
            for n in ("kube-controller-manager", "kube-scheduler", "kwok"):
                up(n)
            # The storage kwok looks the VolumeSnapshot kind up when it starts.
            ensure_storage()
            _say(f"{elapsed()} VolumeSnapshot CRDs, StorageClass and volume pool in place")
            up("kwok-storage")
            _create_node()
            _wait(f"node {NODE_NAME} Ready", node_ready, timeout, COMPONENTS, respawn=respawn)
            t_node = time.monotonic() - t0
            _say(f"{elapsed()} node {NODE_NAME} Ready")
            if not node_serves_logs():
                _point_node_at_kwok()
                _say(f"{elapsed()} node {NODE_NAME} points at kwok's server for pod logs")
            if not node_has_storage():
                _give_node_storage()
                _say(f"{elapsed()} node {NODE_NAME} offers ephemeral-storage")
            _wait(
                "kube-controller-manager and kube-scheduler /healthz",
                lambda: _component_healthy(KCM_PORT) and _component_healthy(SCHEDULER_PORT),
                timeout,
                COMPONENTS,
            )
            _say(f"{elapsed()} controller-manager and scheduler healthy")
            ensure_user_cluster_roles()
            _say(f"{elapsed()} user ClusterRoles ({USER_CLUSTER_ROLE_PREFIX}*) in place")
        except BaseException:
            _say("start failed; stopping the components this run started: " + ", ".join(started))
            _stop_components(list(reversed(started)))
            raise
        _say(
            f"cluster up: /readyz after {t_ready:.1f}s, node Ready after {t_node:.1f}s, "
            f"total {time.monotonic() - t0:.1f}s"
        )
        _say(f"export KUBECONFIG={kubeconfig_path()}")
        return kubeconfig_path()


def ensure_running(timeout: float = 120) -> Path:
    """Return the admin kubeconfig path, starting the local cluster if it is not healthy.
    Raises BinariesMissing (a ClusterError) when `make cluster` has not been run."""
    if not binaries_missing() and healthy():
        ensure_user_cluster_roles()
        ensure_storage()
        return kubeconfig_path()
    return start(timeout)


def stop(wipe: bool = False) -> None:
    """Stop all components (SIGTERM, then SIGKILL after 20 s). wipe=True also deletes the state dir."""
    with _lock():
        _stop_components(["kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver"])
        _stop_components(["etcd"])
        if wipe:
            for child in state_dir().iterdir():
                if child.name == ".lock":
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            _say(f"stopped; wiped {state_dir()}")
        else:
            _say(f"stopped; data kept in {state_dir()} (use --wipe to delete it)")


def status() -> bool:
    ok = True
    print(f"state dir : {state_dir()}")
    print(
        f"binaries  : {bin_dir()}"
        + (
            ""
            if not binaries_missing()
            else f"  (MISSING: {', '.join(Path(m).name for m in binaries_missing())}; run {BUILD_HINT})"
        )
    )
    for n in COMPONENTS:
        pid = component_pid(n)
        ok &= bool(pid)
        print(
            f"{n:28s}: " + (f"running (pid {pid})" if pid else "stopped") + f"  log {log_file(n)}"
        )
    checks = [
        ("etcd /health", etcd_healthy()),
        ("apiserver /readyz", apiserver_ready()),
        ("controller-manager /healthz", _component_healthy(KCM_PORT)),
        ("scheduler /healthz", _component_healthy(SCHEDULER_PORT)),
        (f"node {NODE_NAME} Ready", node_ready()),
        ("pod logs served by kwok", node_serves_logs() and _logs_config().exists()),
        ("flags as localcluster.py asks", not any(started_differently(n) for n in COMPONENTS)),
    ]
    for what, good in checks:
        ok &= good
        print(f"{what:28s}: {'ok' if good else 'NOT OK'}")
    print(f"kubeconfig: {kubeconfig_path()}")
    print("healthy" if ok else "NOT healthy")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_start = sub.add_parser("start", help="start (idempotent) and wait for node Ready")
    p_start.add_argument("--timeout", type=float, default=120)
    p_stop = sub.add_parser("stop", help="stop all components, keep data")
    p_stop.add_argument("--wipe", action="store_true", help="also delete the state dir")
    sub.add_parser("status", help="show components and health; exit 1 if unhealthy")
    sub.add_parser("kubeconfig", help="print the admin kubeconfig path")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "start":
            print(start(args.timeout))
        elif args.cmd == "stop":
            stop(args.wipe)
        elif args.cmd == "status":
            return 0 if status() else 1
        elif args.cmd == "kubeconfig":
            print(kubeconfig_path())
    except BinariesMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
