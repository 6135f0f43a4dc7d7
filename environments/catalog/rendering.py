"""Parameters filled in and substituted into a blueprint's components.

Templating is plain substitution of declared parameters and of the environment's own
addresses (``{{ urls.api }}``, ``{{ hosts.db }}``, ``{{ env.name }}``): nothing is
evaluated.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from environments.catalog.spec import (
    IMAGE_REFERENCE,
    PLACEHOLDER,
    SECRET_PREFIX,
    BlueprintSpec,
    ParametersInvalid,
    as_blueprint_spec,
    coerce_parameter,
    is_dynamic,
)
from environments.catalog.variants import retag, select_components


def spec_digest(spec: BlueprintSpec | Mapping[str, Any]) -> str:
    """Identifies a blueprint's content, so an unchanged file publishes nothing.

    The digest of the stored dict (``parse_blueprint``'s result, ``BlueprintSpec.to_dict``).
    """
    if isinstance(spec, BlueprintSpec):
        spec = spec.to_dict()
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def resolve_parameters(
    spec: BlueprintSpec | Mapping[str, Any], values: Mapping[str, Any]
) -> dict[str, Any]:
    """Fill defaults and check each value; raise ParametersInvalid with every problem."""
    parameters = as_blueprint_spec(spec).parameters
    errors: dict[str, str] = {}
    resolved: dict[str, Any] = {}
    declared = {p.name for p in parameters}
    for unknown in sorted(set(values) - declared):
        errors[unknown] = "is not a parameter of this blueprint"
    for param in parameters:
        name = param.name
        raw: Any
        if name in values and values[name] not in (None, ""):
            raw = values[name]
        elif param.default is not None:
            raw = param.default
        elif param.type == "boolean":
            raw = False
        else:
            errors[name] = "is required"
            continue
        try:
            resolved[name] = coerce_parameter(param, raw)
        except ValueError as exc:
            errors[name] = str(exc)
    if errors:
        raise ParametersInvalid(errors)
    return resolved


def render_text(
    template: str, parameters: Mapping[str, Any], dynamic: Mapping[str, str] | None = None
) -> str:
    """Substitute ``{{ name }}`` placeholders; nothing else is evaluated.

    ``dynamic``: the environment's own addresses (``"urls.api"`` -> its URL...); without
    it (checking a request before the environment has a name) they stay as written."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith(SECRET_PREFIX):  # a secretKeyRef, made on the cluster
            return match.group(0)
        if is_dynamic(name):
            return match.group(0) if dynamic is None else dynamic[name]
        value = parameters[name]
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return PLACEHOLDER.sub(substitute, template)


def render_components(
    spec: BlueprintSpec | Mapping[str, Any],
    parameters: Mapping[str, Any],
    *,
    variant: Mapping[str, Any] | None = None,
    dynamic: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The components (the variant's) with parameters substituted; images re-checked
    afterwards.

    Plain dicts (a component's stored form), as the cluster side takes them.
    """
    components = []
    errors: dict[str, str] = {}
    images = (variant or {}).get("images") or {}
    for component in select_components(spec, variant):
        rendered = component.model_dump()
        rendered["image"] = render_text(component.image, parameters)
        if component.name in images:
            rendered["image"] = retag(rendered["image"], images[component.name])
        if not IMAGE_REFERENCE.match(rendered["image"]):
            errors[component.name] = (
                f"the image {rendered['image']!r} made from these parameters is not a valid "
                "image reference"
            )
        rendered["env"] = {k: render_text(v, parameters, dynamic) for k, v in component.env.items()}
        rendered["args"] = [render_text(a, parameters, dynamic) for a in component.args]
        components.append(rendered)
    if errors:
        raise ParametersInvalid(errors)
    return components
