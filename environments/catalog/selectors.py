"""Reads of the catalogue: what people may request."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import OuterRef, Q, Subquery
from django.http import Http404

from environments.catalog.choices import Purpose
from environments.models import Blueprint, BlueprintVersion


def catalogue(*, search: str = "") -> list[tuple[str, list[BlueprintVersion]]]:
    """The newest non-deprecated version of each blueprint, grouped by purpose.

    Two queries whatever the number of blueprints.
    """
    newest = (
        BlueprintVersion.objects.filter(blueprint=OuterRef("blueprint"), deprecated=False)
        .order_by("-number")
        .values("pk")[:1]
    )
    versions = BlueprintVersion.objects.filter(pk=Subquery(newest)).select_related("blueprint")
    if search:
        versions = versions.filter(
            Q(blueprint__name__icontains=search)
            | Q(blueprint__title__icontains=search)
            | Q(spec__description__icontains=search)
            # Components and their images: "postgres" finds what runs PostgreSQL.
            | Q(spec__components__icontains=search)
        )
    grouped: dict[str, list[BlueprintVersion]] = defaultdict(list)
    for version in versions.order_by("blueprint__title"):
        grouped[version.blueprint.purpose].append(version)
    labels = dict(Purpose.choices)
    return [(labels[p], grouped[p]) for p in Purpose.values if grouped.get(p)]


def requestable_version(name: str) -> BlueprintVersion:
    """The current (non-deprecated) version of blueprint ``name``, or 404."""
    version = (
        BlueprintVersion.objects.filter(blueprint__name=name, deprecated=False)
        .select_related("blueprint")
        .order_by("-number")
        .first()
    )
    if version is None:
        raise Http404("No such blueprint open to requests.")
    return version


def blueprint_names() -> list[str]:
    return list(Blueprint.objects.order_by("name").values_list("name", flat=True))
