"""The dashboards, one environment's page, and what people do to an environment.

Views are thin: permission, form, service, render (docs/contributing.md). Every
partial that htmx polls is also included by its full page (one URL, one partial), and
answers 286 (stop polling) only once its environments are final (deleted, rejected):
a teammate or the expiry schedule can change any other state.
"""

from __future__ import annotations

import hashlib

import yaml
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HTMX_STOP_POLLING

from environments.access import credentials, roles
from environments.access.kubeconfig import kubeconfig_for
from environments.access.teams import can_change, changeable_team_ids
from environments.catalog import selectors as catalog_selectors
from environments.catalog.rendering import render_text
from environments.catalog.spec import SECRET_REF, ParametersInvalid
from environments.governance import audit, quotas
from environments.lib.errors import ServiceError
from environments.lifecycle import logs, selectors, services
from environments.lifecycle.states import DELETABLE_STATES, EXTENDABLE_STATES, State
from environments.models import Environment, ExtensionRequest, Team
from environments.recovery import selectors as recovery_selectors
from environments.web.forms import ExtendForm, RenameForm
from environments.web.navigation import back
from environments.web.views.bulk import EXTEND_CHOICES

# --- Dashboards ---------------------------------------------------------------------------


# Rendered rows are cached per user and scope for up to a minute, keyed by what they
# show: a state change, an extension, a rename, new URLs or a new cost accrual changes
# the key (selectors.rows_stamp), so only the server-rendered "time left" text can be
# up to a minute old (the browser counts it down each second, to "Expired"). Polling
# clients then cost an aggregate query. Rows poll until every one is final.
ROWS_CACHE_SECONDS = 60
# Each open environment page asks for every component's log tail this often.
LOG_POLL_SECONDS = 5


def _rows_context(request, scope: str) -> tuple[dict, bool]:
    rows = selectors.environments_for(user=request.user, scope=scope)
    stamp = selectors.rows_stamp(
        selectors.environments_for(user=request.user, scope=scope, listed=False)
    )
    fingerprint = ":".join(str(v) for v in stamp.values())
    # No clock in the key: the entry's own timeout bounds how stale "time left" gets, and a
    # key that changed on a minute boundary made two requests a millisecond apart miss.
    # Times are rendered in the viewer's zone (web.timezones), so the zone is in the key.
    zone = timezone.get_current_timezone_name()
    # Which teammates' rows get a Delete link (access.teams): a new lead sees them at once.
    changeable = changeable_team_ids(request.user) if scope == "team" else set()
    may = "all" if changeable is None else ",".join(map(str, sorted(changeable)))
    key = (
        "rows:"
        + hashlib.sha256(
            f"{request.user.pk}:{scope}:{zone}:{may}:{fingerprint}".encode()
        ).hexdigest()
    )
    cached = cache.get(key)
    if cached is None:
        environments = list(rows)
        intervals = [env.poll_seconds for env in environments if env.poll_seconds]
        context = {
            "environments": environments,
            "scope": scope,
            "changeable_all": changeable is None,
            "changeable_teams": changeable or set(),
            "polling": bool(intervals),
            "poll_seconds": min(intervals, default=None),
        }
        cached = (
            render_to_string("environments/_rows.html", context, request=request),
            context["poll_seconds"],
        )
        cache.set(key, cached, ROWS_CACHE_SECONDS)
    rows_html, poll_seconds = cached
    context = {
        "rows_html": rows_html,
        "scope": scope,
        "poll_seconds": poll_seconds,
        "bulk_extend_choices": EXTEND_CHOICES,
    }
    return context, poll_seconds is None


@login_required
@require_GET
def my_environments(request):
    context, _ = _rows_context(request, "mine")
    return render(request, "environments/dashboard.html", context)


@login_required
@require_GET
def team_environments(request):
    context, _ = _rows_context(request, "team")
    teams = selectors.teams_of(request.user)
    context["budgets"] = [(team, quotas.budget_summary(team=team)) for team in teams]
    return render(request, "environments/dashboard.html", context)


@login_required
@require_GET
def environment_rows(request):
    scope = "team" if request.GET.get("scope") == "team" else "mine"
    context, settled = _rows_context(request, scope)
    return HttpResponse(context["rows_html"], status=HTMX_STOP_POLLING if settled else 200)


# --- One environment ----------------------------------------------------------------------


