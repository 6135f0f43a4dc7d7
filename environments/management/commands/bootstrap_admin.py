"""Create the first admin, once. Credentials from env vars, or generated and printed."""

import secrets

from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from environments.access.roles import ALL_ROLES
from environments.models import Membership, Team
from portal.settings import env


class Command(BaseCommand):
    help = (
        "Create the first admin if no superuser exists. Uses EPHEMERA_ADMIN_EMAIL and "
        "EPHEMERA_ADMIN_PASSWORD (or _FILE); a password is generated and printed once otherwise."
    )

    @transaction.atomic
    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("An admin already exists; nothing to do.")
            return
        email = env("EPHEMERA_ADMIN_EMAIL", "admin@example.com")
        password = env("EPHEMERA_ADMIN_PASSWORD")
        generated = password is None
        if generated:
            password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=email, email=email, password=password)
        EmailAddress.objects.create(user=user, email=email, primary=True, verified=True)
        for role in ALL_ROLES:
            user.groups.add(Group.objects.get_or_create(name=role)[0])
        team, _ = Team.objects.get_or_create(slug="platform", defaults={"name": "Platform"})
        Membership.objects.get_or_create(team=team, user=user)
        self.stdout.write(self.style.SUCCESS(f"Created the first admin: {email}"))
        if generated:
            # Printed once, never stored anywhere but as a hash.
            self.stdout.write(self.style.WARNING(f"Password (shown once): {password}"))
