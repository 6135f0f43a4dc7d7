"""``ephemera``: the command line for the Ephemera API. Standard library only.

    ephemera login --url https://ephemera.example.com --token eph_...
    ephemera blueprints
    ephemera up pr-preview --param head_sha=abc1234 --ttl 2h --wait
    ephemera up pr-preview --external-key org/repo#12 --param head_sha=abc1234 --wait
    ephemera ls [--team] [--state ready] [--blueprint NAME] [--external-key KEY]
    ephemera status ENV
    ephemera wait ENV [--timeout 600]
    ephemera events ENV [--follow]
    ephemera extend ENV... 1h [--reason ...]
    ephemera down ENV... | --external-key KEY
    ephemera clone ENV [--without C] [--with C] [--image C=TAG] [--set C.VAR=VALUE]
    ephemera snapshot ENV
    ephemera restore SNAPSHOT [--in-place] [--key KEY] [--wait]
    ephemera book BLUEPRINT --start ... --end ... --customer ...
    ephemera class seats CLASS

ENV is an environment's id or its short name. EPHEMERA_URL and EPHEMERA_TOKEN
override the saved configuration (~/.config/ephemera/config.json). Every command takes
--json (one JSON document on stdout; messages go to stderr).

Adding a command: write ``cmd_<verb>(args, client) -> int`` (its answer as text with
``show`` and as the --json document with ``emit``; progress and warnings with ``say``;
refusals as ``CliError`` with an exit code from ``Exit``) and add its ``command(...)``
line in ``build_parser``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from enum import IntEnum
from pathlib import Path
from typing import Any

from ephemera_cli import __version__, durations

# What the server's bounded wait (?wait=) returns on: nothing more happens on its own.
SETTLED = {"ready", "failed", "deleted", "rejected", "pending_approval"}
FINAL = {"deleted", "rejected"}
TIMEOUT = 30
SERVER_WAIT = 60  # seconds asked of the server's bounded wait per call
POLL = 2.0  # seconds between polls when the server does not wait itself
# The API's own pattern for an environment reference (name or id).
ENVIRONMENT_REF = re.compile(r"[0-9a-fA-F-]{8,36}")
PAGE = 500  # rows per API page (the most the API gives)
ATTEMPTS = 5  # tries of a safe request when the network or the portal falters


class Exit(IntEnum):
    """Exit codes: what a pipeline can tell apart (documented in --help and docs/ci.md)."""

    OK = 0  # done; for up --wait and wait: the environment is ready
    ERROR = 1  # anything else (not found, a bad answer, the portal's own error)
    USAGE = 2  # the command line is wrong (argparse uses 2 too)
    FAILED = 3  # the environment failed (or was torn down while waited for)
    REFUSED = 4  # refused: rejected by an approver, quota, budget, 401/403, 409, 422
    APPROVAL = 5  # waiting for an approver
    TIMEOUT = 6  # still not settled when --timeout ran out
    UNAVAILABLE = 7  # network error, or the portal kept answering 429/5xx


EXIT_HELP = """exit codes:
  0  success (up --wait, wait: the environment is ready)
  1  error (not found, an unexpected answer)
  2  usage error (a wrong option or value)
  3  the environment failed, or was deleted while waited for
  4  refused: rejected by an approver, or the portal said no (quota, budget,
     permission, invalid input: HTTP 401, 403, 409, 413, 422)
  5  waiting for an approver (up --wait, wait)
  6  timed out (--timeout) before the environment settled
  7  portal unreachable: network error, or 429/5xx after retries
