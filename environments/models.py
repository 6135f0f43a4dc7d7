"""Ephemera's domain: teams, blueprints, environments, quotas and the audit log.

Models hold small derived facts (time left, hourly price, display state); the
orchestration lives in the services of each domain package (docs/contributing.md).
"""

from __future__ import annotations

import functools
import secrets
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.urls import reverse
from django.utils import timezone

from environments.access.roles import is_admin
from environments.catalog.choices import Purpose
from environments.catalog.pricing import hourly_price, snapshot_monthly_cost
from environments.catalog.spec import BlueprintSpec, ComponentSpec, component_totals
from environments.catalog.variants import default_components, select_components
from environments.fields import EncryptedSecretField
from environments.lib.egress import masked_url, refused_url
from environments.lib.naming import namespace_for
from environments.lib.quantities import memory_to_bytes
from environments.lifecycle.states import (
    ACTIVE_STATES,
    FINAL_STATES,
    LIVE_STATES,
    POLLED_FAST_STATES,
    State,
)


def _random_secret() -> str:
    return secrets.token_urlsafe(32)


class Team(models.Model):
    """A group of people who share environments, a quota and a monthly budget."""

    class ChangePolicy(models.TextChoices):
        # Least privilege (the default): teammates see each other's environments; only
        # the owner and the team's leads change them or get their kubeconfig.
        OWNER_AND_LEADS = "owner_and_leads", "The owner and the team's leads"
        ANY_MEMBER = "any_member", "Any member of the team"

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=50, unique=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams", blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    change_policy = models.CharField(
        max_length=20,
        choices=ChangePolicy.choices,
        default=ChangePolicy.OWNER_AND_LEADS,
        help_text="Who may extend, rename, update, retry or delete a member's environment "
        "and download its kubeconfig (admins always may).",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Webhook(models.Model):
    """A team's outgoing webhook: Slack-compatible JSON, signed with HMAC-SHA256."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    # Shared secret for the X-Ephemera-Signature header: needed in clear to sign, so it is
    # encrypted at rest rather than hashed.
    secret = EncryptedSecretField(default=_random_secret)
    events = models.JSONField(default=list, blank=True, help_text="Empty = every event.")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # The URL is a credential (Slack's carry their token in the path): shown masked in
    # logs, errors and the audit log (admin.py's snapshot), used whole only to deliver.
    MASKED_FIELDS = ("url",)

    def __str__(self) -> str:
        return f"{self.team}: {masked_url(self.url)}"

    def clean(self) -> None:
        refused = refused_url(self.url)
        if refused:
            raise ValidationError({"url": f"Webhooks cannot go to this URL: {refused}."})


class WebhookDelivery(models.Model):
    """One attempt history of one event to one webhook; failures are shown to admins."""

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=30)
    payload = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveSmallIntegerField(default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} -> {masked_url(self.webhook.url)}"

    @property
    def failed(self) -> bool:
        return self.delivered_at is None and self.attempts > 0


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    joined_at = models.DateTimeField(auto_now_add=True)
    # A lead changes teammates' environments whatever the team's change policy.
    lead = models.BooleanField(
        default=False, help_text="Team lead: may change teammates' environments."
    )
    # Approves this team's requests only (the approver role approves every team's).
    approver = models.BooleanField(default=False, help_text="Approves this team's requests.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team}"


class Blueprint(models.Model):
    """A named recipe for an environment. Its content lives in numbered versions."""

    name = models.CharField(max_length=63, unique=True)
    title = models.CharField(max_length=200)
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    # Who pays for the warm pool a blueprint declares (``pool:``); no team, no pool
    # (issue 16). Changed through lifecycle.pools.set_pool_team.
    pool_team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The team charged for this blueprint's warm pool; empty: no pool runs.",
    )

    class Meta:
        ordering = ["purpose", "title"]

    def __str__(self) -> str:
        return self.name

    def latest_version(self) -> BlueprintVersion | None:
        return self.versions.order_by("-number").first()

    def current_version(self) -> BlueprintVersion | None:
        """The newest version open to new requests (not deprecated)."""
        return self.versions.filter(deprecated=False).order_by("-number").first()


class BlueprintVersionQuerySet(models.QuerySet):
    def update(self, **kwargs):
        # Only the deprecation flag may change after publication.
        if set(kwargs) - {"deprecated", "deprecated_at"}:
            raise ValueError("blueprint versions are immutable; publish a new version instead")
        return super().update(**kwargs)


class BlueprintVersion(models.Model):
    """One immutable, published content of a blueprint.

    ``source`` is the YAML as written; ``spec`` is the validated, normalised form
    that rendering uses; ``digest`` identifies the content so an unchanged file
    publishes nothing. Only ``deprecated`` may change after publication.
    """

    blueprint = models.ForeignKey(Blueprint, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    source = models.TextField()
    spec = models.JSONField()
    digest = models.CharField(max_length=64)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    published_at = models.DateTimeField(default=timezone.now)
    deprecated = models.BooleanField(default=False)
    deprecated_at = models.DateTimeField(null=True, blank=True)

    objects = BlueprintVersionQuerySet.as_manager()

    class Meta:
        ordering = ["blueprint__name", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["blueprint", "number"], name="blueprint_version_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.blueprint.name} v{self.number}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            original = type(self).objects.filter(pk=self.pk).values("source", "spec").first()
            if original and (original["source"] != self.source or original["spec"] != self.spec):
                raise ValueError("blueprint versions are immutable; publish a new version instead")
        super().save(*args, **kwargs)

    @functools.cached_property
    def blueprint_spec(self) -> BlueprintSpec:
        """The stored spec, typed (versions are immutable, so it is read once)."""
        return BlueprintSpec.model_validate(self.spec)

    # Small derived facts for the catalogue.
    @property
    def title(self) -> str:
        return self.blueprint_spec.title

    @property
    def purpose(self) -> str:
        return self.blueprint_spec.purpose.value

    @property
    def approval(self) -> str:
        return self.blueprint_spec.approval.value

    @property
    def components(self) -> list[ComponentSpec]:
        """What an environment of this version runs: every component that is not
        optional (a clone may add those, ``catalog.variants``)."""
        return default_components(self.blueprint_spec)

    @property
    def optional_components(self) -> list[ComponentSpec]:
        return [c for c in self.blueprint_spec.components if c.optional]

    @property
    def default_ttl(self) -> timedelta:
        return timedelta(seconds=self.blueprint_spec.ttl.default)

    @property
    def max_ttl(self) -> timedelta:
        return timedelta(seconds=self.blueprint_spec.ttl.max)

    @property
    def cpu_millicores(self) -> int:
        return component_totals(self.components).cpu_millicores

    @property
    def memory_bytes(self) -> int:
        return component_totals(self.components).memory_bytes

    @property
    def hourly_price(self) -> Decimal:
        return hourly_price(self.blueprint_spec)


_UUID_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"


@functools.cache
def _url_pattern(name: str) -> str:
    return reverse(name, args=[_UUID_PLACEHOLDER])


def _environment_url(name: str, pk) -> str:
    # reverse() once per URL name, not once per table row (the dashboard has 100s).
    return _url_pattern(name).replace(_UUID_PLACEHOLDER, str(pk))


def _short_name() -> str:
    return secrets.token_hex(4)


class EnvironmentQuerySet(models.QuerySet):
    def live(self):
        return self.filter(state__in=LIVE_STATES)

    def visible_to(self, user):
        """Environments ``user`` may see: their own and their teams'; admins see all."""
        # Unclaimed pooled environments are nobody's yet: shown to no one (issue 16).
        if is_admin(user):
            return self.filter(pooled=False)
        return (
            self.filter(pooled=False)
            .filter(Q(owner=user) | Q(team__memberships__user=user))
            .distinct()
        )


