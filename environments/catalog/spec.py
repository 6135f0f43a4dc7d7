"""Blueprint parsing, validation and parameter rendering.

A blueprint is YAML (format in docs/blueprints.md). ``parse_blueprint`` turns the
text into a normalised spec or raises ``BlueprintInvalid`` holding one
``field.path: reason`` line per problem. Names, quantities and images are checked
by Kubernetes' own rules before anything reaches the cluster; templating is plain
substitution of declared parameters, so no code ever runs from a blueprint.

Two sets of pydantic models live here:

- the raw models (``_Raw*``) check the YAML as written. Every field is ``Any`` and
  checked by a validator of ours, so each problem reads as a sentence for the person
  who wrote the file ("'Web_1' is not a valid DNS-1123 label ...") rather than as
  pydantic's type names. Unknown fields, missing fields and non-mappings are
  pydantic's own errors (``extra="forbid"``), reworded by ``_reason``.
- the spec models (``BlueprintSpec`` and its parts) are the normalised result: what
  ``parse_blueprint`` returns as a plain dict (stored in ``BlueprintVersion.spec`` and
  hashed by ``spec_digest``, so its keys and values must not change) and what the rest
  of the code reads through ``BlueprintSpec.model_validate(stored_dict)``.

Checks that look past their own field are done with what earlier fields left in the
validation context or in ``info.data``: the parameter names declared (placeholders in
components and access must name one), the component names seen (duplicates) and each
component's size (the quota must hold them). Fields are validated in the order they
are declared, so a model declares a field after the fields its checks read.

Error order: one error line per problem, in the order people read the file's rules
(this is the order the hand-written checker that preceded these models used, and
scripts compare the output). For each mapping: its unknown fields in the order they
appear in the file, then its missing fields, then the checks of each field in the
model's ``check_order``, then the checks comparing a field with the rest of the
blueprint (``_LATE``: "components request 0.75 CPU, more than 500m"); lists in item
order. Pydantic reports a model's fields first and its unknown fields last, so
``_sort_key`` turns each error's location into that order and the errors are sorted
on it; a sort is stable, so the problems one validator raised keep their order.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal, NoReturn

import re2
import yaml
from kubernetes.utils.quantity import parse_quantity
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from environments.catalog.choices import ApprovalPolicy, KubeAccess, Purpose
from environments.lib.durations import format_duration, parse_duration
from environments.lib.quantities import (
    cpu_to_millicores,
    format_cpu,
    format_memory,
    memory_to_bytes,
)

# Kubernetes' validation rules (apimachinery/pkg/util/validation).
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
ENV_VAR_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# The Docker reference grammar (distribution/reference), without digests' algorithm list.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?)"
IMAGE_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?$"
)
# A qualified name (annotation/label key): optional DNS-subdomain prefix, then a name.
QUALIFIED_NAME = re.compile(
    r"^(?:[a-z0-9]([-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
PARAMETER_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]*)\s*\}\}")

PURPOSES = tuple(Purpose.values)
APPROVALS = tuple(ApprovalPolicy.values)
KUBE_ACCESS = tuple(KubeAccess.values)
PARAMETER_TYPES = ("string", "integer", "boolean", "choice")
ParameterType = Literal["string", "integer", "boolean", "choice"]
DEFAULT_PATTERN = r"^[A-Za-z0-9._-]{1,63}$"
# The default pattern in words, for people filling in a request (never the raw regex).
DEFAULT_PATTERN_HINT = "letters, digits, dots, dashes and underscores, up to 63"
MAX_HINT = 200
# The longest parameter value anyone may send: the request form, the API and the CLI
# (through the API) all stop here, in coerce_parameter.
MAX_PARAMETER_VALUE = 1000
# Component names become Service names and part of "<component>-<env>" hosts.
MAX_COMPONENT_NAME = 40
MAX_REPLICAS = 50

# --- Generated credentials (issue 14, finding 4) ---
# ``secrets: [{name: db-password, length: 24}]``: generated per environment into a
# Kubernetes Secret in its namespace; components refer to one as the whole value of an
# env var, ``{{ secrets.db-password }}`` (a secretKeyRef), and ``access`` entries show it.
SECRET_REF = re.compile(r"^\{\{\s*secrets\.([^{}\s]*)\s*\}\}$")
SECRET_PREFIX = "secrets."

# --- The environment's own addresses in templates (issue 17) ---
# ``{{ urls.api }}``: the public URL of the exposed component ``api``;
# ``{{ hosts.db }}``: the cluster DNS name of ``db``'s Service (it needs a port);
# ``{{ env.name }}``: the environment's short name. Filled in when the environment is
# provisioned (its name and namespace are known then), in env values and args only.
DYNAMIC_PREFIXES = ("urls.", "hosts.", "env.")
ENV_FIELDS = ("name",)


def is_dynamic(name: str) -> bool:
    return name.startswith(DYNAMIC_PREFIXES)


def dynamic_reference(name: str) -> tuple[str, str]:
    """``"urls.api"`` -> ``("urls", "api")``."""
    kind, _, target = name.partition(".")
    return kind, target


MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 128
DEFAULT_SECRET_LENGTH = 24
MAX_SECRETS = 20
MAX_SECRET_NAME = 63


# --- the normalised spec ---------------------------------------------------------------


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True)


class TTL(_Spec):
    """Lifetimes in seconds."""

    default: int
    max: int


class Resources(_Spec):
    """A component's requests, as written (Kubernetes quantities). ``storage`` is the
    container's scratch disk (ephemeral-storage); None: the platform's default."""

    cpu: str
    memory: str
    storage: str | None = None

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Specs stored before ``storage`` existed keep their digest.
        return {key: value for key, value in handler(self).items() if value is not None}


class VolumeSpec(_Spec):
    """A component's data volume (issue 15): a PersistentVolumeClaim of ``size``,
    mounted at ``path``; ``snapshot``: taken with each environment snapshot (a
    VolumeSnapshot, where the cluster serves snapshot.storage.k8s.io/v1)."""

    size: str
    path: str
    snapshot: bool = False


class DrillSpec(_Spec):
    """Scheduled restore drills (issue 15): every ``every`` seconds."""

    every: int


class ComponentSpec(_Spec):
    name: str
    image: str
    port: int | None = None
    replicas: int = 1
    resources: Resources
    cpu_millicores: int
    memory_bytes: int
    env: dict[str, str] = Field(default_factory=dict)
    args: list[str] = Field(default_factory=list)
    annotations: dict[str, str] = Field(default_factory=dict)
    expose: bool = False
    # --- variants (issue 17) ---
    # Not deployed unless a variant adds it (a clone's ``with``).
    optional: bool = False
    # Env variables a variant may set to another value (a clone's ``env``).
    overridable: list[str] = Field(default_factory=list)
    # A data volume (issue 15); None: none (and no key in the stored spec).
    volume: VolumeSpec | None = None

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Specs stored before variants and volumes existed keep their digest.
        stored = handler(self)
        if not stored.get("optional"):
            stored.pop("optional", None)
        if not stored.get("overridable"):
            stored.pop("overridable", None)
        if stored.get("volume") is None:
            stored.pop("volume", None)
        return stored


class ParameterSpec(_Spec):
    """A request parameter; ``pattern`` only for strings, ``min``/``max`` only for
    integers, ``choices`` only for choices, ``default`` only when declared."""

    name: str
    type: ParameterType
    label: str = ""
    description: str = ""
    default: str | int | bool | None = None
    pattern: str | None = None
    # The pattern in words ("lowercase letters, digits and dashes"); "" for none given.
    hint: str = ""
    min: int | None = None
    max: int | None = None
    choices: list[str] | None = None

    @property
    def format_hint(self) -> str:
        """What a string value must look like, in words: the blueprint's ``hint``, the
        default pattern's description, or "" for a pattern the blueprint left unworded."""
        if self.type != "string":
            return ""
        if self.hint:
            return self.hint
        return DEFAULT_PATTERN_HINT if self.pattern in (None, DEFAULT_PATTERN) else ""

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The stored spec has no key at all for what a parameter does not declare.
        return {key: value for key, value in handler(self).items() if value is not None}


