"""Variants of an environment (Qovery's clone): which components, which images, which
overridable env values. Pure rules, one home: the request and clone services, pricing,
quotas and rendering all take the components from ``select_components``.

A variant is stored on the environment as a plain dict, empty for the blueprint's own
shape::

    {"components": ["web", "api", "search"],   # only when it differs from the default
     "images": {"api": "1.2.4-hotfix"},        # a component's image tag
     "env": {"web": {"LOG_LEVEL": "debug"}}}   # overridable env variables only
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from environments.catalog.spec import (
    IMAGE_REFERENCE,
    MAX_PARAMETER_VALUE,
    PLACEHOLDER,
    BlueprintSpec,
    ComponentSpec,
    as_blueprint_spec,
    dynamic_reference,
    is_dynamic,
)

# A Docker tag: what follows the ':' of an image reference.
IMAGE_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class VariantInvalid(ValueError):
    """One sentence saying what is wrong with the asked-for variant."""


def default_components(spec: BlueprintSpec | Mapping[str, Any]) -> list[ComponentSpec]:
    """The blueprint's own shape: every component that is not optional."""
    return [c for c in as_blueprint_spec(spec).components if not c.optional]


def component_names(
    spec: BlueprintSpec | Mapping[str, Any], variant: Mapping[str, Any] | None
) -> list[str]:
    """The names of the components an environment of this variant runs, in the
    blueprint's order."""
    return [c.name for c in select_components(spec, variant)]


def select_components(
    spec: BlueprintSpec | Mapping[str, Any], variant: Mapping[str, Any] | None = None
) -> list[ComponentSpec]:
    """The components of ``variant`` (the default shape for none), in the blueprint's
    order, with the overridden env values set (images are re-tagged after rendering,
    ``retag``)."""
    blueprint = as_blueprint_spec(spec)
    variant = variant or {}
    if "components" in variant:
        chosen = set(variant["components"])
        components = [c for c in blueprint.components if c.name in chosen]
    else:
        components = default_components(blueprint)
    overrides = variant.get("env") or {}
    if not overrides:
        return components
    return [
        c.model_copy(update={"env": {**c.env, **overrides[c.name]}}) if c.name in overrides else c
        for c in components
    ]


def retag(image: str, tag: str) -> str:
    """``shop/api:1.2`` -> ``shop/api:<tag>`` (a digest goes too: the tag decides)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: len(name) - len(last[-1])] + last[-1].split(":", 1)[0]
    return f"{name}:{tag}"


def _names(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise VariantInvalid(f"{what} must be a list of component names.")
    return list(value)


def derive(
    spec: BlueprintSpec | Mapping[str, Any],
    base: Mapping[str, Any] | None,
    *,
    without: Iterable[str] = (),
    with_: Iterable[str] = (),
    images: Mapping[str, Any] | None = None,
    env: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The variant of a clone: ``base`` (the source's variant) with components removed
    (``without``) or added (``with_``, optional components only), image tags and
    overridable env values changed. Raises ``VariantInvalid`` with one sentence."""
    blueprint = as_blueprint_spec(spec)
    declared = {c.name: c for c in blueprint.components}
    base = dict(base or {})
    current = component_names(blueprint, base)
    defaults = {c.name for c in default_components(blueprint)}
    without, with_ = _names(list(without), "without"), _names(list(with_), "with")
    for name in without:
        if name not in declared:
            raise VariantInvalid(f"without: {name!r} is not a component of {blueprint.title}.")
        if name not in current:
            raise VariantInvalid(f"without: {name!r} is not in this environment.")
    for name in with_:
        if name not in declared:
            raise VariantInvalid(f"with: {name!r} is not a component of {blueprint.title}.")
        if name in current:
            raise VariantInvalid(f"with: {name!r} is already in this environment.")
        # An optional component, or one of the blueprint's own that an earlier clone left
        # out (back to the blueprint's shape).
        if not declared[name].optional and name not in defaults:
            raise VariantInvalid(f"with: {name!r} cannot be added.")
    chosen = [n for n in declared if (n in current and n not in without) or n in with_]
    if not chosen:
        raise VariantInvalid("without: an environment needs at least one component.")

    merged_images = {k: v for k, v in (base.get("images") or {}).items() if k in chosen}
    if images is not None and not isinstance(images, Mapping):
        raise VariantInvalid("images must map component names to image tags.")
    for name, tag in (images or {}).items():
        if name not in chosen:
            raise VariantInvalid(f"images: {name!r} is not a component of this environment.")
        if not isinstance(tag, str) or not IMAGE_TAG.match(tag):
            raise VariantInvalid(
                f"images: {tag!r} is not a valid image tag for {name} (letters, digits, "
                "'_', '.' and '-', up to 128, not starting with '.' or '-')."
            )
        merged_images[name] = tag

    merged_env = {k: dict(v) for k, v in (base.get("env") or {}).items() if k in chosen}
    if env is not None and not isinstance(env, Mapping):
        raise VariantInvalid("env must map component names to {VARIABLE: value}.")
    for name, values in (env or {}).items():
        if name not in chosen:
            raise VariantInvalid(f"env: {name!r} is not a component of this environment.")
        if not isinstance(values, Mapping):
            raise VariantInvalid(f"env: {name} must map variable names to values.")
        allowed = declared[name].overridable
        for variable, value in values.items():
            if variable not in allowed:
                hint = f" (it may change {', '.join(allowed)})" if allowed else ""
                raise VariantInvalid(
                    f"env: {name}.{variable} is not overridable in {blueprint.title}{hint}."
                )
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise VariantInvalid(f"env: {name}.{variable} must be a string.")
            text = str(value)
            if len(text) > MAX_PARAMETER_VALUE:
                raise VariantInvalid(
                    f"env: {name}.{variable} is longer than {MAX_PARAMETER_VALUE} characters."
                )
            if _CONTROL.search(text):
                raise VariantInvalid(f"env: {name}.{variable} has a control character.")
            if PLACEHOLDER.search(text) or "{{" in text:
                raise VariantInvalid(
                    f"env: {name}.{variable} may not hold a {{{{ placeholder }}}}."
                )
            merged_env.setdefault(name, {})[variable] = text

    variant: dict[str, Any] = {}
    if chosen != [c.name for c in default_components(blueprint)]:
        variant["components"] = chosen
    if merged_images:
        variant["images"] = dict(sorted(merged_images.items()))
    if merged_env:
        variant["env"] = {k: dict(sorted(v.items())) for k, v in sorted(merged_env.items()) if v}
    check_references(blueprint, variant)
    return variant


def check_references(
    spec: BlueprintSpec | Mapping[str, Any], variant: Mapping[str, Any] | None
) -> None:
    """A component may refer to another's URL or Service (``{{ urls.x }}``) only when
    that other component is in the environment too."""
    components = select_components(spec, variant)
    present = {c.name for c in components}
    for component in components:
        texts = [*component.env.values(), *component.args]
        for text in texts:
            for match in PLACEHOLDER.finditer(text):
                name = match.group(1)
                if not is_dynamic(name):
                    continue
                kind, target = dynamic_reference(name)
                if kind in ("urls", "hosts") and target not in present:
                    raise VariantInvalid(
                        f"{component.name} refers to {{{{ {name} }}}}, but {target} is not in "
                        "this environment: keep it or remove "
                        f"{component.name} too."
                    )


def image_problems(image: str) -> str:
    return "" if IMAGE_REFERENCE.match(image) else f"{image!r} is not a valid image reference"