DISPLAY_NAME_MAX_LENGTH = 60

# How often pages ask for news about an environment (Environment.poll_seconds).
POLL_FAST_SECONDS = 2
POLL_SLOW_SECONDS = 5


class Environment(models.Model):
    """One request for an environment, and the namespace that serves it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Short, DNS-safe name: the namespace is "eph-<name>", hosts "<component>-<name>.<domain>".
    name = models.CharField(max_length=8, unique=True, default=_short_name, editable=False)
    # What people call it ("acme demo"): optional, unique per owner among the owner's
    # environments that are not final (case-insensitive), changed through
    # services.rename_environment.
    display_name = models.CharField(max_length=DISPLAY_NAME_MAX_LENGTH, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="environments"
    )
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="environments")
    blueprint_version = models.ForeignKey(
        BlueprintVersion, on_delete=models.PROTECT, related_name="environments"
    )
    parameters = models.JSONField(default=dict, blank=True)
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    reason = models.TextField(blank=True, help_text="Why this environment exists or was extended.")

    state = models.CharField(max_length=20, choices=State.choices, default=State.REQUESTED)
    state_changed_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    ttl = models.DurationField()
    expires_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    extension_count = models.PositiveSmallIntegerField(default=0)
    expiry_warned_at = models.DateTimeField(null=True, blank=True)

    # What was applied to the cluster: teardown and restore use this, never the blueprint.
    manifests = models.JSONField(default=list, blank=True)
    urls = models.JSONField(default=dict, blank=True)
    component_status = models.JSONField(default=dict, blank=True)
    last_error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    provision_started_at = models.DateTimeField(null=True, blank=True)
    # Held by the provision job while it works; an expired lease means its worker died.
    # The owner token makes renewal exclusive: a job whose lease was taken over stops.
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.UUIDField(null=True, blank=True, editable=False)
    # Failed only because the API server could not be reached: the watcher retries it
    # when the server answers again, at most OUTAGE_RETRY_LIMIT times in a row.
    failed_unreachable = models.BooleanField(default=False, editable=False)
    # metadata.generation of each Deployment the last provision job applied: the watcher
    # waits until it sees at least these, so a stale view never makes an update "ready".
    applied_generations = models.JSONField(default=dict, blank=True, editable=False)
    outage_retries = models.PositiveSmallIntegerField(default=0, editable=False)

    # Cost: price fixed at request time; accrual adds whole minutes as they pass.
    hourly_price = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal(0))
    accrued_cost = models.DecimalField(max_digits=14, decimal_places=4, default=Decimal(0))
    accrued_until = models.DateTimeField(null=True, blank=True)
    cpu_millicores = models.PositiveIntegerField(default=0)
    memory_bytes = models.PositiveBigIntegerField(default=0)
    # Set for environments driven from outside, e.g. "github:acme/shop#42" (a hook) or
    # "acme/shop#42" (a pipeline, through the API): one active environment per key and
    # team, so a replayed or repeated event cannot create a second.
    external_key = models.CharField(max_length=200, blank=True, db_index=True)
    # Which components, image tags and overridable env values, when not the blueprint's
    # own shape (a clone's, ``catalog.variants``); {} for the default.
    variant = models.JSONField(default=dict, blank=True)
    # Waiting, ready and unclaimed, in its blueprint's warm pool (lifecycle.pools): owned
    # by the pool's account, charged to the pool's team, shown to nobody until claimed.
    pooled = models.BooleanField(default=False, db_index=True, editable=False)

    objects = EnvironmentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "external_key"],
                condition=~Q(external_key="")
                # The order is the migration's: a set would look like a change.
                & Q(state__in=[s for s in State if s in ACTIVE_STATES]),
                name="environment_one_live_per_external_key",
            ),
            models.UniqueConstraint(
                Lower("display_name"),
                "owner",
                condition=~Q(display_name="")
                & Q(state__in=[s for s in State if s not in FINAL_STATES]),
                name="environment_display_name_unique_per_owner",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "expires_at"]),
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["team", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.namespace} ({self.blueprint_version})"

    def get_absolute_url(self) -> str:
        return _environment_url("environment_detail", self.pk)

    @property
    def namespace(self) -> str:
        return namespace_for(self.name)

    @property
    def delete_url(self) -> str:
        return _environment_url("environment_delete", self.pk)

    @property
    def components(self) -> list[ComponentSpec]:
        """The components this environment runs: its blueprint's, or its variant's."""
        return select_components(self.blueprint_version.blueprint_spec, self.variant)

    @property
    def variant_summary(self) -> list[str]:
        """How this environment differs from its blueprint, in words ([] for none)."""
        variant = self.variant or {}
        lines = []
        if "components" in variant:
            lines.append("components: " + ", ".join(variant["components"]))
        for name, tag in (variant.get("images") or {}).items():
            lines.append(f"{name} image tag: {tag}")
        for name, values in (variant.get("env") or {}).items():
            for variable, value in values.items():
                lines.append(f"{name} {variable}={value}")
        return lines

    @property
    def listed_parameter(self) -> tuple[str, str] | None:
        """The blueprint's ``list_parameter`` and this environment's value of it.

        The row selectors annotate both (``list_parameter_name``, ``list_parameter_value``)
        so a dashboard does not load every blueprint spec; otherwise read from the spec.
        """
        if "list_parameter_name" in self.__dict__:
            name, value = (
                self.__dict__["list_parameter_name"],
                self.__dict__["list_parameter_value"],
            )
        else:
            name = self.blueprint_version.blueprint_spec.list_parameter
            value = (self.parameters or {}).get(name) if name else None
            if isinstance(value, bool):  # as PostgreSQL's ->> writes JSON booleans
                value = "true" if value else "false"
        if not name or value is None or value == "":
            return None
        return name, str(value)

    @property
    def listed_parameter_labelled(self) -> tuple[str, str] | None:
        """``listed_parameter`` as people read it: the parameter's label and the value
        (the row selectors annotate ``list_parameter_label``)."""
        listed = self.listed_parameter
        if listed is None:
            return None
        name, value = listed
        if "list_parameter_label" in self.__dict__:
            label = self.__dict__["list_parameter_label"]
        else:
            label = next(
                (
                    p.label
                    for p in self.blueprint_version.blueprint_spec.parameters
                    if p.name == name
                ),
                None,
            )
        return (label or name), value

    @property
    def labelled_parameters(self) -> list[tuple[str, Any]]:
        """The parameters by their labels, in the blueprint's order."""
        values = dict(self.parameters or {})
        shown = []
        for param in self.blueprint_version.blueprint_spec.parameters:
            if param.name in values:
                shown.append((param.label or param.name, values.pop(param.name)))
        return shown + list(values.items())

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def is_settled(self) -> bool:
        """Final: nothing will ever change again, so pages stop polling."""
        return self.state in FINAL_STATES

    @property
    def is_moving(self) -> bool:
        """A job or the watcher is changing it right now (pages show a spinner)."""
        return self.state in POLLED_FAST_STATES

    @property
    def poll_seconds(self) -> int | None:
        """How often a page showing this environment asks for news; None: not at all.

        Fast while something moves; slower while it waits for a person or a schedule
        (a teammate's delete, expiry), but never stops before it is final.
        """
        if self.is_settled:
            return None
        return POLL_FAST_SECONDS if self.is_moving else POLL_SLOW_SECONDS

    @property
    def time_left(self) -> timedelta | None:
        if self.expires_at is None or not self.is_live:
            return None
        return max(self.expires_at - timezone.now(), timedelta(0))

    @property
    def projected_cost(self) -> Decimal:
        """Cost at expiry if nobody deletes or extends it (failed ones are not billed)."""
        if not self.is_live or self.state == State.FAILED:
            return self.accrued_cost
        if self.expires_at is None:  # not approved yet: the whole requested time
            return (self.hourly_price * Decimal(self.ttl.total_seconds()) / 3600).quantize(
                Decimal("0.01")
            )
        start = self.accrued_until or self.ready_at or timezone.now()
        remaining_hours = Decimal(max((self.expires_at - start).total_seconds(), 0)) / 3600
        return (self.accrued_cost + remaining_hours * self.hourly_price).quantize(Decimal("0.01"))


