"""Blueprint parsing, validation and parameter rendering.

A blueprint is YAML (format in docs/blueprints.md). ``parse_blueprint`` turns the
text into a normalised spec or raises ``BlueprintInvalid`` holding one
``field.path: reason`` line per problem. Names, quantities and images are checked
by Kubernetes' own rules before anything reaches the cluster; templating is plain
substitution of declared parameters, so no code ever runs from a blueprint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from kubernetes.utils.quantity import parse_quantity

from environments.catalog.choices import ApprovalPolicy, Purpose
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
PARAMETER_TYPES = ("string", "integer", "boolean", "choice")
# Component names become Service names and part of "<component>-<env>" hosts.
MAX_COMPONENT_NAME = 40
MAX_REPLICAS = 50

TOP_FIELDS = {
    "name": True,
    "title": True,
    "purpose": True,
    "description": False,
    "ttl": True,
    "approval": False,
    "auto_approve_ttl": False,
    "parameters": False,
    "components": True,
    "quota": False,
    "hourly_fee": False,
    "access": False,
    "kube_access": False,
}
COMPONENT_FIELDS = {
    "name": True,
    "image": True,
    "port": False,
    "replicas": False,
    "resources": True,
    "env": False,
    "expose": False,
    "args": False,
    "annotations": False,
}
PARAMETER_FIELDS = {
    "name": True,
    "type": True,
    "label": False,
    "description": False,
    "default": False,
    "pattern": False,
    "min": False,
    "max": False,
    "choices": False,
}


@dataclass(frozen=True)
class Totals:
    """What a set of components asks of the cluster, replicas included."""

    cpu_millicores: int
    memory_bytes: int
    pods: int


def component_totals(components: list[dict]) -> Totals:
    """CPU, memory and pods of validated components, times their replicas.

    The one place this sum is made: prices, quotas, the namespace's ResourceQuota and
    the blueprint's own quota check all use it.
    """
    return Totals(
        cpu_millicores=sum(c["cpu_millicores"] * c["replicas"] for c in components),
        memory_bytes=sum(c["memory_bytes"] * c["replicas"] for c in components),
        pods=sum(c["replicas"] for c in components),
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


@dataclass
class _Checker:
    errors: list[tuple[str, str]] = field(default_factory=list)

    def error(self, path: str, reason: str) -> None:
        self.errors.append((path, reason))

    def mapping(self, value: Any, path: str, fields: dict[str, bool]) -> dict | None:
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping, got {_kind(value)}")
            return None
        for key in value:
            if key not in fields:
                self.error(f"{path}.{key}" if path else str(key), "unknown field")
        for key, required in fields.items():
            if required and key not in value:
                self.error(f"{path}.{key}" if path else key, "missing required field")
        return value

    def string(self, value: Any, path: str, *, max_length: int = 1000) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.error(path, f"must be a non-empty string, got {_kind(value)}")
            return None
        if len(value) > max_length:
            self.error(path, f"must be at most {max_length} characters")
            return None
        return value

    def quantity(self, value: Any, path: str) -> str | None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.error(
                path, f"must be a Kubernetes quantity such as 250m or 1Gi, got {_kind(value)}"
            )
            return None
        try:
            number = parse_quantity(value)
        except (ValueError, InvalidOperation):
            self.error(path, f"{value!r} is not a valid Kubernetes quantity (such as 250m or 1Gi)")
            return None
        if number <= 0:
            self.error(path, f"{value!r} must be greater than zero")
            return None
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


def parse_blueprint(text: str) -> dict:
    """Validate blueprint YAML and return its normalised spec."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BlueprintInvalid([(where, f"invalid YAML: {problem}")]) from exc
    check = _Checker()
    if data is None:
        raise BlueprintInvalid([("", "the file is empty")])
    if check.mapping(data, "", TOP_FIELDS) is None:
        raise BlueprintInvalid(check.errors)

    spec: dict[str, Any] = {}
    name = data.get("name")
    if name is not None:
        if not isinstance(name, str) or not DNS1123_LABEL.match(name) or len(name) > 63:
            check.error("name", f"{name!r} is not a valid DNS-1123 label")
        spec["name"] = name
    spec["title"] = check.string(data.get("title", "x"), "title", max_length=200)
    spec["description"] = data.get("description") or ""
    if not isinstance(spec["description"], str):
        check.error("description", "must be text")

    purpose = data.get("purpose")
    if "purpose" in data and purpose not in PURPOSES:
        check.error("purpose", f"{purpose!r} is not one of {', '.join(PURPOSES)}")
    spec["purpose"] = purpose

    approval = data.get("approval", "auto")
    if approval not in APPROVALS:
        check.error("approval", f"{approval!r} is not one of {', '.join(APPROVALS)}")
    spec["approval"] = approval

    spec["ttl"] = _check_ttl(check, data.get("ttl"))
    spec["auto_approve_ttl"] = None
    if "auto_approve_ttl" in data:
        try:
            spec["auto_approve_ttl"] = parse_duration(data["auto_approve_ttl"])
        except ValueError as exc:
            check.error("auto_approve_ttl", str(exc))

    hourly_fee = data.get("hourly_fee", 0)
    try:
        fee = Decimal(str(hourly_fee))
        if not fee.is_finite() or fee < 0:
            raise InvalidOperation
        spec["hourly_fee"] = str(fee)
    except InvalidOperation:
        check.error("hourly_fee", f"{hourly_fee!r} is not a non-negative amount")

    # Names declared even by a parameter with another problem, so one mistake
    # gives one error line rather than one per placeholder.
    parameters, declared = _check_parameters(check, data.get("parameters", []))
    spec["parameters"] = parameters
    spec["components"] = _check_components(check, data.get("components"), declared)
    spec["quota"] = _check_quota(check, data.get("quota", {}), spec["components"])
    spec["access"] = _check_access(check, data.get("access", {}), declared)
    spec["kube_access"] = data.get("kube_access", "view")
    if spec["kube_access"] not in ("view", "edit"):
        check.error("kube_access", f"{spec['kube_access']!r} is not one of view, edit")

    if check.errors:
        raise BlueprintInvalid(check.errors)
    return spec


