"""Every new user gets the requester role."""

from django.conf import settings
from django.contrib.auth.models import Group
from django.db.models.signals import post_save
from django.dispatch import receiver

from environments.access.roles import REQUESTER


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def give_requester_role(sender, instance, created, raw=False, **kwargs):
    if created and not raw:
        group, _ = Group.objects.get_or_create(name=REQUESTER)
        instance.groups.add(group)
