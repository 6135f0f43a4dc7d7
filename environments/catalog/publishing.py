"""Publishing blueprint versions and retiring old ones (admins' writes)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from environments.catalog.rendering import spec_digest
from environments.catalog.spec import BlueprintInvalid, load_blueprint
from environments.governance import audit
from environments.models import Blueprint, BlueprintVersion


@transaction.atomic
def publish_blueprint(
    *,
    source: str,
    actor=None,
    ip: str | None = None,
    skip_known: bool = False,
    name: str | None = None,
) -> tuple[BlueprintVersion, bool]:
    """Validate ``source`` and publish it as a new version if its content changed.

    Returns ``(version, created)``. Raises ``BlueprintInvalid`` on bad input, with
    nothing written. ``skip_known`` (files loaded at every start): content equal to any
    earlier version is not published again, so a version an admin published in the
    portal since is not replaced by an old copy from disk. ``name`` (editing a
    blueprint): the source must keep that name, so an edit never starts another blueprint.
    """
    # Browsers post a textarea with CRLF line ends; stored sources use LF, so a version
    # edited in the portal compares line by line with one loaded from a file.
    source = source.replace("\r\n", "\n")
    spec = load_blueprint(source)
    if name is not None and spec.name != name:
        raise BlueprintInvalid(
            [
                (
                    "name",
                    f"{spec.name!r} is not {name!r}: an edit publishes a new version of "
                    f"{name}; publish a new blueprint from the Blueprints page",
                )
            ]
        )
    stored = spec.to_dict()
    digest = spec_digest(stored)
    # The row lock means two publishers cannot take the same version number.
    blueprint, _ = Blueprint.objects.select_for_update().get_or_create(
        name=spec.name, defaults={"title": spec.title, "purpose": spec.purpose}
    )
    latest = blueprint.versions.order_by("-number").first()
    if latest is not None and latest.digest == digest:
        return latest, False
    if skip_known:
        known = blueprint.versions.filter(digest=digest).order_by("-number").first()
        if known is not None:
            return known, False
    if (blueprint.title, blueprint.purpose) != (spec.title, spec.purpose):
        Blueprint.objects.filter(pk=blueprint.pk).update(title=spec.title, purpose=spec.purpose)
    version = BlueprintVersion.objects.create(
        blueprint=blueprint,
        number=(latest.number + 1) if latest else 1,
        source=source,
        spec=stored,
        digest=digest,
        published_by=actor if actor is not None and actor.is_authenticated else None,
    )
    audit.record(
        actor=actor,
        action="blueprint.publish",
        target=version,
        before={"version": latest.number} if latest else None,
        after={"version": version.number, "digest": digest},
        ip=ip,
    )
    return version, True


@transaction.atomic
def set_blueprint_version_deprecated(
    *, version: BlueprintVersion, deprecated: bool, actor, ip: str | None = None
) -> None:
    changed = BlueprintVersion.objects.filter(pk=version.pk, deprecated=not deprecated).update(
        deprecated=deprecated, deprecated_at=timezone.now() if deprecated else None
    )
    if changed:
        audit.record(
            actor=actor,
            action="blueprint.deprecate" if deprecated else "blueprint.undeprecate",
            target=version,
            before={"deprecated": not deprecated},
            after={"deprecated": deprecated},
            ip=ip,
        )
