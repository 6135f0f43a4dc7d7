"""Views are thin: permission, form, service, render (STYLE.md rule 4).

Every partial that htmx polls is also included by its full page (one URL, one
partial), and answers 286 once nothing will change without a person acting.
"""

from __future__ import annotations

import hashlib
import uuid

import yaml
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from environments import audit, quotas, roles, selectors, services
from environments.blueprints import ParametersInvalid, render_text
from environments.costs import price_for
from environments.forms import PARAM_PREFIX, ExtendForm, RejectForm, RequestForm
from environments.models import Environment, Team
from environments.states import State

# htmx stops polling when a response has this status (HttpResponseStopPolling).
STOP_POLLING = 286


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _back(request: HttpRequest, environment: Environment):
    """Where an action returns to: the page it came from if it is ours, else the detail."""
    target = request.POST.get("next", "")
    if target.startswith("/") and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect("environment_detail", pk=environment.pk)


# --- Catalogue and requests -------------------------------------------------------------


@login_required
@require_GET
def catalogue(request):
    search = request.GET.get("q", "").strip()[:100]
    groups = selectors.catalogue(search=search)
    return render(request, "environments/catalogue.html", {"groups": groups, "search": search})


def _estimate_context(version, *, seconds: int, team: Team | None) -> dict:
    return {
        "version": version,
        "estimate_seconds": seconds,
        "estimate_price": price_for(version.spec, seconds),
        "estimate_team": team,
        "budget": quotas.budget_summary(team=team) if team is not None else None,
    }


def _chosen_team(teams: list[Team], value) -> Team | None:
    for team in teams:
        if str(team.pk) == str(value):
            return team
    return teams[0] if teams else None


def _clone_source(request, version) -> Environment | None:
    """The environment a "Clone…" link copies (?from=<id>), if the user may see it."""
    ref = request.POST.get("clone_of") or request.GET.get("from") or ""
    try:
        pk = uuid.UUID(ref)
    except ValueError:
        return None
    source = selectors.environment_for(user=request.user, pk=pk)  # 404 for outsiders
    return source if source.blueprint_version.blueprint_id == version.blueprint_id else None


def _initial_from(source: Environment, teams: list[Team]) -> dict:
    initial = {PARAM_PREFIX + name: value for name, value in source.parameters.items()}
    initial["reason"] = source.reason
    if any(team.pk == source.team_id for team in teams):
        initial["team"] = source.team_id
    return initial


@login_required
def request_environment(request, name: str):
    version = selectors.requestable_version(name)
    teams = selectors.teams_of(request.user)
    source = _clone_source(request, version)
    form = RequestForm(
        request.POST or None,
        version=version,
        teams=teams,
        estimate_url=reverse("estimate", args=[version.blueprint.name]),
        initial=_initial_from(source, teams) if source and request.method == "GET" else None,
    )
    if request.method == "POST" and form.is_valid():
        try:
            environment = services.request_environment(
                user=request.user,
                version=version,
                parameters=form.parameters(),
                ttl_seconds=form.cleaned_data["ttl_seconds"],
                team=form.cleaned_data["team"],
                reason=form.cleaned_data["reason"],
                ip=audit.client_ip(request),
                action="environment.clone" if source else "environment.request",
            )
        except ParametersInvalid as exc:
            form.add_parameter_errors(exc.errors)
        except services.ServiceError as exc:
            form.add_error(None, str(exc))
        else:
            if environment.state == State.PENDING_APPROVAL:
                messages.success(request, "Requested. An approver will look at it soon.")
            else:
                messages.success(request, "Requested. It is being set up now.")
            return redirect("environment_detail", pk=environment.pk)
    context = {
        "form": form,
        "version": version,
        "teams": teams,
        "clone_of": source,
        **_estimate_context(
            version,
            seconds=_estimate_seconds(version, form["ttl_seconds"].value()),
            team=_chosen_team(teams, form["team"].value()),
        ),
    }
    status = 400 if request.method == "POST" else 200
    form.focus_first_error()
    return render(request, "environments/request.html", context, status=status)