def _check_ttl(check: _Checker, value: Any) -> dict | None:
    if value is None:
        return None
    if check.mapping(value, "ttl", {"default": True, "max": True}) is None:
        return None
    result = {}
    for key in ("default", "max"):
        if key in value:
            try:
                result[key] = parse_duration(value[key])
            except ValueError as exc:
                check.error(f"ttl.{key}", str(exc))
    if "default" in result and "max" in result and result["default"] > result["max"]:
        check.error(
            "ttl.default",
            f"{format_duration(result['default'])} is longer than ttl.max "
            f"{format_duration(result['max'])}",
        )
    return result


def _check_parameters(check: _Checker, value: Any) -> tuple[list[dict], set[str]]:
    if not isinstance(value, list):
        check.error("parameters", f"must be a list, got {_kind(value)}")
        return [], set()
    result = []
    seen = set()
    for index, raw in enumerate(value):
        path = f"parameters[{index}]"
        if check.mapping(raw, path, PARAMETER_FIELDS) is None:
            continue
        name = raw.get("name")
        if not isinstance(name, str) or not PARAMETER_NAME.match(name):
            check.error(f"{path}.name", f"{name!r} is not a valid parameter name (a-z, 0-9, _)")
            continue
        if name in seen:
            check.error(f"{path}.name", f"{name!r} is declared twice")
            continue
        seen.add(name)
        kind = raw.get("type")
        if kind not in PARAMETER_TYPES:
            check.error(f"{path}.type", f"{kind!r} is not one of {', '.join(PARAMETER_TYPES)}")
            continue
        param = {
            "name": name,
            "type": kind,
            "label": str(raw.get("label") or name.replace("_", " ").capitalize()),
            "description": str(raw.get("description") or ""),
        }
        if kind == "string":
            pattern = raw.get("pattern", r"^[A-Za-z0-9._-]{1,63}$")
            try:
                re.compile(pattern)
                param["pattern"] = pattern
            except (re.error, TypeError) as exc:
                check.error(
                    f"{path}.pattern", f"{pattern!r} is not a valid regular expression: {exc}"
                )
                continue
        if kind == "integer":
            for bound in ("min", "max"):
                if bound in raw:
                    if not isinstance(raw[bound], int) or isinstance(raw[bound], bool):
                        check.error(f"{path}.{bound}", "must be a whole number")
                    else:
                        param[bound] = raw[bound]
            if "min" in param and "max" in param and param["min"] > param["max"]:
                check.error(f"{path}.min", f"{param['min']} is greater than max {param['max']}")
        if kind == "choice":
            choices = raw.get("choices")
            if not isinstance(choices, list) or not choices:
                check.error(f"{path}.choices", "must be a non-empty list")
                continue
            param["choices"] = [str(c) for c in choices]
        if "default" in raw:
            try:
                param["default"] = coerce_parameter(param, raw["default"])
            except ValueError as exc:
                check.error(f"{path}.default", str(exc))
                continue
        result.append(param)
    return result, seen


