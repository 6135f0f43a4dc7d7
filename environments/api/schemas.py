"""The API's request and response schemas, and the converters from models to them.

The OpenAPI document is generated from these classes, so a change here is a change to
the published API (tests/test_schemathesis.py checks the API against it).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.conf import settings
from ninja import Field, Schema
from pydantic import field_validator

from environments.catalog.choices import ApprovalPolicy, Purpose
from environments.catalog.spec import ParameterSpec
from environments.lifecycle import services
from environments.models import (
    DISPLAY_NAME_MAX_LENGTH,
    BlueprintVersion,
    Environment,
    EnvironmentEvent,
    ExtensionRequest,
)

MAX_SECONDS = 366 * 86400


# --- Errors -----------------------------------------------------------------------------


class Error(Schema):
    detail: str
    errors: dict[str, str] | list[dict[str, Any]] | None = None


# 400: a body that is not JSON at all.
ERRORS = {400: Error, 401: Error, 403: Error, 404: Error, 409: Error, 422: Error, 429: Error}
READ_ERRORS = {401: Error, 404: Error, 422: Error, 429: Error}


# --- Out --------------------------------------------------------------------------------


class BlueprintOut(Schema):
    name: str
    title: str
    purpose: Purpose
    description: str
    version: int
    hourly_price: str
    currency: str
    ttl_default_seconds: int
    ttl_max_seconds: int
    approval: ApprovalPolicy
    # The blueprint format's own model: the API documents exactly what a blueprint declares.
    parameters: list[ParameterSpec]


class EnvironmentOut(Schema):
    id: uuid.UUID
    name: str
    display_name: str = Field(description="What people call it; empty when unnamed.")
    list_parameter: str | None = Field(
        description="The parameter the blueprint shows in lists (its `list_parameter`)."
    )
    list_value: str | None = Field(description="This environment's value of `list_parameter`.")
    namespace: str
    state: str
    blueprint: str
    blueprint_version: int
    team: str
    owner: str
    parameters: dict[str, Any]
    urls: dict[str, str]
    reason: str
    created_at: datetime
    expires_at: datetime | None
    time_left_seconds: int | None
    accrued_cost: str
    projected_cost: str
    hourly_price: str
    currency: str
    last_error: str
    notice: str = Field(
        default="",
        description="Something the client should know about this answer, e.g. that the "
        "job queue is down and the environment will start when it is back; usually empty.",
    )


class ExtensionRequestOut(Schema):
    id: uuid.UUID
    environment: uuid.UUID
    environment_name: str
    team: str
    owner: str
    requested_by: str
    seconds: int = Field(description="How much longer the environment would live.")
    reason: str
    why: str = Field(description="Why it needs an approver, limit by limit.")
    state: Literal["pending", "approved", "rejected", "withdrawn"]
    created_at: datetime
    expires_at: datetime | None = Field(description="The environment's current expiry.")
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str


class EventOut(Schema):
    created_at: datetime
    kind: str
    state: str
    message: str


class InventoryObjectOut(Schema):
    kind: str
    name: str
    namespace: str = Field(description="empty for cluster-scoped objects (the namespace)")
    uid: str
    created: str
    spec_hash: str = Field(description="first 12 hex digits of the SHA-256 of its spec")
    status: str = Field(description="recorded, missing or not recorded")


class InventoryOut(Schema):
    environment: str
    name: str
    observed_at: datetime | None = Field(
        description="when the cluster watcher last reported it; null if never"
    )
    objects: list[InventoryObjectOut]


class KubeconfigOut(Schema):
    namespace: str
    expires_at: datetime
    kubeconfig: str = Field(description="YAML; the token in it is not stored by Ephemera")


class HookOut(Schema):
    status: str
    environment: uuid.UUID | None = None
    urls: dict[str, str] = Field(default_factory=dict)
    state: str | None = None


# --- In ---------------------------------------------------------------------------------


ParameterValue = str | int | float | bool | None


def _not_a_boolean(value: Any) -> Any:
    # JSON true is not a 1-second TTL (pydantic would read it as 1); 3600.0 is 3600.
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds, not true or false")
    return value


# PostgreSQL text cannot hold NUL: refuse it here as bad input rather than fail later.
Text = Annotated[str, Field(max_length=2000, pattern=r"^[^\x00]*$")]
# Unique per owner among live environments, and tidied, by the service (the same rules
# as the portal and the CLI); here only what PostgreSQL text can hold.
DisplayName = Annotated[
    str, Field(max_length=DISPLAY_NAME_MAX_LENGTH, pattern=r"^[^\x00]*$", description="Optional.")
]


class EnvironmentIn(Schema):
    blueprint: str = Field(..., min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)
    ttl_seconds: int | None = Field(None, ge=services.MIN_TTL_SECONDS, le=MAX_SECONDS)
    team: str | None = Field(None, min_length=1, max_length=50, pattern=r"^[-a-zA-Z0-9_]+$")
    reason: Text = ""
    display_name: DisplayName = ""

    _ttl_not_a_boolean = field_validator("ttl_seconds", mode="before")(_not_a_boolean)

    @field_validator("parameters")
    @classmethod
    def _no_nul(cls, value: dict[str, ParameterValue]) -> dict[str, ParameterValue]:
        for name, item in value.items():
            if "\x00" in name or (isinstance(item, str) and "\x00" in item):
                raise ValueError("parameter names and values cannot contain NUL characters")
        return value


class RenameIn(Schema):
    display_name: DisplayName = Field(..., description="The new name; empty removes it.")


class ExtendIn(Schema):
    seconds: int = Field(..., ge=services.MIN_EXTENSION_SECONDS, le=MAX_SECONDS)
    reason: Text = ""

    _seconds_not_a_boolean = field_validator("seconds", mode="before")(_not_a_boolean)


class RejectIn(Schema):
    reason: Text = Field(..., min_length=1, description="Why; the requester reads it.")


class ExtensionRequestListQuery(Schema):
    scope: Literal["to_decide", "mine"] = Field(
        "to_decide",
        description="`to_decide`: pending requests you may decide; `mine`: the ones you asked for.",
    )


class EnvironmentListQuery(Schema):
    scope: Literal["mine", "team"] = "mine"
    limit: int = Field(100, ge=1, le=500, description="Page size (at most 500).")
    offset: int = Field(0, ge=0, le=1_000_000, description="Rows to skip, newest first.")


# --- Converters -------------------------------------------------------------------------


def _money(amount: Decimal) -> str:
    return f"{amount:.2f}"


def blueprint_out(version: BlueprintVersion) -> dict[str, Any]:
    """A ``BlueprintOut`` for one requestable blueprint version."""
    spec = version.blueprint_spec
    return {
        "name": version.blueprint.name,
        "title": spec.title,
        "purpose": spec.purpose,
        "description": spec.description,
        "version": version.number,
        "hourly_price": f"{version.hourly_price:.4f}",
        "currency": settings.COST_CURRENCY,
        "ttl_default_seconds": spec.ttl.default,
        "ttl_max_seconds": spec.ttl.max,
        "approval": spec.approval,
        "parameters": spec.parameters,
    }


def environment_out(environment: Environment) -> dict[str, Any]:
    """An ``EnvironmentOut``; expects owner, team and blueprint version loaded."""
    time_left = environment.time_left
    version = environment.blueprint_version
    listed = environment.listed_parameter
    return {
        "id": environment.pk,
        "name": environment.name,
        "display_name": environment.display_name,
        "list_parameter": listed[0] if listed else None,
        "list_value": listed[1] if listed else None,
        "namespace": environment.namespace,
        "state": environment.state,
        "blueprint": version.blueprint.name,
        "blueprint_version": version.number,
        "team": environment.team.slug,
        "owner": environment.owner.email or environment.owner.get_username(),
        "parameters": environment.parameters,
        "urls": environment.urls,
        "reason": environment.reason,
        "created_at": environment.created_at,
        "expires_at": environment.expires_at,
        "time_left_seconds": int(time_left.total_seconds()) if time_left is not None else None,
        "accrued_cost": _money(environment.accrued_cost),
        "projected_cost": _money(environment.projected_cost),
        "hourly_price": f"{environment.hourly_price:.4f}",
        "currency": settings.COST_CURRENCY,
        "last_error": environment.last_error,
    }


def event_out(event: EnvironmentEvent) -> dict[str, Any]:
    """An ``EventOut``: one line of an environment's timeline."""
    return {
        "created_at": event.created_at,
        "kind": event.kind,
        "state": event.state,
        "message": event.message,
    }


def extension_request_out(extension: ExtensionRequest) -> dict[str, Any]:
    """An ``ExtensionRequestOut``; expects its environment (owner, team) loaded."""
    environment = extension.environment
    return {
        "id": extension.pk,
        "environment": environment.pk,
        "environment_name": environment.name,
        "team": environment.team.slug,
        "owner": environment.owner.email or environment.owner.get_username(),
        "requested_by": extension.requested_by.email or extension.requested_by.get_username(),
        "seconds": extension.seconds,
        "reason": extension.reason,
        "why": extension.why,
        "state": extension.state,
        "created_at": extension.created_at,
        "expires_at": environment.expires_at,
        "decided_by": extension.decided_by.email if extension.decided_by else None,
        "decided_at": extension.decided_at,
        "decision_reason": extension.decision_reason,
    }