def _estimate_seconds(version, raw) -> int:
    """The TTL to price: the one asked for, within policy (the default if unreadable)."""
    try:
        seconds = int(raw)
    except (TypeError, ValueError):
        seconds = version.spec["ttl"]["default"]
    return min(max(seconds, services.MIN_TTL_SECONDS), version.spec["ttl"]["max"])


@login_required
@require_GET
def estimate(request, name: str):
    """The price of the chosen TTL and the team's budget left (a partial for htmx)."""
    version = selectors.requestable_version(name)
    teams = selectors.teams_of(request.user)
    context = _estimate_context(
        version,
        seconds=_estimate_seconds(version, request.GET.get("ttl_seconds")),
        team=_chosen_team(teams, request.GET.get("team")),
    )
    return render(request, "environments/_estimate.html", context)


# --- Dashboards ---------------------------------------------------------------------------


# Rendered rows are cached per user and scope for up to a minute, keyed by what they
# show: a state change, an extension, new URLs or a new cost accrual changes the key,
# so only the server-rendered "time left" text can be up to a minute old (the browser
# counts it down each second anyway). Polling clients then cost an aggregate query.
ROWS_CACHE_SECONDS = 60


def _rows_context(request, scope: str) -> tuple[dict, bool]:
    rows = selectors.environments_for(user=request.user, scope=scope)
    stamp = selectors.rows_stamp(rows)
    fingerprint = ":".join(str(v) for v in stamp.values())
    # No clock in the key: the entry's own timeout bounds how stale "time left" gets, and a
    # key that changed on a minute boundary made two requests a millisecond apart miss.
    key = "rows:" + hashlib.sha256(f"{request.user.pk}:{scope}:{fingerprint}".encode()).hexdigest()
    cached = cache.get(key)
    if cached is None:
        environments = list(rows)
        intervals = [env.poll_seconds for env in environments if env.poll_seconds]
        context = {
            "environments": environments,
            "scope": scope,
            "polling": bool(intervals),
            "poll_seconds": min(intervals, default=None),
        }
        cached = (
            render_to_string("environments/_rows.html", context, request=request),
            context["poll_seconds"],
        )
        cache.set(key, cached, ROWS_CACHE_SECONDS)
    rows_html, poll_seconds = cached
    context = {"rows_html": rows_html, "scope": scope, "poll_seconds": poll_seconds}
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
    return HttpResponse(context["rows_html"], status=STOP_POLLING if settled else 200)


# --- One environment ----------------------------------------------------------------------


def _access_lines(environment: Environment) -> list[tuple[str, str]]:
    """The blueprint's access info with this environment's parameters filled in."""
    spec = environment.blueprint_version.spec
    # Defaults first, so rows from before a parameter existed still render.
    parameters = {p["name"]: p["default"] for p in spec["parameters"] if "default" in p}
    parameters.update(environment.parameters or {})
    lines = []
    for label, value in (spec.get("access") or {}).items():
        try:
            lines.append((label, render_text(value, parameters)))
        except KeyError:
            lines.append((label, value))
    return lines


def _detail_context(request, environment: Environment) -> dict:
    version = environment.blueprint_version
    extend_left = version.spec["ttl"]["max"] - int(environment.ttl.total_seconds())
    return {
        "env": environment,
        "version": version,
        "events": list(environment.events.select_related("actor")),
        "access": _access_lines(environment),
        "manifests_yaml": yaml.safe_dump_all(environment.manifests, sort_keys=False)
        if environment.manifests
        else "",
        "extend_form": ExtendForm(maximum=extend_left),
        "can_extend": extend_left > 0
        and environment.state in {State.READY, State.PROVISIONING, State.APPROVED},
        "can_delete": environment.state in services.DELETABLE,
        "can_retry": environment.state == State.FAILED,
        "is_htmx": _is_htmx(request),
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
        status=STOP_POLLING if environment.is_settled else 200,
    )


