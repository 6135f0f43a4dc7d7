"""The only module that talks to the Kubernetes API server.

- One API client per process, from ``settings.KUBECONFIG`` (or in-cluster config).
- Objects are created and updated with server-side apply, field manager ``ephemera``,
  so applying the same manifest twice is a no-op (resourceVersion unchanged).
- Timeouts, connection errors, 429 and 5xx are retried with jittered exponential
  backoff, honouring Retry-After, until a deadline. A 409 on create means "already
  exists" and a 404 on delete means "already gone"; anything else raises
  ``ClusterError`` with the API server's own message.
- The watcher's list and watch calls (``list_objects``, ``watch_objects``) are here too:
  raw JSON, no model deserialisation; ``kube.reflector`` keeps the local stores.
- Pod and Event reasons become ``Problem``s in plain words.
- Pod logs (``pod_logs``) are read here too, bounded in lines, bytes and pods.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import urllib3
from django.conf import settings
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from environments.kube.objects import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGER,
    USER_ACCOUNT,
)
from environments.lib.naming import NAMESPACE_PREFIX

log = logging.getLogger(__name__)

FIELD_MANAGER = "ephemera"
RETRYABLE_STATUS = {429, 500, 502, 503, 504}


def _transient(exc: ApiException) -> bool:
    """Worth retrying: throttling and server errors, and one 422 that is really a server
    error. kube-apiserver allocates a Service's cluster IP through its own API (IPAddress
    objects); while it is shutting down or starting, that inner call fails and the create
    is answered 422 'failed to allocate IP ... connection refused', though nothing is
    wrong with the Service."""
    if exc.status in RETRYABLE_STATUS:
        return True
    return exc.status == 422 and "failed to allocate IP" in _api_message(exc)


# (apiVersion, kind) -> (path prefix, plural, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("v1", "Namespace"): ("/api/v1", "namespaces", False),
    ("v1", "ResourceQuota"): ("/api/v1", "resourcequotas", True),
    ("v1", "LimitRange"): ("/api/v1", "limitranges", True),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts", True),
    ("v1", "Service"): ("/api/v1", "services", True),
    ("v1", "Secret"): ("/api/v1", "secrets", True),
    ("v1", "PersistentVolumeClaim"): ("/api/v1", "persistentvolumeclaims", True),
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshot"): (
        "/apis/snapshot.storage.k8s.io/v1",
        "volumesnapshots",
        True,
    ),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): (
        "/apis/networking.k8s.io/v1",
        "networkpolicies",
        True,
    ),
    ("networking.k8s.io/v1", "Ingress"): ("/apis/networking.k8s.io/v1", "ingresses", True),
    ("rbac.authorization.k8s.io/v1", "Role"): ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (
        "/apis/rbac.authorization.k8s.io/v1",
        "rolebindings",
        True,
    ),
}


class ClusterError(Exception):
    """The API server refused a request; ``str()`` is its own message."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ClusterUnavailable(ClusterError):
    """The API server could not be reached (or kept failing) until the deadline."""


# Counts API requests in this process; the provisioning benchmark reads it.
request_count = 0


@functools.cache
def api_client() -> client.ApiClient:
    """One client per process (KubeSpawner's ``shared_client``)."""
    if os.path.exists(settings.KUBECONFIG):
        return config.new_client_from_config(config_file=settings.KUBECONFIG)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    raise ClusterUnavailable(
        f"No cluster configured: {settings.KUBECONFIG} does not exist. Run `make cluster` "
        "for the local control plane, or set KUBECONFIG."
    )


def reset_client() -> None:
    """Forget the cached client (after KUBECONFIG changes, e.g. in tests)."""
    _volume_snapshots_served.clear()
    api_client.cache_clear()


def _api_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        return body.get("message") or str(exc.reason)
    except (ValueError, AttributeError):
        return (exc.body or str(exc.reason) or "unknown error").strip()


