"""Reads of the catalogue: what people may request."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import OuterRef, Subquery
from django.http import Http404

from environments.catalog.choices import Purpose
from environments.models import Blueprint, BlueprintVersion


def catalogue(*, search: str = "") -> list[tuple[str, list[BlueprintVersion]]]:
    """The newest non-deprecated version of each blueprint, grouped by purpose.

    Two queries whatever the number of blueprints; the search filters the newest
    versions in Python, over ``searchable_text`` only.
    """
    newest = (
        BlueprintVersion.objects.filter(blueprint=OuterRef("blueprint"), deprecated=False)
        .order_by("-number")
        .values("pk")[:1]
    )
    versions = BlueprintVersion.objects.filter(pk=Subquery(newest)).select_related("blueprint")
    grouped: dict[str, list[BlueprintVersion]] = defaultdict(list)
    for version in versions.order_by("blueprint__title"):
        if search and not matches(version, search):
            continue
        grouped[version.blueprint.purpose].append(version)
    labels = dict(Purpose.choices)
    return [(labels[p], grouped[p]) for p in Purpose.values if grouped.get(p)]


def searchable_text(version: BlueprintVersion) -> list[str]:
    """What catalogue search looks at: names, titles, descriptions, labels, and each
    component's name and image ("postgres" finds what runs PostgreSQL). Never env
    values, args or annotations: a search would otherwise confirm a guessed secret."""
    spec = version.spec or {}
    texts = [
        version.blueprint.name,
        version.blueprint.title,
        str(spec.get("description") or ""),
        *(str(v) for v in (spec.get("labels") or {}).values()),
    ]
    for component in spec.get("components") or []:
        texts += [str(component.get("name") or ""), str(component.get("image") or "")]
    return texts


def matches(version: BlueprintVersion, search: str) -> bool:
    needle = search.casefold()
    return any(needle in text.casefold() for text in searchable_text(version))


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
