"""Recent logs of an environment's components, for the people who may see it.

A read, beside the selectors: the permission check (owner, team, admins; anyone else
gets a 404 and learns nothing), then the pods' logs through ``kube.cluster``, the only
module that calls the API server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.http import Http404
from django.shortcuts import get_object_or_404

from environments.kube import cluster
from environments.lifecycle.states import FINAL_STATES, LOGGED_STATES, State
from environments.models import Environment

DEFAULT_TAIL_LINES = 100
# What the page offers; pod_logs caps any number at cluster.LOG_TAIL_LINES_MAX anyway.
TAIL_CHOICES = (50, 100, 500, 1000)


@dataclass(frozen=True)
class ComponentLogs:
    """What the logs panel of one component shows."""

    component: str
    pods: list[cluster.PodLog] = field(default_factory=list)
    problem: str = ""  # why there is nothing to show, in plain words
    tail_lines: int = DEFAULT_TAIL_LINES
    following: bool = False  # the page keeps asking (until the environment is final)

    @property
    def line_count(self) -> int:
        return sum(len(pod.lines) for pod in self.pods)


def _why_no_pods(environment: Environment) -> str:
    if environment.state in FINAL_STATES:
        return "No logs: this environment is gone."
    if environment.state == State.PENDING_APPROVAL:
        return "No logs yet: the request waits for approval."
    return "No logs yet: the environment has not started."


def component_logs(
    *,
    user,
    pk,
    component: str,
    tail_lines: int = DEFAULT_TAIL_LINES,
    since: datetime | None = None,
) -> tuple[Environment, ComponentLogs]:
    """The environment (if ``user`` may see it, else 404) and ``component``'s recent logs.

    A component the blueprint version does not have is a 404 too. Logs are read only
    while the namespace may hold pods (``LOGGED_STATES``); a cluster that cannot answer
    becomes a sentence on the panel, not an error page.
    """
    environment = get_object_or_404(
        Environment.objects.visible_to(user).select_related("blueprint_version__blueprint"),
        pk=pk,
    )
    if component not in {c.name for c in environment.components}:
        raise Http404("No such component.")
    following = environment.state not in FINAL_STATES
    if environment.state not in LOGGED_STATES:
        return environment, ComponentLogs(
            component,
            problem=_why_no_pods(environment),
            tail_lines=tail_lines,
            following=following,
        )
    try:
        pods = cluster.pod_logs(
            environment.namespace, component, tail_lines=tail_lines, since=since
        )
    except cluster.ClusterError as exc:
        return environment, ComponentLogs(
            component, problem=str(exc), tail_lines=tail_lines, following=following
        )
    problem = "" if pods else f"No pods of {component} are running, so there are no logs."
    return environment, ComponentLogs(
        component, pods=pods, problem=problem, tail_lines=tail_lines, following=following
    )