def _retry_after(exc: ApiException) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def with_retries(
    call: Callable[[], Any], *, what: str, deadline_seconds: float | None = None
) -> Any:
    """Run ``call``; retry timeouts, connection errors, 429 and 5xx until the deadline."""
    deadline = time.monotonic() + (
        settings.KUBE_RETRY_SECONDS if deadline_seconds is None else deadline_seconds
    )
    attempt = 0
    while True:
        try:
            return call()
        except ApiException as exc:
            if not _transient(exc):
                raise ClusterError(f"{what}: {_api_message(exc)}", exc.status) from exc
            last_error: str = f"{exc.status} {_api_message(exc)}"
            server_wait = _retry_after(exc)
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
            server_wait = None
        attempt += 1
        backoff = min(8.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.0)
        wait = max(backoff, server_wait or 0)
        if time.monotonic() + wait > deadline:
            raise ClusterUnavailable(f"{what}: the API server kept failing ({last_error})")
        log.warning("%s failed (%s); retrying in %.1fs", what, last_error, wait)
        time.sleep(wait)


# Whether the cluster serves snapshot.storage.k8s.io/v1, looked up once per process and
# client (reset_client forgets it).
_volume_snapshots_served: dict[str, bool] = {}


def serves_volume_snapshots() -> bool:
    """Whether the cluster serves VolumeSnapshots (snapshot.storage.k8s.io/v1), from API
    discovery, once. An unreachable server raises ``ClusterUnavailable``; not cached."""
    if "answer" not in _volume_snapshots_served:
        try:
            with_retries(
                lambda: _request("GET", "/apis/snapshot.storage.k8s.io/v1"),
                what="discover snapshot.storage.k8s.io/v1",
            )
            served = True
        except ClusterError as exc:
            if exc.status != 404:
                raise
            served = False
        _volume_snapshots_served["answer"] = served
    return _volume_snapshots_served["answer"]


def api_server_reachable(*, timeout: float = 2.0) -> None:
    """One GET /version, no retries: raises ``ClusterUnavailable`` unless the API server
    answers within ``timeout`` (the readiness probe; /version is open to every client)."""
    try:
        _request("GET", "/version", timeout=timeout)
    except ApiException as exc:
        raise ClusterUnavailable(f"{exc.status} {_api_message(exc)}", exc.status) from exc
    except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
        raise ClusterUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _request(
    method: str,
    path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    timeout: float = 30,
    token: str | None = None,
) -> Any:
    """One authenticated request; raises ApiException on non-2xx."""
    data = _request_bytes(
        method,
        path,
        query=query,
        body=body,
        content_type=content_type,
        timeout=timeout,
        token=token,
    )
    return json.loads(data) if data else None


def _request_bytes(
    method: str,
    path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    accept: str = "application/json",
    timeout: float = 30,
    token: str | None = None,
) -> bytes:
    """One authenticated request, the body as the server sent it.

    ``token``: authenticate with this bearer token instead of the portal's credential."""
    global request_count
    api = api_client()
    headers = {"Content-Type": content_type, "Accept": accept}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    serialized = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=[] if token is not None else ["BearerToken"],
    )
    request_count += 1
    response = api.call_api(*serialized, _request_timeout=timeout)
    response.read()
    if not 200 <= response.status <= 299:
        raise ApiException(http_resp=response)
    return response.data or b""


def object_path(manifest: dict) -> str:
    key = (manifest["apiVersion"], manifest["kind"])
    prefix, plural, namespaced = RESOURCES[key]
    meta = manifest["metadata"]
    if namespaced:
        return f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"
    return f"{prefix}/{plural}/{meta['name']}"


def describe(manifest: dict) -> str:
    meta = manifest["metadata"]
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{manifest['kind']} {where}{meta['name']}"


# Kinds whose spec cannot change once made (a claim's size, class and data source, a
# VolumeSnapshot's source): ``apply`` creates them once and leaves an existing one be.
CREATE_ONLY_KINDS = frozenset({"PersistentVolumeClaim", "VolumeSnapshot"})


def apply(manifest: dict) -> dict:
    """Server-side apply: create or update, a no-op when nothing changed.

    A RoleBinding's roleRef cannot change: one that points elsewhere (an environment
    provisioned by an older release bound a Role of its own) is deleted and made again.
    ``CREATE_ONLY_KINDS`` are created if missing and otherwise left as they are (returns
    the manifest then, not the live object)."""
    if manifest["kind"] in CREATE_ONLY_KINDS:
        _post(manifest)  # 409 (it exists) is not a failure
        return manifest
    try:
        return _apply(manifest)
    except ClusterError as exc:
        if manifest["kind"] == "RoleBinding" and exc.status == 422 and "roleRef" in str(exc):
            delete(manifest)
            return _apply(manifest)
        raise


