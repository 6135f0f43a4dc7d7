"""Settings come from env vars; production values pass `check --deploy` cleanly."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings

from tests.conftest import ASYNC_UNSAFE, ROOT, database_url, subprocess_environ

PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "x7#k2!pQ9vL0zR4mT8wY1bN6cF3hJ5dS-gE2aU7iO0pK9lZ4xC1vB8nM3qW6eR5tY",
    "ALLOWED_HOSTS": "ephemera.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://ephemera.example.com",
    "BASE_DOMAIN": "env.example.com",
}


def run_manage(*args: str, extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in subprocess_environ().items() if k not in {"DEBUG", "SECRET_KEY"}}
    # Reuse the servers the tests already use (embedded or given).
    environ["DATABASE_URL"] = database_url()
    environ["REDIS_URL"] = settings.REDIS_URL
    environ.update(extra_env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_passes_check_deploy_with_production_values():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", extra_env=PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG: expected true or false"),
        ("SECRET_KEY", "short", "SECRET_KEY: must be at least 50 characters"),
        ("EMAIL_PORT", "smtp", "EMAIL_PORT: expected a whole number"),
        ("COST_PER_CPU_HOUR", "cheap", "COST_PER_CPU_HOUR: expected a decimal number"),
        ("COST_CURRENCY", "DOGE", "COST_CURRENCY: 'DOGE' is not supported"),
        ("DATABASE_URL", "mysql://x@y/z", "DATABASE_URL: must be a postgresql:// URL"),
        ("REDIS_URL", "memcached://x", "REDIS_URL: must be a redis://"),
        ("BASE_DOMAIN", "Bad_Domain", "BASE_DOMAIN: 'Bad_Domain' is not a valid DNS name"),
        ("ALLOWED_HOSTS", "", "ALLOWED_HOSTS: required when DEBUG is off"),
        ("API_RATE_LIMIT", "lots", "API_RATE_LIMIT: expected calls per s, m or h"),
        ("WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/8,intranet", "WEBHOOK_ALLOWED_NETWORKS: 'intranet'"),
        (
            "KUBE_USER_CLUSTER_ROLE_PREFIX",
            "Ephemera User",
            "KUBE_USER_CLUSTER_ROLE_PREFIX: 'Ephemera User' is not a valid ClusterRole name prefix",
        ),
        ("KUBE_LOGS_AS_ENVIRONMENT_USER", "sometimes", "KUBE_LOGS_AS_ENVIRONMENT_USER: expected"),
        ("KUBE_PUBLIC_SERVER", "http://k8s:6443", "KUBE_PUBLIC_SERVER: expected an https:// URL"),
        ("KUBE_PUBLIC_CA_FILE", "/nonexistent/ca.pem", "KUBE_PUBLIC_CA_FILE: /nonexistent"),
        ("EGRESS_BLOCKED_CIDRS", "169.254.0.0/16,metadata", "EGRESS_BLOCKED_CIDRS: 'metadata'"),
        ("EGRESS_ALLOWED_CIDRS", "10.0.0.1/8", "EGRESS_ALLOWED_CIDRS: '10.0.0.1/8' is not a CIDR"),
        (
            "EPHEMERAL_STORAGE_DEFAULT",
            "lots",
            "EPHEMERAL_STORAGE_DEFAULT: 'lots' is not a quantity",
        ),
    ],
)
def test_it_names_the_variable_with_a_bad_value(variable, value, message):
    extra = dict(PRODUCTION)
    if variable == "EMAIL_PORT":
        extra["EMAIL_HOST"] = "smtp.example.com"
    extra[variable] = value
    result = run_manage("check", extra_env=extra)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_it_reads_secrets_from_a_file(tmp_path):
    secret_file = tmp_path / "key"
    secret_file.write_text(PRODUCTION["SECRET_KEY"] + "\n")
    extra = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    extra["SECRET_KEY_FILE"] = str(secret_file)
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", extra_env=extra)
    assert result.returncode == 0, result.stderr


def test_it_runs_on_postgresql_and_redis(db):
    from django.core.cache import cache
    from django.db import connection

    assert connection.vendor == "postgresql"
    assert connection.cursor().connection.info.server_version >= 160000
    client = cache._cache.get_client()
    assert "redis_version" in client.info()


def test_child_processes_never_inherit_the_browser_tests_async_switch(monkeypatch):
    # The browser tests set DJANGO_ALLOW_ASYNC_UNSAFE while a browser is open; a worker
    # or manage.py started then must still run with Django's async-safety check on.
    monkeypatch.setenv(ASYNC_UNSAFE, "true")
    result = subprocess.run(
        [sys.executable, "-c", f"import os; print(os.environ.get({ASYNC_UNSAFE!r}))"],
        env=subprocess_environ(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "None"