def _access_lines(environment: Environment) -> list[tuple[str, str | None]]:
    """The blueprint's access info with this environment's parameters filled in; a
    generated credential (``{{ secrets.<name> }}``) has None: the page offers a button
    that reveals it (``environment_credentials``) to those who may see it."""
    spec = environment.blueprint_version.blueprint_spec
    # Defaults first, so rows from before a parameter existed still render.
    parameters = {p.name: p.default for p in spec.parameters if p.default is not None}
    parameters.update(environment.parameters or {})
    lines: list[tuple[str, str | None]] = []
    for label, value in spec.access.items():
        if SECRET_REF.match(value):  # a generated credential: revealed on request only
            lines.append((label, None))
            continue
        try:
            lines.append((label, render_text(value, parameters)))
        except KeyError:
            lines.append((label, value))
    return lines


def _extension_limit(environment: Environment) -> tuple[int, str]:
    """How much longer it may live (the blueprint's maximum or a smaller quota limit,
    minus its time to live so far), and whose limit that is."""
    limit, why = quotas.ttl_limit(
        version=environment.blueprint_version, team=environment.team, user=environment.owner
    )
    return limit - int(environment.ttl.total_seconds()), why


def _detail_context(request, environment: Environment) -> dict:
    version = environment.blueprint_version
    extend_left, why = _extension_limit(environment)
    # Teammates see it; only those who may change it get the buttons (access.teams).
    may_change = can_change(request.user, environment)
    return {
        "env": environment,
        "version": version,
        "events": list(environment.events.select_related("actor")),
        "access": _access_lines(environment),
        "can_reveal": environment.state == State.READY
        and credentials.may_hold(request.user, environment),
        "manifests_yaml": yaml.safe_dump_all(environment.manifests, sort_keys=False)
        if environment.manifests
        else "",
        "extend_form": ExtendForm(maximum=extend_left, why=why),
        "may_change": may_change,
        "can_extend": may_change and extend_left > 0 and environment.state in EXTENDABLE_STATES,
        "can_delete": may_change and environment.state in DELETABLE_STATES,
        "can_retry": may_change and environment.state == State.FAILED,
        "can_rename": may_change and environment.is_live,
        "pending_extension": environment.extension_requests.filter(
            state=ExtensionRequest.State.PENDING
        ).first()
        if environment.state in EXTENDABLE_STATES
        else None,
        "rename_form": RenameForm(initial={"display_name": environment.display_name}),
        "is_htmx": bool(request.htmx),
        "tail_choices": logs.TAIL_CHOICES,
        **recovery_selectors.environment_panel(user=request.user, environment=environment),
    }


@login_required
@require_GET
def environment_detail(request, pk):
    environment = selectors.environment_for(user=request.user, pk=pk)
    return render(request, "environments/detail.html", _detail_context(request, environment))


@login_required
@require_GET
def environment_status(request, pk):
    environment = selectors.environment_for(user=request.user, pk=pk)
    return render(
        request,
        "environments/_status.html",
        _detail_context(request, environment),
        status=HTMX_STOP_POLLING if environment.is_settled else 200,
    )


@login_required
@require_POST
def extend_environment(request, pk):
    environment = selectors.environment_for(user=request.user, pk=pk)
    maximum, why = _extension_limit(environment)
    form = ExtendForm(request.POST, maximum=maximum, why=why)
    if not form.is_valid():
        messages.error(request, "Choose how long to extend by.")
        return back(request, environment)
    try:
        extended = services.extend_environment(
            environment=environment,
            user=request.user,
            seconds=form.cleaned_data["seconds"],
            reason=form.cleaned_data["reason"],
            ip=audit.client_ip(request),
        )
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        queued = extended.queued_extension
        if queued is not None:
            messages.success(
                request,
                f"Extension requested: it needs an approver ({queued.why}). The environment "
                "keeps running until its current expiry meanwhile.",
            )
        else:
            messages.success(request, "Extended.")
    return back(request, environment)


@login_required
def delete_environment(request, pk):
    """GET asks for confirmation; POST starts the teardown."""
    environment = selectors.environment_for(user=request.user, pk=pk)
    if not can_change(request.user, environment):
        raise PermissionDenied("Only the owner and the team's leads can delete this environment.")
    if request.method != "POST":
        return render(request, "environments/confirm_delete.html", {"env": environment})
    try:
        services.delete_environment(
            environment=environment, user=request.user, ip=audit.client_ip(request)
        )
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{environment.namespace} is being deleted.")
    return redirect("environment_detail", pk=environment.pk)


@login_required
def rename_environment(request, pk):
    """GET: the name form on its own (no JavaScript needed); POST: rename."""
    environment = selectors.environment_for(user=request.user, pk=pk)
    form = RenameForm(request.POST or None, initial={"display_name": environment.display_name})
    if request.method == "POST" and form.is_valid():
        try:
            services.rename_environment(
                environment=environment,
                user=request.user,
                display_name=form.cleaned_data["display_name"],
                ip=audit.client_ip(request),
            )
        except ServiceError as exc:
            form.add_error("display_name", str(exc))
        else:
            messages.success(request, "Renamed.")
            return redirect("environment_detail", pk=environment.pk)
    status = 400 if request.method == "POST" else 200
    return render(
        request, "environments/rename.html", {"env": environment, "form": form}, status=status
    )


