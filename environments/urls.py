from django.urls import path

from environments import views, views_governance

urlpatterns = [
    path("", views.catalogue, name="catalogue"),
    path("blueprints/<slug:name>/request/", views.request_environment, name="request"),
    path("blueprints/<slug:name>/estimate/", views.estimate, name="estimate"),
    path("environments/", views.my_environments, name="my_environments"),
    path("environments/team/", views.team_environments, name="team_environments"),
    path("environments/rows/", views.environment_rows, name="environment_rows"),
    path("environments/<uuid:pk>/", views.environment_detail, name="environment_detail"),
    path("environments/<uuid:pk>/status/", views.environment_status, name="environment_status"),
    path("environments/<uuid:pk>/extend/", views.extend_environment, name="environment_extend"),
    path("environments/<uuid:pk>/delete/", views.delete_environment, name="environment_delete"),
    path("environments/<uuid:pk>/clone/", views.clone_environment, name="environment_clone"),
    path(
        "environments/<uuid:pk>/kubeconfig/",
        views.environment_kubeconfig,
        name="environment_kubeconfig",
    ),
    path("environments/<uuid:pk>/retry/", views.retry_environment, name="environment_retry"),
    path("approvals/", views.approvals, name="approvals"),
    path("approvals/<uuid:pk>/approve/", views.approve, name="approve"),
    path("approvals/<uuid:pk>/reject/", views.reject, name="reject"),
    path("admin-portal/environments/", views.admin_environments, name="admin_environments"),
    path("admin-portal/spend/", views_governance.spend, name="governance_spend"),
    path("admin-portal/audit/", views_governance.audit_log, name="governance_audit"),
    path("admin-portal/quotas/", views_governance.quotas, name="governance_quotas"),
    path(
        "admin-portal/quotas/<str:kind>/<str:key>/",
        views_governance.quota_edit,
        name="governance_quota_edit",
    ),
    path(
        "admin-portal/blueprints/",
        views_governance.blueprint_versions,
        name="governance_blueprints",
    ),
    path(
        "admin-portal/blueprints/<int:pk>/deprecate/",
        views_governance.blueprint_deprecate,
        name="governance_blueprint_deprecate",
    ),
]
