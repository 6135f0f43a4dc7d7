"""Django admin for every model. Raw data for admins; the portal has the friendly pages.

Every admin change is written to the audit log (who, what, before and after, IP).
Blueprints are edited as YAML and go through the same validation and publication
as ``load_blueprints``.
"""

from __future__ import annotations

import json

from allauth.account.models import EmailAddress
from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm
from django.contrib.auth.models import Group
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.forms.models import model_to_dict
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from environments.access.accounts import AdminLoginForm
from environments.catalog.publishing import publish_blueprint, set_blueprint_version_deprecated
from environments.catalog.spec import BlueprintInvalid, load_blueprint
from environments.governance import audit, quotas
from environments.integrations.forges import hooks as forge_hooks
from environments.lib.egress import masked_url
from environments.models import (
    ApiToken,
    AuditEvent,
    Blueprint,
    BlueprintVersion,
    Booking,
    CalendarFeed,
    CapacityReservation,
    CostEntry,
    Drill,
    Environment,
    EnvironmentEvent,
    ExtensionRequest,
    HookDelivery,
    HookEvent,
    IdempotencyKey,
    Invitation,
    Membership,
    Profile,
    PullRequest,
    Quota,
    RecoveryRecord,
    RepositoryHook,
    RestoreRequest,
    Seat,
    Snapshot,
    Team,
    TrainingClass,
    Webhook,
    WebhookDelivery,
)

# /admin/login/ is limited like the portal's sign-in page (same rates, same counters).
admin.site.login_form = AdminLoginForm

# Never copied into the append-only audit log: it would keep them forever.
SECRET_FIELDS = {"secret", "token", "token_hash", "password"}


def _snapshot(obj) -> dict | None:
    if obj is None or obj.pk is None:
        return None
    values = model_to_dict(obj)
    for name in SECRET_FIELDS & set(values):
        values[name] = "(secret)"
    for name in getattr(obj, "MASKED_FIELDS", ()):  # webhook URLs: credentials too
        values[name] = masked_url(values[name])
    return json.loads(json.dumps(values, cls=DjangoJSONEncoder, default=str))


