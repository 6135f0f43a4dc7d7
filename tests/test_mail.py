"""Email through a real SMTP server (tests/smtp.py), read back as a mail client would: the
expiry warning, from the scheduled check through the job queue and a real RQ worker; the
approval request. (The invitation: tests/test_people.py and tests/test_browser_people.py.)"""

from __future__ import annotations

from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone
from rq import SimpleWorker

from environments.integrations import notifications
from environments.lifecycle.upkeep import warn_expiring
from environments.models import Environment

# The worker runs the job in this process (SimpleWorker: no fork), against committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


def run_default_queue() -> None:
    django_rq.get_worker("default", worker_class=SimpleWorker).work(burst=True)


@pytest.fixture
def default_queue():
    queue = django_rq.get_queue("default")
    queue.empty()
    yield queue
    queue.empty()


def test_it_sends_the_expiry_warning_through_smtp(settings, smtp_server, default_queue, env, owner):
    settings.EXPIRY_WARNING_MINUTES = 30
    settings.SITE_URL = "https://ephemera.example.com"
    expires_at = timezone.now() + timedelta(minutes=20)
    Environment.objects.filter(pk=env.pk).update(expires_at=expires_at)

    assert warn_expiring() == 1  # enqueues the delivery once the UPDATE has committed
    assert [job.func_name for job in default_queue.get_jobs()] == [
        "environments.tasks.deliver_notification"
    ]
    run_default_queue()

    [message] = smtp_server.to(owner.email)
    assert message["Subject"].startswith("Expiring soon: Webshop sales demo")
    assert message["From"] == settings.DEFAULT_FROM_EMAIL
    body = message.get_content()
    assert f"{expires_at:%Y-%m-%d %H:%M}" in body
    assert f"https://ephemera.example.com/environments/{env.pk}/" in body
    assert len(smtp_server.messages) == 1  # the owner only

    # Once per expiry time: a second check sends nothing more.
    assert warn_expiring() == 0
    run_default_queue()
    assert len(smtp_server.messages) == 1


def test_it_emails_approvers_through_smtp(smtp_server, env, owner, approver):
    notifications.deliver(notifications.REQUESTED, str(env.pk))
    [message] = smtp_server.to(approver.email)
    assert message["Subject"].startswith("Approval needed:")
    assert owner.email in message.get_content()
    assert smtp_server.to(owner.email) == []
