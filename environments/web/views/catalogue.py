"""The catalogue, the request form and its live estimate."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from environments.access.teams import requestable_teams
from environments.catalog import selectors as catalog_selectors
from environments.catalog import variants
from environments.catalog.pricing import hourly_price
from environments.catalog.spec import ParametersInvalid
from environments.catalog.variants import VariantInvalid
from environments.governance import audit, quotas
from environments.lib.errors import ServiceError
from environments.lifecycle import pools, queue, selectors, services
from environments.lifecycle.states import State
from environments.models import Environment, Team
from environments.web.forms import (
    ESTIMATE_INPUTS,
    PARAM_PREFIX,
    VARIANT_SHOWN,
    RequestForm,
    VariantFields,
)


@login_required
@require_GET
def catalogue(request):
    search = request.GET.get("q", "").strip()[:100]
    groups = catalog_selectors.catalogue(search=search)
    return render(request, "environments/catalogue.html", {"groups": groups, "search": search})


def _estimate_context(
    version, *, user, seconds: int, team: Team | None, variant: dict | None = None
) -> dict:
    """The price, the team's budget and what the request would come to: the service's
    own decision (governance.quotas.decide), so the estimate never disagrees with it.
    ``variant``: a clone's components, priced as they are (catalog.variants)."""
    demand = quotas.demand_for(version, seconds, variant=variant)
    return {
        "version": version,
        "estimate_seconds": seconds,
        "estimate_price": demand.cost,
        "estimate_hourly": hourly_price(version.blueprint_spec, variant),
        "estimate_team": team,
        "budget": quotas.budget_summary(team=team) if team is not None else None,
        "outcome": quotas.decide(team=team, user=user, version=version, demand=demand)
        if team is not None
        else None,
    }


def _chosen_team(teams: list[Team], value) -> Team | None:
    for team in teams:
        if str(team.pk) == str(value):
            return team
    return teams[0] if teams else None


def _clone_source(request, version) -> Environment | None:
    """The environment a "Clone…" link copies (?from=<id>), if the user may see it."""
    ref = (
        request.POST.get("clone_of") or request.GET.get("from") or request.GET.get("clone_of") or ""
    )
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
    version = catalog_selectors.requestable_version(name)
    teams = requestable_teams(request.user)
    source = _clone_source(request, version)
    initial = _initial_from(source, teams) if source and request.method == "GET" else None
    chosen = _chosen_team(teams, request.POST.get("team") or (initial or {}).get("team"))
    ttl_limit = quotas.ttl_limit(version=version, team=chosen, user=request.user)
    form = RequestForm(
        request.POST or None,
        version=version,
        teams=teams,
        estimate_url=reverse("estimate", args=[version.blueprint.name]),
        initial=initial,
        ttl_limit=ttl_limit,
    )
    variant_fields = VariantFields(form, source) if source else None
    variant = _variant(form, variant_fields, version, request.POST or None)
    if request.method == "POST" and form.is_valid() and variant is not None:
        try:
            environment = services.request_environment(
                user=request.user,
                version=version,
                parameters=form.parameters(),
                ttl_seconds=form.cleaned_data["ttl_seconds"],
                team=form.cleaned_data["team"],
                reason=form.cleaned_data["reason"],
                display_name=form.cleaned_data["display_name"],
                ip=audit.client_ip(request),
                action="environment.clone" if source else "environment.request",
                variant=variant,
            )
        except VariantInvalid as exc:
            form.add_error(None, str(exc))
        except ParametersInvalid as exc:
            form.add_parameter_errors(exc.errors)
        except services.DisplayNameInvalid as exc:
            form.add_error("display_name", str(exc))
        except (ServiceError, PermissionDenied) as exc:
            form.add_error(None, str(exc))
        else:
            if queue.deferred(environment.pk):
                messages.warning(request, f"Requested. {queue.WAITING_FOR_QUEUE}")
            elif getattr(environment, "from_pool", False):
                messages.success(request, "Ready now: it came from the warm pool.")
            elif environment.state == State.PENDING_APPROVAL:
                messages.success(
                    request,
                    "Requested. An approver will look at it soon.",
                    extra_tags="while-pending",
                )
            else:
                # The status partial removes it once set-up is over (ready or failed).
                messages.success(
                    request, "Requested. It is being set up now.", extra_tags="while-setting-up"
                )
            return redirect("environment_detail", pk=environment.pk)
    context = {
        "form": form,
        "version": version,
        "teams": teams,
        "clone_of": source,
        "variant_rows": variant_fields.bound_rows() if variant_fields else [],
        "estimate_inputs": ESTIMATE_INPUTS,
        "pool": pools.status(version.blueprint),
        **_estimate_context(
            version,
            user=request.user,
            seconds=_estimate_seconds(version, form["ttl_seconds"].value()),
            team=_chosen_team(teams, form["team"].value()),
            variant=variant,
        ),
    }
    status = 400 if request.method == "POST" else 200
    form.focus_first_error()
    return render(request, "environments/request.html", context, status=status)


def _variant(form, fields: VariantFields | None, version, data) -> dict | None:
    """The clone's variant from the submitted checkboxes and fields (the source's own
    when nothing was submitted); None, with the reason on the form, if not allowed."""
    if fields is None:
        return {}
    if data is None or VARIANT_SHOWN not in data:  # a form without the section: as it was
        return dict(fields.source.variant or {})
    try:
        return variants.derive(
            version.blueprint_spec, fields.source.variant, **fields.changes(data)
        )
    except VariantInvalid as exc:
        form.add_error(None, str(exc))
        return None


def _estimate_seconds(version, raw) -> int:
    """The TTL to price: the one asked for, within the blueprint (its default if
    unreadable). A quota's smaller ``max_ttl`` is not clamped away here: the menu only
    offers what it allows, and if another team is chosen the estimate says it is over."""
    try:
        seconds = int(raw)
    except (TypeError, ValueError):
        seconds = version.blueprint_spec.ttl.default
    return min(max(seconds, services.MIN_TTL_SECONDS), version.blueprint_spec.ttl.max)


@login_required
@require_GET
def estimate(request, name: str):
    """The price of the chosen TTL, the team's budget left and what the request would
    come to (a partial for htmx)."""
    version = catalog_selectors.requestable_version(name)
    teams = requestable_teams(request.user)
    source = _clone_source(request, version)
    variant: dict | None = None
    if source is not None and VARIANT_SHOWN not in request.GET:
        variant = source.variant
    elif source is not None:
        try:
            variant = variants.derive(
                version.blueprint_spec,
                source.variant,
                **VariantFields(RequestForm(version=version, teams=teams), source).changes(
                    request.GET
                ),
            )
        except VariantInvalid:
            variant = source.variant  # the form says why when it is sent
    context = _estimate_context(
        version,
        user=request.user,
        seconds=_estimate_seconds(version, request.GET.get("ttl_seconds")),
        team=_chosen_team(teams, request.GET.get("team")),
        variant=variant,
    )
    return render(request, "environments/_estimate.html", context)