class EnvironmentEvent(models.Model):
    """One line of an environment's timeline, in words a user can read."""

    class Kind(models.TextChoices):
        STATE = "state", "State change"
        KUBE = "kube", "Cluster"
        ERROR = "error", "Error"
        INFO = "info", "Information"

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    state = models.CharField(max_length=20, choices=State.choices, blank=True)
    message = models.TextField()
    # Identifies a Kubernetes event so the same one is recorded once.
    source_key = models.CharField(max_length=200, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "source_key"],
                condition=~Q(source_key=""),
                name="environment_event_source_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.message}"


class CostEntry(models.Model):
    """Cost accrued by one environment over one period; the accrual job writes these.

    Month-to-date spend and the CSV export sum them. A period is recorded once: the
    accrual job moves ``Environment.accrued_until`` with a guarded UPDATE first.
    """

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="costs")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="+")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    blueprint = models.CharField(max_length=63)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField(db_index=True)
    amount = models.DecimalField(max_digits=14, decimal_places=4)

    class Meta:
        ordering = ["period_end"]
        verbose_name_plural = "cost entries"
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "period_start"], name="cost_entry_period_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.environment_id} {self.period_start:%Y-%m-%d %H:%M} {self.amount}"


class Quota(models.Model):
    """Limits for one team or one user (exactly one of the two). Blank = no limit."""

    team = models.OneToOneField(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="quota"
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="quota",
    )
    max_environments = models.PositiveIntegerField(null=True, blank=True)
    max_cpu_millicores = models.PositiveIntegerField(null=True, blank=True)
    max_memory_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    max_ttl = models.DurationField(null=True, blank=True)
    monthly_budget = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(team__isnull=False) & Q(user__isnull=True))
                | (Q(team__isnull=True) & Q(user__isnull=False)),
                name="quota_team_xor_user",
            ),
        ]

    def __str__(self) -> str:
        return f"Quota for {self.team or self.user}"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("the audit log is append-only")

    def delete(self):
        raise PermissionError("the audit log is append-only")