class SecretSpec(_Spec):
    """A credential generated per environment (see ``SECRET_REF``)."""

    name: str
    length: int = DEFAULT_SECRET_LENGTH


class QuotaSpec(_Spec):
    """The namespace's ResourceQuota, as written; only what the blueprint sets."""

    cpu: str | None = None
    memory: str | None = None
    pods: str | None = None
    storage: str | None = None  # ephemeral-storage (scratch disk) of all pods together

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


# --- recovery (issue 15) ------------------------------------------------------------

DEFAULT_RETENTION_KEEP = 10
MAX_RETENTION_KEEP = 1000
DEFAULT_RTO_SECONDS = 120
DEFAULT_RPO_SECONDS = 3600


class RetentionSpec(_Spec):
    """How many snapshots of each environment to keep, and for how long (seconds;
    None: no age limit). Pruned by a scheduled job (``recovery.retention``)."""

    keep: int = DEFAULT_RETENTION_KEEP
    max_age: int | None = None


class RecoverySpec(_Spec):
    """Whether a ready environment whose namespace vanished is restored automatically
    from its latest snapshot, and the objectives it is measured against (seconds)."""

    auto: bool = False
    rto: int = DEFAULT_RTO_SECONDS
    rpo: int = DEFAULT_RPO_SECONDS


# --- egress (issue 14, finding 1) ---------------------------------------------------


class PoolSpec(_Spec):
    """A warm pool: ``size`` ready, unclaimed environments with the default parameters."""

    size: int


class EgressRuleSpec(_Spec):
    """One destination a blueprint's pods may reach besides DNS and their own namespace:
    a CIDR less ``excluded`` CIDRs (the platform's blocked ranges are added when the
    NetworkPolicy is rendered), on these ports."""

    to: str
    excluded: list[str] = Field(default_factory=list)
    ports: list[int]
    protocol: Literal["TCP", "UDP"] = "TCP"


@dataclass(frozen=True)
class EgressLimits:
    """What the platform lets blueprints ask for: ``allowed`` CIDRs a rule's ``to`` must
    lie within, ``blocked`` CIDRs no rule may reach (always excluded when rendered)."""

    allowed: tuple[str, ...]
    blocked: tuple[str, ...]

    @classmethod
    def from_settings(cls) -> EgressLimits:
        from django.conf import settings

        return cls(
            allowed=tuple(getattr(settings, "EGRESS_ALLOWED_CIDRS", DEFAULT_EGRESS_ALLOWED)),
            blocked=tuple(getattr(settings, "EGRESS_BLOCKED_CIDRS", DEFAULT_EGRESS_BLOCKED)),
        )


# Cloud metadata services and link-local: instance credentials live there.
DEFAULT_EGRESS_BLOCKED = (
    "169.254.0.0/16",  # link-local: AWS, GCP, Azure, OpenStack metadata (169.254.169.254)
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "fe80::/10",  # IPv6 link-local
)
DEFAULT_EGRESS_ALLOWED = ("0.0.0.0/0", "::/0")
MAX_EGRESS_RULES = 20
MAX_POOL_SIZE = 20  # ready environments a warm pool keeps (issue 16)


