"""django-allauth adapters: invite-only sign-up, controlled by settings."""

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        return settings.SIGNUP_OPEN


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request, sociallogin) -> bool:
        # With OIDC the identity provider decides who may come in.
        return settings.SIGNUP_OPEN or settings.OIDC_SIGNUP_OPEN
