"""The API's URLs: everything under /api/v1/ is served by django-ninja."""

from django.urls import path

from environments.api.routes import api

urlpatterns = [path("", api.urls)]