def coerce_parameter(param: dict, value: Any) -> Any:
    """Check one value against its parameter's rules; return it in its type."""
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
    if not re.fullmatch(param["pattern"], text):
        raise ValueError(f"{text!r} does not match the pattern {param['pattern']}")
    return text


def _placeholders(check: _Checker, text: str, path: str, declared: set[str]) -> None:
    for match in PLACEHOLDER.finditer(text):
        if match.group(1) not in declared:
            check.error(path, f"placeholder {{{{ {match.group(1)} }}}} names no declared parameter")
    if text.count("{{") != len(PLACEHOLDER.findall(text)):
        check.error(path, "has an unclosed or malformed {{ placeholder }}")


def _check_components(check: _Checker, value: Any, declared: set[str]) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        check.error("components", "must be a non-empty list")
        return []
    result = []
    names: set[str] = set()
    for index, raw in enumerate(value):
        path = f"components[{index}]"
        if check.mapping(raw, path, COMPONENT_FIELDS) is None:
            continue
        name = raw.get("name")
        if (
            not isinstance(name, str)
            or not DNS1035_LABEL.match(name)
            or len(name) > MAX_COMPONENT_NAME
        ):
            check.error(
                f"{path}.name",
                f"{name!r} is not a valid DNS-1123 label (lowercase letters, digits and '-', "
                f"starting with a letter, at most {MAX_COMPONENT_NAME} characters)",
            )
        elif name in names:
            check.error(f"{path}.name", f"{name!r} is used by another component")
        names.add(name)
        component: dict[str, Any] = {"name": name}

        image = raw.get("image")
        if check.string(image, f"{path}.image", max_length=500):
            _placeholders(check, image, f"{path}.image", declared)
            if not PLACEHOLDER.search(image) and not IMAGE_REFERENCE.match(image):
                check.error(f"{path}.image", f"{image!r} is not a valid image reference")
        component["image"] = image

        port = raw.get("port")
        if port is not None and (
            not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535
        ):
            check.error(f"{path}.port", f"{port!r} is not a port number (1-65535)")
        component["port"] = port

        replicas = raw.get("replicas", 1)
        if (
            not isinstance(replicas, int)
            or isinstance(replicas, bool)
            or not 1 <= replicas <= MAX_REPLICAS
        ):
            check.error(f"{path}.replicas", f"{replicas!r} is not a whole number 1-{MAX_REPLICAS}")
            replicas = 1
        component["replicas"] = replicas

        resources = raw.get("resources")
        if resources is not None and check.mapping(
            resources, f"{path}.resources", {"cpu": True, "memory": True}
        ):
            cpu = (
                check.quantity(resources.get("cpu"), f"{path}.resources.cpu")
                if "cpu" in resources
                else None
            )
            memory = (
                check.quantity(resources.get("memory"), f"{path}.resources.memory")
                if "memory" in resources
                else None
            )
            if cpu and memory:
                component["resources"] = {"cpu": cpu, "memory": memory}
                component["cpu_millicores"] = cpu_to_millicores(cpu)
                component["memory_bytes"] = memory_to_bytes(memory)

        env = raw.get("env", {})
        if not isinstance(env, dict):
            check.error(f"{path}.env", f"must be a mapping, got {_kind(env)}")
            env = {}
        component["env"] = {}
        for key, val in env.items():
            if not isinstance(key, str) or not ENV_VAR_NAME.match(key):
                check.error(
                    f"{path}.env.{key}", f"{key!r} is not a valid environment variable name"
                )
                continue
            if isinstance(val, bool) or val is None or isinstance(val, dict | list):
                check.error(f"{path}.env.{key}", "must be a string or a number")
                continue
            _placeholders(check, str(val), f"{path}.env.{key}", declared)
            component["env"][key] = str(val)

        args = raw.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str | int) for a in args):
            check.error(f"{path}.args", "must be a list of strings")
            args = []
        for position, arg in enumerate(args):
            _placeholders(check, str(arg), f"{path}.args[{position}]", declared)
        component["args"] = [str(a) for a in args]

        annotations = raw.get("annotations", {})
        if not isinstance(annotations, dict):
            check.error(f"{path}.annotations", f"must be a mapping, got {_kind(annotations)}")
            annotations = {}
        component["annotations"] = {}
        for key, val in annotations.items():
            if not isinstance(key, str) or not QUALIFIED_NAME.match(key) or len(key) > 316:
                check.error(f"{path}.annotations.{key}", f"{key!r} is not a valid annotation key")
            elif not isinstance(val, str | int | float) or isinstance(val, bool):
                check.error(f"{path}.annotations.{key}", "must be a string")
            else:
                component["annotations"][key] = str(val)

        expose = raw.get("expose", False)
        if not isinstance(expose, bool):
            check.error(f"{path}.expose", "must be true or false")
        elif expose and port is None:
            check.error(f"{path}.expose", "an exposed component needs a port")
        component["expose"] = bool(expose)
        result.append(component)
    return result