def parse_cidr(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR as Kubernetes takes it (network address, prefix length); ValueError else."""
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{value!r} is not a CIDR (such as 203.0.113.0/24 or 0.0.0.0/0)")
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError:
        raise ValueError(f"{value!r} is not a CIDR (such as 203.0.113.0/24 or 0.0.0.0/0)") from None


def _within(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
    outer: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> bool:
    return network.version == outer.version and network.subnet_of(outer)  # type: ignore[arg-type]


def blocked_within(to: str, blocked: Iterable[str]) -> list[str]:
    """The blocked CIDRs inside ``to``: what a rule to ``to`` must always exclude."""
    network = parse_cidr(to)
    return [
        str(parse_cidr(b))
        for b in blocked
        if _within(parse_cidr(b), network) and parse_cidr(b) != network
    ]


def egress_rule_problems(rule: EgressRuleSpec, limits: EgressLimits) -> list[str]:
    """Why the platform refuses a (well-formed) rule, or []."""
    to = parse_cidr(rule.to)
    for blocked in limits.blocked:
        if _within(to, parse_cidr(blocked)):
            return [f"{rule.to} is in a range the platform blocks ({blocked})"]
    if not any(_within(to, parse_cidr(allowed)) for allowed in limits.allowed):
        allowed = ", ".join(limits.allowed) or "none"
        return [f"{rule.to} is outside what the platform allows (allowed: {allowed})"]
    return []


# --- the blueprint -----------------------------------------------------------------------


class BlueprintSpec(_Spec):
    """A validated blueprint, as stored in ``BlueprintVersion.spec``.

    ``BlueprintSpec.model_validate(version.spec)`` loads a stored spec; the defaults
    cover fields that specs stored by earlier versions of the portal lack.
    ``to_dict()`` is the stored form.
    """

    name: str
    title: str
    purpose: Purpose
    description: str = ""
    approval: ApprovalPolicy = ApprovalPolicy.AUTO
    ttl: TTL
    auto_approve_ttl: int | None = None
    hourly_fee: str = "0"
    parameters: list[ParameterSpec] = Field(default_factory=list)
    components: list[ComponentSpec]
    quota: QuotaSpec = Field(default_factory=QuotaSpec)
    access: dict[str, str] = Field(default_factory=dict)
    kube_access: KubeAccess = KubeAccess.VIEW
    # The parameter lists show beside the title (the customer, say), or None.
    list_parameter: str | None = None
    # Where the pods may connect besides DNS and their own namespace (issue 14).
    egress: list[EgressRuleSpec] = Field(default_factory=list)
    # Generated credentials (issue 14, finding 4).
    secrets: list[SecretSpec] = Field(default_factory=list)
    # A warm pool of ready environments (issue 16), or None.
    pool: PoolSpec | None = None
    # Snapshots and restores (issue 15); None: not written (the defaults apply).
    retention: RetentionSpec | None = None
    recovery: RecoverySpec | None = None
    # Scheduled restore drills (issue 15); None: on demand only.
    drill: DrillSpec | None = None

    @property
    def snapshot_retention(self) -> RetentionSpec:
        return self.retention or RetentionSpec()

    @property
    def recovery_objectives(self) -> RecoverySpec:
        return self.recovery or RecoverySpec()

    def to_dict(self) -> dict[str, Any]:
        """The plain, JSON-ready dict stored in the database and hashed."""
        stored = self.model_dump(mode="json")
        # Specs stored before these fields existed keep their digest.
        for optional in ("egress", "secrets", "pool", "retention", "recovery", "drill"):
            if not stored[optional]:
                del stored[optional]
        return stored


def as_blueprint_spec(spec: BlueprintSpec | Mapping[str, Any]) -> BlueprintSpec:
    """A ``BlueprintSpec`` from either one or a stored spec dict."""
    if isinstance(spec, BlueprintSpec):
        return spec
    return BlueprintSpec.model_validate(spec)


def _size(component: ComponentSpec | Mapping[str, Any]) -> tuple[int, int, int]:
    """CPU millicores, memory bytes and replicas of one component."""
    if isinstance(component, ComponentSpec):
        return component.cpu_millicores, component.memory_bytes, component.replicas
    if "cpu_millicores" in component:
        cpu, memory = component["cpu_millicores"], component["memory_bytes"]
    else:  # a component dict with its requests only
        cpu = cpu_to_millicores(component["resources"]["cpu"])
        memory = memory_to_bytes(component["resources"]["memory"])
    return cpu, memory, component["replicas"]


@dataclass(frozen=True)
class Totals:
    """What a set of components asks of the cluster, replicas included."""

    cpu_millicores: int
    memory_bytes: int
    pods: int


def component_totals(components: Iterable[ComponentSpec | Mapping[str, Any]]) -> Totals:
    """CPU, memory and pods of validated components, times their replicas.

    The one place this sum is made: prices, quotas, the namespace's ResourceQuota and
    the blueprint's own quota check all use it. Takes ``ComponentSpec``s or dicts with
    ``cpu_millicores``, ``memory_bytes`` and ``replicas`` (rendered components).
    """
    sizes = [_size(c) for c in components]
    return Totals(
        cpu_millicores=sum(cpu * replicas for cpu, _, replicas in sizes),
        memory_bytes=sum(memory * replicas for _, memory, replicas in sizes),
        pods=sum(replicas for _, _, replicas in sizes),
    )


class BlueprintInvalid(ValueError):
    """A blueprint with problems; ``errors`` holds ``(path, reason)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__(
            "; ".join(f"{path}: {reason}" if path else reason for path, reason in errors)
        )

    def lines(self, filename: str) -> list[str]:
        """One line per problem: ``file: field.path: reason``."""
        return [
            f"{filename}: {path}: {reason}" if path else f"{filename}: {reason}"
            for path, reason in self.errors
        ]


class ParametersInvalid(ValueError):
    """Request parameters that fail the blueprint's rules; ``errors`` maps name -> reason."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {reason}" for name, reason in errors.items()))


# --- checking the YAML as written ----------------------------------------------------------

# Error types of our own (pydantic's are reworded by _reason).
_CHECK = "blueprint"  # the field breaks one of its rules
_LATE = "blueprint_late"  # the field does not fit the rest of the blueprint
_MISSING = "missing"  # same as pydantic's: "missing required field"

Problem = tuple[tuple[str | int, ...], str, str]  # (location under the field, reason, type)


class _Absent:
    """The default of a field whose absence is checked by its validator."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Any = _Absent()


def _problem(reason: str, kind: str = _CHECK) -> PydanticCustomError:
    # The reason goes in the context: braces in it ({{ placeholders }}, regex
    # repetitions) must not be read as the message template's.
    return PydanticCustomError(kind, "{reason}", {"reason": reason})


def _raise(problems: list[Problem]) -> NoReturn:
    """Report several problems from one validator (pydantic prefixes their locations)."""
    raise ValidationError.from_exception_data(
        "blueprint",
        [
            InitErrorDetails(type=_problem(reason, kind), loc=loc, input=None)
            for loc, reason, kind in problems
        ],
    )


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


def _string(value: Any, *, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _problem(f"must be a non-empty string, got {_kind(value)}")
    if len(value) > max_length:
        raise _problem(f"must be at most {max_length} characters")
    return value


def _duration(value: Any) -> int:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _problem(str(exc)) from None


def _quantity(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _problem(f"must be a Kubernetes quantity such as 250m or 1Gi, got {_kind(value)}")
    try:
        number = parse_quantity(value)
    except (ValueError, InvalidOperation):
        raise _problem(
            f"{value!r} is not a valid Kubernetes quantity (such as 250m or 1Gi)"
        ) from None
    if number <= 0:
        raise _problem(f"{value!r} must be greater than zero")
    return value


def _dynamic_problem(name: str, info: ValidationInfo, *, dynamic_ok: bool) -> str:
    """Why ``{{ urls.x }}``/``{{ hosts.x }}``/``{{ env.name }}`` can't be used here ("" if
    it can). The components are known before any is checked (``_RawBlueprint``)."""
    if not dynamic_ok:
        return f"{{{{ {name} }}}} may only be used in a component's env values and args"
    kind, target = dynamic_reference(name)
    if kind == "env":
        if target not in ENV_FIELDS:
            return f"{{{{ {name} }}}}: the environment has {', '.join(ENV_FIELDS)}, not {target!r}"
        return ""
    components = _context(info)["components_declared"]
    if target not in components:
        return f"{{{{ {name} }}}} names no component"
    if kind == "urls" and not components[target]["expose"]:
        return f"{{{{ {name} }}}}: component {target!r} is not exposed, so it has no URL"
    if kind == "hosts" and not components[target]["port"]:
        return f"{{{{ {name} }}}}: component {target!r} has no port, so it has no Service"
    return ""


def _placeholders(
    text: str, info: ValidationInfo, *, secret_ok: bool = False, dynamic_ok: bool = False
) -> list[str]:
    """Problems with the ``{{ name }}`` placeholders in a text. ``secret_ok``: the text
    may be exactly one ``{{ secrets.<name> }}`` reference (an env value, an access entry);
    ``dynamic_ok``: it may hold the environment's own addresses (env values and args)."""
    whole = SECRET_REF.match(text)
    if secret_ok and whole:
        if whole.group(1) not in _context(info)["secrets"]:
            return [f"{{{{ secrets.{whole.group(1)} }}}} names no declared secret"]
        return []
    declared = _context(info)["parameters"]
    reasons = []
    for match in PLACEHOLDER.finditer(text):
        name = match.group(1)
        if name in declared:
            continue
        if is_dynamic(name):
            reason = _dynamic_problem(name, info, dynamic_ok=dynamic_ok)
            if reason:
                reasons.append(reason)
        elif name.startswith(SECRET_PREFIX):
            reasons.append(
                f"{{{{ {name} }}}}: a secret may only be the whole value of an env "
                "variable or an access entry"
            )
        else:
            reasons.append(f"placeholder {{{{ {name} }}}} names no declared parameter")
    if text.count("{{") != len(PLACEHOLDER.findall(text)):
        reasons.append("has an unclosed or malformed {{ placeholder }}")
    return reasons


def _context(info: ValidationInfo) -> dict[str, Any]:
    """What earlier fields left for later checks (made by ``parse_blueprint``):
    ``parameters``: names declared; ``component_names``: valid component names seen;
    ``sizes``: one dict per component (replicas, and cpu_millicores/memory_bytes once
    both requests are valid); ``this_parameter``/``this_component``: the item being
    checked."""
    assert isinstance(info.context, dict), "validate the raw models with parse_blueprint"
    return info.context


class _Raw(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The order the fields' problems are reported in (see the module docstring).
    check_order: ClassVar[tuple[str, ...]] = ()
    # Fields holding a mapping (or list of mappings) checked by another raw model.
    nested: ClassVar[dict[str, type[_Raw]]] = {}


class _RawTTL(_Raw):
    check_order = ("default", "max")

    max: Any  # before default: the default's check reads it
    default: Any

    @field_validator("max")
    @classmethod
    def _max(cls, value: Any) -> int:
        return _duration(value)

    @field_validator("default")
    @classmethod
    def _default(cls, value: Any, info: ValidationInfo) -> int:
        seconds = _duration(value)
        maximum = info.data.get("max")
        if maximum is not None and seconds > maximum:
            raise _problem(
                f"{format_duration(seconds)} is longer than ttl.max {format_duration(maximum)}"
            )
        return seconds


class _RawParameter(_Raw):
    # A parameter whose name is wrong, taken or whose type is unknown gets no further
    # checks; nor does the default of one whose pattern or choices are wrong.
    check_order = (
        "name",
        "type",
        "label",
        "description",
        "pattern",
        "hint",
        "min",
        "max",
        "choices",
        "default",
    )

    name: Any = Field(_ABSENT, validate_default=True)
    type: Any = Field(_ABSENT, validate_default=True)
    label: Any = None
    description: Any = None
    pattern: Any = Field(_ABSENT, validate_default=True)
    hint: Any = None
    max: Any = _ABSENT  # before min: min's check reads it
    min: Any = _ABSENT
    choices: Any = Field(_ABSENT, validate_default=True)
    default: Any = _ABSENT

    @model_validator(mode="before")
    @classmethod
    def _start(cls, data: Any, info: ValidationInfo) -> Any:
        _context(info)["this_parameter"] = {}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: Any, info: ValidationInfo) -> str:
        declared = _context(info)["parameters"]
        reason = f"{value if value is not _ABSENT else None!r} is not a valid parameter name "
        reason += "(a-z, 0-9, _)"
        if value is _ABSENT:
            _raise([((), "missing required field", _MISSING), ((), reason, _CHECK)])
        if not isinstance(value, str) or not PARAMETER_NAME.match(value):
            raise _problem(reason)
        if value in declared:
            raise _problem(f"{value!r} is declared twice")
        declared.add(value)
        return value

    @field_validator("type")
    @classmethod
    def _type(cls, value: Any, info: ValidationInfo) -> Any:
        named = "name" in info.data
        reason = f"{value if value is not _ABSENT else None!r} is not one of "
        reason += ", ".join(PARAMETER_TYPES)
        if value is _ABSENT:
            problems: list[Problem] = [((), "missing required field", _MISSING)]
            _raise([*problems, ((), reason, _CHECK)] if named else problems)
        if named and value not in PARAMETER_TYPES:
            raise _problem(reason)
        return value

    @staticmethod
    def _type_of(info: ValidationInfo) -> str | None:
        """The parameter's type once its name and type passed, else None."""
        return info.data.get("type") if "name" in info.data and "type" in info.data else None

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: Any, info: ValidationInfo) -> Any:
        if cls._type_of(info) != "string":
            return value
        pattern = DEFAULT_PATTERN if value is _ABSENT else value
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise _problem(f"{pattern!r} is not a valid regular expression: {exc}") from None
        # Values are matched with RE2, in time linear in their length (Python's re can
        # backtrack for hours on a pattern like ^([a-z0-9]+-?)+$). RE2 has no
        # backreferences or lookarounds.
        try:
            _compiled_pattern(pattern)
        except re2.error as exc:
            reason = str(exc).splitlines()[0] if str(exc) else "too large"
            raise _problem(
                f"{pattern!r} is not supported (patterns use RE2 syntax, without "
                f"backreferences or lookarounds): {reason}"
            ) from None
        return pattern

    @field_validator("hint")
    @classmethod
    def _hint(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return value
        if cls._type_of(info) not in (None, "string"):
            raise _problem("only string parameters have a hint")
        if not isinstance(value, str) or "\n" in value.strip() or not value.strip():
            raise _problem("must be one line of text")
        if len(value.strip()) > MAX_HINT:
            raise _problem(f"is longer than {MAX_HINT} characters")
        return value.strip()

    @field_validator("max")
    @classmethod
    def _max(cls, value: Any, info: ValidationInfo) -> Any:
        if cls._type_of(info) != "integer":
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            raise _problem("must be a whole number")
        _context(info)["this_parameter"]["max"] = value
        return value

    @field_validator("min")
    @classmethod
    def _min(cls, value: Any, info: ValidationInfo) -> Any:
        if cls._type_of(info) != "integer":
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            raise _problem("must be a whole number")
        # Kept for the default's check even when greater than max.
        _context(info)["this_parameter"]["min"] = value
        maximum = info.data.get("max", _ABSENT)
        if isinstance(maximum, int) and value > maximum:
            raise _problem(f"{value} is greater than max {maximum}")
        return value

    @field_validator("choices")
    @classmethod
    def _choices(cls, value: Any, info: ValidationInfo) -> Any:
        if cls._type_of(info) != "choice":
            return value
        if not isinstance(value, list) or not value:
            raise _problem("must be a non-empty list")
        return [str(choice) for choice in value]

    @field_validator("default")
    @classmethod
    def _default(cls, value: Any, info: ValidationInfo) -> Any:
        kind = cls._type_of(info)
        rules: dict[str, Any] = {"type": kind, **_context(info)["this_parameter"]}
        if kind == "string":
            if "pattern" not in info.data:
                return value
            rules["pattern"] = info.data["pattern"]
        elif kind == "choice":
            if "choices" not in info.data:
                return value
            rules["choices"] = info.data["choices"]
        elif kind is None:
            return value
        try:
            # The blueprint's author reads the pattern itself, not its description.
            return coerce_parameter(rules, value, show_pattern=True)
        except ValueError as exc:
            raise _problem(str(exc)) from None

    def normalised(self) -> ParameterSpec:
        name: str = self.name
        spec: dict[str, Any] = {
            "name": name,
            "type": self.type,
            "label": str(self.label or name.replace("_", " ").capitalize()),
            "description": str(self.description or ""),
        }
        if self.type == "string":
            spec["pattern"] = self.pattern
            if self.hint:
                spec["hint"] = self.hint
        if self.type == "integer":
            spec.update(
                {k: v for k, v in (("min", self.min), ("max", self.max)) if v is not _ABSENT}
            )
        if self.type == "choice":
            spec["choices"] = self.choices
        if self.default is not _ABSENT:
            spec["default"] = self.default
        return ParameterSpec.model_validate(spec)


class _RawResources(_Raw):
    check_order = ("cpu", "memory", "storage")

    cpu: Any
    memory: Any
    storage: Any = None  # ephemeral-storage; None: EPHEMERAL_STORAGE_DEFAULT

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: Any, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        quantity = _quantity(value)
        _context(info)["this_component"]["storage_bytes"] = memory_to_bytes(quantity)
        return quantity

    @field_validator("cpu", "memory")
    @classmethod
    def _request(cls, value: Any, info: ValidationInfo) -> str:
        quantity = _quantity(value)
        # The component's size counts towards the quota once both requests are valid,
        # even if the resources mapping has other problems.
        size = _context(info)["this_component"]
        size[info.field_name] = quantity
        if "cpu" in size and "memory" in size:
            size["cpu_millicores"] = cpu_to_millicores(size["cpu"])
            size["memory_bytes"] = memory_to_bytes(size["memory"])
        return quantity


MIN_DRILL_INTERVAL = 60 * 60  # a drill at most every hour
MAX_MOUNT_PATH = 4096


class _RawVolume(_Raw):
    """A component's ``volume``: size (a quantity), an absolute mount path, snapshot."""

    check_order = ("size", "path", "snapshot")

    size: Any = Field(_ABSENT, validate_default=True)
    path: Any = Field(_ABSENT, validate_default=True)
    snapshot: Any = False

    @field_validator("size")
    @classmethod
    def _size(cls, value: Any, info: ValidationInfo) -> str:
        if value is _ABSENT:
            raise _problem("missing required field", _MISSING)
        quantity = _quantity(value)
        _context(info)["this_component"]["volume_bytes"] = memory_to_bytes(quantity)
        return quantity

    @field_validator("path")
    @classmethod
    def _path(cls, value: Any) -> str:
        if value is _ABSENT:
            raise _problem("missing required field", _MISSING)
        if (
            not isinstance(value, str)
            or not value.startswith("/")
            or len(value) > MAX_MOUNT_PATH
            or any(c in value for c in ":\n\0")
        ):
            raise _problem(f"{value!r} is not an absolute path such as /var/lib/data")
        if ".." in value.split("/"):
            raise _problem(f"{value!r} must not contain '..'")
        if value.rstrip("/") == "":
            raise _problem("must not be / (mount the volume on a directory)")
        return value.rstrip("/")

    @field_validator("snapshot")
    @classmethod
    def _snapshot(cls, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _problem("must be true or false")
        return value

    def normalised(self) -> VolumeSpec:
        return VolumeSpec(size=self.size, path=self.path, snapshot=self.snapshot)


class _RawDrill(_Raw):
    """The blueprint's ``drill``: how often a restore drill runs."""

    check_order = ("every",)

    every: Any = Field(_ABSENT, validate_default=True)

    @field_validator("every")
    @classmethod
    def _every(cls, value: Any) -> int:
        if value is _ABSENT:
            raise _problem("missing required field", _MISSING)
        seconds = _duration(value)
        if seconds < MIN_DRILL_INTERVAL:
            raise _problem(f"{value!r} is too often: at most one drill an hour (1h)")
        return seconds

    def normalised(self) -> DrillSpec:
        return DrillSpec(every=self.every)


class _RawComponent(_Raw):
    check_order = (
        "name",
        "image",
        "port",
        "replicas",
        "resources",
        "env",
        "args",
        "annotations",
        "expose",
        "optional",
        "overridable",
        "volume",
    )
    nested = {"resources": _RawResources, "volume": _RawVolume}

    name: Any = Field(_ABSENT, validate_default=True)
    image: Any = Field(_ABSENT, validate_default=True)
    port: Any = None
    replicas: Any = 1
    resources: _RawResources
    env: Any = Field(default_factory=dict)
    args: Any = Field(default_factory=list)
    annotations: Any = Field(default_factory=dict)
    expose: Any = False
    optional: Any = False
    overridable: Any = Field(default_factory=list)
    volume: _RawVolume | None = None

    @model_validator(mode="before")
    @classmethod
    def _start(cls, data: Any, info: ValidationInfo) -> Any:
        context = _context(info)
        context["this_component"] = {"replicas": 1}
        if isinstance(data, dict):
            context["sizes"].append(context["this_component"])
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: Any, info: ValidationInfo) -> str:
        names = _context(info)["component_names"]
        reason = (
            f"{value if value is not _ABSENT else None!r} is not a valid DNS-1123 label "
            "(lowercase letters, digits and '-', starting with a letter, at most "
            f"{MAX_COMPONENT_NAME} characters)"
        )
        if value is _ABSENT:
            _raise([((), "missing required field", _MISSING), ((), reason, _CHECK)])
        if (
            not isinstance(value, str)
            or not DNS1035_LABEL.match(value)
            or len(value) > MAX_COMPONENT_NAME
        ):
            raise _problem(reason)
        if value in names:
            raise _problem(f"{value!r} is used by another component")
        names.add(value)
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: Any, info: ValidationInfo) -> str:
        problems: list[Problem] = []
        if value is _ABSENT:
            problems.append(((), "missing required field", _MISSING))
            value = None
        try:
            image = _string(value, max_length=500)
        except PydanticCustomError as exc:
            _raise([*problems, ((), exc.message(), _CHECK)])
        problems = [((), reason, _CHECK) for reason in _placeholders(image, info)]
        if not PLACEHOLDER.search(image) and not IMAGE_REFERENCE.match(image):
            problems.append(((), f"{image!r} is not a valid image reference", _CHECK))
        if problems:
            _raise(problems)
        return image

    @field_validator("port")
    @classmethod
    def _port(cls, value: Any) -> int | None:
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535
        ):
            raise _problem(f"{value!r} is not a port number (1-65535)")
        return value

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: Any, info: ValidationInfo) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_REPLICAS:
            raise _problem(f"{value!r} is not a whole number 1-{MAX_REPLICAS}")
        _context(info)["this_component"]["replicas"] = value
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: Any, info: ValidationInfo) -> dict[str, str]:
        if not isinstance(value, dict):
            raise _problem(f"must be a mapping, got {_kind(value)}")
        problems: list[Problem] = []
        env = {}
        for key, val in value.items():
            where = (str(key),)
            if not isinstance(key, str) or not ENV_VAR_NAME.match(key):
                problems.append(
                    (where, f"{key!r} is not a valid environment variable name", _CHECK)
                )
            elif isinstance(val, bool) or val is None or isinstance(val, dict | list):
                problems.append((where, "must be a string or a number", _CHECK))
            else:
                problems += [
                    (where, reason, _CHECK)
                    for reason in _placeholders(str(val), info, secret_ok=True, dynamic_ok=True)
                ]
                env[key] = str(val)
        if problems:
            _raise(problems)
        return env

    @field_validator("args")
    @classmethod
    def _args(cls, value: Any, info: ValidationInfo) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(a, str | int) for a in value):
            raise _problem("must be a list of strings")
        problems: list[Problem] = [
            ((position,), reason, _CHECK)
            for position, arg in enumerate(value)
            for reason in _placeholders(str(arg), info, dynamic_ok=True)
        ]
        if problems:
            _raise(problems)
        return [str(arg) for arg in value]

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise _problem(f"must be a mapping, got {_kind(value)}")
        problems: list[Problem] = []
        annotations = {}
        for key, val in value.items():
            where = (str(key),)
            if not isinstance(key, str) or not QUALIFIED_NAME.match(key) or len(key) > 316:
                problems.append((where, f"{key!r} is not a valid annotation key", _CHECK))
            elif not isinstance(val, str | int | float) or isinstance(val, bool):
                problems.append((where, "must be a string", _CHECK))
            else:
                annotations[key] = str(val)
        if problems:
            _raise(problems)
        return annotations

    @field_validator("expose")
    @classmethod
    def _expose(cls, value: Any, info: ValidationInfo) -> bool:
        if not isinstance(value, bool):
            raise _problem("must be true or false")
        # A port that failed its own check is not missing.
        if value and "port" in info.data and info.data["port"] is None:
            raise _problem("an exposed component needs a port")
        return value

    @field_validator("optional")
    @classmethod
    def _optional(cls, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _problem("must be true or false")
        return value

    @field_validator("overridable")
    @classmethod
    def _overridable(cls, value: Any, info: ValidationInfo) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _problem("must be a list of the component's env variable names")
        env = info.data.get("env")
        problems: list[Problem] = []
        for position, name in enumerate(value):
            if value.index(name) != position:
                problems.append(((position,), f"{name!r} is listed twice", _CHECK))
            elif env is not None and name not in env:
                problems.append(
                    ((position,), f"{name!r} is not one of this component's env variables", _CHECK)
                )
        if problems:
            _raise(problems)
        return list(value)

    def normalised(self) -> ComponentSpec:
        return ComponentSpec(
            name=self.name,
            image=self.image,
            port=self.port,
            replicas=self.replicas,
            resources=Resources(
                cpu=self.resources.cpu,
                memory=self.resources.memory,
                storage=self.resources.storage,
            ),
            cpu_millicores=cpu_to_millicores(self.resources.cpu),
            memory_bytes=memory_to_bytes(self.resources.memory),
            env=self.env,
            args=self.args,
            annotations=self.annotations,
            expose=self.expose,
            optional=self.optional,
            overridable=self.overridable,
            volume=self.volume.normalised() if self.volume is not None else None,
        )


class _RawSecret(_Raw):
    """One generated credential: a DNS-1123 name (the key in the environment's Secret)
    and a length in characters."""

    check_order = ("name", "length")

    name: Any = Field(_ABSENT, validate_default=True)
    length: Any = DEFAULT_SECRET_LENGTH

    @field_validator("name")
    @classmethod
    def _name(cls, value: Any, info: ValidationInfo) -> str:
        names = _context(info)["secrets"]
        if value is _ABSENT:
            raise _problem("missing required field", _MISSING)
        if not isinstance(value, str) or not DNS1123_LABEL.match(value) or len(value) > 63:
            raise _problem(
                f"{value!r} is not a valid DNS-1123 label (lowercase letters, digits and "
                f"'-', at most {MAX_SECRET_NAME} characters)"
            )
        if value in names:
            raise _problem(f"{value!r} is declared twice")
        names.add(value)
        return value

    @field_validator("length")
    @classmethod
    def _length(cls, value: Any) -> int:
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not MIN_SECRET_LENGTH <= value <= MAX_SECRET_LENGTH
        ):
            raise _problem(
                f"{value!r} is not a whole number {MIN_SECRET_LENGTH}-{MAX_SECRET_LENGTH}"
            )
        return value

    def normalised(self) -> SecretSpec:
        return SecretSpec(name=self.name, length=self.length)