class ReadOnlyAdmin(admin.ModelAdmin):
    """For rows that only Ephemera itself writes: admins may look, not touch."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditedAdmin(admin.ModelAdmin):
    """Records each add, change and delete made through the admin.

    The entry is written after the related rows are saved (inlines such as a team's
    members, many-to-many fields such as a user's groups), so "after" shows them too.
    """

    def save_model(self, request, obj, form, change):
        request._audit_before = (
            _snapshot(type(obj).objects.filter(pk=obj.pk).first()) if change else None
        )
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        obj = form.instance
        audit.record(
            actor=request.user,
            action=f"{obj._meta.model_name}.{'change' if change else 'add'}",
            target=obj,
            before=getattr(request, "_audit_before", None),
            after=_snapshot(obj),
            ip=audit.client_ip(request),
        )

    def delete_model(self, request, obj):
        before = _snapshot(obj)
        audit.record(
            actor=request.user,
            action=f"{obj._meta.model_name}.delete",
            target=obj,
            before=before,
            ip=audit.client_ip(request),
        )
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(AuditedAdmin):
    list_display = ["name", "slug", "change_policy", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Quota)
class QuotaAdmin(AuditedAdmin):
    list_display = [
        "__str__",
        "max_environments",
        "max_cpu_millicores",
        "max_memory_bytes",
        "max_ttl",
        "monthly_budget",
    ]
    autocomplete_fields = ["team", "user"]

    def get_readonly_fields(self, request, obj=None):
        # A quota belongs to one team or user for good; another subject is another quota.
        return ["team", "user"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        # Through the one quota service, so the admin and the portal's quota page
        # write the same audit entry ("quota.change", before and after).
        saved = quotas.set_quota(
            actor=request.user,
            team=obj.team,
            user=obj.user,
            values={name: getattr(obj, name) for name in quotas.QUOTA_FIELDS},
            ip=audit.client_ip(request),
        )
        obj.pk = saved.pk

    def save_related(self, request, form, formsets, change):
        admin.ModelAdmin.save_related(self, request, form, formsets, change)


class BlueprintYamlForm(forms.ModelForm):
    source = forms.CharField(
        label="Blueprint YAML",
        widget=forms.Textarea(attrs={"rows": 30, "cols": 100, "spellcheck": "false"}),
        help_text="Saving validates the YAML and publishes a new version if the content changed.",
    )

    class Meta:
        model = Blueprint
        fields: list[str] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.initial.get("source"):
            latest = self.instance.latest_version()
            if latest:
                self.initial["source"] = latest.source

    def clean_source(self):
        source = self.cleaned_data["source"]
        try:
            spec = load_blueprint(source)
        except BlueprintInvalid as exc:
            raise forms.ValidationError([f"{p}: {r}" if p else r for p, r in exc.errors]) from exc
        if self.instance.pk and spec.name != self.instance.name:
            raise forms.ValidationError(
                f"name: {spec.name!r} differs from this blueprint's name "
                f"{self.instance.name!r}; add a new blueprint instead"
            )
        return source


@admin.register(Blueprint)
class BlueprintAdmin(admin.ModelAdmin):
    form = BlueprintYamlForm
    list_display = ["name", "title", "purpose", "created_at"]
    list_filter = ["purpose"]
    search_fields = ["name", "title"]
    readonly_fields = ["name", "title", "purpose", "published_versions"]

    @admin.display(description="Versions")
    def published_versions(self, obj):
        return format_html_join(
            ", ",
            '<a href="{}">v{}</a>{}',
            (
                (
                    reverse("admin:environments_blueprintversion_change", args=[v.pk]),
                    v.number,
                    " (deprecated)" if v.deprecated else "",
                )
                for v in obj.versions.order_by("-number")
            ),
        )

    def save_model(self, request, obj, form, change):
        version, created = publish_blueprint(
            source=form.cleaned_data["source"], actor=request.user, ip=audit.client_ip(request)
        )
        # The admin redirects to ``obj``: make it the blueprint that was published.
        obj.pk = version.blueprint.pk
        obj.name = version.blueprint.name
        if created:
            messages.success(request, f"Published {version}.")
        else:
            messages.info(request, f"No change: {version} already has this content.")

    def save_related(self, request, form, formsets, change):
        # Versions are read-only here; nothing related to save.
        pass

    def has_delete_permission(self, request, obj=None):
        # Versions are referenced by environments; deprecate instead.
        return False


@admin.register(BlueprintVersion)
class BlueprintVersionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "published_at", "published_by", "deprecated"]
    list_filter = ["deprecated", "blueprint"]
    readonly_fields = [
        "blueprint",
        "number",
        "source",
        "spec",
        "digest",
        "published_by",
        "published_at",
        "deprecated",
        "deprecated_at",
    ]
    actions = ["deprecate", "undeprecate"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Deprecate (no new requests)")
    def deprecate(self, request, queryset):
        for version in queryset:
            set_blueprint_version_deprecated(
                version=version, deprecated=True, actor=request.user, ip=audit.client_ip(request)
            )

    @admin.action(description="Undeprecate")
    def undeprecate(self, request, queryset):
        for version in queryset:
            set_blueprint_version_deprecated(
                version=version, deprecated=False, actor=request.user, ip=audit.client_ip(request)
            )


class EnvironmentEventInline(admin.TabularInline):
    model = EnvironmentEvent
    fields = ("created_at", "kind", "state", "message")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    """Read-only: environments change only through the state machine (the portal)."""

    list_display = ["name", "owner", "team", "blueprint_version", "state", "expires_at"]
    list_filter = ["state", "purpose", "team"]
    search_fields = ["name", "owner__email"]
    list_select_related = ["owner", "team", "blueprint_version__blueprint"]
    inlines = [EnvironmentEventInline]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Environment._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(EnvironmentEvent)
class EnvironmentEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "environment", "kind", "message"]
    list_filter = ["kind"]
    list_select_related = ["environment"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """View only: the audit log is append-only."""

    list_display = ["created_at", "actor", "action", "object_type", "object_repr", "ip"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "action", "object_repr", "object_id"]


@admin.register(Webhook)
class WebhookAdmin(AuditedAdmin):
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    list_display = ["team", "url", "active", "created_at"]
    list_filter = ["active"]


class FailedFilter(admin.SimpleListFilter):
    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request, model_admin):
        return [("failed", "Failed"), ("delivered", "Delivered")]

    def queryset(self, request, queryset):
        if self.value() == "failed":
            return queryset.filter(delivered_at__isnull=True, attempts__gt=0)
        if self.value() == "delivered":
            return queryset.filter(delivered_at__isnull=False)
        return queryset


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """Read-only: admins see which deliveries failed, how often and why."""

    list_display = [
        "created_at",
        "webhook",
        "event",
        "attempts",
        "last_status",
        "last_error",
        "delivered_at",
    ]
    list_filter = [FailedFilter, "event"]
    list_select_related = ["webhook__team"]


class RepositoryHookForm(forms.ModelForm):
    """Secrets are typed, never shown back: blank on a change keeps the stored one.
    Settings that can never work are refused, one line each (forges.hooks)."""

    secret = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="The webhook's shared secret, at least 16 characters. Never shown again; "
        "leave blank to keep the current one.",
    )
    token = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="An access token that may set commit statuses and comment on pull "
        "requests. Never shown again; leave blank to keep the current one.",
    )
    clear_token = forms.BooleanField(
        required=False, help_text="Forget the stored token (nothing is posted back)."
    )

    class Meta:
        model = RepositoryHook
        fields = [
            "forge",
            "repository",
            "secret",
            "blueprint",
            "sha_parameter",
            "team",
            "owner",
            "policy",
            "label",
            "max_environments",
            "api_url",
            "token",
        ]

    def clean(self):
        data = super().clean()
        stored = self.instance if self.instance.pk else None
        secret = data.get("secret") or ""
        if not secret:
            if stored is None:
                self.add_error("secret", "A new hook needs a secret.")
                return data
            data["secret"] = stored.secret
            secret = None  # unchanged: not checked again
        token = data.get("token") or ""
        if data.get("clear_token"):
            data["token"] = ""
        elif not token and stored is not None:
            data["token"] = stored.token
        found = forge_hooks.problems(
            forge=data.get("forge") or "",
            repository=data.get("repository") or "",
            secret=secret,
            blueprint=data.get("blueprint"),
            sha_parameter=data.get("sha_parameter") or "",
            team_id=getattr(data.get("team"), "pk", None),
            owner_id=getattr(data.get("owner"), "pk", None),
            api_url=data.get("api_url") or "",
            token=data.get("token") or "",
            policy=data.get("policy") or "",
            label=data.get("label") or "",
        )
        for name, reason in found.items():
            self.add_error(name if name in self.fields else None, reason)
        return data

    def _post_clean(self):
        # The model form copies cleaned data to the instance here: secrets included.
        super()._post_clean()
        self.instance.secret = self.cleaned_data.get("secret") or self.instance.secret
        self.instance.token = self.cleaned_data.get("token", self.instance.token) or ""


@admin.register(RepositoryHook)
class RepositoryHookAdmin(AuditedAdmin):
    form = RepositoryHookForm
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ["repository", "forge", "blueprint", "team", "owner", "policy"]
    list_filter = ["forge", "policy"]
    autocomplete_fields = ["team", "owner"]
    readonly_fields = ["token_stored", "recent_activity"]
    fieldsets = [
        (None, {"fields": ["forge", "repository", "secret", "blueprint", "sha_parameter"]}),
        ("Billing", {"fields": ["team", "owner"]}),
        (
            "Who may get an environment",
            {"fields": ["policy", "label", "max_environments"]},
        ),
        (
            "Feedback on the pull request",
            {"fields": ["api_url", "token", "token_stored", "clear_token"]},
        ),
        ("Recent activity", {"fields": ["recent_activity"]}),
    ]

    @admin.display(description="Token")
    def token_stored(self, obj):
        return "stored (not shown)" if obj and obj.token else "none: nothing is posted back"

    @admin.display(description="Refusals and posting failures (latest first)")
    def recent_activity(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        events = list(obj.events.all()[:25])
        if not events:
            return "Nothing yet."
        return format_html_join(
            mark_safe("<br>"),
            "{} · {} · {}",
            (
                (
                    timezone.localtime(event.created_at).strftime("%Y-%m-%d %H:%M:%S"),
                    event.get_kind_display(),
                    event.message,
                )
                for event in events
            ),
        )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created by their owners in the portal; admins can only see them."""

    list_display = ["name", "prefix", "user", "team", "scope", "expires_at", "revoked_at"]
    list_filter = ["scope"]
    readonly_fields = [
        "name",
        "user",
        "team",
        "prefix",
        "scope",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    ]
    exclude = ["token_hash"]

    def has_add_permission(self, request):
        return False


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdmin):
    """Invitations are sent and withdrawn on the portal's People page (audited there)."""

    list_display = ["email", "team", "approver", "invited_by", "created_at", "expires_at", "status"]
    search_fields = ["email"]
    exclude = ["token_hash"]


