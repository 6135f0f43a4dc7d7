"""People in the portal: invitations by email (read back from a real SMTP server),
membership, the approver role, deactivation, the audit trail, and who may do it."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from environments.access import people, tokens
from environments.access.roles import is_approver
from environments.lib.errors import ServiceError
from environments.models import AuditEvent, Invitation, Membership
from tests.conftest import client_for, make_user, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LINK = re.compile(r"http://[^\s]+/invitations/([A-Za-z0-9_-]+)/")
PASSWORD = "a-long-new-password-42"
ACCEPT = "/invitations/accept/"


def link_in(mailbox, address: str) -> str:
    """The invitation link in the (one) email to ``address``, once it has arrived."""
    messages = wait_for(lambda: mailbox.to(address), timeout=15)
    assert len(messages) == 1
    body = messages[0].get_content()
    match = LINK.search(body)
    assert match, body
    return match.group(0)


def test_it_invites_by_email_and_the_link_works_once(
    settings, smtp_server, portal_admin, team, shop, caplog
):
    settings.SIGNUP_OPEN = False  # invite-only: the invitation is the way in
    settings.SITE_URL = "http://testserver"
    caplog.set_level(logging.DEBUG)
    admin = client_for(portal_admin)
    response = admin.post(
        "/admin-portal/people/invite/",
        {"email": "New.Person@Example.com", "team": team.pk},
    )
    assert response.status_code == 302
    link = link_in(smtp_server, "new.person@example.com")
    message = smtp_server.to("new.person@example.com")[0]
    assert "team Sales" in message["Subject"]
    path = link.removeprefix("http://testserver")
    token = path.rstrip("/").rsplit("/", 1)[1]

    # Only the hash is stored, and the link is in no audit entry and no log line.
    invitation = Invitation.objects.get()
    assert invitation.token_hash == people.hash_link_token(token)
    assert token not in str(list(Invitation.objects.values()))
    assert all(token not in str(e.after) + str(e.before) for e in AuditEvent.objects.all())
    # (The SMTP server's own debug log, "mail.log", is the recipient's side and sees it.)
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]
    assert all(token not in line for line in ours)
    entry = AuditEvent.objects.get(action="person.invite")
    assert entry.after["email"] == "new.person@example.com"
    assert entry.after["team"] == "sales"

    newcomer = Client()
    # The link moves on to a URL without the token (no later log line or Referer has it).
    response = newcomer.get(path)
    assert response.status_code == 302 and response["Location"] == ACCEPT
    page = newcomer.get(ACCEPT)
    assert page.status_code == 200
    assert "new.person@example.com" in page.content.decode()
    assert token not in page.content.decode()
    assert page["Cache-Control"] == "no-store"
    # Mismatched passwords: a one-line error, and the link still works.
    response = newcomer.post(ACCEPT, {"password1": PASSWORD, "password2": PASSWORD + "x"})
    assert response.status_code == 400
    assert "The two passwords differ" in response.content.decode()
    response = newcomer.post(ACCEPT, {"password1": "short", "password2": "short"})
    assert response.status_code == 400
    assert "This password is too short." in response.content.decode()
    response = newcomer.post(ACCEPT, {"password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"

    user = get_user_model().objects.get(email="new.person@example.com")
    assert Membership.objects.filter(user=user, team=team).exists()
    assert AuditEvent.objects.filter(action="person.accept_invitation", actor_id=user.pk).exists()
    # Signed in, in their team: they can request an environment.
    response = newcomer.post(
        f"/blueprints/{shop.blueprint.name}/request/",
        {"param_customer": "globex", "param_theme": "light", "ttl_seconds": 4 * 3600},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert user.environments.get().team == team
    # And they can sign in again with the password they chose.
    assert Client().login(username=user.username, password=PASSWORD)

    # The link cannot be used twice.
    again = Client()
    response = again.get(path, follow=True)
    assert response.status_code == 410
    assert "already been used" in response.content.decode()
    response = again.post(
        ACCEPT, {"password1": "another-pass-99x", "password2": "another-pass-99x"}
    )
    assert response.status_code == 410
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    with pytest.raises(ServiceError, match="already been used"):
        people.accept(token=token, password="another-pass-99x")


def test_it_refuses_expired_withdrawn_replaced_and_unknown_links(portal_admin, team):
    first = people.invite(actor=portal_admin, email="late@example.com", team=team)
    # Tokens exist only in the email; take them from the stored hash's inverse by
    # issuing them here through the same function the service uses.
    token = "t" * 43
    Invitation.objects.filter(pk=first.pk).update(token_hash=people.hash_link_token(token))
    Invitation.objects.filter(pk=first.pk).update(expires_at=timezone.now() - timedelta(1))
    response = Client().get(f"/invitations/{token}/", follow=True)
    assert response.status_code == 410
    assert "expired" in response.content.decode()

    second = people.invite(actor=portal_admin, email="late@example.com", team=team)
    token2 = "u" * 43
    Invitation.objects.filter(pk=second.pk).update(token_hash=people.hash_link_token(token2))
    people.invite(actor=portal_admin, email="late@example.com", team=team)  # replaces it
    holder = Client()
    holder.get(f"/invitations/{token2}/")
    response = holder.post(ACCEPT, {"password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 410
    assert "replaced by a newer one" in response.content.decode()
    assert not get_user_model().objects.filter(email="late@example.com").exists()

    assert Client().get("/invitations/nonsense/").status_code == 404
    assert Client().get(ACCEPT).status_code == 404  # no link followed in this session
    latest = Invitation.objects.filter(revoked_at__isnull=True).get()
    assert people.revoke_invitation(actor=portal_admin, invitation=latest) is True
    assert people.revoke_invitation(actor=portal_admin, invitation=latest) is False
    assert AuditEvent.objects.filter(action="person.revoke_invitation").count() == 1


def test_it_refuses_bad_invitations_with_one_line_errors(portal_admin, team, owner):
    admin = client_for(portal_admin)
    response = admin.post("/admin-portal/people/invite/", {"email": owner.email, "team": team.pk})
    assert response.status_code == 400
    assert "owner@example.com already has an account" in response.content.decode()
    response = admin.post(
        "/admin-portal/people/invite/", {"email": "not-an-email", "team": team.pk}
    )
    assert response.status_code == 400
    assert "Enter a valid email address." in response.content.decode()
    assert not Invitation.objects.exists()


ADMIN_PAGES = [
    ("get", "/admin-portal/people/"),
    ("post", "/admin-portal/people/invite/"),
    ("get", "/admin-portal/people/{person}/"),
    ("post", "/admin-portal/people/{person}/teams/"),
    ("post", "/admin-portal/people/{person}/teams/{team}/remove/"),
    ("post", "/admin-portal/people/{person}/approver/"),
    ("post", "/admin-portal/people/{person}/active/"),
    ("post", "/admin-portal/invitations/{invitation}/revoke/"),
]


def test_it_refuses_the_people_pages_to_everyone_but_portal_admins(
    owner, approver, outsider, teammate, team, portal_admin
):
    invitation = people.invite(actor=portal_admin, email="x@example.com", team=team)
    values = {"person": teammate.pk, "team": team.pk, "invitation": invitation.pk}
    for user in (owner, approver, outsider):
        client = client_for(user)
        for method, url in ADMIN_PAGES:
            for verb in (method, "get" if method == "post" else "post"):
                response = getattr(client, verb)(
                    url.format(**values),
                    {"email": "y@example.com", "team": team.pk, "approver": "on"},
                )
                assert response.status_code in (403, 405), (user, verb, url)
                if verb == method:
                    assert response.status_code == 403, (user, verb, url)
    anonymous = Client()
    for method, url in ADMIN_PAGES:
        response = getattr(anonymous, method)(url.format(**values))
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    # Nothing changed.
    assert Membership.objects.filter(user=teammate, team=team).exists()
    assert teammate.is_active and not is_approver(get_user_model().objects.get(pk=teammate.pk))
    assert Invitation.objects.count() == 1
    assert not AuditEvent.objects.exclude(action="person.invite").exists()


def test_it_checks_csrf_on_people_forms(portal_admin, team, teammate):
    client = Client(enforce_csrf_checks=True)
    client.force_login(portal_admin)
    response = client.post(
        "/admin-portal/people/invite/", {"email": "z@example.com", "team": team.pk}
    )
    assert response.status_code == 403
    response = client.post(f"/admin-portal/people/{teammate.pk}/active/", {})
    assert response.status_code == 403
    assert not Invitation.objects.exists()
    teammate.refresh_from_db()
    assert teammate.is_active


def test_it_adds_and_removes_team_members_with_an_audit_trail(
    portal_admin, teammate, team, other_team
):
    admin = client_for(portal_admin)
    page = admin.get(f"/admin-portal/people/{teammate.pk}/")
    assert page.status_code == 200 and "Research" in page.content.decode()
    response = admin.post(f"/admin-portal/people/{teammate.pk}/teams/", {"team": other_team.pk})
    assert response.status_code == 302
    assert set(teammate.teams.values_list("slug", flat=True)) == {"sales", "research"}
    entry = AuditEvent.objects.get(action="person.add_to_team")
    assert entry.before == {"teams": ["sales"]}
    assert entry.after == {"teams": ["research", "sales"]}
    assert entry.actor == portal_admin.email

    response = admin.post(f"/admin-portal/people/{teammate.pk}/teams/{team.pk}/remove/")
    assert response.status_code == 302
    assert list(teammate.teams.values_list("slug", flat=True)) == ["research"]
    entry = AuditEvent.objects.get(action="person.remove_from_team")
    assert entry.before == {"teams": ["research", "sales"]}
    assert entry.after == {"teams": ["research"]}
    # Removing again changes nothing and writes nothing.
    admin.post(f"/admin-portal/people/{teammate.pk}/teams/{team.pk}/remove/")
    assert AuditEvent.objects.filter(action="person.remove_from_team").count() == 1


def test_it_gives_and_takes_the_approver_role(portal_admin, teammate):
    admin = client_for(portal_admin)
    admin.post(f"/admin-portal/people/{teammate.pk}/approver/", {"approver": "on"})
    assert is_approver(get_user_model().objects.get(pk=teammate.pk))
    entry = AuditEvent.objects.get(action="person.grant_approver")
    assert entry.before == {"roles": ["requester"]}
    assert entry.after == {"roles": ["approver", "requester"]}
    assert client_for(teammate).get("/approvals/").status_code == 200

    admin.post(f"/admin-portal/people/{teammate.pk}/approver/", {})
    assert not is_approver(get_user_model().objects.get(pk=teammate.pk))
    assert AuditEvent.objects.get(action="person.revoke_approver").after == {"roles": ["requester"]}
    assert client_for(teammate).get("/approvals/").status_code == 403


def test_it_deactivates_a_person_who_then_cannot_sign_in_or_use_tokens(portal_admin, teammate):
    _, plaintext = tokens.create_token(user=teammate, name="ci", scope="read", days=5)
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}
    assert Client().get("/api/v1/environments", **bearer).status_code == 200
    session = client_for(teammate)
    assert session.get("/environments/").status_code == 200

    admin = client_for(portal_admin)
    response = admin.post(f"/admin-portal/people/{teammate.pk}/active/", {}, follow=True)
    assert "is deactivated" in response.content.decode()
    teammate.refresh_from_db()
    assert not teammate.is_active
    entry = AuditEvent.objects.get(action="person.deactivate")
    assert entry.before == {"active": True}
    assert entry.after == {"active": False, "tokens_revoked": 1}

    assert Client().get("/api/v1/environments", **bearer).status_code == 401
    assert session.get("/environments/").status_code == 302  # the session ended
    stranger = Client()
    sign_in = stranger.post(
        "/accounts/login/", {"login": teammate.email, "password": "pw-for-tests-1"}
    )
    assert sign_in.status_code in (200, 302)
    assert sign_in.status_code == 200 or "/accounts/inactive/" in sign_in["Location"]
    assert "_auth_user_id" not in stranger.session

    # Admins cannot lock themselves out.
    response = admin.post(f"/admin-portal/people/{portal_admin.pk}/active/", {}, follow=True)
    assert "You cannot deactivate yourself" in response.content.decode()
    portal_admin.refresh_from_db()
    assert portal_admin.is_active

    admin.post(f"/admin-portal/people/{teammate.pk}/active/", {"active": "on"})
    teammate.refresh_from_db()
    assert teammate.is_active
    assert AuditEvent.objects.filter(action="person.reactivate").exists()
    # Its old tokens stay revoked.
    assert Client().get("/api/v1/environments", **bearer).status_code == 401


def test_it_lists_people_and_pending_invitations(portal_admin, owner, team):
    people.invite(actor=portal_admin, email="soon@example.com", team=team, approver=True)
    page = client_for(portal_admin).get("/admin-portal/people/").content.decode()
    assert "soon@example.com" in page and "Approver" in page
    assert owner.email in page
    assert 'href="/admin-portal/people/"' in page  # in the admin's menu


def test_an_invitation_can_make_an_approver(portal_admin, team):
    people.invite(actor=portal_admin, email="boss@example.com", team=team, approver=True)
    token = "b" * 43
    Invitation.objects.update(token_hash=people.hash_link_token(token))
    user = people.accept(token=token, password=PASSWORD)
    assert is_approver(user)
    assert make_user  # shared helper stays importable for other tests
