"""Forms for the portal's pages. They shape input; the services decide."""

from __future__ import annotations

from typing import Any

from django import forms

from environments.catalog.spec import (
    MAX_PARAMETER_VALUE,
    ParameterSpec,
    coerce_parameter,
    format_duration,
)
from environments.lib.durations import MIN_TTL_SECONDS
from environments.models import DISPLAY_NAME_MAX_LENGTH, BlueprintVersion, Team

PARAM_PREFIX = "param_"
# A clone's variant (catalog.variants): which components, image tags, env values.
COMPONENT_PREFIX = "component_"
IMAGE_PREFIX = "image_"
ENV_PREFIX = "envvar_"
# Sent with the variant section: without it, a clone keeps the source's components.
VARIANT_SHOWN = "variant_shown"
# What the live estimate reads (never the whole form: no CSRF token in a GET's URL).
ESTIMATE_INPUTS = (
    f"[name='ttl_seconds'], [name='team'], [name='clone_of'], [name='{VARIANT_SHOWN}'], "
    f"[name^='{COMPONENT_PREFIX}'], [name^='{IMAGE_PREFIX}'], [name^='{ENV_PREFIX}']"
)

# Durations offered in the TTL and extend menus; each blueprint caps them at its max.
# The shortest is the service's minimum, so the menu offers nothing it would refuse and
# hides nothing it would take.
DURATION_STEPS = [
    MIN_TTL_SECONDS,
    15 * 60,
    30 * 60,
    3600,
    2 * 3600,
    4 * 3600,
    8 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    3 * 86400,
    7 * 86400,
    14 * 86400,
    30 * 86400,
]


def duration_choices(*, maximum: int, include: int | None = None) -> list[tuple[int, str]]:
    """Durations up to ``maximum`` seconds, always offering ``include`` and the maximum."""
    seconds = {s for s in DURATION_STEPS if s <= maximum} | {maximum}
    if include:
        seconds.add(include)
    return [(s, format_duration(s)) for s in sorted(seconds)]


def _parameter_field(param: ParameterSpec) -> forms.Field:
    common: dict[str, Any] = {
        "label": param.label,
        "help_text": param.description,
        "required": False,  # blank means the blueprint's default; the service checks
        "initial": param.default,
    }
    kind = param.type
    if kind == "integer":
        return forms.IntegerField(min_value=param.min, max_value=param.max, **common)
    if kind == "boolean":
        return forms.BooleanField(**common)
    if kind == "choice":
        return forms.ChoiceField(choices=[(c, c) for c in param.choices or []], **common)
    if param.format_hint:
        # The format in words before anyone submits; the error after says the same.
        common["help_text"] = " ".join(
            part for part in (param.description, f"Format: {param.format_hint}.") if part
        )
    field = forms.CharField(max_length=MAX_PARAMETER_VALUE, **common)
    # The browser can hint; the service's check of the full pattern is the one that counts.
    field.widget.attrs["data-pattern"] = param.pattern or ""
    return field


