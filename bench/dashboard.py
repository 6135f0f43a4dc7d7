"""Dashboard benchmark: prints numbers, asserts nothing.

Seeds 10,000 environments (100 owned by the measured user) into a separate database
(`ephemera_bench` on the embedded PostgreSQL, or BENCH_DATABASE_URL), then prints:
  - p50/p95 server time of the dashboard and of its status (rows) partial, measured
    in process through Django's handler (no network), 200 requests each;
  - requests/s for the dashboard under gunicorn with 2 workers, from wrk (or a small
    threaded client when wrk is missing) over 10 s on loopback.
Usage: `make bench` or `.venv/bin/python bench/dashboard.py`.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from portal import embedded  # noqa: E402

if not os.environ.get("BENCH_DATABASE_URL"):
    data_dir = Path(os.environ.get("EPHEMERA_DATA_DIR", ROOT / ".ephemera"))
    os.environ["BENCH_DATABASE_URL"] = embedded.postgres_url(data_dir, database="ephemera_bench")
os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ["DEBUG"] = "false"
os.environ.setdefault("SECRET_KEY", "bench-" + "k" * 60 + "-not-secret-only-for-the-benchmark")
os.environ["ALLOWED_HOSTS"] = "127.0.0.1,testserver"
os.environ["SECURE_SSL_REDIRECT"] = "false"
os.environ["SECURE_COOKIES"] = "false"
os.environ["REDIS_DB"] = "14"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from environments.lifecycle.states import State  # noqa: E402
from environments.models import Blueprint, Environment, Membership, Team  # noqa: E402

TOTAL = 10_000
MINE = 100


def seed():
    call_command("migrate", verbosity=0)
    call_command("load_blueprints", str(ROOT / "deploy" / "blueprints"), verbosity=0)
    User = get_user_model()
    user, _ = User.objects.get_or_create(
        username="me@bench.example", defaults={"email": "me@bench.example"}
    )
    if Environment.objects.count() >= TOTAL:
        return user
    Environment.objects.all().delete()
    teams = [
        Team.objects.get_or_create(slug=f"team-{i}", defaults={"name": f"Team {i}"})[0]
        for i in range(20)
    ]
    Membership.objects.get_or_create(team=teams[0], user=user)
    others = [
        User.objects.get_or_create(
            username=f"u{i}@bench.example", defaults={"email": f"u{i}@bench.example"}
        )[0]
        for i in range(50)
    ]
    version = Blueprint.objects.get(name="shop-demo").current_version()
    from django.utils import timezone

    now = timezone.now()
    states = [
        State.READY,
        State.READY,
        State.READY,
        State.PROVISIONING,
        State.DELETED,
        State.FAILED,
    ]
    rows = []
    for i in range(TOTAL):
        owner = user if i < MINE else others[i % len(others)]
        team = teams[0] if i < MINE else teams[i % len(teams)]
        state = states[i % len(states)]
        rows.append(
            Environment(
                name=f"{i:08x}",
                owner=owner,
                team=team,
                blueprint_version=version,
                purpose="demo",
                state=state,
                ttl=timezone.timedelta(hours=4),
                expires_at=now + timezone.timedelta(hours=4),
                hourly_price=version.hourly_price,
                urls={"web": f"https://web-{i:08x}.{settings.BASE_DOMAIN}/"},
            )
        )
    Environment.objects.bulk_create(rows, batch_size=2000)
    return user


def timings(client: Client, url: str, count: int = 200, cached: bool = True) -> list[float]:
    from django.core.cache import cache

    client.get(url)
    values = []
    for _ in range(count):
        if not cached:
            cache.clear()
        start = time.perf_counter()
        response = client.get(url)
        values.append((time.perf_counter() - start) * 1000)
        assert response.status_code in (200, 286), response.status_code
    return values


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def requests_per_second(session_cookie: str) -> tuple[float, str]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "portal.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
        ],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/environments/"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        if shutil.which("wrk"):
            out = subprocess.run(
                ["wrk", "-t2", "-c8", "-d10s", "-H", f"Cookie: sessionid={session_cookie}", url],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            line = next(line for line in out.splitlines() if line.startswith("Requests/sec"))
            non2xx = [line for line in out.splitlines() if "Non-2xx" in line]
            return float(line.split()[1]), "wrk -t2 -c8 -d10s" + (
                f" ({non2xx[0].strip()})" if non2xx else ""
            )
        import urllib.request
        from concurrent.futures import ThreadPoolExecutor

        def one(_):
            request = urllib.request.Request(url, headers={"Cookie": f"sessionid={session_cookie}"})
            with urllib.request.urlopen(request) as response:  # noqa: S310
                return response.status

        start = time.monotonic()
        done = 0
        with ThreadPoolExecutor(8) as pool:
            while time.monotonic() - start < 10:
                done += sum(1 for s in pool.map(one, range(64)) if s == 200)
        return done / (time.monotonic() - start), "python threads (wrk not installed)"
    finally:
        server.terminate()
        server.wait(timeout=20)


def main():
    call_command("collectstatic", "--noinput", verbosity=0)
    user = seed()
    print(
        f"environments: {Environment.objects.count()}, owned by the user: {Environment.objects.filter(owner=user).count()}"
    )
    client = Client()
    client.force_login(user)
    for label, cached in (
        ("rows cached: steady state, polling", True),
        ("rows rendered: cache cleared", False),
    ):
        dashboard = timings(client, "/environments/", cached=cached)
        rows = timings(client, "/environments/rows/?scope=mine", cached=cached)
        print(f"[{label}]")
        print(
            f"  dashboard server time: p50 {statistics.median(dashboard):.1f} ms  p95 {pct(dashboard, 95):.1f} ms"
        )
        print(
            f"  status partial server time: p50 {statistics.median(rows):.1f} ms  p95 {pct(rows, 95):.1f} ms"
        )
    rps, how = requests_per_second(client.cookies["sessionid"].value)
    print(f"dashboard under gunicorn (2 workers, rows cached): {rps:.0f} requests/s [{how}]")


if __name__ == "__main__":
    main()
