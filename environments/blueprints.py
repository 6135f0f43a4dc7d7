"""Old import path of the blueprint format, kept for one release (external scripts).

The catalogue now lives in ``environments.catalog``: ``spec`` (the typed format and
its validation) and ``rendering`` (parameters and templating). Nothing in the project
imports this module (an import-linter contract enforces that).
"""

from environments.catalog.rendering import render_components, resolve_parameters, spec_digest
from environments.catalog.spec import BlueprintInvalid, ParametersInvalid, parse_blueprint

__all__ = [
    "BlueprintInvalid",
    "ParametersInvalid",
    "parse_blueprint",
    "render_components",
    "resolve_parameters",
    "spec_digest",
]
