"""People pages: invite, membership, roles, deactivation (portal admins); accepting an
invitation (anyone with the link); the profile (everyone signed in).

Admin pages answer 403 to everyone else, for GET and POST. Every write is a service in
``access/people.py``, which audits it.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from environments.access import people, roles
from environments.governance import audit
from environments.lib.errors import ServiceError
from environments.lifecycle import pools
from environments.models import Invitation, Membership, Team
from environments.scheduling import selectors as scheduling_selectors
from environments.web import timezones


def _require_admin(user) -> None:
    if not roles.is_admin(user):
        raise PermissionDenied("Portal admins only.")


class InviteForm(forms.Form):
    email = forms.EmailField(label="Email", max_length=254)
    team = forms.ModelChoiceField(queryset=Team.objects.order_by("name"), label="Team")
    approver = forms.BooleanField(
        label="Approver", required=False, help_text="May approve their teams' requests."
    )


class AddToTeamForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.order_by("name"), label="Add to team")


def _people_page(request, form: InviteForm, status: int = 200):
    User = get_user_model()
    users = (
        User.objects.order_by("email")
        .exclude(username=pools.POOL_USERNAME)  # the warm pools' account is nobody
        .prefetch_related(
            Prefetch("memberships", queryset=Membership.objects.select_related("team")),
            "groups",
        )
        .all()
    )
    invitations = Invitation.objects.select_related("team", "invited_by").filter(
        accepted_at__isnull=True, revoked_at__isnull=True
    )
    return render(
        request,
        "environments/people.html",
        {"users": users, "invitations": invitations, "form": form},
        status=status,
    )


@login_required
@require_http_methods(["GET"])
def people_list(request):
    _require_admin(request.user)
    return _people_page(request, InviteForm())


@login_required
@require_POST
def people_invite(request):
    _require_admin(request.user)
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            invitation = people.invite(
                actor=request.user,
                email=form.cleaned_data["email"],
                team=form.cleaned_data["team"],
                approver=form.cleaned_data["approver"],
                ip=audit.client_ip(request),
            )
        except ServiceError as exc:
            form.add_error("email", str(exc))
        else:
            messages.success(
                request,
                f"Invitation sent to {invitation.email} for team {invitation.team.name}; "
                f"the link works once, for {people.INVITATION_DAYS} days.",
            )
            return redirect("people")
    return _people_page(request, form, status=400)


@login_required
@require_POST
def invitation_revoke(request, pk: int):
    _require_admin(request.user)
    invitation = get_object_or_404(Invitation, pk=pk)
    if people.revoke_invitation(
        actor=request.user, invitation=invitation, ip=audit.client_ip(request)
    ):
        messages.success(request, f"Invitation for {invitation.email} withdrawn.")
    return redirect("people")


def _person(pk: int):
    return get_object_or_404(get_user_model(), pk=pk)


@login_required
@require_http_methods(["GET"])
def person_detail(request, pk: int):
    _require_admin(request.user)
    person = _person(pk)
    teams = Team.objects.filter(memberships__user=person).order_by("name")
    memberships = {m.team_id: m for m in Membership.objects.filter(user=person)}
    for team in teams:
        team.membership = memberships.get(team.pk)  # type: ignore[attr-defined]
    form = AddToTeamForm()
    add_field = form.fields["team"]
    assert isinstance(add_field, forms.ModelChoiceField)
    add_field.queryset = Team.objects.exclude(memberships__user=person).order_by("name")
    names = roles.role_names(person)
    return render(
        request,
        "environments/person.html",
        {
            "person": person,
            "teams": teams,
            "add_form": form,
            "has_approver_group": roles.APPROVER
            in set(person.groups.values_list("name", flat=True)),
            "is_admin_person": roles.ADMIN in names,
        },
    )


def _act(request, pk: int, action) -> HttpResponse:
    """Run one admin action on a person; show its refusal as a one-line message."""
    _require_admin(request.user)
    person = _person(pk)
    try:
        done = action(person)
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        if done:
            messages.success(request, done)
    return redirect("person_detail", pk=person.pk)


@login_required
@require_POST
def person_add_team(request, pk: int):
    form = AddToTeamForm(request.POST)

    def action(person):
        if not form.is_valid():
            raise ServiceError("Choose a team to add them to.")
        team = form.cleaned_data["team"]
        if people.add_member(
            actor=request.user, user=person, team=team, ip=audit.client_ip(request)
        ):
            return f"{person.email} is now in team {team.name}."
        return f"{person.email} was already in team {team.name}."

    return _act(request, pk, action)


@login_required
@require_POST
def person_remove_team(request, pk: int, team_pk: int):
    def action(person):
        team = get_object_or_404(Team, pk=team_pk)
        if people.remove_member(
            actor=request.user, user=person, team=team, ip=audit.client_ip(request)
        ):
            return f"{person.email} is no longer in team {team.name}."
        return f"{person.email} was not in team {team.name}."

    return _act(request, pk, action)


@login_required
@require_POST
def person_team_role(request, pk: int, team_pk: int, role: str):
    give = request.POST.get("value") == "on"

    def action(person):
        team = get_object_or_404(Team, pk=team_pk)
        changed = people.set_team_role(
            actor=request.user,
            user=person,
            team=team,
            role=role,
            value=give,
            ip=audit.client_ip(request),
        )
        if not changed:
            return None
        what = "a lead" if role == "lead" else "an approver"
        return (
            f"{person.email} is now {what} of team {team.name}."
            if give
            else f"{person.email} is no longer {what} of team {team.name}."
        )

    return _act(request, pk, action)


@login_required
@require_POST
def person_approver(request, pk: int):
    give = request.POST.get("approver") == "on"

    def action(person):
        changed = people.set_approver(
            actor=request.user, user=person, approver=give, ip=audit.client_ip(request)
        )
        if not changed:
            return None
        return (
            f"{person.email} may now approve requests."
            if give
            else f"{person.email} is no longer an approver."
        )

    return _act(request, pk, action)


@login_required
@require_POST
def person_active(request, pk: int):
    active = request.POST.get("active") == "on"

    def action(person):
        if active:
            if people.reactivate(actor=request.user, user=person, ip=audit.client_ip(request)):
                return f"{person.email} can sign in again."
            return None
        if people.deactivate(actor=request.user, user=person, ip=audit.client_ip(request)):
            return f"{person.email} is deactivated: they cannot sign in, and their API tokens are revoked."
        return None

    return _act(request, pk, action)


# --- Accepting an invitation (anyone holding the link) -------------------------------


class AcceptForm(forms.Form):
    password1 = forms.CharField(
        label="Password", widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )
    password2 = forms.CharField(
        label="Password again", widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("password1") and cleaned.get("password1") != cleaned.get("password2"):
            self.add_error("password2", "The two passwords differ; type the same one twice.")
        return cleaned


SESSION_KEY = "invitation_hash"
NOT_VALID = "This invitation link is not valid; check that you copied all of it."


@require_http_methods(["GET"])
def invitation_link(request, token: str):
    """The link in the email. Like Django's password reset, it keeps the token out of
    the next URL: the session keeps the link's hash and the browser moves on to a URL
    without it, so no log line, Referer or history entry after this one holds it."""
    invitation = people.pending_invitation(token)
    if invitation is None:
        return render(request, "environments/invitation.html", {"refusal": NOT_VALID}, status=404)
    request.session[SESSION_KEY] = invitation.token_hash
    response = redirect("invitation_accept")
    response["Cache-Control"] = "no-store"
    return response


@require_http_methods(["GET", "POST"])
def invitation_accept(request):
    token_hash = request.session.get(SESSION_KEY, "")
    invitation = people.invitation_by_hash(token_hash) if token_hash else None
    if invitation is None:
        return render(request, "environments/invitation.html", {"refusal": NOT_VALID}, status=404)
    refusal = people.refusal(invitation)
    form = AcceptForm(request.POST or None)
    if refusal is None and request.method == "POST" and form.is_valid():
        try:
            user = people.accept_by_hash(
                token_hash=token_hash,
                password=form.cleaned_data["password1"],
                ip=audit.client_ip(request),
            )
        except ServiceError as exc:
            form.add_error("password1", str(exc))
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            request.session.pop(SESSION_KEY, None)
            seat = scheduling_selectors.seats_of(user).first()
            if seat is not None:  # invited through a class's roster: straight to the seat
                messages.success(request, "Welcome to Ephemera. This is your seat in the class.")
                return redirect(seat.get_absolute_url())
            messages.success(
                request,
                f"Welcome to Ephemera. You are in team {invitation.team.name}; "
                "request an environment from the catalogue.",
            )
            return redirect("catalogue")
    response = render(
        request,
        "environments/invitation.html",
        {"invitation": invitation, "refusal": refusal, "form": form},
        status=410 if refusal else (400 if form.errors else 200),
    )
    response["Cache-Control"] = "no-store"
    return response


# --- Profile --------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def profile(request):
    chosen = people.time_zone_of(request.user)
    error = ""
    if request.method == "POST":
        try:
            saved = people.set_time_zone(
                user=request.user,
                time_zone=request.POST.get("time_zone", ""),
                ip=audit.client_ip(request),
            )
        except ServiceError as exc:
            error = str(exc)
        else:
            timezones.remember(request, saved.time_zone)
            messages.success(request, "Profile saved.")
            return redirect("profile")
    return render(
        request,
        "environments/profile.html",
        {
            "chosen": chosen,
            "zones": people.time_zone_names(),
            "error": error,
            "browser_zone": request.COOKIES.get(timezones.COOKIE, ""),
            "now": timezone.now(),
        },
        status=400 if error else 200,
    )