def _apply(manifest: dict) -> dict:
    return with_retries(
        lambda: _request(
            "PATCH",
            object_path(manifest),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=manifest,
            content_type="application/apply-patch+yaml",
        ),
        what=f"apply {describe(manifest)}",
    )


def get(manifest: dict) -> dict | None:
    """The live object, or None if it does not exist."""
    try:
        return with_retries(
            lambda: _request("GET", object_path(manifest)), what=f"get {describe(manifest)}"
        )
    except ClusterError as exc:
        if exc.status == 404:
            return None
        raise


def delete(manifest: dict) -> bool:
    """Delete; returns False if it was already gone (404 is not a failure)."""
    try:
        with_retries(
            lambda: _request(
                "DELETE", object_path(manifest), body={"propagationPolicy": "Background"}
            ),
            what=f"delete {describe(manifest)}",
        )
        return True
    except ClusterError as exc:
        if exc.status == 404:
            return False
        raise


def _post(manifest: dict, *, field_manager: bool = True) -> tuple[bool, Any]:
    """POST ``manifest`` (with our field manager unless told not to), with retries.
    Returns (True, the object made), or (False, None) when one of that name exists (409)."""
    key = (manifest["apiVersion"], manifest["kind"])
    prefix, plural, _ = RESOURCES[key]
    namespace = manifest["metadata"]["namespace"]
    query = [("fieldManager", FIELD_MANAGER)] if field_manager else None
    try:
        made = with_retries(
            lambda: _request(
                "POST", f"{prefix}/namespaces/{namespace}/{plural}", query=query, body=manifest
            ),
            what=f"create {describe(manifest)}",
        )
    except ClusterError as exc:
        if exc.status == 409:
            return False, None
        raise
    return True, made


def create_or_get(manifest: dict) -> dict:
    """Create ``manifest`` and return the object made, or the one of that name already
    there (a retried job): its uid is what the caller records."""
    created, made = _post(manifest)
    if created:
        return made
    live = get(manifest)
    if live is None:
        raise ClusterError(f"create {describe(manifest)}: it exists and is gone again", 409)
    return live


def create_once(manifest: dict) -> bool:
    """Create ``manifest`` unless an object of that name exists (never reads, never
    changes an existing one: the controller holds no read verb on Secrets). Returns
    whether it was created now."""
    created, _ = _post(manifest, field_manager=False)
    return created