def _check_quota(check: _Checker, value: Any, components: list[dict]) -> dict:
    if check.mapping(value, "quota", {"cpu": False, "memory": False, "pods": False}) is None:
        return {}
    quota = {}
    for key in ("cpu", "memory"):
        if key in value and check.quantity(value[key], f"quota.{key}"):
            quota[key] = str(value[key])
    if "pods" in value:
        pods = value["pods"]
        if not str(pods).isdigit() or int(pods) < 1:
            check.error("quota.pods", f"{pods!r} is not a whole number of pods")
        else:
            quota["pods"] = str(pods)
    complete = component_totals([c for c in components if "cpu_millicores" in c])
    if "cpu" in quota and complete.pods:
        needed = complete.cpu_millicores
        if needed > cpu_to_millicores(quota["cpu"]):
            check.error(
                "quota.cpu",
                f"components request {format_cpu(needed)} CPU, more than {quota['cpu']}",
            )
    if "memory" in quota and complete.pods:
        needed = complete.memory_bytes
        if needed > memory_to_bytes(quota["memory"]):
            check.error(
                "quota.memory",
                f"components request {format_memory(needed)}, more than {quota['memory']}",
            )
    if "pods" in quota and components:
        replicas = sum(c["replicas"] for c in components)
        if replicas > int(quota["pods"]):
            check.error("quota.pods", f"components run {replicas} pods, more than {quota['pods']}")
    return quota


def _check_access(check: _Checker, value: Any, declared: set[str]) -> dict:
    if not isinstance(value, dict):
        check.error("access", f"must be a mapping of label to value, got {_kind(value)}")
        return {}
    result = {}
    for key, val in value.items():
        if not isinstance(val, str | int):
            check.error(f"access.{key}", "must be a string")
            continue
        _placeholders(check, str(val), f"access.{key}", declared)
        result[str(key)] = str(val)
    return result