class _RawQuota(_Raw):
    """Checked against the components' sizes (validated before it)."""

    check_order = ("cpu", "memory", "pods", "storage")

    cpu: Any = _ABSENT
    memory: Any = _ABSENT
    pods: Any = _ABSENT
    storage: Any = _ABSENT

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: Any, info: ValidationInfo) -> str:
        _quantity(value)
        quota = str(value)
        sizes = _context(info)["sizes"]
        default = memory_to_bytes(_context(info)["storage_default"])
        needed = sum(s["replicas"] * s.get("storage_bytes", default) for s in sizes)
        if sizes and needed > memory_to_bytes(quota):
            raise _problem(
                f"components use {format_memory(needed)} of scratch disk, more than {quota}",
                _LATE,
            )
        return quota

    @staticmethod
    def _needs(info: ValidationInfo) -> tuple[Totals, int]:
        sizes = _context(info)["sizes"]
        complete = component_totals(s for s in sizes if "cpu_millicores" in s)
        return complete, sum(s["replicas"] for s in sizes)

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: Any, info: ValidationInfo) -> str:
        _quantity(value)
        quota = str(value)
        complete, _ = cls._needs(info)
        if complete.pods and complete.cpu_millicores > cpu_to_millicores(quota):
            needed = format_cpu(complete.cpu_millicores)
            raise _problem(f"components request {needed} CPU, more than {quota}", _LATE)
        return quota

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: Any, info: ValidationInfo) -> str:
        _quantity(value)
        quota = str(value)
        complete, _ = cls._needs(info)
        if complete.pods and complete.memory_bytes > memory_to_bytes(quota):
            needed = format_memory(complete.memory_bytes)
            raise _problem(f"components request {needed}, more than {quota}", _LATE)
        return quota

    @field_validator("pods")
    @classmethod
    def _pods(cls, value: Any, info: ValidationInfo) -> str:
        if not str(value).isdigit() or int(value) < 1:
            raise _problem(f"{value!r} is not a whole number of pods")
        quota = str(value)
        _, replicas = cls._needs(info)
        if _context(info)["sizes"] and replicas > int(quota):
            raise _problem(f"components run {replicas} pods, more than {quota}", _LATE)
        return quota

    def normalised(self) -> QuotaSpec:
        return QuotaSpec.model_validate(
            {
                key: getattr(self, key)
                for key in self.check_order
                if getattr(self, key) is not _ABSENT
            }
        )


