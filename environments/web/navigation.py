"""Where a page's action sends the browser next."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme

from environments.models import Environment


def back(request: HttpRequest, environment: Environment) -> HttpResponseRedirect:
    """Where an action returns to: the page it came from if it is ours, else the detail."""
    target = request.POST.get("next", "")
    if target.startswith("/") and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect("environment_detail", pk=environment.pk)