def namespace_manifest(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def namespace_exists(name: str) -> bool:
    return get(namespace_manifest(name)) is not None


def wait_namespace_gone(name: str, *, timeout: float) -> bool:
    """Poll until the namespace is gone (the namespace controller empties it first)."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while time.monotonic() < deadline:
        if not namespace_exists(name):
            return True
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    return False


@dataclass(frozen=True)
class ManagedNamespace:
    name: str
    environment_id: str
    created_at: str
    terminating: bool


def list_managed_namespaces() -> list[ManagedNamespace]:
    """Managed namespaces that belong to this portal instance (``EPHEMERA_INSTANCE``).

    A namespace labelled for another instance is left alone; one with the managed-by
    label and no instance label counts as ours (made by hand, or by an older portal).
    Only ``eph-`` names count: a label alone (anyone who may label a namespace) never
    puts a namespace in reach of the orphan cleanup.
    """
    data = with_retries(
        lambda: _request(
            "GET", "/api/v1/namespaces", query=[("labelSelector", f"{MANAGED_BY}={MANAGER}")]
        ),
        what="list managed namespaces",
    )
    return [
        ManagedNamespace(
            name=item["metadata"]["name"],
            environment_id=item["metadata"].get("labels", {}).get("ephemera.io/environment", ""),
            created_at=item["metadata"].get("creationTimestamp", ""),
            terminating=bool(item["metadata"].get("deletionTimestamp")),
        )
        for item in data.get("items", [])
        if item["metadata"].get("labels", {}).get(INSTANCE_LABEL, settings.EPHEMERA_INSTANCE)
        == settings.EPHEMERA_INSTANCE
        and item["metadata"]["name"].startswith(NAMESPACE_PREFIX)
    ]


def list_deployments(namespace: str) -> dict:
    return with_retries(
        lambda: _request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments"),
        what=f"list Deployments in {namespace}",
    )


# --- the watcher's list and watch (kube.reflector keeps the stores) -------------------

# What the watcher lists and watches, across all namespaces: path, label selector,
# field selector. Events carry no labels: Warnings only, filtered to managed namespaces
# by the reflector.
MANAGED_SELECTOR = f"{MANAGED_BY}={MANAGER}"
WATCHED: dict[str, tuple[str, str, str]] = {
    "namespaces": ("/api/v1/namespaces", MANAGED_SELECTOR, ""),
    "deployments": ("/apis/apps/v1/deployments", MANAGED_SELECTOR, ""),
    "pods": ("/api/v1/pods", MANAGED_SELECTOR, ""),
    "events": ("/api/v1/events", "", "type=Warning"),
    # The other kinds an environment's manifests hold: the watcher compares them with
    # the recorded manifests and has drift repaired (recovery.drift). Not Secrets: the
    # controller may not read them, and the generated one is never recorded anyway.
    "services": ("/api/v1/services", MANAGED_SELECTOR, ""),
    "serviceaccounts": ("/api/v1/serviceaccounts", MANAGED_SELECTOR, ""),
    "resourcequotas": ("/api/v1/resourcequotas", MANAGED_SELECTOR, ""),
    "limitranges": ("/api/v1/limitranges", MANAGED_SELECTOR, ""),
    "networkpolicies": ("/apis/networking.k8s.io/v1/networkpolicies", MANAGED_SELECTOR, ""),
    "ingresses": ("/apis/networking.k8s.io/v1/ingresses", MANAGED_SELECTOR, ""),
    "rolebindings": ("/apis/rbac.authorization.k8s.io/v1/rolebindings", MANAGED_SELECTOR, ""),
}

# Watched store -> the Kind its objects are (drift and the inventory).
WATCHED_KINDS: dict[str, str] = {
    "namespaces": "Namespace",
    "deployments": "Deployment",
    "services": "Service",
    "serviceaccounts": "ServiceAccount",
    "resourcequotas": "ResourceQuota",
    "limitranges": "LimitRange",
    "networkpolicies": "NetworkPolicy",
    "ingresses": "Ingress",
    "rolebindings": "RoleBinding",
}


class WatchExpired(ClusterError):
    """410 Gone: the resourceVersion is too old; list again."""


def _selectors(label_selector: str, field_selector: str) -> list[tuple[str, str]]:
    query = []
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    return query


def list_objects(kind: str, *, timeout: float = 30) -> tuple[list[dict], str]:
    """One LIST of a watched kind across all namespaces: (items, resourceVersion).

    No retries here: the reflector backs off and lists again itself."""
    path, labels, fields = WATCHED[kind]
    data = _request("GET", path, query=_selectors(labels, fields), timeout=timeout)
    return data.get("items", []), data["metadata"].get("resourceVersion", "")


def watch_objects(kind: str, resource_version: str, *, timeout_seconds: int = 60) -> Iterator[dict]:
    """WATCH a watched kind from ``resource_version``: yields {"type", "object"} dicts.

    Ends when the server closes the watch (``timeout_seconds``). Raises WatchExpired on
    410 Gone, ApiException on other HTTP errors, urllib3 / OS errors when the API
    server goes away.
    """
    global request_count
    path, labels, fields = WATCHED[kind]
    api = api_client()
    query = [
        *_selectors(labels, fields),
        ("watch", "true"),
        ("resourceVersion", resource_version),
        ("allowWatchBookmarks", "true"),
        ("timeoutSeconds", str(timeout_seconds)),
    ]
    serialized = api.param_serialize(
        method="GET",
        resource_path=path,
        query_params=query,
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    request_count += 1
    response = api.call_api(*serialized, _request_timeout=(10, timeout_seconds + 15))
    raw = response.response  # urllib3 response, not preloaded: read it line by line
    try:
        if not 200 <= response.status <= 299:
            response.read()
            exc = ApiException(http_resp=response)
            if exc.status == 410:
                raise WatchExpired(_api_message(exc), 410)
            raise exc
        buffer = b""
        for chunk in raw.stream(64 * 1024, decode_content=True):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object", {})
                    if status.get("code") == 410:
                        raise WatchExpired(status.get("message", "Gone"), 410)
                    raise ClusterError(f"watch {kind}: {status.get('message')}", status.get("code"))
                yield event
    finally:
        raw.close()  # never return a half-read stream to the pool


@dataclass(frozen=True)
class Problem:
    """Something wrong in an environment, in plain words."""

    key: str  # identifies it, so the same problem is recorded once
    message: str
    fatal: bool  # provisioning cannot succeed without a change


def _component_of(object_name: str, components: list[str]) -> str:
    for name in sorted(components, key=len, reverse=True):
        if object_name == name or object_name.startswith(name + "-"):
            return name
    return object_name


def _explain_event(event: dict, components: list[str]) -> Problem | None:
    reason = event.get("reason", "")
    message = (event.get("message") or "").strip()
    involved = event.get("involvedObject", {})
    component = _component_of(involved.get("name", ""), components)
    key = f"event:{event['metadata'].get('uid', '')}"
    if reason == "FailedScheduling" and "PersistentVolumeClaim" in message:
        # Its volume's claim is not bound yet (the storage is still being provisioned):
        # the scheduler tries again once it is; the deadline fails it if it never is.
        return Problem(key, f"{component} is waiting for its volume: {message}", False)
    if reason == "FailedScheduling":
        return Problem(key, f"{component} cannot be scheduled: {message}", True)
    if reason == "FailedCreate" and "exceeded quota" in message:
        return Problem(
            key, f"{component} would exceed the environment's resource quota: {message}", True
        )
    if reason == "FailedCreate" and "PodSecurity" in message:
        return Problem(
            key, f"{component} was rejected by Pod Security (restricted profile): {message}", True
        )
    if reason == "FailedCreate":
        # Anything else (e.g. the API server briefly unreachable) the controller retries.
        return Problem(key, f"{component} could not be created yet: {message}", False)
    if reason in {"Failed", "ErrImagePull", "InspectFailed"} and "image" in message.lower():
        return Problem(key, f"{component}: the image could not be pulled: {message}", True)
    if reason == "BackOff" and "restarting failed container" in message:
        return Problem(key, f"{component} keeps crashing (CrashLoopBackOff): {message}", True)
    if reason == "BackOff" and "pull" in message.lower():
        return Problem(key, f"{component}: the image could not be pulled: {message}", True)
    return None


WAITING_REASONS = {
    "ImagePullBackOff": "the image could not be pulled",
    "ErrImagePull": "the image could not be pulled",
    "InvalidImageName": "the image name is invalid",
    "CrashLoopBackOff": "it keeps crashing (CrashLoopBackOff)",
    "CreateContainerConfigError": "its configuration is invalid",
}


def problems_from(events: list[dict], pods: list[dict], components: list[str]) -> list[Problem]:
    """Problems, in plain words, from Warning Events and Pods (raw or as the reflector
    keeps them: see ``compact_event`` and ``compact_pod``)."""
    found: list[Problem] = []
    for event in events:
        if event.get("type", "Warning") == "Warning":
            problem = _explain_event(event, components)
            if problem:
                found.append(problem)
    for pod in pods:
        name = pod["metadata"]["name"]
        for status in pod.get("status", {}).get("containerStatuses", []) or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in WAITING_REASONS:
                component = _component_of(name, components)
                detail = waiting.get("message", "")
                found.append(
                    Problem(
                        f"pod:{name}:{reason}",
                        f"{component}: {WAITING_REASONS[reason]}. {detail}".strip(),
                        True,
                    )
                )
    return found


def problems(namespace: str, components: list[str]) -> list[Problem]:
    """Current problems from Events and Pod statuses, in plain words."""
    events = with_retries(
        lambda: _request("GET", f"/api/v1/namespaces/{namespace}/events"),
        what=f"list Events in {namespace}",
    )
    pods = with_retries(
        lambda: _request("GET", f"/api/v1/namespaces/{namespace}/pods"),
        what=f"list Pods in {namespace}",
    )
    return problems_from(events.get("items", []), pods.get("items", []), components)


# --- pod logs --------------------------------------------------------------------------

# Bounds: a page asks for logs every few seconds, so each answer stays small.
LOG_TAIL_LINES_MAX = 1000
LOG_BYTES_PER_POD = 128 * 1024
LOG_PODS_MAX = 5
LOG_LINE_CHARS_MAX = 2000
# A page waits for this, not for KUBE_RETRY_SECONDS: the next poll tries again.
LOG_DEADLINE_SECONDS = 5.0


@dataclass(frozen=True)
class LogLine:
    time: datetime | None  # from the kubelet's timestamps; None if it sent none
    text: str


@dataclass(frozen=True)
class PodLog:
    """One pod's recent log lines, or why there are none (``problem``, plain words)."""

    pod: str
    lines: list[LogLine] = field(default_factory=list)
    problem: str = ""
    truncated: bool = False  # the byte limit cut it short


def _log_line(raw: str) -> LogLine:
    stamp, _, text = raw.partition(" ")
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return LogLine(None, raw[:LOG_LINE_CHARS_MAX])
    return LogLine(when, text[:LOG_LINE_CHARS_MAX])


def _not_started(pod: dict, container: str) -> str:
    """Why ``container`` of ``pod`` has no log yet, or "" if it has one."""
    name = pod["metadata"]["name"]
    if not pod.get("spec", {}).get("nodeName"):
        return f"{name} is not scheduled on a node yet, so it has no logs."
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") != container:
            continue
        state = status.get("state") or {}
        waiting = state.get("waiting")
        if waiting and not status.get("restartCount"):
            reason = waiting.get("reason") or "waiting"
            return f"{name} has not started yet ({reason}), so it has no logs."
        return ""
    return f"{name} has not started yet, so it has no logs."


# namespace -> (token, monotonic time to stop using it): the environment user's tokens
# this process reads logs with (KUBE_LOGS_AS_ENVIRONMENT_USER). Tokens live 10 minutes
# (TokenRequest's minimum); one is reused for half of that.
_LOG_TOKEN_SECONDS = 600
_log_tokens: dict[str, tuple[str, float]] = {}


def _log_token(namespace: str) -> str | None:
    """The token to read ``namespace``'s logs with; None: the portal's own credential."""
    if not settings.KUBE_LOGS_AS_ENVIRONMENT_USER:
        return None
    cached = _log_tokens.get(namespace)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    token = issue_token(namespace, USER_ACCOUNT, seconds=_LOG_TOKEN_SECONDS)
    if len(_log_tokens) > 1000:
        _log_tokens.clear()
    _log_tokens[namespace] = (token, time.monotonic() + _LOG_TOKEN_SECONDS / 2)
    return token


def _read_pod_log(
    namespace: str,
    pod: dict,
    container: str,
    token: str | None,
    *,
    tail_lines: int,
    since: datetime | None,
    limit_bytes: int,
) -> PodLog:
    name = pod["metadata"]["name"]
    problem = _not_started(pod, container)
    if problem:
        return PodLog(name, problem=problem)
    query = [
        ("container", container),
        ("tailLines", str(tail_lines)),
        ("limitBytes", str(limit_bytes)),
        ("timestamps", "true"),
    ]
    if since is not None:
        query.append(("sinceTime", since.isoformat().replace("+00:00", "Z")))
    try:
        data = with_retries(
            lambda: _request_bytes(
                "GET",
                f"/api/v1/namespaces/{namespace}/pods/{name}/log",
                query=query,
                accept="text/plain, */*",
                timeout=LOG_DEADLINE_SECONDS,
                token=token,
            ),
            what=f"read the log of {name}",
            deadline_seconds=LOG_DEADLINE_SECONDS,
        )
    except ClusterUnavailable as exc:
        log.warning("%s", exc)
        return PodLog(name, problem=f"The cluster did not answer in time with {name}'s log.")
    except ClusterError as exc:
        if exc.status == 404:
            return PodLog(name, problem=f"{name} is gone.")
        return PodLog(name, problem=f"The cluster could not {exc}")
    text = data.decode("utf-8", errors="replace")
    truncated = len(data) >= limit_bytes
    raw_lines = text.splitlines()
    if truncated and raw_lines and not text.endswith("\n"):
        raw_lines.pop()  # cut mid-line by the byte limit
    return PodLog(name, [_log_line(line) for line in raw_lines], truncated=truncated)


def pod_logs(
    namespace: str,
    component: str,
    *,
    tail_lines: int = 100,
    since: datetime | None = None,
    limit_bytes: int = LOG_BYTES_PER_POD,
) -> list[PodLog]:
    """The recent log lines of ``component``'s pods in ``namespace`` (found by their
    component label), newest pods first, at most ``LOG_PODS_MAX`` of them.

    At most ``tail_lines`` lines (capped at ``LOG_TAIL_LINES_MAX``) and ``limit_bytes``
    bytes per pod, and only lines from ``since`` on when it is given. A pod without a
    log (not started, gone, the node unreachable) comes back with a ``problem`` in plain
    words; ``ClusterError`` only when the pods cannot be listed at all.
    """
    tail_lines = max(1, min(int(tail_lines), LOG_TAIL_LINES_MAX))
    limit_bytes = max(1024, min(int(limit_bytes), LOG_BYTES_PER_POD))
    try:
        token = _log_token(namespace)
        data = with_retries(
            lambda: _request(
                "GET",
                f"/api/v1/namespaces/{namespace}/pods",
                query=[("labelSelector", f"{COMPONENT_LABEL}={component}")],
                timeout=LOG_DEADLINE_SECONDS,
                token=token,
            ),
            what=f"list the pods of {component}",
            deadline_seconds=LOG_DEADLINE_SECONDS,
        )
    except ClusterUnavailable as exc:
        log.warning("%s", exc)
        raise ClusterUnavailable(
            "The cluster did not answer in time, so there are no logs to show; "
            "this panel asks again by itself."
        ) from exc
    except ClusterError as exc:
        raise ClusterError(f"The cluster would not {exc}", exc.status) from exc
    pods = sorted(
        data.get("items", []),
        key=lambda p: (
            not p.get("metadata", {}).get("deletionTimestamp"),
            p["metadata"].get("creationTimestamp", ""),
            p["metadata"]["name"],
        ),
        reverse=True,
    )[:LOG_PODS_MAX]
    logs = []
    for pod in pods:
        containers = [c["name"] for c in pod.get("spec", {}).get("containers", [])]
        container = component if component in containers else (containers or [component])[0]
        logs.append(
            _read_pod_log(
                namespace,
                pod,
                container,
                token,
                tail_lines=tail_lines,
                since=since,
                limit_bytes=limit_bytes,
            )
        )
    return logs


def _deployment_ready(deployment: dict) -> bool:
    spec_replicas = deployment.get("spec", {}).get("replicas", 1)
    status = deployment.get("status", {})
    return (
        status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        and status.get("availableReplicas", 0) >= spec_replicas
        and status.get("updatedReplicas", 0) >= spec_replicas
    )


def readiness(deployments: list[dict]) -> dict[str, dict]:
    """name -> {"ready": bool, "available": n, "replicas": n, "generation": n}."""
    return {
        d["metadata"]["name"]: {
            "ready": _deployment_ready(d),
            "available": d.get("status", {}).get("availableReplicas", 0),
            "replicas": d.get("spec", {}).get("replicas", 1),
            "generation": d["metadata"].get("generation", 0),
        }
        for d in deployments
    }


def resource_versions(namespace: str) -> dict[str, str]:
    """kind/name -> resourceVersion of every object Ephemera applies in ``namespace``."""
    result: dict[str, str] = {}
    for (_api_version, kind), (prefix, plural, namespaced) in RESOURCES.items():
        if not namespaced or kind == "Secret":
            continue
        data = with_retries(
            functools.partial(
                _request,
                "GET",
                f"{prefix}/namespaces/{namespace}/{plural}",
                query=[("labelSelector", f"{MANAGED_BY}={MANAGER}")],
            ),
            what=f"list {plural}",
        )
        for item in data.get("items", []):
            result[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    ns = get(namespace_manifest(namespace))
    if ns:
        result[f"Namespace/{namespace}"] = ns["metadata"]["resourceVersion"]
    return result


def issue_token(
    namespace: str, service_account: str, *, seconds: int, bound_secret: str | None = None
) -> str:
    """A short-lived token for ``service_account`` from the TokenRequest API.

    Bound to the ServiceAccount: it dies with the namespace. With ``bound_secret`` it is
    also bound to that Secret (which must exist): deleting the Secret revokes it.
    Never stored by Ephemera.
    """
    spec: dict[str, Any] = {"expirationSeconds": int(seconds)}
    if bound_secret is not None:
        spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Secret", "name": bound_secret}
    data = with_retries(
        lambda: _request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            body={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": spec,
            },
        ),
        what=f"issue a token for {namespace}/{service_account}",
    )
    return data["status"]["token"]


def read_secret_as(namespace: str, name: str, service_account: str) -> dict[str, str]:
    """Secret ``name``'s values, read with a short-lived token of ``service_account`` in
    the same namespace (the portal's own credential cannot read Secrets)."""
    token = issue_token(namespace, service_account, seconds=600)
    data = with_retries(
        lambda: _request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}", token=token),
        what=f"read Secret {namespace}/{name}",
    )
    return {
        key: base64.b64decode(value).decode("utf-8", "replace")
        for key, value in (data.get("data") or {}).items()
    }


