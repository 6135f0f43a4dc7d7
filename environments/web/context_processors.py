from django.conf import settings

from environments.access import roles
from environments.access.teams import is_any_approver


def portal(request):
    """Values every page needs: currency and the signed-in user's roles."""
    user = getattr(request, "user", None)
    return {
        "currency": settings.COST_CURRENCY,
        "is_portal_admin": roles.is_admin(user),
        # The approver role, or approving for one team at least (access.teams).
        "is_approver": is_any_approver(user) if user is not None else False,
        "signup_open": settings.SIGNUP_OPEN,
    }
