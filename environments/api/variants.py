"""Clone an environment as a variant (mounted at /api/v1/environments by urls.py):
the same blueprint and parameters, with components removed or added (the blueprint's
optional ones), image tags and overridable env values changed."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Field, Path, Router, Schema, Status
from pydantic import ConfigDict

from environments.api.app import _require_write, bearer
from environments.api.environments import ENVIRONMENT_REF, _environment, _with_notice
from environments.api.schemas import ERRORS, MAX_SECONDS, EnvironmentOut, environment_out
from environments.governance import audit
from environments.lifecycle import services

router = Router(auth=bearer, tags=["environments"])


class CloneIn(Schema):
    """What changes in the copy; everything else is the source's."""

    model_config = ConfigDict(extra="forbid")

    without: list[str] = Field(
        default_factory=list, max_length=50, description="Components to leave out."
    )
    with_: list[str] = Field(
        default_factory=list,
        max_length=50,
        alias="with",
        description="Optional components of the blueprint to add.",
    )
    images: dict[str, str] = Field(
        default_factory=dict,
        description='A component\'s image tag, e.g. {"api": "1.2.4-hotfix"}.',
    )
    env: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description='Overridable env variables, e.g. {"web": {"LOG_LEVEL": "debug"}}.',
    )
    ttl_seconds: int | None = Field(None, ge=services.MIN_TTL_SECONDS, le=MAX_SECONDS)
    display_name: str = Field("", max_length=60)


@router.post(
    "/{ref}/clone",
    response={201: EnvironmentOut, **ERRORS},
    summary="Clone as a variant: fewer or more components, other image tags or env values",
    description=(
        "A new environment with the source's blueprint and parameters. Quota and budget "
        "are checked at the variant's price. 422 names a change the blueprint does not "
        "allow (a component it lacks, a non-optional component to add, a variable it does "
        "not mark overridable)."
    ),
    operation_id="environments_api_clone_environment",
)
def clone_environment(
    request: HttpRequest, payload: CloneIn, ref: str = Path(..., pattern=ENVIRONMENT_REF)
) -> Status[dict[str, Any]]:
    token = _require_write(request)
    source = _environment(token, ref)
    clone = services.clone_environment(
        environment=source,
        user=token.user,
        ip=audit.client_ip(request),
        without=payload.without,
        with_=payload.with_,
        images=payload.images,
        env=payload.env,
        ttl_seconds=payload.ttl_seconds,
        display_name=payload.display_name,
    )
    return Status(201, _with_notice(environment_out(_environment(token, str(clone.pk)))))