@admin.register(Profile)
class ProfileAdmin(ReadOnlyAdmin):
    """People set their own profile (the portal's Profile page, audited there)."""

    list_display = ["user", "time_zone", "updated_at"]


@admin.register(ExtensionRequest)
class ExtensionRequestAdmin(ReadOnlyAdmin):
    """Extension requests are decided on the portal's Approvals page (audited there)."""

    list_display = ["environment", "requested_by", "seconds", "state", "created_at", "decided_by"]
    list_filter = ["state"]


@admin.register(HookDelivery)
class HookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["delivery_id", "received_at", "outcome"]


@admin.register(PullRequest)
class PullRequestAdmin(ReadOnlyAdmin):
    """What Ephemera remembers of each pull request (written by the hooks only)."""

    list_display = ["hook", "number", "state", "head_sha", "environment", "refusal", "updated_at"]
    list_filter = ["state"]
    exclude = ["posted"]


@admin.register(HookEvent)
class HookEventAdmin(ReadOnlyAdmin):
    """Refusals and posting failures; the hook's page shows its latest."""

    list_display = ["created_at", "hook", "kind", "number", "message"]
    list_filter = ["kind"]


@admin.register(CostEntry)
class CostEntryAdmin(ReadOnlyAdmin):
    """Read-only: written by the accrual job, summed for budgets and the spend export."""

    list_display = ["period_end", "environment", "team", "owner", "blueprint", "amount"]
    list_filter = ["team", "blueprint"]
    list_select_related = ["environment", "team", "owner"]
    date_hierarchy = "period_end"


