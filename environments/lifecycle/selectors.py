"""Reads: each returns what a page needs, with the joins it needs (HackSoft selectors)."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import (
    Count,
    DecimalField,
    F,
    Func,
    Max,
    Q,
    QuerySet,
    Subquery,
    Sum,
    TextField,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Extract
from django.shortcuts import get_object_or_404
from django.utils import timezone

from environments.access.teams import approver_team_ids
from environments.lifecycle.states import EXTENDABLE_STATES, LIVE_STATES, State
from environments.models import (
    Environment,
    ExtensionRequest,
    Membership,
    Team,
)

# --- Environments ---------------------------------------------------------------------


def _environment_rows(*, listed: bool = True):
    # Every column the tables show comes from these joins: a constant number of queries.
    rows = Environment.objects.select_related("owner", "team", "blueprint_version__blueprint")
    if not listed:
        return rows
    # The blueprint's list parameter and its value are read in SQL, so lists need neither
    # the spec nor the parameters (Environment.listed_parameter).
    list_parameter = KeyTextTransform("list_parameter", "blueprint_version__spec")
    return rows.annotate(
        list_parameter_name=list_parameter,
        list_parameter_value=Func(
            F("parameters"),
            list_parameter,
            template="(%(expressions)s)",
            arg_joiner=" ->> ",
            output_field=TextField(),
        ),
        # That parameter's label, found in the spec's list of parameters.
        list_parameter_label=Func(
            F("blueprint_version__spec"),
            template=(
                "(jsonb_path_query_first(%(expressions)s, '$.parameters[*] ? (@.name == $n).label',"
                " jsonb_build_object('n', %(expressions)s -> 'list_parameter')) #>> '{}')"
            ),
            output_field=TextField(),
        ),
    )


def environments_for(*, user, scope: str = "mine", listed: bool = True) -> QuerySet[Environment]:
    """The dashboard's rows: the user's own ("mine") or their teams' ("team").

    Finished environments (deleted, rejected) are left out after a day so the
    table stays about what is running. ``listed=False`` leaves out the list parameter
    (and its join), for ``rows_stamp``.
    """
    rows = (
        _environment_rows(listed=listed)
        # The table needs none of these, and they are the big JSON columns.
        .defer(
            "manifests",
            "component_status",
            "parameters",
            "blueprint_version__source",
            "blueprint_version__spec",
        )
        .filter(
            Q(state__in=LIVE_STATES) | Q(state_changed_at__gte=timezone.now() - timedelta(days=1))
        )
    )
    rows = rows.filter(pooled=False)  # unclaimed pooled environments are nobody's yet
    if scope == "team":
        team_ids = Membership.objects.filter(user=user).values("team_id")
        return rows.filter(team_id__in=Subquery(team_ids))
    return rows.filter(owner=user)


# Epoch seconds to the microsecond, summed exactly (PostgreSQL numeric, not a float).
EXACT = DecimalField(max_digits=30, decimal_places=6)


def rows_stamp(rows: QuerySet[Environment]) -> dict:
    """What the dashboard rows depend on, in one aggregate query (the cache key).

    Every write a row shows moves that row's ``updated_at`` (or ``accrued_until``)
    forward. The maximum alone misses a write that commits after a later one (two
    workers, or a rename racing the watcher); the exact sum of every row's timestamp
    grows with any of them, whatever the order.
    """
    return rows.order_by().aggregate(
        count=Count("pk"),
        changed=Max("updated_at"),
        changes=Sum(Extract("updated_at", "epoch"), output_field=EXACT),
        accrued=Max("accrued_until"),
        accruals=Sum(Extract("accrued_until", "epoch"), output_field=EXACT),
    )


def environment_for(*, user, pk) -> Environment:
    """One environment the user may see, or 404 (no IDOR: outsiders learn nothing)."""
    return get_object_or_404(
        _environment_rows().filter(pk__in=Environment.objects.visible_to(user).values("pk")), pk=pk
    )


def pending_approvals(*, user=None) -> QuerySet[Environment]:
    """Requests waiting for an approver; with ``user``, those of the teams they approve
    for (every team for the approver role)."""
    rows = _environment_rows().filter(state=State.PENDING_APPROVAL).order_by("created_at")
    teams = approver_team_ids(user) if user is not None else None
    return rows if teams is None else rows.filter(team_id__in=teams)


def pending_extensions(*, user=None) -> QuerySet[ExtensionRequest]:
    """Extension requests waiting for an approver, of environments still running; with
    ``user``, those of the teams they approve for."""
    rows = (
        ExtensionRequest.objects.filter(
            state=ExtensionRequest.State.PENDING, environment__state__in=EXTENDABLE_STATES
        )
        .select_related(
            "requested_by",
            "environment__owner",
            "environment__team",
            "environment__blueprint_version__blueprint",
        )
        .order_by("created_at")
    )
    teams = approver_team_ids(user) if user is not None else None
    return rows if teams is None else rows.filter(environment__team_id__in=teams)


def all_environments(
    *,
    state: str = "",
    team: str = "",
    owner: str = "",
    blueprint: str = "",
    expiring_within_hours: int | None = None,
) -> QuerySet[Environment]:
    """The admin list, filtered; same joins as the dashboard (warm pools are shown on
    their blueprint's page, not here)."""
    rows = _environment_rows().filter(pooled=False)
    if state:
        rows = rows.filter(state=state)
    if team:
        rows = rows.filter(team__slug=team)
    if owner:
        rows = rows.filter(owner__email__icontains=owner)
    if blueprint:
        rows = rows.filter(blueprint_version__blueprint__name=blueprint)
    if expiring_within_hours:
        rows = rows.filter(
            state__in=LIVE_STATES,
            expires_at__lte=timezone.now() + timedelta(hours=expiring_within_hours),
        ).order_by("expires_at")
    return rows


def teams_of(user) -> list[Team]:
    return list(Team.objects.filter(memberships__user=user).order_by("name"))


# --- Governance ---------------------------------------------------------------------------
