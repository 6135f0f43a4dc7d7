"""The approval queue: approvers decide on requests that policy holds back."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from environments.access.teams import is_any_approver
from environments.governance import audit, quotas
from environments.lib.errors import ServiceError
from environments.lifecycle import queue, selectors, services
from environments.models import Booking, Environment, ExtensionRequest, TrainingClass
from environments.scheduling import selectors as scheduling_selectors
from environments.scheduling import services as scheduling
from environments.web.forms import RejectForm


def _require_approver(user) -> None:
    if not is_any_approver(user):
        raise PermissionDenied("Only approvers can see the approval queue.")


@login_required
@require_GET
def approvals(request):
    _require_approver(request.user)
    pending = list(selectors.pending_approvals(user=request.user))
    for env in pending:
        # Why it waits, limit by limit: the decision the request service made, taken
        # again now (governance.quotas.decide), and what each limit holds by part.
        demand = quotas.demand_for(
            env.blueprint_version, int(env.ttl.total_seconds()), variant=env.variant
        )
        env.outcome = quotas.decide(
            team=env.team, user=env.owner, version=env.blueprint_version, demand=demand, exclude=env
        )
        env.standing = quotas.standing(team=env.team, user=env.owner, demand=demand, exclude=env)
        env.policy = env.blueprint_version.blueprint_spec.approval.value
        # No Approve button the service would refuse.
        env.is_own = services.is_own_request(request.user, env)
    extensions = list(selectors.pending_extensions(user=request.user))
    for extension in extensions:
        extension.is_own = services.is_own_request(
            request.user, extension.environment, extension.requested_by
        )
    classes, bookings = scheduling_selectors.pending_decisions(request.user)
    return render(
        request,
        "environments/approvals.html",
        {
            "pending": pending,
            "extensions": extensions,
            "reject_form": RejectForm(),
            "pending_classes": classes,
            "pending_bookings": bookings,
        },
    )


def _decide(request, decide, done):
    """Run an approver's decision; say what happened (``done()`` gives the message level
    and text), or the one-line reason it was refused. Back to the queue either way."""
    try:
        decide()
    except (ServiceError, PermissionDenied) as exc:
        messages.error(request, str(exc))
    else:
        level, text = done()
        messages.add_message(request, level, text)
    return redirect("approvals")


def _reject(request, decide, *, what: str, done: str):
    """Reject with the approver's reason (the requester reads it), or say it is missing."""
    form = RejectForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Say why the {what} is rejected; the requester will read it.")
        return redirect("approvals")
    return _decide(
        request,
        lambda: decide(reason=form.cleaned_data["reason"]),
        lambda: (messages.SUCCESS, done),
    )


@login_required
@require_POST
def approve(request, pk):
    _require_approver(request.user)
    environment = get_object_or_404(Environment, pk=pk)

    def done():
        if queue.deferred(environment.pk):
            return messages.WARNING, f"Approved {environment.namespace}. {queue.WAITING_FOR_QUEUE}"
        return messages.SUCCESS, f"Approved {environment.namespace}."

    return _decide(
        request,
        lambda: services.approve_environment(
            environment=environment, approver=request.user, ip=audit.client_ip(request)
        ),
        done,
    )


@login_required
@require_POST
def reject(request, pk):
    _require_approver(request.user)
    environment = get_object_or_404(Environment, pk=pk)
    return _reject(
        request,
        lambda reason: services.reject_environment(
            environment=environment,
            approver=request.user,
            reason=reason,
            ip=audit.client_ip(request),
        ),
        what="request",
        done=f"Rejected {environment.namespace}.",
    )


@login_required
@require_POST
def approve_extension(request, pk):
    _require_approver(request.user)
    extension = get_object_or_404(ExtensionRequest, pk=pk)
    return _decide(
        request,
        lambda: services.approve_extension(
            extension=extension, approver=request.user, ip=audit.client_ip(request)
        ),
        lambda: (messages.SUCCESS, f"Extended {extension.environment.namespace}."),
    )


@login_required
@require_POST
def reject_extension(request, pk):
    _require_approver(request.user)
    extension = get_object_or_404(ExtensionRequest, pk=pk)
    return _reject(
        request,
        lambda reason: services.reject_extension(
            extension=extension,
            approver=request.user,
            reason=reason,
            ip=audit.client_ip(request),
        ),
        what="extension",
        done=f"Rejected the extension of {extension.environment.namespace}.",
    )


# Classes and booked demos: one decision for the whole class or booking.


@login_required
@require_POST
def decide_scheduled(request, kind: str, pk, verdict: str):
    _require_approver(request.user)
    if kind not in ("classes", "bookings") or verdict not in ("approve", "reject"):
        raise Http404("No such decision.")
    approve_it = verdict == "approve"
    item: TrainingClass | Booking
    decide: Any
    if kind == "classes":
        item = get_object_or_404(TrainingClass, pk=pk)
        decide, keyword = scheduling.decide_class, "training_class"
    else:
        item = get_object_or_404(Booking, pk=pk)
        decide, keyword = scheduling.decide_booking, "booking"
    what = "class" if kind == "classes" else "booking"
    return _decide_scheduled(request, item, decide, keyword, what, approve_it)


def _decide_scheduled(request, item, decide, keyword: str, what: str, approve_it: bool):
    if not approve_it:
        return _reject(
            request,
            lambda reason: decide(
                **{keyword: item},
                approver=request.user,
                approve=False,
                reason=reason,
                ip=audit.client_ip(request),
            ),
            what=what,
            done=f"Rejected the {what}.",
        )
    return _decide(
        request,
        lambda: decide(
            **{keyword: item}, approver=request.user, approve=True, ip=audit.client_ip(request)
        ),
        lambda: (messages.SUCCESS, f"Approved the {what}: every seat is decided."),
    )
