"""The API's URLs: everything under /api/v1/ is served by django-ninja.

The routers are mounted here, once, in the order the OpenAPI document lists them; import
``api`` from this module (not from app.py) wherever the complete API is needed.
"""

from django.urls import path, re_path

from environments.api import blueprints, errors, extensions, hooks
from environments.api import environments as environments_api
from environments.api.app import api

api.add_router("/blueprints", blueprints.router)
api.add_router("/environments", environments_api.router)
api.add_router("/hooks", hooks.router)
api.add_router("/extension-requests", extensions.router)

urlpatterns = [
    path("", api.urls),
    # Last: any other path under /api/v1/ is a JSON 404 (with a trailing-slash hint), not
    # Django's HTML page or its APPEND_SLASH redirect (which breaks on POST).
    re_path(r"^(?P<rest>.*)$", errors.not_found),
]
