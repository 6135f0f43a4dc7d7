"""django-allauth adapters: invite-only sign-up, controlled by settings.

Also the Django admin's sign-in form, limited like allauth's (same rates, same Redis
counters), and the one rule for the client's address behind a proxy.
"""

from allauth.account.adapter import DefaultAccountAdapter, get_adapter
from allauth.core import ratelimit
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import PermissionDenied

from environments.access import people
from environments.governance import audit


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        return settings.SIGNUP_OPEN

    def get_client_ip(self, request) -> str:
        # The rate limits count the client behind TRUSTED_PROXY_COUNT proxies, the
        # same address the audit log records.
        ip = audit.client_ip(request)
        if not ip:
            raise PermissionDenied("Unable to determine client IP address")
        return ip


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request, sociallogin) -> bool:
        # With OIDC the identity provider decides who may come in; when it may not, a
        # pending invitation to an address the provider verified still lets them in.
        if settings.SIGNUP_OPEN or settings.OIDC_SIGNUP_OPEN:
            return True
        return any(people.pending_invitation_for(email) for email in verified_emails(sociallogin))

    def save_user(self, request, sociallogin, form=None):
        user = super().save_user(request, sociallogin, form)
        # Invited to a team: joining through the provider uses up the invitation.
        for email in verified_emails(sociallogin):
            if people.accept_through_provider(user=user, email=email, ip=audit.client_ip(request)):
                break
        return user

    def authenticate_by_email(self, sociallogin):
        # An existing account is matched by a verified address only (allauth's rule).
        trust_id_token_email_verified(sociallogin)
        return super().authenticate_by_email(sociallogin)

    def pre_social_login(self, request, sociallogin) -> None:
        # Also when no account is matched: a new account's address is then verified.
        trust_id_token_email_verified(sociallogin)
        super().pre_social_login(request, sociallogin)


def verified_emails(sociallogin) -> list[str]:
    """The addresses the identity provider says it verified."""
    trust_id_token_email_verified(sociallogin)
    return [address.email for address in sociallogin.email_addresses if address.verified]


def trust_id_token_email_verified(sociallogin) -> None:
    """Take ``email_verified`` from the ID token when the userinfo answer lacks it.

    allauth reads the claims from userinfo when it has them, and Gitea, among others, says
    ``email_verified`` only in the ID token. Both come from the provider: the ID token
    straight from its token endpoint (https only, see OIDC_SERVER_URL), with the issuer
    and audience checked. Claims are merged only for the same subject (OpenID Connect
    Core 5.3.2) and the same address.
    """
    data = sociallogin.account.extra_data or {}
    id_token, userinfo = data.get("id_token") or {}, data.get("userinfo") or {}
    if id_token.get("email_verified") is not True or "email_verified" in userinfo:
        return
    if not userinfo or str(userinfo.get("sub")) != str(id_token.get("sub")):
        return
    email = str(id_token.get("email") or "").lower()
    for address in sociallogin.email_addresses:
        if email and address.email.lower() == email:
            address.verified = True


class AdminLoginForm(AdminAuthenticationForm):
    """/admin/login/ with allauth's limits: ``login`` per address, ``login_failed`` per
    address and per account (shared with the portal's sign-in page)."""

    def clean(self):
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            adapter = get_adapter(self.request)
            if not ratelimit.consume(self.request, action="login"):
                raise adapter.validation_error("too_many_login_attempts")
            # Counts the attempt first and refuses when over the limit; a success
            # takes its own attempt back (allauth's rule).
            user = adapter.authenticate(self.request, username=username, password=password)
            if user is None:
                raise self.get_invalid_login_error()
            self.confirm_login_allowed(user)
            self.user_cache = user
        return self.cleaned_data