class AuditEvent(models.Model):
    """Who did what to which object, when and from where. Append-only.

    The model refuses updates and deletes, and a database trigger (migration 0002)
    refuses them too, so not even raw SQL can rewrite history.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # No foreign key: the log outlives users and objects, and must never be rewritten
    # by an ON DELETE cascade.
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor = models.CharField(max_length=254, blank=True, help_text="Email or name at the time.")
    action = models.CharField(max_length=50, db_index=True)
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.object_repr}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("the audit log is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("the audit log is append-only")


class ApiToken(models.Model):
    """A personal or team service token for the API. Only its SHA-256 hash is stored."""

    class Scope(models.TextChoices):
        READ = "read", "Read only"
        WRITE = "write", "Read and write"

    name = models.CharField(max_length=100)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    # A team token acts for the team: it sees and changes the team's environments.
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="api_tokens"
    )
    prefix = models.CharField(max_length=12, db_index=True)
    token_hash = models.CharField(max_length=64, unique=True)
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.READ)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()


class RepositoryHook(models.Model):
    """Maps a Git repository's pull requests to preview environments."""

    class Forge(models.TextChoices):
        GITHUB = "github", "GitHub"
        GITLAB = "gitlab", "GitLab"
        GITEA = "gitea", "Gitea or Forgejo"

    class Policy(models.TextChoices):
        SAME_REPOSITORY = "same_repository", "Pull requests from this repository only"
        FORKS = "forks", "Also pull requests from forks"
        LABEL = "label", "Only pull requests with the label"
        ASSOCIATION = "association", "Only authors who are owners, members or collaborators"

    forge = models.CharField(max_length=10, choices=Forge.choices, default=Forge.GITHUB)
    repository = models.CharField(max_length=200, help_text="owner/name (GitLab: group/project)")
    # Needed in clear to verify signatures: encrypted at rest.
    secret = EncryptedSecretField(help_text="The webhook's shared secret.")
    blueprint = models.ForeignKey(Blueprint, on_delete=models.PROTECT, related_name="+")
    sha_parameter = models.CharField(max_length=63, default="head_sha")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="+")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # Feedback on the pull request (commit status and one comment): the forge's API.
    api_url = models.URLField(
        blank=True,
        help_text="The forge's address; blank means github.com or gitlab.com. "
        "Gitea/Forgejo: https://git.example.com",
    )
    token = EncryptedSecretField(
        blank=True,
        help_text="An access token that may set commit statuses and comment on pull "
        "requests. Blank: nothing is posted back.",
    )
    policy = models.CharField(max_length=20, choices=Policy.choices, default=Policy.SAME_REPOSITORY)
    label = models.CharField(
        max_length=50, default="preview", help_text="The label the label policy looks for."
    )
    max_environments = models.PositiveSmallIntegerField(
        default=5, help_text="At most this many pull-request environments at once."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["forge", "repository"], name="hook_forge_repository")
        ]

    def __str__(self) -> str:
        return self.repository


