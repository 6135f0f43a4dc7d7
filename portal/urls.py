from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "Ephemera administration"
admin.site.site_title = "Ephemera admin"

urlpatterns = [
    path("api/v1/", include("environments.api_urls")),
    path("tokens/", include("environments.urls_tokens")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("", include("environments.urls")),
]

handler403 = "environments.errors.permission_denied"
handler404 = "environments.errors.page_not_found"
handler500 = "environments.errors.server_error"
