"""API token pages: list, create (plaintext shown once), revoke. Users see only their own."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from environments.access import tokens
from environments.governance import audit
from environments.models import ApiToken, Team


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. 'laptop' or 'CI'.")
    scope = forms.ChoiceField(choices=ApiToken.Scope.choices, initial=ApiToken.Scope.READ)
    days = forms.IntegerField(
        min_value=1, max_value=tokens.MAX_DAYS, initial=30, label="Valid for (days)"
    )
    team = forms.ModelChoiceField(
        queryset=Team.objects.none(),
        required=False,
        empty_label="Personal token",
        help_text="A team token can see and change the team's environments.",
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = Team.objects.filter(memberships__user=user).order_by("name")


def _render_list(request, form: TokenForm, status: int = 200):
    rows = ApiToken.objects.filter(user=request.user).select_related("team")
    return render(request, "tokens/list.html", {"tokens": rows, "form": form}, status=status)


@login_required
@require_GET
def token_list(request):
    return _render_list(request, TokenForm(user=request.user))


@login_required
@require_http_methods(["GET", "POST"])
def token_create(request):
    if request.method != "POST":
        return redirect("tokens:list")
    form = TokenForm(request.POST, user=request.user)
    if form.is_valid():
        try:
            token, plaintext = tokens.create_token(
                user=request.user,
                name=form.cleaned_data["name"],
                scope=form.cleaned_data["scope"],
                days=form.cleaned_data["days"],
                team=form.cleaned_data["team"],
                ip=audit.client_ip(request),
            )
        except tokens.TokenError as exc:
            form.add_error(None, str(exc))
        else:
            # Rendered, not redirected: the plaintext exists only in this response.
            response = render(
                request, "tokens/created.html", {"token": token, "plaintext": plaintext}
            )
            response["Cache-Control"] = "no-store"
            return response
    return _render_list(request, form, status=200)


@login_required
@require_http_methods(["GET", "POST"])
def token_revoke(request, pk: int):
    """GET asks first (revoking cannot be undone, and CI using it stops); POST revokes."""
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    if request.method == "GET":
        return render(request, "tokens/confirm_revoke.html", {"token": token})
    if tokens.revoke_token(token=token, user=request.user, ip=audit.client_ip(request)):
        messages.success(request, f"Token {token.name} revoked; it no longer works.")
    return redirect("tokens:list")