"""


class CliError(Exception):
    """Something to tell the user, then exit with ``code`` (1 unless said)."""

    def __init__(self, message: str, code: int = Exit.ERROR, *, status: int | None = None):
        super().__init__(message)
        self.code = int(code)
        self.status = status


def parse_duration(text: str) -> int:
    """'1d12h', '2h', '30m' -> seconds (the portal's own rules)."""
    try:
        return durations.parse_duration(text)
    except ValueError as exc:
        raise CliError(str(exc), Exit.USAGE) from None


def format_duration(seconds: int | None) -> str:
    return "-" if seconds is None else durations.format_duration(seconds)


# --- Output -----------------------------------------------------------------------------

JSON_OUTPUT = False


def say(*parts: Any, error: bool = False) -> None:
    """A line for people: stdout, or stderr with --json (stdout is the JSON document)."""
    stream = sys.stderr if (error or JSON_OUTPUT) else sys.stdout
    print(*parts, file=stream, flush=True)


def show(*parts: Any) -> None:
    """The answer for people (a table, a listing): stdout, and nothing with --json (the
    JSON document says it)."""
    if not JSON_OUTPUT:
        print(*parts, flush=True)


def emit(document: Any) -> None:
    """The command's answer with --json (one document on stdout); nothing otherwise."""
    if JSON_OUTPUT:
        print(json.dumps(document, indent=2, sort_keys=True), flush=True)


# --- Configuration ----------------------------------------------------------------------


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ephemera" / "config.json"


def load_config() -> dict[str, str]:
    config: dict[str, str] = {}
    path = config_path()
    if path.exists():
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {path}: {exc}") from None
    if os.environ.get("EPHEMERA_URL"):
        config["url"] = os.environ["EPHEMERA_URL"]
    if os.environ.get("EPHEMERA_TOKEN"):
        config["token"] = os.environ["EPHEMERA_TOKEN"]
    if not config.get("url") or not config.get("token"):
        raise CliError(
            "not logged in: run 'ephemera login --url URL --token TOKEN' "
            "or set EPHEMERA_URL and EPHEMERA_TOKEN",
            Exit.USAGE,
        )
    return config


def save_config(url: str, token: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created 0600 from the start, so the token is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump({"url": url, "token": token}, file)
    os.chmod(path, 0o600)
    return path


# --- HTTP -------------------------------------------------------------------------------

REFUSED_STATUSES = {400, 401, 403, 409, 413, 422}
RETRIED_STATUSES = {429, 502, 503, 504}


class Answer:
    def __init__(self, status: int, headers: Any, body: Any):
        self.status = status
        self.headers = headers
        self.body = body


class Client:
    def __init__(self, url: str, token: str):
        self.base = url.rstrip("/") + "/api/v1"
        self.token = token

    def call(self, method: str, path: str, body: dict | None = None, query=None) -> Any:
        return self.request(method, path, body, query).body

    def request(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        query=None,
        *,
        headers: dict[str, str] | None = None,
        retry: bool | None = None,
        timeout: float = TIMEOUT,
    ) -> Answer:
        """One API call. Safe calls (GET, DELETE, or with an Idempotency-Key) are tried
        again on network errors, 429 and 502-504, honouring Retry-After."""
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        if not url.startswith(("http://", "https://")):
            raise CliError(
                f"the portal URL must start with http:// or https://, not {url!r}", Exit.USAGE
            )
        if retry is None:
            retry = method in {"GET", "DELETE"} or "Idempotency-Key" in (headers or {})
        data = json.dumps(body).encode() if body is not None else None
        attempt = 0
        while True:
            attempt += 1
            request = urllib.request.Request(  # noqa: S310 (scheme checked above)
                url,
                data=data,
                method=method,
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "Accept": "application/json",
                    "Content-Type": "application/json",
                    "User-Agent": f"ephemera-cli/{__version__}",
                    **(headers or {}),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                    return Answer(
                        response.status, response.headers, json.loads(response.read() or b"null")
                    )
            except urllib.error.HTTPError as exc:
                if exc.code in RETRIED_STATUSES and retry and attempt < ATTEMPTS:
                    _pause(attempt, exc.headers.get("Retry-After"))
                    continue
                raise CliError(_explain(exc), _exit_for(exc.code), status=exc.code) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if retry and attempt < ATTEMPTS:
                    _pause(attempt, None)
                    continue
                reason = getattr(exc, "reason", exc)
                raise CliError(f"cannot reach {self.base}: {reason}", Exit.UNAVAILABLE) from None
            except ValueError as exc:
                raise CliError(f"bad answer from {self.base}: {exc}") from None

    def environment(self, ref: str, *, wait: float | None = None) -> dict:
        if not ENVIRONMENT_REF.fullmatch(ref):
            raise CliError(
                f"{ref!r} is not an environment: give its name (8 letters and digits, "
                f"e.g. 3fa1b2c4, as `ephemera ls` shows) or its id",
                Exit.USAGE,
            )
        query = {"wait": int(wait)} if wait else None
        path = f"/environments/{urllib.parse.quote(ref, safe='')}"
        return self.request("GET", path, query=query, timeout=TIMEOUT + (wait or 0)).body

    def environments(self, *, scope: str, **filters: str) -> list[dict]:
        rows: list[dict] = []
        while True:  # every page: the API answers at most PAGE rows at a time
            query = {"scope": scope, "limit": PAGE, "offset": len(rows)}
            query.update({name: value for name, value in filters.items() if value})
            page = self.call("GET", "/environments", query=query)
            rows += page
            if len(page) < PAGE:
                break
        # The same filters here too: a portal that does not know one yet ignores it.
        for name, value in filters.items():
            if value:
                wanted = set(value.split(",")) if name == "state" else {value}
                rows = [row for row in rows if name not in row or str(row[name]) in wanted]
        return rows


def _pause(attempt: int, retry_after: str | None) -> None:
    seconds = min(2 ** (attempt - 1), 16)
    if retry_after and retry_after.isdigit():
        seconds = min(int(retry_after), 30)
    say(f"ephemera: the portal is not answering; trying again in {seconds}s", error=True)
    time.sleep(seconds)


def _exit_for(status: int) -> int:
    if status in REFUSED_STATUSES:
        return Exit.REFUSED
    if status in RETRIED_STATUSES:
        return Exit.UNAVAILABLE
    return Exit.ERROR


def _explain(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    message = f"{detail or exc.reason} (HTTP {exc.code})"
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, dict):
        message += "".join(f"\n  {name}: {reason}" for name, reason in errors.items())
    return message


# --- Commands ---------------------------------------------------------------------------


def show_environment(env: dict) -> None:
    rows = [
        ("Environment", f"{env['name']} ({env['id']})"),
        ("Name", env.get("display_name") or "-"),
        ("Blueprint", f"{env['blueprint']} v{env['blueprint_version']}"),
        ("State", env["state"]),
        ("Team", env["team"]),
        ("Owner", env["owner"]),
        ("Namespace", env["namespace"]),
        ("Expires", env["expires_at"] or "-"),
        ("Time left", format_duration(env["time_left_seconds"])),
        (
            "Cost",
            f"{env['accrued_cost']} so far, {env['projected_cost']} projected "
            f"({env['hourly_price']}/h, {env['currency']})",
        ),
    ]
    if env.get("external_key"):
        rows.append(("External key", env["external_key"]))
    if env.get("list_parameter"):
        rows.append((env["list_parameter"].capitalize(), env.get("list_value") or "-"))
    if env["parameters"]:
        rows.append(("Parameters", " ".join(f"{k}={v}" for k, v in env["parameters"].items())))
    for name, url in env["urls"].items():
        rows.append((f"URL {name}", url))
    if env["last_error"]:
        rows.append(("Last error", env["last_error"]))
    for label, value in rows:
        show(f"{label + ':':<13}{value}")


def cmd_login(args, _client) -> int:
    url = args.url.rstrip("/")
    # Check the token before saving it, so a typo shows up now, not later.
    Client(url, args.token).call("GET", "/blueprints")
    path = save_config(url, args.token)
    say(f"Logged in to {url}; saved to {path}")
    emit({"url": url, "config": str(path)})
    return 0


def cmd_blueprints(_args, client: Client) -> int:
    rows = client.call("GET", "/blueprints")
    emit(rows)
    for row in rows:
        params = ", ".join(p["name"] for p in row["parameters"]) or "-"
        show(
            f"{row['name']:<20} {row['title']:<32} {row['hourly_price']}/h  "
            f"ttl {format_duration(row['ttl_default_seconds'])}"
            f" (max {format_duration(row['ttl_max_seconds'])})  params: {params}"
        )
    if not rows:
        show("No blueprints are open to requests.")
    return 0


# CI systems and what names one run of one job (a retried step keeps it; a new run or a
# re-run attempt gets a new one). See docs/ci.md, "Retries and the idempotency key".
CI_RUN_IDS = (
    ("GITHUB_RUN_ID", ("GITHUB_REPOSITORY", "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_JOB")),
    ("CI_JOB_ID", ("CI_PROJECT_PATH", "CI_JOB_ID")),  # GitLab: a retried job has a new id
    ("BUILD_TAG", ("BUILD_TAG", "EXECUTOR_NUMBER")),  # Jenkins: jenkins-JOB-BUILD
)


def idempotency_key(args, body: dict) -> str:
    """--idempotency-key, else one derived from the CI job and the request (the same
    request from the same job run is the same key), else a fresh one per invocation (so
    the CLI's own retries are safe)."""
    if args.idempotency_key:
        return args.idempotency_key
    for marker, names in CI_RUN_IDS:
        if os.environ.get(marker):
            run = ":".join(os.environ.get(name, "") for name in names)
            request = json.dumps(body, sort_keys=True)
            digest = hashlib.sha256(f"{run}\n{request}".encode()).hexdigest()[:32]
            return f"ci-{digest}"
    return f"cli-{uuid.uuid4()}"


def cmd_up(args, client: Client) -> int:
    parameters = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--param {item!r}: write it as name=value", Exit.USAGE)
        parameters[name] = value
    body: dict[str, Any] = {"blueprint": args.blueprint, "parameters": parameters}
    if args.ttl:
        body["ttl_seconds"] = parse_duration(args.ttl)
        if body["ttl_seconds"] < durations.MIN_TTL_SECONDS:
            # Said here, in the words of --ttl, rather than as the API's field error.
            minimum = format_duration(durations.MIN_TTL_SECONDS)
            raise CliError(f"--ttl {args.ttl} is under the {minimum} minimum", Exit.USAGE)
    if args.team:
        body["team"] = args.team
    if args.reason:
        body["reason"] = args.reason
    if args.name:
        body["display_name"] = args.name
    if args.external_key:
        body["external_key"] = args.external_key
    key = idempotency_key(args, body)
    answer = client.request("POST", "/environments", body, headers={"Idempotency-Key": key})
    env = answer.body
    named = f" '{env['display_name']}'" if env.get("display_name") else ""
    verb = "Updated" if answer.status == 200 else "Requested"
    if (answer.headers.get("Idempotent-Replayed") or "").lower() == "true":
        verb += " (replayed: the same request was made before)"
    say(f"{verb} {env['name']}{named} ({env['id']}): {env['state']}")
    if not args.wait:
        emit(env)
        return 0
    return wait_until_settled(client, env, timeout=args.timeout)


def wait_until_settled(
    client: Client, env: dict, *, timeout: float, through_approval: bool = False
) -> int:
    """Until ready (0), failed (3), rejected (4), pending approval (5), deleted (3) or
    --timeout (6). Asks the server to wait (?wait=); polls if it answers at once."""
    deadline = time.monotonic() + timeout
    state = env["state"]
    while env["state"] not in SETTLED or (through_approval and env["state"] == "pending_approval"):
        left = deadline - time.monotonic()
        if left <= 0:
            emit(env)
            raise CliError(
                f"{env['name']} is still {env['state']} after {timeout:.0f}s", Exit.TIMEOUT
            )
        asked = max(1, min(SERVER_WAIT, int(left)))
        started = time.monotonic()
        env = client.environment(env["id"], wait=asked)
        if env["state"] != state:
            state = env["state"]
            say(f"{env['name']}: {state}")
        # A server without ?wait (or a state it does not wait on) answers at once.
        quick = time.monotonic() - started < min(asked, POLL)
        if quick and (env["state"] not in SETTLED or through_approval):
            time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))
    emit(env)
    if env["state"] == "ready":
        for name, url in env["urls"].items():
            say(f"{name}: {url}")
        return Exit.OK
    if env["state"] == "pending_approval":
        say(f"{env['name']} is waiting for an approver.", error=True)
        return Exit.APPROVAL
    reason = env["last_error"] or "no reason given"
    say(f"{env['name']} {env['state']}: {reason}", error=True)
    return Exit.REFUSED if env["state"] == "rejected" else Exit.FAILED


def resolve(client: Client, args) -> dict:
    """The environment named by ENV or --external-key (the live one with that key)."""
    if getattr(args, "env", None):
        if getattr(args, "external_key", None):
            raise CliError("give ENV or --external-key, not both", Exit.USAGE)
        return client.environment(args.env)
    if not getattr(args, "external_key", None):
        raise CliError("say which environment: ENV (id or name) or --external-key", Exit.USAGE)
    rows = [
        row
        for row in client.environments(scope="team", external_key=args.external_key)
        if row["state"] not in FINAL
    ]
    if not rows:
        raise CliError(f"no live environment has the external key {args.external_key!r}")
    return rows[0]  # the newest (the portal keeps one live environment per key)


def cmd_wait(args, client: Client) -> int:
    env = resolve(client, args)
    return wait_until_settled(
        client, env, timeout=args.timeout, through_approval=args.through_approval
    )


def cmd_events(args, client: Client) -> int:
    env = resolve(client, args)
    path = f"/environments/{env['id']}/events"
    seen = 0
    while True:
        events = client.call("GET", path)
        for event in events[seen:]:
            if JSON_OUTPUT and args.follow:
                print(json.dumps(event, sort_keys=True), flush=True)  # one per line
            else:
                show(f"{event['created_at']}  {event['state']:<16} {event['message']}")
        seen = len(events)
        if not args.follow:
            emit(events)
            return 0
        if client.environment(env["id"])["state"] in FINAL:
            return 0
        time.sleep(POLL)


def cmd_ls(args, client: Client) -> int:
    scope = "team" if args.team or args.external_key else "mine"
    rows = client.environments(
        scope=scope, state=args.state, blueprint=args.blueprint, external_key=args.external_key
    )
    emit(rows)
    if not rows:
        show("No environments.")
        return 0
    labels = [_label(env) for env in rows]
    width = min(max([len("LABEL"), *map(len, labels)]) + 2, 42)
    show(
        f"{'NAME':<10}{'LABEL':<{width}}{'BLUEPRINT':<18}{'STATE':<18}{'TIME LEFT':<11}"
        f"{'TEAM':<14}URL"
    )
    for env, label in zip(rows, labels, strict=True):
        url = next(iter(env["urls"].values()), "")
        show(
            f"{env['name']:<10}{label:<{width}}{env['blueprint']:<18}{env['state']:<18}"
            f"{format_duration(env['time_left_seconds']):<11}{env['team']:<14}{url}"
        )
    return 0


def _label(env: dict) -> str:
    """What tells it apart: its name, and the blueprint's list parameter ("customer=acme")."""
    parts = [env.get("display_name") or ""]
    if env.get("list_parameter") and env.get("list_value"):
        parts.append(f"{env['list_parameter']}={env['list_value']}")
    return " ".join(part for part in parts if part) or "-"


def cmd_rename(args, client: Client) -> int:
    env = client.environment(args.env)
    env = client.call("PATCH", f"/environments/{env['id']}", {"display_name": args.name})
    emit(env)
    if env["display_name"]:
        say(f"{env['name']} is now named '{env['display_name']}'.")
    else:
        say(f"{env['name']} has no name now.")
    return 0


def cmd_status(args, client: Client) -> int:
    env = resolve(client, args)
    emit(env)
    show_environment(env)
    return 0


def _bulk(client: Client, body: dict[str, Any]) -> int:
    """Several environments at once (the API's bulk endpoint): one line each; exit code 4
    (refused) if any was not changed."""
    answer = client.call("POST", "/environments/bulk", body)
    emit(answer)
    for item in answer["results"]:
        say(f"{item['ref']}: {item['message']}", error=not item["done"])
    return Exit.REFUSED if answer["refused"] else Exit.OK


def cmd_extend(args, client: Client) -> int:
    seconds = parse_duration(args.duration)
    if len(args.env) > 1:
        return _bulk(
            client,
            {
                "action": "extend",
                "environments": args.env,
                "seconds": seconds,
                "reason": args.reason,
            },
        )
    env = client.environment(args.env[0])
    answer = client.call(
        "POST", f"/environments/{env['id']}/extend", {"seconds": seconds, "reason": args.reason}
    )
    emit(answer)
    if answer.get("state") == "pending":  # an extension request (202): an approver decides
        say(
            f"Extension of {answer['environment_name']} requested: it needs an approver "
            f"({answer['why']}). It keeps running until {answer['expires_at']} meanwhile."
        )
        return 0
    say(f"Extended {answer['name']}; it now expires at {answer['expires_at']}.")
    return 0


def cmd_down(args, client: Client) -> int:
    if len(args.env) > 1:
        if args.external_key:
            raise CliError("give ENV... or --external-key, not both", Exit.USAGE)
        return _bulk(client, {"action": "delete", "environments": args.env})
    args.env = args.env[0] if args.env else None
    try:
        env = resolve(client, args)
    except CliError as exc:
        if not args.env and exc.code == Exit.ERROR and args.missing_ok:
            say(f"Nothing to tear down: {exc}")
            emit(None)
            return 0
        raise
    env = client.call("DELETE", f"/environments/{env['id']}")
    emit(env)
    say(f"{env['name']}: {env['state']}")
    return 0


def _pairs(values: list[str], what: str) -> dict[str, str]:
    """["api=1.2.4"] -> {"api": "1.2.4"}; a one-line error for anything else."""
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise CliError(f"{what} {value!r}: write it as {what.upper()}=VALUE", Exit.USAGE)
        pairs[key] = rest
    return pairs


def cmd_clone(args, client: Client) -> int:
    """A copy of ENV as a variant: --without/--with components, --image COMPONENT=TAG,
    --set COMPONENT.VARIABLE=VALUE (the blueprint's overridable variables)."""
    env = client.environment(args.env)
    variables: dict[str, dict[str, str]] = {}
    for key, value in _pairs(args.set, "component.variable").items():
        component, dot, variable = key.partition(".")
        if not dot or not component or not variable:
            raise CliError(f"--set {key}={value}: write it as COMPONENT.VARIABLE=VALUE", Exit.USAGE)
        variables.setdefault(component, {})[variable] = value
    body: dict = {
        "without": args.without,
        "with": args.with_,
        "images": _pairs(args.image, "component"),
        "env": variables,
    }
    if args.ttl:
        body["ttl_seconds"] = parse_duration(args.ttl)
    if args.name:
        body["display_name"] = args.name
    clone = client.call("POST", f"/environments/{env['id']}/clone", body)
    say(
        f"Cloned {env['name']} as {clone['name']} ({', '.join(clone.get('components', []))}): "
        f"{clone['state']}"
    )
    if not args.wait:
        emit(clone)
        return 0
    return wait_until_settled(client, clone, timeout=args.timeout)


def cmd_snapshot(args, client: Client) -> int:
    env = client.environment(args.env)
    answer = client.call("POST", f"/environments/{env['id']}/snapshots")
    emit(answer)
    say(
        f"Snapshot {answer['number']} of {env['name']}: {answer['id']} "
        f"({answer['size_bytes']} bytes, {answer['objects']} objects, "
        f"digest {answer['digest'][:12]}…)"
    )
    return 0


def cmd_restore(args, client: Client) -> int:
    if not re.fullmatch(r"[0-9a-fA-F-]{36}", args.snapshot):
        raise CliError(
            f"{args.snapshot!r} is not a snapshot id (as `ephemera snapshot` prints)", Exit.USAGE
        )
    # Run it again with the same --key and you get the same environment, not a second.
    key = args.key or str(uuid.uuid4())
    env = client.call(
        "POST",
        f"/snapshots/{args.snapshot}/restore",
        {"request_key": key, "in_place": args.in_place},
    )
    say(f"Restoring into {env['name']} ({env['state']}); request key {key}")
    if args.wait:
        return wait_until_settled(client, env, timeout=args.timeout)
    emit(env)
    return 0


# --- Classes and booked demos -----------------------------------------------------------


def _when(text: str, flag: str) -> str:
    """'2026-12-01 14:00' or '2026-12-01T14:00' (in --tz), or with an offset."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.strip().replace(" ", "T", 1)).isoformat()
    except ValueError:
        raise CliError(f"{flag} {text!r}: write it as 2026-12-01 14:00", Exit.USAGE) from None


def cmd_book(args, client: Client) -> int:
    """Book a demo blueprint for a customer's slot."""
    body: dict[str, Any] = {
        "blueprint": args.blueprint,
        "customer": args.customer,
        "starts_at": _when(args.start, "--start"),
        "ends_at": _when(args.end, "--end"),
        "time_zone": args.tz,
        "parameters": _pairs(args.param, "name"),
    }
    if args.grace:
        body["grace_seconds"] = parse_duration(args.grace)
    if args.team:
        body["team"] = args.team
    booking = client.call("POST", "/bookings", body)
    emit(booking)
    show(
        f"Booked {args.blueprint} for {booking['customer']}: {booking['starts_at']} to "
        f"{booking['ends_at']} ({booking['status']}, id {booking['id']})"
    )
    return 0


def cmd_class_seats(args, client: Client) -> int:
    """A class's seats: attendee, state, URL."""
    try:
        ref = str(uuid.UUID(args.class_id))
    except ValueError:
        raise CliError(
            f"{args.class_id!r} is not a class id (the id in the class page's URL)", Exit.USAGE
        ) from None
    seats = client.call("GET", f"/classes/{ref}/seats")
    emit(seats)
    for seat in seats:
        url = next(iter((seat.get("urls") or {}).values()), "")
        show(
            f"{seat['number']:>3}  {seat['attendee_email'] or '-':<32}  "
            f"{seat['state'] or 'not started':<14}  {url}"
        )
    ready = sum(1 for seat in seats if seat["state"] == "ready")
    show(f"{ready} of {len(seats)} seats ready")
    return 0


def cmd_kubeconfig(args, client: Client) -> int:
    """Write a namespace-scoped kubeconfig (mode 600); its token expires with the env."""
    env = client.environment(args.env)
    answer = client.call("POST", f"/environments/{env['id']}/kubeconfig")
    path = Path(args.output or f"{answer['namespace']}.kubeconfig")
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(answer["kubeconfig"])
    emit({"path": str(path), "namespace": answer["namespace"], "expires_at": answer["expires_at"]})
    say(f"wrote {path} (valid until {answer['expires_at']})")
    say(f"  KUBECONFIG={path} kubectl get pods")
    return 0


def _timeout(text: str) -> float:
    """--timeout: seconds (600) or a duration (10m)."""
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except CliError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _target(parser: argparse.ArgumentParser) -> None:
    """ENV, or --external-key: the live environment with that key."""
    parser.add_argument("env", metavar="ENV", nargs="?", help="id or short name")
    parser.add_argument("--external-key", metavar="KEY", help="or: the one with this key")
    parser.set_defaults(targeted=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ephemera",
        description="Short-lived Kubernetes environments from the command line.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ephemera {__version__}")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help: str, **options) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help,
            description=help,
            epilog=EXIT_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # --json after the command too (SUPPRESS: not given here keeps the global one).
        sub.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
        )
        sub.set_defaults(handler=handler, **options)
        return sub

    login = command("login", cmd_login, "save the portal URL and an API token", needs_client=False)
    login.add_argument("--url", required=True, help="the portal, e.g. https://ephemera.example.com")
    login.add_argument("--token", required=True, help="an API token (eph_...) from /tokens/")

    command("blueprints", cmd_blueprints, "list blueprints")

    up = command("up", cmd_up, "request an environment, or update the one with --external-key")
    up.add_argument("blueprint")
    up.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    up.add_argument("--ttl", help="how long it lives, e.g. 30m, 2h, 1d")
    up.add_argument("--team", help="team slug, if you are in several teams")
    up.add_argument("--reason", default="")
    up.add_argument("--name", help="what you and your team call it, e.g. 'acme demo'")
    up.add_argument(
        "--external-key",
        metavar="KEY",
        help="e.g. org/repo#12: update the team's live environment with this key, or create it",
    )
    up.add_argument(
        "--idempotency-key",
        metavar="KEY",
        default=os.environ.get("EPHEMERA_IDEMPOTENCY_KEY"),
        help="the same key gives the first answer again and creates nothing new "
        "(default: derived from the CI job and the request, see docs/ci.md)",
    )
    up.add_argument("--wait", action="store_true", help="wait until it is ready (exit 0) or not")
    up.add_argument("--timeout", type=_timeout, default=900.0, help="for --wait (default 900s)")

    ls = command("ls", cmd_ls, "list your environments")
    ls.add_argument("--team", action="store_true", help="your teams' environments")
    ls.add_argument("--state", help="only these, e.g. ready")
    ls.add_argument("--blueprint", metavar="NAME", help="only this blueprint's")
    ls.add_argument("--external-key", metavar="KEY", help="only the one(s) with this key")

    _target(command("status", cmd_status, "show one environment"))

    wait = command("wait", cmd_wait, "wait until an environment is ready (exit 0) or settled")
    _target(wait)
    wait.add_argument("--timeout", type=_timeout, default=900.0, help="default 900s")
    wait.add_argument(
        "--through-approval",
        action="store_true",
        help="keep waiting while it waits for an approver (default: exit 5)",
    )

    events = command("events", cmd_events, "an environment's timeline")
    _target(events)
    events.add_argument("--follow", "-f", action="store_true", help="until it is deleted")

    extend = command("extend", cmd_extend, "push environments' expiry back")
    extend.add_argument("env", metavar="ENV", nargs="+", help="one or several")
    extend.add_argument("duration", help="e.g. 30m, 1h, 1d")
    extend.add_argument("--reason", default="")

    rename = command("rename", cmd_rename, "name an environment ('' removes the name)")
    rename.add_argument("env", metavar="ENV", help="id or short name")
    rename.add_argument("name", metavar="NAME")

    down = command("down", cmd_down, "tear environments down")
    down.add_argument("env", metavar="ENV", nargs="*", help="one or several ids or names")
    down.add_argument("--external-key", metavar="KEY", help="or: the one with this key")
    down.set_defaults(targeted=True)
    down.add_argument(
        "--missing-ok",
        action="store_true",
        help="with --external-key: exit 0 when no live environment has the key",
    )

    clone = command(
        "clone", cmd_clone, "copy an environment, with other components, image tags or variables"
    )
    clone.add_argument("env", metavar="ENV", help="id or short name of the one to copy")
    clone.add_argument("--without", action="append", default=[], metavar="COMPONENT")
    clone.add_argument(
        "--with",
        dest="with_",
        action="append",
        default=[],
        metavar="COMPONENT",
        help="an optional component of the blueprint to add",
    )
    clone.add_argument("--image", action="append", default=[], metavar="COMPONENT=TAG")
    clone.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="COMPONENT.VARIABLE=VALUE",
        help="an env variable the blueprint marks overridable",
    )
    clone.add_argument("--ttl", help="how long it lives, e.g. 2h (default: the blueprint's)")
    clone.add_argument("--name", help="what you and your team call it")
    clone.add_argument("--wait", action="store_true", help="wait until it is ready or failed")
    clone.add_argument("--timeout", type=_timeout, default=900.0, help="for --wait")

    snapshot = command("snapshot", cmd_snapshot, "take a snapshot of a ready environment")
    snapshot.add_argument("env", metavar="ENV", help="id or short name")

    restore = command("restore", cmd_restore, "restore a snapshot into an environment")
    restore.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot id")
    restore.add_argument("--in-place", action="store_true", help="into its own (lost) environment")
    restore.add_argument("--key", help="request key: the same key again restores nothing twice")
    restore.add_argument("--wait", action="store_true", help="wait until it is ready or failed")
    restore.add_argument("--timeout", type=_timeout, default=900.0, help="for --wait")

    book = command("book", cmd_book, "book a demo for a customer's time slot")
    book.add_argument("blueprint", help="a demo blueprint's name")
    book.add_argument("--start", required=True, help="e.g. '2026-12-01 14:00'")
    book.add_argument("--end", required=True, help="e.g. '2026-12-01 15:00'")
    book.add_argument("--customer", required=True, help="the customer's name")
    book.add_argument("--tz", default="UTC", help="time zone of --start/--end (default UTC)")
    book.add_argument("--grace", help="keep it this long after the end, e.g. 30m")
    book.add_argument("--team", help="team slug (if you are in several)")
    book.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")

    klass = command("class", None, "a class's seats")
    verbs = klass.add_subparsers(dest="class_command", required=True, metavar="VERB")
    seats = verbs.add_parser("seats", help="list a class's seats and their state")
    seats.add_argument("class_id", metavar="CLASS", help="the class's id")
    seats.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    seats.set_defaults(handler=cmd_class_seats)

    kubeconfig = command(
        "kubeconfig", cmd_kubeconfig, "download a kubeconfig for one environment's namespace"
    )
    kubeconfig.add_argument("env", help="environment id or short name")
    kubeconfig.add_argument(
        "-o", "--output", help="file to write (default: <namespace>.kubeconfig)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    global JSON_OUTPUT
    args = build_parser().parse_args(argv)
    JSON_OUTPUT = bool(args.json)
    try:
        if getattr(args, "targeted", False) and not (args.env or args.external_key):
            # Checked first: `ephemera down $EMPTY` in a script is a usage error, always.
            raise CliError(
                f"{args.command}: say which environment: ENV or --external-key KEY", Exit.USAGE
            )
        client = None
        if getattr(args, "needs_client", True):
            config = load_config()
            client = Client(config["url"], config["token"])
        return int(args.handler(args, client))
    except CliError as exc:
        print(f"ephemera: {exc}", file=sys.stderr)
        if JSON_OUTPUT and exc.code != Exit.TIMEOUT:  # a timeout printed the environment
            emit({"error": str(exc), "exit_code": exc.code, "http_status": exc.status})
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
