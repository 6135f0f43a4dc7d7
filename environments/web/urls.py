from django.urls import path

from environments.web.views import (
    approvals,
    blueprints,
    catalogue,
    environments,
    governance,
    inventory,
    people,
)

urlpatterns = [
    path("", catalogue.catalogue, name="catalogue"),
    path("blueprints/<slug:name>/request/", catalogue.request_environment, name="request"),
    path("blueprints/<slug:name>/estimate/", catalogue.estimate, name="estimate"),
    path("environments/", environments.my_environments, name="my_environments"),
    path("environments/team/", environments.team_environments, name="team_environments"),
    path("environments/rows/", environments.environment_rows, name="environment_rows"),
    path("environments/<uuid:pk>/", environments.environment_detail, name="environment_detail"),
    path(
        "environments/<uuid:pk>/status/",
        environments.environment_status,
        name="environment_status",
    ),
    path(
        "environments/<uuid:pk>/extend/",
        environments.extend_environment,
        name="environment_extend",
    ),
    path(
        "environments/<uuid:pk>/delete/",
        environments.delete_environment,
        name="environment_delete",
    ),
    path("environments/<uuid:pk>/clone/", environments.clone_environment, name="environment_clone"),
    path(
        "environments/<uuid:pk>/credentials/",
        environments.environment_credentials,
        name="environment_credentials",
    ),
    path(
        "environments/<uuid:pk>/kubeconfig/",
        environments.environment_kubeconfig,
        name="environment_kubeconfig",
    ),
    path(
        "environments/<uuid:pk>/rename/", environments.rename_environment, name="environment_rename"
    ),
    path("environments/<uuid:pk>/retry/", environments.retry_environment, name="environment_retry"),
    path(
        "environments/<uuid:pk>/inventory/",
        inventory.environment_inventory,
        name="environment_inventory",
    ),
    path(
        "environments/<uuid:pk>/logs/<slug:component>/",
        environments.environment_logs,
        name="environment_logs",
    ),
    path("approvals/", approvals.approvals, name="approvals"),
    path("approvals/<uuid:pk>/approve/", approvals.approve, name="approve"),
    path("approvals/<uuid:pk>/reject/", approvals.reject, name="reject"),
    path(
        "approvals/extensions/<uuid:pk>/approve/",
        approvals.approve_extension,
        name="approve_extension",
    ),
    path(
        "approvals/extensions/<uuid:pk>/reject/",
        approvals.reject_extension,
        name="reject_extension",
    ),
    path("admin-portal/environments/", environments.admin_environments, name="admin_environments"),
    path("admin-portal/inventory/", inventory.admin_inventory, name="admin_inventory"),
    path("admin-portal/spend/", governance.spend, name="governance_spend"),
    path("admin-portal/audit/", governance.audit_log, name="governance_audit"),
    path("admin-portal/quotas/", governance.quotas, name="governance_quotas"),
    path(
        "admin-portal/quotas/<str:kind>/<str:key>/",
        governance.quota_edit,
        name="governance_quota_edit",
    ),
    path("admin-portal/people/", people.people_list, name="people"),
    path("admin-portal/people/invite/", people.people_invite, name="people_invite"),
    path(
        "admin-portal/invitations/<int:pk>/revoke/",
        people.invitation_revoke,
        name="invitation_revoke",
    ),
    path("admin-portal/people/<int:pk>/", people.person_detail, name="person_detail"),
    path("admin-portal/people/<int:pk>/teams/", people.person_add_team, name="person_add_team"),
    path(
        "admin-portal/people/<int:pk>/teams/<int:team_pk>/remove/",
        people.person_remove_team,
        name="person_remove_team",
    ),
    path("admin-portal/people/<int:pk>/approver/", people.person_approver, name="person_approver"),
    path(
        "admin-portal/people/<int:pk>/teams/<int:team_pk>/<str:role>/",
        people.person_team_role,
        name="person_team_role",
    ),
    path("admin-portal/people/<int:pk>/active/", people.person_active, name="person_active"),
    path("invitations/accept/", people.invitation_accept, name="invitation_accept"),
    path("invitations/<str:token>/", people.invitation_link, name="invitation_link"),
    path("profile/", people.profile, name="profile"),
    path("admin-portal/blueprints/", blueprints.blueprint_versions, name="governance_blueprints"),
    path(
        "admin-portal/blueprints/<int:pk>/",
        blueprints.version_detail,
        name="governance_blueprint_version",
    ),
    path(
        "admin-portal/blueprints/<int:pk>/source.yaml",
        blueprints.version_source,
        name="governance_blueprint_source",
    ),
    path(
        "admin-portal/blueprints/<int:pk>/edit/",
        blueprints.version_edit,
        name="governance_blueprint_edit",
    ),
    path(
        "admin-portal/blueprints/<int:pk>/deprecate/",
        blueprints.version_deprecate,
        name="governance_blueprint_deprecate",
    ),
    path(
        "admin-portal/blueprints/<slug:name>/diff/",
        blueprints.version_diff,
        name="governance_blueprint_diff",
    ),
]