@login_required
@require_POST
def environment_kubeconfig(request, pk):
    """Download a namespace-scoped kubeconfig (POST: it mints a credential)."""
    environment = selectors.environment_for(user=request.user, pk=pk)
    try:
        text = kubeconfig_for(
            environment=environment, user=request.user, ip=audit.client_ip(request)
        )
    except ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("environment_detail", pk=environment.pk)
    response = HttpResponse(text, content_type="application/yaml")
    response["Content-Disposition"] = f'attachment; filename="{environment.namespace}.kubeconfig"'
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def environment_credentials(request, pk):
    """Reveal the environment's generated credentials (POST: not prefetched, not cached).

    Read from its namespace at this moment; never stored, logged or audited by value."""
    environment = selectors.environment_for(user=request.user, pk=pk)
    values = credentials.generated_values(environment, request.user)
    if values is None:
        messages.error(request, "The generated credentials cannot be shown to you right now.")
        return redirect("environment_detail", pk=environment.pk)
    spec = environment.blueprint_version.blueprint_spec
    shown = [
        (label, values.get(match.group(1), ""))
        for label, value in spec.access.items()
        if (match := SECRET_REF.match(value))
    ]
    labelled = {match.group(1) for v in spec.access.values() if (match := SECRET_REF.match(v))}
    shown += [(name, value) for name, value in sorted(values.items()) if name not in labelled]
    response = render(
        request, "environments/credentials.html", {"env": environment, "shown": shown}
    )
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def clone_environment(request, pk):
    environment = selectors.environment_for(user=request.user, pk=pk)
    try:
        clone = services.clone_environment(
            environment=environment, user=request.user, ip=audit.client_ip(request)
        )
    except ParametersInvalid as exc:
        messages.error(request, f"Cannot clone: {exc}")
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Cloned {environment.namespace} as {clone.namespace}.")
        return redirect("environment_detail", pk=clone.pk)
    return back(request, environment)


@login_required
@require_POST
def retry_environment(request, pk):
    environment = selectors.environment_for(user=request.user, pk=pk)
    try:
        services.retry_environment(
            environment=environment, user=request.user, ip=audit.client_ip(request)
        )
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Retrying.")
    return back(request, environment)


@login_required
@require_GET
def environment_logs(request, pk, component):
    """One component's recent logs: the panel htmx polls while the environment can still
    change (286 once it is final), or a page of its own without JavaScript."""
    try:
        tail_lines = int(request.GET.get("tail", logs.DEFAULT_TAIL_LINES))
    except ValueError:
        tail_lines = logs.DEFAULT_TAIL_LINES
    if tail_lines not in logs.TAIL_CHOICES:
        tail_lines = logs.DEFAULT_TAIL_LINES
    environment, component_logs = logs.component_logs(
        user=request.user, pk=pk, component=component, tail_lines=tail_lines
    )
    context = {
        "env": environment,
        "version": environment.blueprint_version,
        "component": component,
        "logs": component_logs,
        "tail_choices": logs.TAIL_CHOICES,
        "poll_seconds": LOG_POLL_SECONDS,
    }
    if not request.htmx:
        return render(request, "environments/logs.html", context)
    return render(
        request,
        "environments/_logs.html",
        context,
        status=200 if component_logs.following else HTMX_STOP_POLLING,
    )


# --- Approvals ----------------------------------------------------------------------------


# --- Portal admin -------------------------------------------------------------------------


# --- Portal admin -------------------------------------------------------------------------

EXPIRING_SOON_HOURS = 24


@login_required
@require_GET
def admin_environments(request):
    if not roles.is_admin(request.user):
        raise PermissionDenied("Only portal admins can see every environment.")
    filters = {
        "state": request.GET.get("state", "") if request.GET.get("state") in State.values else "",
        "team": request.GET.get("team", "")[:50],
        "owner": request.GET.get("owner", "").strip()[:254],
        "blueprint": request.GET.get("blueprint", "")[:63],
    }
    expiring = request.GET.get("expiring") == "1"
    rows = selectors.all_environments(
        **filters, expiring_within_hours=EXPIRING_SOON_HOURS if expiring else None
    )[:500]
    context = {
        "environments": list(rows),
        "filters": filters,
        "expiring": expiring,
        "states": State.choices,
        "teams": Team.objects.order_by("name"),
        "blueprint_names": catalog_selectors.blueprint_names(),
        "scope": "admin",
        "polling": False,
    }
    return render(request, "environments/admin_environments.html", context)