class PullRequest(models.Model):
    """What Ephemera remembers of one pull request (merge request) of a hooked repository:
    whether it is closed (so a late delivery creates nothing), its environment, and the
    one comment it edits on the forge."""

    class State(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    hook = models.ForeignKey(RepositoryHook, on_delete=models.CASCADE, related_name="pull_requests")
    number = models.PositiveIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    head_sha = models.CharField(max_length=64, blank=True)
    environment = models.ForeignKey(
        "Environment", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Why no environment was made (the repository's limit), posted to the pull request.
    refusal = models.CharField(max_length=300, blank=True)
    comment_id = models.CharField(max_length=40, blank=True)
    posted = models.JSONField(default=dict, blank=True)  # what the forge shows now
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hook", "number"], name="pull_request_per_hook")
        ]

    def __str__(self) -> str:
        return f"{self.hook.repository}#{self.number}"


class HookEvent(models.Model):
    """What happened on a repository hook, shown on its page: refusals (and why), and
    feedback that could not be posted."""

    class Kind(models.TextChoices):
        REFUSED = "refused", "Refused"
        POSTED = "posted", "Posted"
        FAILED = "failed", "Posting failed"

    hook = models.ForeignKey(RepositoryHook, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    number = models.PositiveIntegerField(null=True, blank=True)
    message = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.message


class HookDelivery(models.Model):
    """A delivery id seen from a Git host, so a replay is a no-op."""

    delivery_id = models.CharField(max_length=100, unique=True)
    received_at = models.DateTimeField(default=timezone.now)
    outcome = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name_plural = "hook deliveries"

    def __str__(self) -> str:
        return self.delivery_id


class IdempotencyKey(models.Model):
    """An API client's ``Idempotency-Key`` and the first answer given for it.

    Written in the same transaction as what the request created, so a retry (or a
    concurrent twin, which waits on the unique index) replays that answer instead of
    creating again. Pruned a day after (``lifecycle.idempotency.prune``).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    # SHA-256 of the method, path and canonical JSON body: the same key with another
    # request is refused.
    request_hash = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField()
    body = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_once_per_user")
        ]

    def __str__(self) -> str:
        return self.key


class Invitation(models.Model):
    """An admin's invitation to one email address, for one team.

    The link's token is shown once, in the email; only its SHA-256 hash is stored, so
    the database holds nothing that opens an account. A link works once (``accepted_at``
    is set with a guarded UPDATE), until ``expires_at``, and not after it was revoked or
    replaced by a newer invitation to the same address.
    """

    email = models.EmailField()
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    approver = models.BooleanField(default=False, help_text="Give the approver role on joining.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(Lower("email"), name="invitation_email_lower")]

    def __str__(self) -> str:
        return f"Invitation for {self.email} to {self.team}"

    @property
    def status(self) -> str:
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"


class Profile(models.Model):
    """A person's preferences. ``time_zone`` blank: the browser's zone (portal.js)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    time_zone = models.CharField(max_length=64, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Profile of {self.user}"


class ExtensionRequest(models.Model):
    """An extension that would take an environment past what needs approval.

    It waits in the approval queue; the environment keeps running until its current
    expiry meanwhile. Decided once, with a guarded UPDATE (lifecycle.transitions).
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending approval"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        WITHDRAWN = "withdrawn", "Withdrawn"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="extension_requests"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    seconds = models.PositiveIntegerField()
    reason = models.TextField(blank=True)
    why = models.TextField(blank=True, help_text="Why it needs approval, limit by limit.")
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment"],
                condition=Q(state="pending"),
                name="extension_request_one_pending_per_environment",
            ),
        ]

    def __str__(self) -> str:
        return f"Extension of {self.environment} by {self.seconds} s"


# --- Scheduling: classes, bookings, reserved capacity, calendar feeds -------------------
# The services live in environments/scheduling/ (docs/architecture.md).


class TrainingClass(models.Model):
    """A trainer's class: seats of one training blueprint from ``starts_at`` to
    ``ends_at``, decided (approval, quota, budget) once for all its seats."""

    class Status(models.TextChoices):
        PENDING_APPROVAL = "pending_approval", "Waiting for approval"
        SCHEDULED = "scheduled", "Scheduled"
        WARMING = "warming", "Seats starting"
        ENDED = "ended", "Ended"
        REJECTED = "rejected", "Rejected"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=100)
    trainer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="classes_taught"
    )
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="classes")
    # Attendees invited under invite-only sign-up join this team of their own: it holds
    # no environments, so an attendee sees nobody's but their seat.
    attendee_team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    blueprint_version = models.ForeignKey(
        BlueprintVersion, on_delete=models.PROTECT, related_name="classes"
    )
    parameters = models.JSONField(default=dict, blank=True)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    time_zone = models.CharField(max_length=64, default="UTC")
    grace = models.DurationField(default=timedelta(0))
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.SCHEDULED)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)
    warmed_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["starts_at"]
        indexes = [models.Index(fields=["status", "starts_at"])]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("class_detail", args=[self.pk])

    @property
    def teardown_at(self):
        return self.ends_at + self.grace


class Seat(models.Model):
    """One attendee's place in a class, and the environment that serves it now (a reset
    gives the seat a new environment)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    training_class = models.ForeignKey(
        TrainingClass, on_delete=models.CASCADE, related_name="seats"
    )
    number = models.PositiveIntegerField()
    attendee_email = models.EmailField(blank=True)
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Every environment the seat ever had (resets included): its cost on the spend report.
    environments = models.ManyToManyField(Environment, blank=True, related_name="seats")
    invited_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(fields=["training_class", "number"], name="seat_number_unique")
        ]

    def __str__(self) -> str:
        return f"Seat {self.number} of {self.training_class}"

    def get_absolute_url(self) -> str:
        return reverse("seat_detail", args=[self.pk])


class Booking(models.Model):
    """A demo booked for a customer's slot: ready a lead time before ``starts_at``, torn
    down after ``ends_at`` plus grace."""

    class Status(models.TextChoices):
        PENDING_APPROVAL = "pending_approval", "Waiting for approval"
        SCHEDULED = "scheduled", "Scheduled"
        WARMING = "warming", "Environment started"
        ENDED = "ended", "Ended"
        CANCELLED = "cancelled", "Cancelled"
        REJECTED = "rejected", "Rejected"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="bookings"
    )
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="bookings")
    blueprint_version = models.ForeignKey(
        BlueprintVersion, on_delete=models.PROTECT, related_name="bookings"
    )
    parameters = models.JSONField(default=dict, blank=True)
    customer = models.CharField(max_length=100)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    time_zone = models.CharField(max_length=64, default="UTC")
    grace = models.DurationField(default=timedelta(0))
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.SCHEDULED)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    warmed_at = models.DateTimeField(null=True, blank=True)
    reminded_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["starts_at"]
        indexes = [models.Index(fields=["status", "starts_at"])]

    def __str__(self) -> str:
        return f"{self.customer} demo ({self.blueprint_version.blueprint.name})"

    def get_absolute_url(self) -> str:
        return reverse("booking_detail", args=[self.pk])

    @property
    def teardown_at(self):
        return self.ends_at + self.grace


