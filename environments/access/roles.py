"""Roles are Django groups: requester (everyone), approver, trainer, admin. Superusers
are admins.

Every role check in the project goes through here. The user's role names are read once
per user object (one query per request), however many checks a request makes.
"""

REQUESTER = "requester"
APPROVER = "approver"
ADMIN = "admin"
# Runs classes: many seats of a training blueprint at once (environments/scheduling).
TRAINER = "trainer"
ALL_ROLES = (REQUESTER, APPROVER, TRAINER, ADMIN)


def role_names(user) -> frozenset[str]:
    """The user's roles, with what each implies (an admin is also an approver)."""
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    cached = getattr(user, "_ephemera_roles", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        if user.is_superuser or ADMIN in names:
            names |= {ADMIN, APPROVER}
        cached = user._ephemera_roles = frozenset(names)
    return cached


def is_admin(user) -> bool:
    return ADMIN in role_names(user)


def is_approver(user) -> bool:
    return APPROVER in role_names(user)


def is_trainer(user) -> bool:
    """Trainers (and admins) create classes."""
    names = role_names(user)
    return TRAINER in names or ADMIN in names
