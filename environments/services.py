"""Old import path of the services, kept for one release (external scripts).

Writes now live with their domain: ``lifecycle.services`` (environments),
``catalog.publishing`` (blueprints), ``governance.quotas`` (quotas). Nothing in the
project imports this module (an import-linter contract enforces that).
"""

from environments.catalog.publishing import publish_blueprint, set_blueprint_version_deprecated
from environments.governance.quotas import set_quota
from environments.lib.errors import ServiceError
from environments.lifecycle.services import (
    approve_environment,
    delete_environment,
    extend_environment,
    reject_environment,
    request_environment,
)

__all__ = [
    "ServiceError",
    "approve_environment",
    "delete_environment",
    "extend_environment",
    "publish_blueprint",
    "reject_environment",
    "request_environment",
    "set_blueprint_version_deprecated",
    "set_quota",
]