class CapacityReservation(models.Model):
    """Capacity held for a class or a booking from its warm-up to its teardown.

    The quota check (governance.quotas) counts it against any request whose lifetime
    overlaps the window, so a request made tonight cannot take tomorrow's class's
    capacity. Released when the seats are created (they count themselves from then on)
    or when the class or booking is rejected, cancelled or ended.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="reservations")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reservations"
    )
    training_class = models.ForeignKey(
        TrainingClass, null=True, blank=True, on_delete=models.CASCADE, related_name="reservations"
    )
    booking = models.ForeignKey(
        Booking, null=True, blank=True, on_delete=models.CASCADE, related_name="reservations"
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    environments = models.PositiveIntegerField()
    cpu_millicores = models.PositiveIntegerField()
    memory_bytes = models.PositiveBigIntegerField()
    cost = models.DecimalField(max_digits=14, decimal_places=4)
    released_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["team", "released_at", "starts_at"])]

    def __str__(self) -> str:
        return f"{self.environments} environments for {self.training_class or self.booking}"


class CalendarFeed(models.Model):
    """A person's private calendar feed: the URL carries a random token, only its
    SHA-256 hash is stored; revoking it (or making a new one) stops the old URL."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="calendar_feeds"
    )
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Calendar feed of {self.user}"


class SnapshotQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("snapshots are immutable; take a new snapshot instead")


class Snapshot(models.Model):
    """An immutable, versioned record of one environment (issue 15, ``recovery/``).

    Numbered per environment (1, 2, 3…). What it holds is covered by ``digest`` (SHA-256
    of the canonical JSON of ``content()``) and ``signature`` (``recovery.signing``):
    a restore verifies both before anything is applied. Nothing about a snapshot
    changes after it is taken: the model refuses updates and a database trigger
    (migration 0013) refuses them too. Retention deletes whole snapshots.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="snapshots")
    number = models.PositiveIntegerField()
    # Why it was taken: ready, update, manual, before-restore…
    reason = models.CharField(max_length=30)
    # One automatic snapshot per environment revision: "ready:<ready_at>" (blank: on demand).
    source_key = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    blueprint_version = models.ForeignKey(
        BlueprintVersion, on_delete=models.PROTECT, related_name="snapshots"
    )
    blueprint = models.CharField(max_length=63)
    blueprint_version_number = models.PositiveIntegerField()
    parameters = models.JSONField(default=dict, blank=True)
    # The applied manifests, exactly as recorded on the environment (canonical JSON in
    # the digest: sorted keys, no whitespace).
    manifests = models.JSONField(default=list)
    urls = models.JSONField(default=dict, blank=True)
    images = models.JSONField(default=list, blank=True)
    # Every object it owned when taken: [{kind, name, namespace, uid, spec_sha256}].
    inventory = models.JSONField(default=list, blank=True)
    # Volume snapshots of the components' volumes: [{pvc, volume_snapshot, size}].
    volumes = models.JSONField(default=list, blank=True)
    digest = models.CharField(max_length=64)
    signature = models.CharField(max_length=200)
    signature_algorithm = models.CharField(max_length=30, default="hmac-sha256")
    # Which key signed it (a short fingerprint, never the key): rotation leaves a trail.
    key_id = models.CharField(max_length=16, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)

    objects = SnapshotQuerySet.as_manager()

    # The columns the digest covers and the trigger protects.
    CONTENT_FIELDS = (
        "environment_id",
        "number",
        "created_at",
        "blueprint",
        "blueprint_version_number",
        "parameters",
        "manifests",
        "urls",
        "images",
        "inventory",
        "volumes",
    )

    class Meta:
        ordering = ["environment", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "number"], name="snapshot_number_unique"
            ),
            models.UniqueConstraint(
                fields=["environment", "source_key"],
                condition=~Q(source_key=""),
                name="snapshot_one_per_revision",
            ),
        ]

    def __str__(self) -> str:
        return f"snapshot {self.number} of {self.environment_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None and type(self).objects.filter(pk=self.pk).exists():
            raise PermissionError("snapshots are immutable; take a new snapshot instead")
        super().save(*args, **kwargs)

    def content(self) -> dict[str, Any]:
        """What the digest and the signature cover (the format's version included)."""
        return {
            "format": 1,
            "environment": str(self.environment_id),
            "number": self.number,
            "created_at": self.created_at.isoformat(),
            "blueprint": self.blueprint,
            "blueprint_version": self.blueprint_version_number,
            "parameters": self.parameters,
            "manifests": self.manifests,
            "urls": self.urls,
            "images": self.images,
            "inventory": self.inventory,
            "volumes": self.volumes,
        }

    @property
    def storage_cost(self) -> Decimal:
        """Per month, at the rate card's ``COST_PER_GIB_MONTH_SNAPSHOT`` (volumes included)."""
        return snapshot_monthly_cost(self.size_bytes + self.volume_bytes)

    @property
    def volume_bytes(self) -> int:
        total = 0
        for volume in self.volumes or []:
            try:
                total += memory_to_bytes(str(volume.get("size") or 0))
            except (TypeError, ValueError):
                continue
        return total


class RecoveryRecord(models.Model):
    """One measured recovery: a restore, an automatic restore, or a drill.

    ``seconds`` is from ``started_at`` (the restore was asked for, or the loss was
    seen) to ``ready_at`` (the watcher saw every component available). The Recovery
    page reads p50/p95 of these against the blueprint's RTO.
    """

    class Kind(models.TextChoices):
        RESTORE = "restore", "Restore"
        AUTO = "auto", "Automatic restore"
        DRILL = "drill", "Restore drill"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    blueprint = models.CharField(max_length=63, db_index=True)
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.SET_NULL, related_name="recoveries"
    )
    snapshot = models.ForeignKey(
        Snapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="recoveries"
    )
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    # None while it runs; True once ready; False with the reason in plain words.
    ok = models.BooleanField(null=True, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.blueprint} at {self.started_at:%Y-%m-%d %H:%M}"