# Classes and booked demos are created, decided and ended through their pages and the
# API (environments/scheduling, audited there); here they are read only.
@admin.register(TrainingClass)
class TrainingClassAdmin(ReadOnlyAdmin):
    list_display = ["title", "trainer", "team", "status", "starts_at", "ends_at"]
    list_filter = ["status"]
    search_fields = ["title", "trainer__email"]


@admin.register(Seat)
class SeatAdmin(ReadOnlyAdmin):
    list_display = ["training_class", "number", "attendee_email", "environment", "removed_at"]
    search_fields = ["attendee_email"]


@admin.register(Booking)
class BookingAdmin(ReadOnlyAdmin):
    list_display = ["customer", "owner", "team", "status", "starts_at", "ends_at"]
    list_filter = ["status"]
    search_fields = ["customer", "owner__email"]


@admin.register(CapacityReservation)
class CapacityReservationAdmin(ReadOnlyAdmin):
    list_display = ["team", "owner", "environments", "starts_at", "ends_at", "cost", "released_at"]


@admin.register(CalendarFeed)
class CalendarFeedAdmin(ReadOnlyAdmin):
    list_display = ["user", "created_at", "revoked_at"]
    exclude = ["token_hash"]


# People and roles: users (roles are their groups) and the groups themselves are changed
# in the admin too, so they are audited like everything else. Passwords never appear.
User = get_user_model()
for _model in (User, Group):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


class AddPersonForm(AdminUserCreationForm):
    """The admin's "Add user" asks for the email people sign in with, not a username
    (the username is the email). Inviting on the portal's People page is the usual way."""

    email = forms.EmailField(label="Email", help_text="What they sign in with.")

    class Meta(AdminUserCreationForm.Meta):
        model = User
        fields = ("email",)

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError(f"{email} already has an account.")
        return email

    def save(self, commit: bool = True):
        user = super().save(commit=False)
        user.username = user.email = self.cleaned_data["email"]
        if commit:
            user.save()
        return user


@admin.register(User)
class AuditedUserAdmin(AuditedAdmin, BaseUserAdmin):
    add_form = AddPersonForm
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "description": "Usually easier: invite them from the portal's People page.",
                "fields": ("email", "usable_password", "password1", "password2"),
            },
        ),
    )

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change and obj.email:
            # allauth signs in by a verified address; the admin vouches for this one.
            EmailAddress.objects.get_or_create(
                user=obj, email=obj.email, defaults={"primary": True, "verified": True}
            )


@admin.register(Group)
class AuditedGroupAdmin(AuditedAdmin, BaseGroupAdmin):
    pass


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnlyAdmin):
    """View only: snapshots are immutable; retention deletes them (recovery)."""

    list_display = ["created_at", "environment", "number", "reason", "blueprint", "size_bytes"]
    list_filter = ["reason", "blueprint"]
    list_select_related = ["environment"]
    exclude = ["manifests"]  # large: the API and the environment page show them


@admin.register(RecoveryRecord)
class RecoveryRecordAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "kind", "blueprint", "environment", "seconds", "ok", "reason"]
    list_filter = ["kind", "ok", "blueprint"]
    list_select_related = ["environment"]


@admin.register(RestoreRequest)
class RestoreRequestAdmin(ReadOnlyAdmin):
    """Restore request keys seen: the same key again answers with the same environment."""

    list_display = ["created_at", "key", "snapshot", "environment", "requested_by"]
    list_select_related = ["snapshot", "environment", "requested_by"]


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdmin):
    """API Idempotency-Keys seen in the last day: a retry with one gets the first answer
    again (lifecycle.idempotency); the reaper prunes them. The stored answer is not shown."""

    list_display = ["created_at", "user", "key", "status"]
    list_select_related = ["user"]
    search_fields = ["key"]
    exclude = ["body"]


@admin.register(Drill)
class DrillAdmin(ReadOnlyAdmin):
    """Restore drills (recovery): run from the Recovery page, the API or the schedule."""

    list_display = ["started_at", "blueprint", "trigger", "snapshot_number", "result", "seconds"]
    list_filter = ["result", "trigger", "blueprint"]
    list_select_related = ["source_environment"]