class RequestForm(forms.Form):
    """A request for one environment: parameters from the blueprint, TTL, team, reason."""

    display_name = forms.CharField(
        label="Name",
        required=False,
        max_length=DISPLAY_NAME_MAX_LENGTH,
        help_text="Optional: what you and your team will call it, such as acme demo.",
    )
    ttl_seconds = forms.TypedChoiceField(label="Time to live", coerce=int)
    team = forms.ModelChoiceField(queryset=Team.objects.none(), label="Team", empty_label=None)
    reason = forms.CharField(
        label="Reason",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="What is it for? Approvers and your team read this.",
    )

    def __init__(
        self,
        *args,
        version: BlueprintVersion,
        teams: list[Team],
        estimate_url: str = "",
        ttl_limit: tuple[int, str] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.version = version
        ttl = version.blueprint_spec.ttl
        # Offer only what policy allows: the blueprint's maximum or a smaller quota limit
        # (governance.quotas.ttl_limit), and say which one caps the menu.
        maximum, why = ttl_limit or (ttl.max, f"{version.title}'s maximum")
        usual = min(ttl.default, maximum)
        ttl_field = self.fields["ttl_seconds"]
        assert isinstance(ttl_field, forms.TypedChoiceField)
        ttl_field.choices = duration_choices(maximum=maximum, include=usual)
        ttl_field.initial = usual
        ttl_field.help_text = (
            f"Usually {format_duration(ttl.default)}, at most {format_duration(maximum)}: {why}."
        )
        # Any team validates; which one the user may use is the service's decision
        # (access.teams.team_for), so the form and the API give the same answer.
        team_field = self.fields["team"]
        assert isinstance(team_field, forms.ModelChoiceField)
        team_field.queryset = Team.objects.all()
        team_field.widget.choices = [(t.pk, t.name) for t in teams]
        if len(teams) == 1:
            self.fields["team"].initial = teams[0].pk
            self.fields["team"].widget = forms.HiddenInput()
            # With one team there is nothing to choose; the service picks it.
            self.fields["team"].required = False
        if estimate_url:
            # htmx refreshes the price and budget as the TTL or team changes.
            live = {
                "hx-get": estimate_url,
                "hx-trigger": "change",
                "hx-target": "#estimate",
                "hx-swap": "outerHTML",
                # A clone's components change the price too.
                "hx-include": ESTIMATE_INPUTS,
            }
            self.fields["ttl_seconds"].widget.attrs.update(live)
            self.fields["team"].widget.attrs.update(live)
        # Parameter fields come first, in the blueprint's order.
        fields = {}
        for param in version.blueprint_spec.parameters:
            fields[PARAM_PREFIX + param.name] = _parameter_field(param)
        fields.update(self.fields)
        self.fields = fields

    def clean(self):
        # Every parameter problem in one round: the blueprint's own checks (patterns,
        # ranges) run here too, for the fields that passed their form-level checks.
        cleaned = super().clean()
        for param in self.version.blueprint_spec.parameters:
            field = PARAM_PREFIX + param.name
            value = cleaned.get(field)
            if field in self.errors or value is None or value == "":
                continue
            try:
                coerce_parameter(param, value)
            except ValueError as exc:
                self.add_error(field, str(exc))
        return cleaned

    def main_fields(self) -> list[forms.BoundField]:
        """The fields before the variant's (``VariantFields`` draws those itself)."""
        variant = (COMPONENT_PREFIX, IMAGE_PREFIX, ENV_PREFIX)
        return [self[name] for name in self.fields if not name.startswith(variant)]

    def focus_first_error(self) -> None:
        """Put keyboard focus on the first field that needs fixing when the form returns."""
        for name, field in self.fields.items():
            if name in self.errors:
                field.widget.attrs["autofocus"] = True
                return

    def parameters(self) -> dict:
        """The cleaned parameter values by name; blanks are left for defaults."""
        values = {}
        for param in self.version.blueprint_spec.parameters:
            value = self.cleaned_data.get(PARAM_PREFIX + param.name)
            if value is None or value == "":
                continue
            values[param.name] = value
        return values

    def add_parameter_errors(self, errors: dict[str, str]) -> None:
        """Put the service's per-parameter errors on their fields."""
        for name, message in errors.items():
            field = PARAM_PREFIX + name
            if field in self.fields:
                self.add_error(field, message)
            else:
                self.add_error(None, f"{name}: {message}")


class VariantFields:
    """The variant part of the request form when it clones an environment: a checkbox
    per component (the source's checked; the blueprint's optional ones offered), an
    image tag per component (blank: unchanged), and the env variables the blueprint
    marks overridable (the source's values filled in). The service decides
    (``catalog.variants.derive``); this only shapes the input."""

    def __init__(self, form: forms.Form, source: Any) -> None:
        self.form = form
        self.source = source
        spec = source.blueprint_version.blueprint_spec
        present = {c.name: c for c in source.components}
        defaults = {c.name for c in spec.components if not c.optional}
        self.components = [
            c for c in spec.components if c.name in present or c.optional or c.name in defaults
        ]
        self.rows = []
        for component in self.components:
            check = forms.BooleanField(
                label=component.name + (" (optional)" if component.optional else ""),
                required=False,
                initial=component.name in present,
            )
            tag = forms.CharField(
                label=f"{component.name} image tag",
                required=False,
                max_length=128,
                help_text=f"Blank keeps {component.image}.",
            )
            form.fields[COMPONENT_PREFIX + component.name] = check
            form.fields[IMAGE_PREFIX + component.name] = tag
            envs = []
            current = present[component.name].env if component.name in present else component.env
            for variable in component.overridable:
                key = f"{ENV_PREFIX}{component.name}__{variable}"
                form.fields[key] = forms.CharField(
                    label=f"{component.name} {variable}",
                    required=False,
                    max_length=MAX_PARAMETER_VALUE,
                    initial=current.get(variable, ""),
                )
                envs.append(key)
            self.rows.append(
                (
                    component.name,
                    COMPONENT_PREFIX + component.name,
                    IMAGE_PREFIX + component.name,
                    envs,
                )
            )

    def bound_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "check": self.form[check],
                "image": self.form[image],
                "env": [self.form[key] for key in envs],
            }
            for name, check, image, envs in self.rows
        ]

    def changes(self, data: Any) -> dict[str, Any]:
        """``derive``'s arguments from submitted data (a form's or the estimate's GET)."""
        present = {c.name: c for c in self.source.components}
        chosen = {
            c.name
            for c in self.components
            if str(data.get(COMPONENT_PREFIX + c.name, "")).lower() in {"on", "true", "1"}
        }
        images = {
            c.name: data.get(IMAGE_PREFIX + c.name).strip()
            for c in self.components
            if c.name in chosen and (data.get(IMAGE_PREFIX + c.name) or "").strip()
        }
        env: dict[str, dict[str, str]] = {}
        for c in self.components:
            if c.name not in chosen:
                continue
            current = present[c.name].env if c.name in present else c.env
            for variable in c.overridable:
                value = data.get(f"{ENV_PREFIX}{c.name}__{variable}")
                if value is not None and value != current.get(variable, ""):
                    env.setdefault(c.name, {})[variable] = value
        return {
            "without": [n for n in present if n not in chosen],
            "with_": [
                c.name for c in self.components if c.name in chosen and c.name not in present
            ],
            "images": images,
            "env": env,
        }


class RenameForm(forms.Form):
    display_name = forms.CharField(
        label="Name",
        required=False,
        max_length=DISPLAY_NAME_MAX_LENGTH,
        help_text="Leave empty to remove the name.",
    )


class ExtendForm(forms.Form):
    # Any positive amount is accepted here; the service says why one is too long.
    seconds = forms.IntegerField(label="Extend by", min_value=60)
    reason = forms.CharField(label="Reason", required=False, max_length=2000)

    def __init__(self, *args, maximum: int, why: str = "", **kwargs):
        """``maximum``: the most it may be extended by (the TTL limit minus its TTL so
        far); ``why``: whose limit that is, shown beside the menu."""
        super().__init__(*args, **kwargs)
        self.duration_choices = duration_choices(maximum=max(maximum, 60))
        self.fields["seconds"].initial = min(3600, max(maximum, 60))
        self.help_text = f"At most {format_duration(max(maximum, 0))} more: {why}." if why else ""


class RejectForm(forms.Form):
    reason = forms.CharField(
        label="Reason for rejecting",
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
    )