class RestoreRequest(models.Model):
    """A restore request key seen once: the same key again answers with the same
    environment (``recovery.restore``), so a retried request never restores twice."""

    key = models.CharField(max_length=200, unique=True)
    # Kept when retention prunes the snapshot: the key still answers with its environment.
    snapshot = models.ForeignKey(
        Snapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.key


class Drill(models.Model):
    """One restore drill (issue 15, ``recovery/drills.py``): a snapshot restored into a
    scratch environment with no public URLs, checked, timed and torn down.

    ``result`` is running until the watcher sees the scratch environment ready (then a
    job checks its inventory against the snapshot's) or its RTO passes; it ends passed
    or failed, with the reason in plain words. ``seconds`` is the measured recovery time
    (the drill's ``RecoveryRecord`` holds it too, for the Recovery page's percentiles).
    """

    class Result(models.TextChoices):
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"

    class Trigger(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        MANUAL = "manual", "On demand"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    blueprint = models.CharField(max_length=63, db_index=True)
    # The environment whose snapshot is drilled, and the snapshot (kept by number when
    # retention prunes it).
    source_environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.SET_NULL, related_name="drills"
    )
    snapshot = models.ForeignKey(
        Snapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="drills"
    )
    snapshot_number = models.PositiveIntegerField(null=True, blank=True)
    # The scratch environment the snapshot was restored into (None if refused before).
    environment = models.OneToOneField(
        Environment, null=True, blank=True, on_delete=models.SET_NULL, related_name="drill_run"
    )
    recovery = models.OneToOneField(
        RecoveryRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="drill"
    )
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Idempotency: "scheduled:<blueprint>:<period>" or the person's request key.
    key = models.CharField(max_length=200, unique=True)
    rto_seconds = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    result = models.CharField(max_length=10, choices=Result.choices, default=Result.RUNNING)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"Drill of {self.blueprint} at {self.started_at:%Y-%m-%d %H:%M}: {self.result}"