def kubeconfig(*, namespace: str, token: str, name: str) -> dict:
    """A kubeconfig for ``token`` against the cluster Ephemera itself talks to."""
    configuration = api_client().configuration
    # People may reach the API server at another address than the portal does.
    cluster_entry: dict = {"server": settings.KUBE_PUBLIC_SERVER or configuration.host}
    ca_file = settings.KUBE_PUBLIC_CA_FILE or configuration.ssl_ca_cert
    if ca_file:
        with open(ca_file, "rb") as ca:
            cluster_entry["certificate-authority-data"] = base64.b64encode(ca.read()).decode()
    elif not configuration.verify_ssl:
        cluster_entry["insecure-skip-tls-verify"] = True
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ephemera", "cluster": cluster_entry}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [
            {
                "name": name,
                "context": {"cluster": "ephemera", "user": name, "namespace": namespace},
            }
        ],
        "current-context": name,
    }


# --- verified teardown: what may outlive a namespace -----------------------------------

# Every kind checked for objects with an environment's label after its teardown:
# name -> (Kind, list path across all namespaces or cluster-wide, namespaced).
# Namespaced kinds are listed across ALL namespaces, so a copy made elsewhere is found
# too. Cluster-scoped kinds outlive a namespace by design: a PersistentVolume with the
# Retain policy keeps its data after its claim is gone, a VolumeSnapshotContent its
# snapshot, and a ClusterRole or ClusterRoleBinding someone made for an environment
# keeps its rights. Not checked: Secrets and ConfigMaps (the controller may not list
# them; Ephemera's Secrets live only inside the namespace, where the admission policy
# keeps the controller's writes).
TEARDOWN_KINDS: dict[str, tuple[str, str, bool]] = {
    "namespaces": ("Namespace", "/api/v1/namespaces", False),
    "persistentvolumes": ("PersistentVolume", "/api/v1/persistentvolumes", False),
    "clusterroles": ("ClusterRole", "/apis/rbac.authorization.k8s.io/v1/clusterroles", False),
    "clusterrolebindings": (
        "ClusterRoleBinding",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        False,
    ),
    "volumesnapshotcontents": (
        "VolumeSnapshotContent",
        "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents",
        False,
    ),
    "deployments": ("Deployment", "/apis/apps/v1/deployments", True),
    "pods": ("Pod", "/api/v1/pods", True),
    "services": ("Service", "/api/v1/services", True),
    "serviceaccounts": ("ServiceAccount", "/api/v1/serviceaccounts", True),
    "persistentvolumeclaims": ("PersistentVolumeClaim", "/api/v1/persistentvolumeclaims", True),
    "resourcequotas": ("ResourceQuota", "/api/v1/resourcequotas", True),
    "limitranges": ("LimitRange", "/api/v1/limitranges", True),
    "networkpolicies": ("NetworkPolicy", "/apis/networking.k8s.io/v1/networkpolicies", True),
    "ingresses": ("Ingress", "/apis/networking.k8s.io/v1/ingresses", True),
    "rolebindings": ("RoleBinding", "/apis/rbac.authorization.k8s.io/v1/rolebindings", True),
}


class NotServed(ClusterError):
    """The cluster does not serve this kind (its API group is not installed)."""


def list_labelled(kind: str, label_selector: str) -> list[dict]:
    """Every object of a ``TEARDOWN_KINDS`` kind matching ``label_selector``, across the
    cluster (retried like any call). Raises ``NotServed`` when the cluster has no such
    kind, ``ClusterError`` otherwise (403 when the portal may not list it)."""
    _, path, _ = TEARDOWN_KINDS[kind]
    try:
        data = with_retries(
            lambda: _request("GET", path, query=[("labelSelector", label_selector)]),
            what=f"list {kind}",
        )
    except ClusterError as exc:
        if exc.status == 404:
            raise NotServed(f"{kind} is not served by this cluster", 404) from exc
        raise
    return data.get("items", [])