@login_required
@require_POST
def extend_environment(request, pk):
    environment = selectors.environment_for(user=request.user, pk=pk)
    spent = int(environment.ttl.total_seconds())
    form = ExtendForm(
        request.POST, maximum=environment.blueprint_version.spec["ttl"]["max"] - spent
    )
    if not form.is_valid():
        messages.error(request, "Choose how long to extend by.")
        return _back(request, environment)
    try:
        services.extend_environment(
            environment=environment,
            user=request.user,
            seconds=form.cleaned_data["seconds"],
            reason=form.cleaned_data["reason"],
            ip=audit.client_ip(request),
        )
    except services.ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Extended.")
    return _back(request, environment)


@login_required
def delete_environment(request, pk):
    """GET asks for confirmation; POST starts the teardown."""
    environment = selectors.environment_for(user=request.user, pk=pk)
    if request.method != "POST":
        return render(request, "environments/confirm_delete.html", {"env": environment})
    try:
        services.delete_environment(
            environment=environment, user=request.user, ip=audit.client_ip(request)
        )
    except services.ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{environment.namespace} is being deleted.")
    return redirect("environment_detail", pk=environment.pk)


@login_required
@require_POST
def environment_kubeconfig(request, pk):
    """Download a namespace-scoped kubeconfig (POST: it mints a credential)."""
    environment = selectors.environment_for(user=request.user, pk=pk)
    try:
        text = services.kubeconfig_for(
            environment=environment, user=request.user, ip=audit.client_ip(request)
        )
    except services.ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("environment_detail", pk=environment.pk)
    response = HttpResponse(text, content_type="application/yaml")
    response["Content-Disposition"] = f'attachment; filename="{environment.namespace}.kubeconfig"'
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
    except services.ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Cloned {environment.namespace} as {clone.namespace}.")
        return redirect("environment_detail", pk=clone.pk)
    return _back(request, environment)


@login_required
@require_POST
def retry_environment(request, pk):
    environment = selectors.environment_for(user=request.user, pk=pk)
    try:
        services.retry_environment(
            environment=environment, user=request.user, ip=audit.client_ip(request)
        )
    except services.ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Retrying.")
    return _back(request, environment)


# --- Approvals ----------------------------------------------------------------------------


def _require_approver(user) -> None:
    if not roles.is_approver(user):
        raise PermissionDenied("Only approvers can see the approval queue.")


@login_required
@require_GET
def approvals(request):
    _require_approver(request.user)
    pending = list(selectors.pending_approvals())
    for env in pending:
        # What approving would break, in the words of the quota check (empty: nothing).
        env.over_limits = quotas.check(
            team=env.team,
            user=env.owner,
            demand=services.demand_for(env.blueprint_version, int(env.ttl.total_seconds())),
            exclude=env,
        )
        env.policy = env.blueprint_version.spec.get("approval", "auto")
    return render(
        request,
        "environments/approvals.html",
        {"pending": pending, "reject_form": RejectForm()},
    )


@login_required
@require_POST
def approve(request, pk):
    _require_approver(request.user)
    environment = get_object_or_404(Environment, pk=pk)
    try:
        services.approve_environment(
            environment=environment, approver=request.user, ip=audit.client_ip(request)
        )
    except (services.ServiceError, PermissionDenied) as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Approved {environment.namespace}.")
    return redirect("approvals")


@login_required
@require_POST
def reject(request, pk):
    _require_approver(request.user)
    environment = get_object_or_404(Environment, pk=pk)
    form = RejectForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why the request is rejected; the requester will read it.")
        return redirect("approvals")
    try:
        services.reject_environment(
            environment=environment,
            approver=request.user,
            reason=form.cleaned_data["reason"],
            ip=audit.client_ip(request),
        )
    except (services.ServiceError, PermissionDenied) as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Rejected {environment.namespace}.")
    return redirect("approvals")


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
        "blueprint_names": selectors.blueprint_names(),
        "scope": "admin",
        "polling": False,
    }
    return render(request, "environments/admin_environments.html", context)
