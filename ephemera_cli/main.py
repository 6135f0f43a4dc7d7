"""``ephemera``: the command line for the Ephemera API. Standard library only.

    ephemera login --url https://ephemera.example.com --token eph_...
    ephemera blueprints
    ephemera up pr-preview --param head_sha=abc1234 --ttl 2h --wait
    ephemera ls [--team]
    ephemera status ENV
    ephemera extend ENV... 1h [--reason ...]
    ephemera down ENV...
    ephemera snapshot ENV
    ephemera restore SNAPSHOT [--in-place] [--key KEY] [--wait]

ENV is an environment's id or its short name. EPHEMERA_URL and EPHEMERA_TOKEN
override the saved configuration (~/.config/ephemera/config.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from environments.lib import durations

SETTLED = {"ready", "failed", "deleted", "rejected", "pending_approval"}
TIMEOUT = 30
# The API's own pattern for an environment reference (name or id).
ENVIRONMENT_REF = re.compile(r"[0-9a-fA-F-]{8,36}")
PAGE = 500  # rows per API page (the most the API gives)


class CliError(Exception):
    """Something to tell the user, then exit 1."""


def parse_duration(text: str) -> int:
    """'1d12h', '2h', '30m' -> seconds (the portal's own rules)."""
    try:
        return durations.parse_duration(text)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def format_duration(seconds: int | None) -> str:
    return "-" if seconds is None else durations.format_duration(seconds)


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
            "or set EPHEMERA_URL and EPHEMERA_TOKEN"
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


class Client:
    def __init__(self, url: str, token: str):
        self.base = url.rstrip("/") + "/api/v1"
        self.token = token

    def call(self, method: str, path: str, body: dict | None = None, query=None) -> Any:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        if not url.startswith(("http://", "https://")):
            raise CliError(f"the portal URL must start with http:// or https://, not {url!r}")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (scheme checked above)
            url,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": "ephemera-cli/1",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise CliError(_explain(exc)) from None
        except urllib.error.URLError as exc:
            raise CliError(f"cannot reach {self.base}: {exc.reason}") from None
        except (TimeoutError, ValueError) as exc:
            raise CliError(f"bad answer from {self.base}: {exc}") from None

    def environment(self, ref: str) -> dict:
        if not ENVIRONMENT_REF.fullmatch(ref):
            raise CliError(
                f"{ref!r} is not an environment: give its name (8 letters and digits, "
                f"e.g. 3fa1b2c4, as `ephemera ls` shows) or its id"
            )
        return self.call("GET", f"/environments/{urllib.parse.quote(ref, safe='')}")


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
    if env.get("list_parameter"):
        rows.append((env["list_parameter"].capitalize(), env.get("list_value") or "-"))
    if env["parameters"]:
        rows.append(("Parameters", " ".join(f"{k}={v}" for k, v in env["parameters"].items())))
    for name, url in env["urls"].items():
        rows.append((f"URL {name}", url))
    if env["last_error"]:
        rows.append(("Last error", env["last_error"]))
    for label, value in rows:
        print(f"{label + ':':<13}{value}")


def cmd_login(args, _client) -> int:
    url = args.url.rstrip("/")
    # Check the token before saving it, so a typo shows up now, not later.
    Client(url, args.token).call("GET", "/blueprints")
    path = save_config(url, args.token)
    print(f"Logged in to {url}; saved to {path}")
    return 0


def cmd_blueprints(_args, client: Client) -> int:
    rows = client.call("GET", "/blueprints")
    for row in rows:
        params = ", ".join(p["name"] for p in row["parameters"]) or "-"
        print(
            f"{row['name']:<20} {row['title']:<32} {row['hourly_price']}/h  "
            f"ttl {format_duration(row['ttl_default_seconds'])}"
            f" (max {format_duration(row['ttl_max_seconds'])})  params: {params}"
        )
    if not rows:
        print("No blueprints are open to requests.")
    return 0


def cmd_up(args, client: Client) -> int:
    parameters = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--param {item!r}: write it as name=value")
        parameters[name] = value
    body: dict[str, Any] = {"blueprint": args.blueprint, "parameters": parameters}
    if args.ttl:
        body["ttl_seconds"] = parse_duration(args.ttl)
        if body["ttl_seconds"] < durations.MIN_TTL_SECONDS:
            # Said here, in the words of --ttl, rather than as the API's field error.
            minimum = format_duration(durations.MIN_TTL_SECONDS)
            raise CliError(f"--ttl {args.ttl} is under the {minimum} minimum")
    if args.team:
        body["team"] = args.team
    if args.reason:
        body["reason"] = args.reason
    if args.name:
        body["display_name"] = args.name
    env = client.call("POST", "/environments", body)
    named = f" '{env['display_name']}'" if env.get("display_name") else ""
    pooled = " (from the warm pool)" if env.get("from_pool") else ""
    print(f"Requested {env['name']}{named} ({env['id']}): {env['state']}{pooled}")
    if not args.wait:
        return 0
    return wait_until_settled(client, env, timeout=args.timeout)


def wait_until_settled(client: Client, env: dict, *, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    state = env["state"]
    while env["state"] not in SETTLED:
        if time.monotonic() > deadline:
            raise CliError(f"{env['name']} is still {env['state']} after {timeout:.0f}s")
        time.sleep(1)
        env = client.environment(env["id"])
        if env["state"] != state:
            state = env["state"]
            print(f"{env['name']}: {state}", flush=True)
    if env["state"] == "ready":
        for name, url in env["urls"].items():
            print(f"{name}: {url}")
        return 0
    if env["state"] == "pending_approval":
        print(f"{env['name']} is waiting for an approver.")
        return 0
    print(
        f"{env['name']} {env['state']}: {env['last_error'] or 'no reason given'}", file=sys.stderr
    )
    return 1


def cmd_ls(args, client: Client) -> int:
    rows: list[dict] = []
    scope = "team" if args.team else "mine"
    while True:  # every page: the API answers at most PAGE rows at a time
        page = client.call(
            "GET", "/environments", query={"scope": scope, "limit": PAGE, "offset": len(rows)}
        )
        rows += page
        if len(page) < PAGE:
            break
    if not rows:
        print("No environments.")
        return 0
    labels = [_label(env) for env in rows]
    width = min(max([len("LABEL"), *map(len, labels)]) + 2, 42)
    print(
        f"{'NAME':<10}{'LABEL':<{width}}{'BLUEPRINT':<18}{'STATE':<18}{'TIME LEFT':<11}"
        f"{'TEAM':<14}URL"
    )
    for env, label in zip(rows, labels, strict=True):
        url = next(iter(env["urls"].values()), "")
        print(
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
    if env["display_name"]:
        print(f"{env['name']} is now named '{env['display_name']}'.")
    else:
        print(f"{env['name']} has no name now.")
    return 0


def cmd_status(args, client: Client) -> int:
    show_environment(client.environment(args.env))
    return 0


def _bulk(client: Client, body: dict[str, Any]) -> int:
    """Several environments at once (the API's bulk endpoint): one line each; exit code 1
    if any was not changed."""
    answer = client.call("POST", "/environments/bulk", body)
    for item in answer["results"]:
        print(f"{item['ref']}: {item['message']}", file=sys.stdout if item["done"] else sys.stderr)
    return 1 if answer["refused"] else 0


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
    if answer.get("state") == "pending":  # an extension request (202): an approver decides
        print(
            f"Extension of {answer['environment_name']} requested: it needs an approver "
            f"({answer['why']}). It keeps running until {answer['expires_at']} meanwhile."
        )
        return 0
    print(f"Extended {answer['name']}; it now expires at {answer['expires_at']}.")
    return 0


def cmd_down(args, client: Client) -> int:
    if len(args.env) > 1:
        return _bulk(client, {"action": "delete", "environments": args.env})
    env = client.environment(args.env[0])
    env = client.call("DELETE", f"/environments/{env['id']}")
    print(f"{env['name']}: {env['state']}")
    return 0


def _pairs(values: list[str], what: str) -> dict[str, str]:
    """["api=1.2.4"] -> {"api": "1.2.4"}; a one-line error for anything else."""
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise CliError(f"{what} {value!r}: write it as {what.upper()}=VALUE")
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
            raise CliError(f"--set {key}={value}: write it as COMPONENT.VARIABLE=VALUE")
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
    print(
        f"Cloned {env['name']} as {clone['name']} ({', '.join(clone.get('components', []))}): "
        f"{clone['state']}"
    )
    if not args.wait:
        return 0
    return wait_until_settled(client, clone, timeout=args.timeout)


def cmd_kubeconfig(args, client: Client) -> int:
    """Write a namespace-scoped kubeconfig (mode 600); its token expires with the env."""
    env = client.environment(args.env)
    answer = client.call("POST", f"/environments/{env['id']}/kubeconfig")
    path = Path(args.output or f"{answer['namespace']}.kubeconfig")
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(answer["kubeconfig"])
    print(f"wrote {path} (valid until {answer['expires_at']})")
    print(f"  KUBECONFIG={path} kubectl get pods")
    return 0


# --- Classes and booked demos (self-contained: add_scheduling_commands wires them) ------


def _when(text: str, flag: str) -> str:
    """'2026-12-01 14:00' or '2026-12-01T14:00' (in --tz), or with an offset."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.strip().replace(" ", "T", 1)).isoformat()
    except ValueError:
        raise CliError(f"{flag} {text!r}: write it as 2026-12-01 14:00") from None


def cmd_book(args, client: Client) -> int:
    """Book a demo blueprint for a customer's slot."""
    parameters = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--param {item!r}: write it as name=value")
        parameters[name] = value
    body: dict[str, Any] = {
        "blueprint": args.blueprint,
        "customer": args.customer,
        "starts_at": _when(args.start, "--start"),
        "ends_at": _when(args.end, "--end"),
        "time_zone": args.tz,
        "parameters": parameters,
    }
    if args.grace:
        body["grace_seconds"] = parse_duration(args.grace)
    if args.team:
        body["team"] = args.team
    booking = client.call("POST", "/bookings", body)
    print(
        f"Booked {args.blueprint} for {booking['customer']}: {booking['starts_at']} to "
        f"{booking['ends_at']} ({booking['status']}, id {booking['id']})"
    )
    return 0


def cmd_class_seats(args, client: Client) -> int:
    """A class's seats: attendee, state, URL, expiry."""
    try:
        ref = str(uuid.UUID(args.class_id))
    except ValueError:
        raise CliError(
            f"{args.class_id!r} is not a class id (the id in the class page's URL)"
        ) from None
    seats = client.call("GET", f"/classes/{ref}/seats")
    for seat in seats:
        url = next(iter((seat.get("urls") or {}).values()), "")
        print(
            f"{seat['number']:>3}  {seat['attendee_email'] or '-':<32}  "
            f"{seat['state'] or 'not started':<14}  {url}"
        )
    ready = sum(1 for seat in seats if seat["state"] == "ready")
    print(f"{ready} of {len(seats)} seats ready")
    return 0


def add_scheduling_commands(commands) -> None:
    book = commands.add_parser("book", help="book a demo for a customer's time slot")
    book.add_argument("blueprint", help="a demo blueprint's name")
    book.add_argument("--start", required=True, help="e.g. '2026-12-01 14:00'")
    book.add_argument("--end", required=True, help="e.g. '2026-12-01 15:00'")
    book.add_argument("--customer", required=True, help="the customer's name")
    book.add_argument("--tz", default="UTC", help="time zone of --start/--end (default UTC)")
    book.add_argument("--grace", help="keep it this long after the end, e.g. 30m")
    book.add_argument("--team", help="team slug (if you are in several)")
    book.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    book.set_defaults(handler=cmd_book)
    klass = commands.add_parser("class", help="a class's seats")
    klass_commands = klass.add_subparsers(dest="class_command", required=True, metavar="VERB")
    seats = klass_commands.add_parser("seats", help="list a class's seats and their state")
    seats.add_argument("class_id", metavar="CLASS", help="the class's id")
    seats.set_defaults(handler=cmd_class_seats)


def cmd_snapshot(args, client: Client) -> int:
    env = client.environment(args.env)
    answer = client.call("POST", f"/environments/{env['id']}/snapshots")
    print(
        f"Snapshot {answer['number']} of {env['name']}: {answer['id']} "
        f"({answer['size_bytes']} bytes, {answer['objects']} objects, "
        f"digest {answer['digest'][:12]}…)"
    )
    return 0


def cmd_restore(args, client: Client) -> int:
    if not re.fullmatch(r"[0-9a-fA-F-]{36}", args.snapshot):
        raise CliError(f"{args.snapshot!r} is not a snapshot id (as `ephemera snapshot` prints)")
    # Run it again with the same --key and you get the same environment, not a second.
    key = args.key or str(uuid.uuid4())
    env = client.call(
        "POST",
        f"/snapshots/{args.snapshot}/restore",
        {"request_key": key, "in_place": args.in_place},
    )
    print(f"Restoring into {env['name']} ({env['state']}); request key {key}")
    if args.wait:
        return wait_until_settled(client, env, timeout=args.timeout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ephemera", description="Short-lived Kubernetes environments from the command line."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser("login", help="save the portal URL and an API token")
    login.add_argument("--url", required=True, help="the portal, e.g. https://ephemera.example.com")
    login.add_argument("--token", required=True, help="an API token (eph_...) from /tokens/")
    login.set_defaults(handler=cmd_login, needs_client=False)

    commands.add_parser("blueprints", help="list blueprints").set_defaults(handler=cmd_blueprints)

    up = commands.add_parser("up", help="request an environment")
    up.add_argument("blueprint")
    up.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    up.add_argument("--ttl", help="how long it lives, e.g. 30m, 2h, 1d")
    up.add_argument("--team", help="team slug, if you are in several teams")
    up.add_argument("--reason", default="")
    up.add_argument("--name", help="what you and your team call it, e.g. 'acme demo'")
    up.add_argument("--wait", action="store_true", help="wait until it is ready or failed")
    up.add_argument("--timeout", type=float, default=900, help="seconds to wait (default 900)")
    up.set_defaults(handler=cmd_up)

    ls = commands.add_parser("ls", help="list your environments")
    ls.add_argument("--team", action="store_true", help="your teams' environments")
    ls.set_defaults(handler=cmd_ls)

    status = commands.add_parser("status", help="show one environment")
    status.add_argument("env", metavar="ENV", help="id or short name")
    status.set_defaults(handler=cmd_status)

    extend = commands.add_parser("extend", help="push environments' expiry back")
    extend.add_argument("env", metavar="ENV", nargs="+", help="one or several")
    extend.add_argument("duration", help="e.g. 30m, 1h, 1d")
    extend.add_argument("--reason", default="")
    extend.set_defaults(handler=cmd_extend)

    rename = commands.add_parser("rename", help="name an environment ('' removes the name)")
    rename.add_argument("env", metavar="ENV", help="id or short name")
    rename.add_argument("name", metavar="NAME")
    rename.set_defaults(handler=cmd_rename)

    down = commands.add_parser("down", help="tear environments down")
    down.add_argument("env", metavar="ENV", nargs="+", help="one or several")
    down.set_defaults(handler=cmd_down)

    clone = commands.add_parser(
        "clone", help="copy an environment, with other components, image tags or variables"
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
    clone.add_argument("--timeout", type=float, default=900, help="seconds to wait")
    clone.set_defaults(handler=cmd_clone)

    kubeconfig = commands.add_parser(
        "kubeconfig", help="download a kubeconfig for one environment's namespace"
    )
    kubeconfig.add_argument("env", help="environment id or short name")
    kubeconfig.add_argument(
        "-o", "--output", help="file to write (default: <namespace>.kubeconfig)"
    )
    kubeconfig.set_defaults(handler=cmd_kubeconfig)
    add_scheduling_commands(commands)

    snapshot = commands.add_parser("snapshot", help="take a snapshot of a ready environment")
    snapshot.add_argument("env", metavar="ENV", help="id or short name")
    snapshot.set_defaults(handler=cmd_snapshot)

    restore = commands.add_parser("restore", help="restore a snapshot into an environment")
    restore.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot id")
    restore.add_argument("--in-place", action="store_true", help="into its own (lost) environment")
    restore.add_argument("--key", help="request key: the same key again restores nothing twice")
    restore.add_argument("--wait", action="store_true", help="wait until it is ready or failed")
    restore.add_argument("--timeout", type=float, default=900, help="seconds to wait (default 900)")
    restore.set_defaults(handler=cmd_restore)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        client = None
        if getattr(args, "needs_client", True):
            config = load_config()
            client = Client(config["url"], config["token"])
        return args.handler(args, client)
    except CliError as exc:
        print(f"ephemera: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
