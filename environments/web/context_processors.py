from django.conf import settings

from environments.access import roles


def portal(request):
    """Values every page needs: currency and the signed-in user's roles."""
    user = getattr(request, "user", None)
    return {
        "currency": settings.COST_CURRENCY,
        "is_portal_admin": roles.is_admin(user),
        "is_approver": roles.is_approver(user),
        "signup_open": settings.SIGNUP_OPEN,
    }