class _RawRetention(_Raw):
    check_order = ("keep", "max_age")

    keep: Any = DEFAULT_RETENTION_KEEP
    max_age: Any = None

    @field_validator("keep")
    @classmethod
    def _keep(cls, value: Any) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 1 <= value <= MAX_RETENTION_KEEP
        ):
            raise _problem(f"{value!r} is not a whole number from 1 to {MAX_RETENTION_KEEP}")
        return value

    @field_validator("max_age")
    @classmethod
    def _max_age(cls, value: Any) -> int | None:
        return None if value is None else _duration(value)

    def normalised(self) -> RetentionSpec:
        return RetentionSpec(keep=self.keep, max_age=self.max_age)


class _RawRecovery(_Raw):
    check_order = ("auto", "rto", "rpo")

    auto: Any = False
    rto: Any = DEFAULT_RTO_SECONDS
    rpo: Any = DEFAULT_RPO_SECONDS

    @field_validator("auto")
    @classmethod
    def _auto(cls, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _problem(f"{value!r} is not true or false")
        return value

    @field_validator("rto", "rpo")
    @classmethod
    def _objective(cls, value: Any) -> int:
        return _duration(value)

    def normalised(self) -> RecoverySpec:
        return RecoverySpec(auto=self.auto, rto=self.rto, rpo=self.rpo)


class _RawEgressRule(_Raw):
    """One ``egress`` entry; checked against the platform's limits (``EgressLimits``)."""

    check_order = ("to", "except", "ports", "protocol")

    to: Any = Field(_ABSENT, validate_default=True)
    excluded: Any = Field(default_factory=list, alias="except")
    ports: Any = Field(_ABSENT, validate_default=True)
    protocol: Any = "TCP"

    @field_validator("to")
    @classmethod
    def _to(cls, value: Any, info: ValidationInfo) -> str:
        if value is _ABSENT:
            _raise([((), "missing required field", _MISSING)])
        try:
            network = str(parse_cidr(value))
        except ValueError as exc:
            raise _problem(str(exc)) from None
        limits: EgressLimits = _context(info)["egress_limits"]
        problems = egress_rule_problems(EgressRuleSpec(to=network, ports=[1]), limits)
        if problems:
            raise _problem(problems[0])
        return network

    @field_validator("excluded")
    @classmethod
    def _excluded(cls, value: Any, info: ValidationInfo) -> list[str]:
        if not isinstance(value, list):
            raise _problem(f"must be a list of CIDRs, got {_kind(value)}")
        to = info.data.get("to")
        problems: list[Problem] = []
        excluded = []
        for position, item in enumerate(value):
            try:
                network = parse_cidr(item)
            except ValueError as exc:
                problems.append(((position,), str(exc), _CHECK))
                continue
            if to is not None and (not _within(network, parse_cidr(to)) or str(network) == to):
                problems.append(((position,), f"{item} is not inside {to}", _CHECK))
                continue
            excluded.append(str(network))
        if problems:
            _raise(problems)
        return excluded

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: Any) -> list[int]:
        if value is _ABSENT:
            _raise([((), "missing required field", _MISSING)])
        if not isinstance(value, list) or not value:
            raise _problem("must be a non-empty list of port numbers (1-65535)")
        for port in value:
            if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
                raise _problem(f"{port!r} is not a port number (1-65535)")
        return sorted(set(value))

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, value: Any) -> str:
        if value not in ("TCP", "UDP"):
            raise _problem(f"{value!r} is not one of TCP, UDP")
        return value

    def normalised(self) -> EgressRuleSpec:
        return EgressRuleSpec(
            to=self.to, excluded=self.excluded, ports=self.ports, protocol=self.protocol
        )


