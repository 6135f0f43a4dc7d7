"""Blueprint versions in the browser, for portal admins: read a version's YAML (or
download it), edit from a version into a new one, compare two versions, and confirm
before deprecating. Everyone else gets 403, as on the other admin pages.
"""

from __future__ import annotations

import difflib

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from environments.access import roles
from environments.catalog.publishing import publish_blueprint, set_blueprint_version_deprecated
from environments.catalog.spec import BlueprintInvalid
from environments.governance import audit
from environments.models import Blueprint, BlueprintVersion, Team
from environments.web.views.pools import pool_rows


def _require_admin(user) -> None:
    if not roles.is_admin(user):
        raise PermissionDenied("Portal admins only.")


def _version(pk: int) -> BlueprintVersion:
    return get_object_or_404(BlueprintVersion.objects.select_related("blueprint"), pk=pk)


def error_lines(exc: BlueprintInvalid) -> list[str]:
    """One line per problem, ``path: reason``, as the publish form shows them."""
    return [f"{p}: {r}" if p else r for p, r in exc.errors]


@login_required
def blueprint_versions(request):
    _require_admin(request.user)
    errors: list[str] = []
    source = ""
    if request.method == "POST":
        source = request.POST.get("source", "")
        try:
            version, created = publish_blueprint(
                source=source, actor=request.user, ip=audit.client_ip(request)
            )
        except BlueprintInvalid as exc:
            errors = error_lines(exc)
        else:
            if created:
                messages.success(request, f"Published {version}.")
            else:
                messages.info(request, f"No change: {version} already has this content.")
            return redirect("governance_blueprints")
    versions = list(
        BlueprintVersion.objects.select_related("blueprint", "published_by").order_by(
            "blueprint__name", "-number"
        )
    )
    # New requests use each blueprint's newest version that is not deprecated.
    current: dict[int, int] = {}
    for v in versions:
        if not v.deprecated and v.blueprint_id not in current:
            current[v.blueprint_id] = v.number
        if v.deprecated:
            v.status_label = "Deprecated"
        elif current[v.blueprint_id] == v.number:
            v.status_label = "Current: new requests use it"
        else:
            v.status_label = f"Superseded by v{current[v.blueprint_id]}"
    return render(
        request,
        "governance/blueprints.html",
        {
            "versions": versions,
            "errors": errors,
            "source": source,
            "pools": pool_rows(),
            "teams": Team.objects.order_by("name"),
        },
        status=400 if errors else 200,
    )


@login_required
def version_detail(request, pk: int):
    _require_admin(request.user)
    version = _version(pk)
    others = list(version.blueprint.versions.order_by("-number").values_list("number", flat=True))
    current = version.blueprint.current_version()
    return render(
        request,
        "governance/blueprint_version.html",
        {
            "version": version,
            "is_current": current is not None and current.pk == version.pk,
            "numbers": others,
            "previous": max((n for n in others if n < version.number), default=None),
        },
    )


@login_required
def version_source(request, pk: int):
    """The YAML exactly as published, as a download."""
    _require_admin(request.user)
    version = _version(pk)
    response = HttpResponse(version.source, content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="{version.blueprint.name}-v{version.number}.yaml"'
    )
    return response


@login_required
def version_edit(request, pk: int):
    """A form pre-filled with this version's YAML; saving publishes a new version."""
    _require_admin(request.user)
    version = _version(pk)
    errors: list[str] = []
    source = version.source
    if request.method == "POST":
        source = request.POST.get("source", "")
        try:
            published, created = publish_blueprint(
                source=source,
                actor=request.user,
                ip=audit.client_ip(request),
                name=version.blueprint.name,
            )
        except BlueprintInvalid as exc:
            errors = error_lines(exc)
        else:
            if created:
                messages.success(request, f"Published {published}.")
            else:
                messages.info(request, f"No change: {published} already has this content.")
            return redirect("governance_blueprint_version", pk=published.pk)
    return render(
        request,
        "governance/blueprint_edit.html",
        {"version": version, "source": source, "errors": errors},
        status=400 if errors else 200,
    )


def _number(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 10 else None


@login_required
def version_diff(request, name: str):
    """A unified diff of two versions' YAML, ``?from=1&to=2`` (default: the newest two)."""
    _require_admin(request.user)
    blueprint = get_object_or_404(Blueprint, name=name)
    versions = {v.number: v for v in blueprint.versions.all()}
    if not versions:
        raise Http404("This blueprint has no versions.")
    numbers = sorted(versions)
    to_number = _number(request.GET.get("to")) or numbers[-1]
    from_number = _number(request.GET.get("from")) or max(
        (n for n in numbers if n < to_number), default=to_number
    )
    if from_number not in versions or to_number not in versions:
        raise Http404("No such version.")
    old, new = versions[from_number], versions[to_number]
    lines = [
        line.rstrip("\n")
        for line in difflib.unified_diff(
            old.source.splitlines(keepends=True),
            new.source.splitlines(keepends=True),
            fromfile=f"{blueprint.name} v{old.number}",
            tofile=f"{blueprint.name} v{new.number}",
        )
    ]
    rows = []
    for line in lines:
        if line.startswith(("---", "+++")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "added"
        elif line.startswith("-"):
            kind = "removed"
        else:
            kind = "same"
        rows.append({"kind": kind, "text": line})
    return render(
        request,
        "governance/blueprint_diff.html",
        {
            "blueprint": blueprint,
            "old": old,
            "new": new,
            "numbers": list(reversed(numbers)),
            "rows": rows,
            "added": sum(r["kind"] == "added" for r in rows),
            "removed": sum(r["kind"] == "removed" for r in rows),
        },
    )


@login_required
def version_deprecate(request, pk: int):
    """GET asks for confirmation before deprecating; POST deprecates or reopens."""
    _require_admin(request.user)
    version = _version(pk)
    if request.method != "POST":
        if version.deprecated:
            return redirect("governance_blueprints")
        current = version.blueprint.current_version()
        fallback = (
            version.blueprint.versions.filter(deprecated=False, number__lt=version.number)
            .order_by("-number")
            .first()
            if current is not None and current.pk == version.pk
            else current
        )
        return render(
            request,
            "governance/blueprint_deprecate.html",
            {
                "version": version,
                "fallback": fallback,
                "action": reverse("governance_blueprint_deprecate", args=[version.pk]),
                "back_url": reverse("governance_blueprints"),
            },
        )
    deprecated = request.POST.get("deprecated") == "1"
    set_blueprint_version_deprecated(
        version=version, deprecated=deprecated, actor=request.user, ip=audit.client_ip(request)
    )
    now_current = version.blueprint.current_version()
    messages.success(
        request,
        f"{version} {'deprecated' if deprecated else 'open to requests again'}. "
        + (
            f"New requests for {version.blueprint.name} use v{now_current.number}."
            if now_current
            else f"{version.blueprint.name} is closed to new requests (no version open)."
        ),
    )
    return redirect("governance_blueprints")
