from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "Ephemera administration"
admin.site.site_title = "Ephemera admin"

urlpatterns = [
    path("api/v1/", include("environments.api.urls")),
    path("tokens/", include("environments.web.urls_tokens")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("", include("environments.web.urls")),
]

handler403 = "environments.web.errors.permission_denied"
handler404 = "environments.web.errors.page_not_found"
handler500 = "environments.web.errors.server_error"
