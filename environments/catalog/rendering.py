"""Parameters filled in and substituted into a blueprint's components.

Templating is plain substitution of declared parameters: nothing is evaluated.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from environments.catalog.spec import (
    IMAGE_REFERENCE,
    PLACEHOLDER,
    ParametersInvalid,
    coerce_parameter,
)


def spec_digest(spec: dict) -> str:
    """Identifies a blueprint's content, so an unchanged file publishes nothing."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def resolve_parameters(spec: dict, values: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and check each value; raise ParametersInvalid with every problem."""
    errors: dict[str, str] = {}
    resolved: dict[str, Any] = {}
    declared = {p["name"] for p in spec["parameters"]}
    for unknown in sorted(set(values) - declared):
        errors[unknown] = "is not a parameter of this blueprint"
    for param in spec["parameters"]:
        name = param["name"]
        if name in values and values[name] not in (None, ""):
            raw = values[name]
        elif "default" in param:
            raw = param["default"]
        elif param["type"] == "boolean":
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


def render_text(template: str, parameters: dict[str, Any]) -> str:
    """Substitute ``{{ name }}`` placeholders; nothing else is evaluated."""

    def substitute(match: re.Match) -> str:
        value = parameters[match.group(1)]
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return PLACEHOLDER.sub(substitute, template)


def render_components(spec: dict, parameters: dict[str, Any]) -> list[dict]:
    """The components with parameters substituted; images re-checked afterwards."""
    components = []
    errors: dict[str, str] = {}
    for component in spec["components"]:
        rendered = dict(component)
        rendered["image"] = render_text(component["image"], parameters)
        if not IMAGE_REFERENCE.match(rendered["image"]):
            errors[component["name"]] = (
                f"the image {rendered['image']!r} made from these parameters is not a valid "
                "image reference"
            )
        rendered["env"] = {k: render_text(v, parameters) for k, v in component["env"].items()}
        rendered["args"] = [render_text(a, parameters) for a in component["args"]]
        components.append(rendered)
    if errors:
        raise ParametersInvalid(errors)
    return components
