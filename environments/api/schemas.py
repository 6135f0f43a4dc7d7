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
from pydantic import BeforeValidator, ConfigDict, WithJsonSchema
from pydantic_core import PydanticCustomError

from environments.catalog.choices import ApprovalPolicy, Purpose
from environments.catalog.spec import ParameterSpec
from environments.lifecycle import services
from environments.lifecycle.states import State
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
    components: list[str] = Field(
        default_factory=list, description="The components it runs (its variant's)."
    )
    variant: dict[str, Any] = Field(
        default_factory=dict,
        description="How it differs from its blueprint (a clone's changes); {} for none.",
    )
    external_key: str = Field(description="The key given when it was requested; empty if none.")
    from_pool: bool = Field(
        False,
        description="True when a request was answered at once with a ready environment "
        "from the blueprint's warm pool.",
    )
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


class StrictIn(Schema):
    """A request body: a field it does not declare, or a value of the wrong JSON type
    (``"3600"`` for a number), is refused with a 422 that names it, never ignored or
    converted. A misspelt ``ttl`` would otherwise give the blueprint's default TTL."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _whole_number(value: Any) -> Any:
    """A JSON number with no fraction (3600 or 3600.0, which JSON Schema also calls an
    integer); never a string ("3600") or true/false, which pydantic would convert."""
    if isinstance(value, bool):
        raise PydanticCustomError("whole_number", "must be a whole number, not true or false")
    if not isinstance(value, (int, float)):
        raise PydanticCustomError("whole_number", 'must be a whole number (3600, not "3600")')
    if isinstance(value, float):
        if not value.is_integer():
            raise PydanticCustomError("whole_number", "must be a whole number, without a fraction")
        return int(value)
    return value


# The bounds come before the check, so the OpenAPI document says minimum and maximum.
TtlSeconds = Annotated[
    int,
    Field(ge=services.MIN_TTL_SECONDS, le=MAX_SECONDS),
    BeforeValidator(_whole_number),
]
ExtensionSeconds = Annotated[
    int,
    Field(ge=services.MIN_EXTENSION_SECONDS, le=MAX_SECONDS),
    BeforeValidator(_whole_number),
]

# PostgreSQL text cannot hold NUL: the schema says so (a pattern), so clients, generated
# ones and schemathesis included, know before sending.
NO_NUL = r"^[^\x00]*$"
NulFree = Annotated[str, Field(pattern=NO_NUL)]
# A parameter value is checked against the blueprint's own rules by the service.
ParameterValue = NulFree | int | float | bool | None
# Said as JSON Schema's propertyNames (pydantic would write patternProperties, which lets
# any other name through): names and string values without NUL.
Parameters = Annotated[
    dict[NulFree, ParameterValue],
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {
                "anyOf": [
                    {"type": "string", "pattern": NO_NUL},
                    {"type": "integer"},
                    {"type": "number"},
                    {"type": "boolean"},
                    {"type": "null"},
                ]
            },
        }
    ),
]

Text = Annotated[str, Field(max_length=2000, pattern=NO_NUL)]
# Unique per owner among live environments, and tidied, by the service (the same rules
# as the portal and the CLI); here only what PostgreSQL text can hold.
DisplayName = Annotated[
    str, Field(max_length=DISPLAY_NAME_MAX_LENGTH, pattern=NO_NUL, description="Optional.")
]
# Printable, no NUL: "org/repo#12", "gitlab:group/app!7", "nightly-benchmark".
EXTERNAL_KEY_PATTERN = r"^[^\x00-\x1f\x7f]+$"
ExternalKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=EXTERNAL_KEY_PATTERN,
        description="Your own key for this environment, e.g. `org/repo#12`. With a key, "
        "a POST updates the team's active environment of that blueprint with that key "
        "(200) instead of creating another (201).",
    ),
]


class EnvironmentIn(StrictIn):
    blueprint: str = Field(..., min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")
    parameters: Parameters = Field(
        default_factory=dict, description="Missing ones take the blueprint's defaults."
    )
    ttl_seconds: TtlSeconds | None = Field(None, description="Default: the blueprint's.")
    team: str | None = Field(None, min_length=1, max_length=50, pattern=r"^[-a-zA-Z0-9_]+$")
    reason: Text = ""
    display_name: DisplayName = ""
    external_key: ExternalKey | None = None


class EnvironmentPatchIn(StrictIn):
    display_name: DisplayName | None = Field(
        None, description="The new name; empty removes it; absent leaves it."
    )
    parameters: Parameters | None = Field(
        None,
        description="Only the parameters to change; the others keep their current values. "
        "Checked against the blueprint like a new request; the environment is provisioned "
        "again with them (only what changed is re-applied).",
    )


class BulkIn(StrictIn):
    action: Literal["extend", "delete"]
    environments: list[str] = Field(
        ..., min_length=1, max_length=100, description="Ids or short names, at most 100."
    )
    seconds: ExtensionSeconds | None = Field(None, description="For `extend`: by how much.")
    reason: Text = ""


class BulkItemOut(Schema):
    ref: str = Field(description="The environment as you named it.")
    environment_id: uuid.UUID | None
    done: bool
    message: str = Field(description="What was done, or why it was not.")


class BulkOut(Schema):
    action: str
    done: int
    refused: int
    results: list[BulkItemOut]


class ExtendIn(StrictIn):
    seconds: ExtensionSeconds = Field(...)
    reason: Text = ""


class RejectIn(StrictIn):
    reason: Text = Field(..., min_length=1, description="Why; the requester reads it.")


class ExtensionRequestListQuery(Schema):
    scope: Literal["to_decide", "mine"] = Field(
        "to_decide",
        description="`to_decide`: pending requests you may decide; `mine`: the ones you asked for.",
    )


_ONE_STATE = "|".join(State.values)
# One or more states, comma-separated. Only the document says it with a pattern: the
# endpoint refuses an unknown state itself, naming the states (pydantic would quote
# this pattern instead).
StateFilter = Annotated[
    str,
    WithJsonSchema({"type": "string", "pattern": f"^({_ONE_STATE})(,({_ONE_STATE}))*$"}),
]


class EnvironmentListQuery(Schema):
    scope: Literal["mine", "team"] = "mine"
    limit: int = Field(100, ge=1, le=500, description="Page size (at most 500).")
    offset: int = Field(0, ge=0, le=1_000_000, description="Rows to skip, newest first.")
    state: list[StateFilter] = Field(
        default_factory=list,
        description="Only these states; repeat it or separate with commas (`state=ready,failed`).",
    )
    blueprint: str | None = Field(
        None, max_length=63, pattern=NO_NUL, description="Only this blueprint."
    )
    reason: str | None = Field(
        None, max_length=2000, pattern=NO_NUL, description="Only this exact reason."
    )
    external_key: str | None = Field(
        None, max_length=200, pattern=NO_NUL, description="Only this external key."
    )


class WaitQuery(Schema):
    wait: int = Field(
        0,
        ge=0,
        le=3600,
        description="Wait up to this many seconds (capped by the server, 120 by default) "
        "for the environment to settle: ready, failed, rejected, deleted or "
        "pending_approval. The answer's `state` says which, or that the wait ended first.",
    )


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
        "components": [c.name for c in environment.components],
        "variant": environment.variant or {},
        "external_key": environment.external_key,
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


# --- Snapshots (recovery) ----------------------------------------------------------------


class InventoryItemOut(Schema):
    kind: str
    name: str
    namespace: str = ""
    uid: str = ""
    spec_sha256: str


class SnapshotOut(Schema):
    id: uuid.UUID
    environment: uuid.UUID
    environment_name: str
    number: int
    reason: str
    created_at: datetime
    created_by: str | None
    blueprint: str
    blueprint_version: int
    digest: str
    signature_algorithm: str
    size_bytes: int
    storage_cost_per_month: Decimal
    currency: str
    images: list[str]
    objects: int
    volumes: list[dict[str, Any]]


class SnapshotDetailOut(SnapshotOut):
    parameters: dict[str, Any]
    inventory: list[InventoryItemOut]
    manifests: list[dict[str, Any]]


class RestoreIn(Schema):
    # Or the Idempotency-Key header: the same key twice gives one environment.
    request_key: str | None = Field(None, max_length=150)
    # Restore into the snapshot's own environment (lost, or failed) instead of a new one.
    in_place: bool = False


def snapshot_out(snapshot, *, detail: bool = False) -> dict[str, Any]:
    environment = snapshot.environment
    answer: dict[str, Any] = {
        "id": snapshot.pk,
        "environment": environment.pk,
        "environment_name": environment.name,
        "number": snapshot.number,
        "reason": snapshot.reason,
        "created_at": snapshot.created_at,
        "created_by": snapshot.created_by.email if snapshot.created_by else None,
        "blueprint": snapshot.blueprint,
        "blueprint_version": snapshot.blueprint_version_number,
        "digest": snapshot.digest,
        "signature_algorithm": snapshot.signature_algorithm,
        "size_bytes": snapshot.size_bytes,
        "storage_cost_per_month": snapshot.storage_cost,
        "currency": settings.COST_CURRENCY,
        "images": snapshot.images,
        "objects": len(snapshot.inventory),
        "volumes": snapshot.volumes,
    }
    if detail:
        answer.update(
            parameters=snapshot.parameters,
            inventory=snapshot.inventory,
            manifests=snapshot.manifests,
        )
    return answer


# --- Restore drills (issue 15) -----------------------------------------------------------


class DrillIn(Schema):
    blueprint: str = Field(..., min_length=1, max_length=63)
    # Drill the latest snapshot of this environment, or this snapshot; neither: the
    # blueprint's most recently snapshotted ready environment.
    environment: uuid.UUID | None = None
    snapshot: uuid.UUID | None = None
    # Or the Idempotency-Key header: the same key twice gives one drill.
    request_key: str | None = Field(None, max_length=150)


class DrillOut(Schema):
    id: uuid.UUID
    blueprint: str
    trigger: str
    result: str
    reason: str
    snapshot: uuid.UUID | None
    snapshot_number: int | None
    source_environment: uuid.UUID | None
    scratch_environment: uuid.UUID | None
    rto_seconds: int
    started_at: datetime
    ready_at: datetime | None
    finished_at: datetime | None
    seconds: float | None


def drill_out(drill) -> dict[str, Any]:
    return {
        "id": drill.pk,
        "blueprint": drill.blueprint,
        "trigger": drill.trigger,
        "result": drill.result,
        "reason": drill.reason,
        "snapshot": drill.snapshot_id,
        "snapshot_number": drill.snapshot_number,
        "source_environment": drill.source_environment_id,
        "scratch_environment": drill.environment_id,
        "rto_seconds": drill.rto_seconds,
        "started_at": drill.started_at,
        "ready_at": drill.ready_at,
        "finished_at": drill.finished_at,
        "seconds": drill.seconds,
    }