class _RawBlueprint(_Raw):
    check_order = (
        "name",
        "title",
        "description",
        "purpose",
        "approval",
        "ttl",
        "auto_approve_ttl",
        "hourly_fee",
        "secrets",
        "parameters",
        "components",
        "quota",
        "access",
        "kube_access",
        "list_parameter",
        "egress",
        "pool",
        "retention",
        "recovery",
        "drill",
    )
    nested = {
        "ttl": _RawTTL,
        "parameters": _RawParameter,
        "components": _RawComponent,
        "quota": _RawQuota,
        "egress": _RawEgressRule,
        "secrets": _RawSecret,
        "retention": _RawRetention,
        "recovery": _RawRecovery,
        "drill": _RawDrill,
    }

    name: Any
    title: Any
    description: Any = None
    purpose: Any
    approval: Any = ApprovalPolicy.AUTO.value
    ttl: _RawTTL
    auto_approve_ttl: Any = None
    hourly_fee: Any = Field(0, validate_default=True)
    # Before components and access: their checks read the names declared.
    secrets: list[_RawSecret] = Field(default_factory=list)
    parameters: list[_RawParameter] = Field(default_factory=list)
    components: list[_RawComponent]
    quota: _RawQuota = Field(default_factory=_RawQuota)
    access: Any = Field(default_factory=dict)
    kube_access: Any = KubeAccess.VIEW.value
    # After parameters: its check reads the names they declared.
    list_parameter: Any = None
    egress: list[_RawEgressRule] = Field(default_factory=list)
    # After approval and parameters: its check reads both.
    pool: Any = None

    @field_validator("pool")
    @classmethod
    def _pool(cls, value: Any, info: ValidationInfo) -> dict[str, int] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _problem(f"must be a mapping like {{size: 3}}, got {_kind(value)}")
        unknown = sorted(str(key) for key in value if key != "size")
        if unknown:
            _raise([((unknown[0],), "unknown field", _CHECK)])
        size = value.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_POOL_SIZE:
            _raise(
                [(("size",), f"{size!r} is not a whole number from 1 to {MAX_POOL_SIZE}", _CHECK)]
            )
        if info.data.get("approval") == ApprovalPolicy.REQUIRED.value:
            raise _problem("a blueprint whose every request needs approval cannot keep a warm pool")
        for parameter in info.data.get("parameters") or []:
            default = getattr(parameter, "default", None)
            if getattr(parameter, "type", None) != "boolean" and default in (None, _ABSENT):
                raise _problem(
                    f"parameter {getattr(parameter, 'name', '?')!r} has no default; a pool "
                    "starts its environments with the defaults"
                )
        return {"size": size}

    retention: _RawRetention | None = None
    recovery: _RawRecovery | None = None
    drill: _RawDrill | None = None

    @field_validator("egress", mode="before")
    @classmethod
    def _egress(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise _problem(f"must be a list, got {_kind(value)}")
        if len(value) > MAX_EGRESS_RULES:
            raise _problem(f"has more than {MAX_EGRESS_RULES} rules")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: Any) -> str:
        if not isinstance(value, str) or not DNS1123_LABEL.match(value) or len(value) > 63:
            raise _problem(f"{value!r} is not a valid DNS-1123 label")
        return value

    @field_validator("title")
    @classmethod
    def _title(cls, value: Any) -> str:
        return _string(value, max_length=200)

    @field_validator("description")
    @classmethod
    def _description(cls, value: Any) -> str:
        if not isinstance(value or "", str):
            raise _problem("must be text")
        return value or ""

    @field_validator("purpose")
    @classmethod
    def _purpose(cls, value: Any) -> str:
        if value not in PURPOSES:
            raise _problem(f"{value!r} is not one of {', '.join(PURPOSES)}")
        return value

    @field_validator("approval")
    @classmethod
    def _approval(cls, value: Any) -> str:
        if value not in APPROVALS:
            raise _problem(f"{value!r} is not one of {', '.join(APPROVALS)}")
        return value

    @field_validator("auto_approve_ttl")
    @classmethod
    def _auto_approve_ttl(cls, value: Any) -> int:
        return _duration(value)

    @field_validator("hourly_fee")
    @classmethod
    def _hourly_fee(cls, value: Any) -> str:
        try:
            fee = Decimal(str(value))
            if not fee.is_finite() or fee < 0:
                raise InvalidOperation
        except InvalidOperation:
            raise _problem(f"{value!r} is not a non-negative amount") from None
        return str(fee)

    @field_validator("secrets", mode="before")
    @classmethod
    def _secrets(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise _problem(f"must be a list, got {_kind(value)}")
        if len(value) > MAX_SECRETS:
            raise _problem(f"at most {MAX_SECRETS} secrets")
        return value

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameters(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise _problem(f"must be a list, got {_kind(value)}")
        return value

    @field_validator("components", mode="before")
    @classmethod
    def _components(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, list) or not value:
            raise _problem("must be a non-empty list")
        # What ``{{ urls.x }}``/``{{ hosts.x }}`` may name, known before any component is
        # checked (a component may refer to one declared after it).
        declared = _context(info)["components_declared"]
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                declared.setdefault(
                    item["name"],
                    {"expose": item.get("expose") is True, "port": item.get("port") is not None},
                )
        if not any(isinstance(item, dict) and item.get("optional") is not True for item in value):
            raise _problem("needs at least one component that is not optional")
        return value

    @field_validator("access")
    @classmethod
    def _access(cls, value: Any, info: ValidationInfo) -> dict[str, str]:
        if not isinstance(value, dict):
            raise _problem(f"must be a mapping of label to value, got {_kind(value)}")
        problems: list[Problem] = []
        access = {}
        for key, val in value.items():
            if not isinstance(val, str | int):
                problems.append(((str(key),), "must be a string", _CHECK))
                continue
            problems += [
                ((str(key),), reason, _CHECK)
                for reason in _placeholders(str(val), info, secret_ok=True)
            ]
            access[str(key)] = str(val)
        if problems:
            _raise(problems)
        return access

    @field_validator("kube_access")
    @classmethod
    def _kube_access(cls, value: Any) -> str:
        if value not in KUBE_ACCESS:
            raise _problem(f"{value!r} is not one of {', '.join(KUBE_ACCESS)}")
        return value

    @field_validator("list_parameter")
    @classmethod
    def _list_parameter(cls, value: Any, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or value not in _context(info)["parameters"]:
            raise _problem(f"{value!r} names no declared parameter")
        return value

    def normalised(self) -> BlueprintSpec:
        return BlueprintSpec(
            name=self.name,
            title=self.title,
            description=self.description or "",
            purpose=self.purpose,
            approval=self.approval,
            ttl=TTL(default=self.ttl.default, max=self.ttl.max),
            auto_approve_ttl=self.auto_approve_ttl,
            hourly_fee=self.hourly_fee,
            parameters=[p.normalised() for p in self.parameters],
            components=[c.normalised() for c in self.components],
            quota=self.quota.normalised(),
            access=self.access,
            kube_access=self.kube_access,
            list_parameter=self.list_parameter,
            egress=[rule.normalised() for rule in self.egress],
            secrets=[secret.normalised() for secret in self.secrets],
            pool=PoolSpec(**self.pool) if self.pool else None,
            retention=self.retention.normalised() if self.retention else None,
            recovery=self.recovery.normalised() if self.recovery else None,
            drill=self.drill.normalised() if self.drill is not None else None,
        )


def _reason(error: Any) -> str:
    """Our sentence for one of pydantic's errors."""
    kind = error["type"]
    if kind in ("extra_forbidden", "invalid_key"):
        return "unknown field"
    if kind == "missing":
        return "missing required field"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping, got {_kind(error['input'])}"
    return str(error["msg"])


def _path(error: Any) -> str:
    """``("components", 1, "env", "HOME")`` -> ``components[1].env.HOME``."""
    path = ""
    loc = error["loc"]
    for depth, part in enumerate(loc):
        # An unknown key that is no string (a number in YAML) is still a key.
        key = error["type"] == "invalid_key" and depth == len(loc) - 1
        if isinstance(part, int) and not key:
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _sort_key(error: Any, data: Any) -> tuple[tuple[int, ...], ...]:
    """Where an error goes in the report (see the module docstring)."""
    key: list[tuple[int, ...]] = []
    model: type[_Raw] | None = _RawBlueprint
    value = data
    loc = error["loc"]
    for depth, part in enumerate(loc):
        if model is None:
            break  # inside a field checked by one validator: its own order stands
        if isinstance(part, int) and isinstance(value, list):  # an item of a list
            key.append((part,))
            value = value[part]
            continue
        last = depth == len(loc) - 1
        if last and error["type"] in ("extra_forbidden", "invalid_key"):
            keys = [str(k) for k in value] if isinstance(value, dict) else []
            key.append((0, keys.index(str(part)) if str(part) in keys else len(keys)))
            break
        position = model.check_order.index(str(part))
        if last and error["type"] == "missing":
            key.append((1, position))
        else:
            key.append((3 if last and error["type"] == _LATE else 2, position))
        model = model.nested.get(str(part))
        value = value.get(part) if isinstance(value, dict) else None
    return tuple(key)


def parse_blueprint(text: str) -> dict[str, Any]:
    """Validate blueprint YAML and return its normalised spec (``BlueprintSpec.to_dict``)."""
    return load_blueprint(text).to_dict()


@functools.lru_cache(maxsize=256)
def _compiled_pattern(pattern: str) -> re2._Regexp:
    """A parameter pattern compiled for RE2 (linear-time matching); raises ``re2.error``."""
    options = re2.Options()
    options.max_mem = 1 << 22  # 4 MiB: a pattern like (a{1000}){1000} is refused
    options.log_errors = False
    return re2.compile(pattern, options)


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load without aliases: ``*name`` refers to an anchored node, and a few nested
    ones expand a 200-byte file to gigabytes (in error messages and ``str()``)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in blueprints", event.start_mark
            )
        return super().compose_node(parent, index)


def _storage_default() -> str:
    """A component's scratch disk when it sets none (settings.EPHEMERAL_STORAGE_DEFAULT)."""
    from django.conf import settings

    return str(getattr(settings, "EPHEMERAL_STORAGE_DEFAULT", "1Gi"))


def load_blueprint(text: str, *, egress_limits: EgressLimits | None = None) -> BlueprintSpec:
    """Validate blueprint YAML and return its ``BlueprintSpec``.

    ``egress_limits``: what the platform allows (default: the EGRESS_* settings)."""
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BlueprintInvalid([(where, f"invalid YAML: {problem}")]) from exc
    if data is None:
        raise BlueprintInvalid([("", "the file is empty")])
    context: dict[str, Any] = {
        "parameters": set(),
        "component_names": set(),
        "components_declared": {},
        "sizes": [],
        "egress_limits": egress_limits or EgressLimits.from_settings(),
        "storage_default": _storage_default(),
        "secrets": set(),
    }
    try:
        raw = _RawBlueprint.model_validate(data, context=context)
    except ValidationError as exc:
        found = sorted(exc.errors(), key=lambda error: _sort_key(error, data))
        raise BlueprintInvalid([(_path(error), _reason(error)) for error in found]) from None
    return raw.normalised()


def coerce_parameter(
    param: ParameterSpec | Mapping[str, Any], value: Any, *, show_pattern: bool = False
) -> Any:
    """Check one value against its parameter's rules; return it in its type.

    A string that breaks the pattern is refused in words (``format_hint``), as the
    request form shows it; ``show_pattern`` names the regular expression instead (for
    the blueprint's own default, read by its author).
    """
    if isinstance(param, ParameterSpec):
        param = param.model_dump()
    if value is not None and not isinstance(value, bool) and len(str(value)) > MAX_PARAMETER_VALUE:
        raise ValueError(f"is longer than {MAX_PARAMETER_VALUE} characters")
    kind = param["type"]
    if kind == "integer":
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number") from None
        if "min" in param and number < param["min"]:
            raise ValueError(f"{number} is less than the minimum {param['min']}")
        if "max" in param and number > param["max"]:
            raise ValueError(f"{number} is more than the maximum {param['max']}")
        return number
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower()
        if lowered in {"true", "yes", "on", "1"}:
            return True
        if lowered in {"false", "no", "off", "0", ""}:
            return False
        raise ValueError(f"{value!r} is not true or false")
    if kind == "choice":
        if str(value) not in param["choices"]:
            raise ValueError(f"{value!r} is not one of {', '.join(param['choices'])}")
        return str(value)
    text = "" if value is None else str(value)
    if not _compiled_pattern(param["pattern"]).fullmatch(text):
        if show_pattern:
            raise ValueError(f"{text!r} does not match the pattern {param['pattern']}")
        hint = ParameterSpec.model_validate({**param, "type": "string"}).format_hint
        if hint:
            raise ValueError(f"{text!r} is not in the right format: {hint}")
        raise ValueError(f"{text!r} is not in the format this blueprint asks for")
    return text
