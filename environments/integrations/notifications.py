"""Telling people what happened: email and per-team outgoing webhooks.

``send_later`` enqueues a ``deliver`` job after the current transaction commits, so a
slow mail server never holds up a request or a provisioning job. ``deliver`` sends the
email (Django's backend; the console in development) and creates one
``WebhookDelivery`` per active team webhook, each sent by its own ``send_webhook``
job: Slack-compatible JSON, signed with HMAC-SHA256 of the body in
``X-Ephemera-Signature: sha256=<hex>``, retried with backoff by RQ. A delivery that
keeps failing stays visible to admins with its last status and error.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
import uuid

import django_rq
import redis.exceptions
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from rq import Retry

from environments.catalog.pricing import money
from environments.lib import egress
from environments.lib.durations import format_duration
from environments.lib.signing import sign
from environments.models import BlueprintVersion, Drill, Environment, Webhook, WebhookDelivery

log = logging.getLogger(__name__)

REQUESTED = "requested"
APPROVED = "approved"
REJECTED = "rejected"
READY = "ready"
FAILED = "failed"
EXPIRING = "expiring"
EXPIRED = "expired"
REMINDER = "reminder"
EXTENSION_REQUESTED = "extension_requested"
EXTENSION_APPROVED = "extension_approved"
EXTENSION_REJECTED = "extension_rejected"
DRILL_FAILED = "drill_failed"  # a restore drill failed (issue 15): the blueprint's owners
EVENTS = (
    REQUESTED,
    APPROVED,
    REJECTED,
    READY,
    FAILED,
    EXPIRING,
    EXPIRED,
    REMINDER,
    EXTENSION_REQUESTED,
    EXTENSION_APPROVED,
    EXTENSION_REJECTED,
    DRILL_FAILED,
)


# RQ retries a delivery that raised (a database blip, a mail server hiccup) this often.
DELIVERY_RETRY = (5, 30, 120, 600, 1800)


def send_later(event: str, environment_id) -> None:
    """Queue the notification once the caller's transaction commits.

    Retried with backoff if it fails (``DELIVERY_RETRY``); each attempt carries the same
    key, so the email and the webhook deliveries are made once however often it runs.
    A Redis outage at commit time loses the notification, never the request: the
    caller's change is committed already (logged as a warning).
    """
    assert event in EVENTS, event
    key = uuid.uuid4().hex

    def enqueue() -> None:
        try:
            django_rq.get_queue("default").enqueue(
                "environments.tasks.deliver_notification",
                event,
                str(environment_id),
                key,
                retry=Retry(max=len(DELIVERY_RETRY), interval=list(DELIVERY_RETRY)),
            )
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning(
                "could not queue the %s notification for %s: %s",
                event,
                environment_id,
                type(exc).__name__,
            )

    transaction.on_commit(enqueue)


def approvers_emails(team_id=None) -> list[str]:
    """Who is told about a team's requests: the approver and admin roles (every team)
    and the people who approve for that team only (access.teams)."""
    who = Q(is_superuser=True) | Q(groups__name__in=["approver", "admin"])
    if team_id is not None:
        who |= Q(memberships__team_id=team_id, memberships__approver=True)
    users = get_user_model().objects.filter(who, is_active=True)
    return sorted({u.email for u in users if u.email})


def message_for(event: str, environment: Environment) -> tuple[str, str, list[str]]:
    """(subject, body, recipients) for one event."""
    version = environment.blueprint_version
    link = f"{settings.SITE_URL}/environments/{environment.pk}/"
    title = f"{version.title} ({environment.name})"
    owner = [environment.owner.email]
    if event == REQUESTED:
        return (
            f"Approval needed: {title}",
            f"{environment.owner.email} asks for {title} for team {environment.team.name}, "
            f"at {money(environment.hourly_price)} an hour.\n\nReview it: "
            f"{settings.SITE_URL}/approvals/",
            approvers_emails(environment.team_id),
        )
    if event == REMINDER:
        return (
            f"Still waiting for approval: {title}",
            f"{environment.owner.email}'s request is still pending.\n\n{settings.SITE_URL}/approvals/",
            approvers_emails(environment.team_id),
        )
    extension = environment.extension_requests.order_by("-created_at").first()
    if event == EXTENSION_REQUESTED and extension is not None:
        return (
            f"Extension approval needed: {title}",
            f"{extension.requested_by.email} asks to extend {title} of team "
            f"{environment.team.name} by {format_duration(extension.seconds)}: "
            f"{extension.reason or '(no reason given)'}\n\nReview it: "
            f"{settings.SITE_URL}/approvals/",
            approvers_emails(environment.team_id),
        )
    if event == APPROVED:
        subject, body = f"Approved: {title}", "Your request was approved and is being provisioned."
    elif event == EXTENSION_APPROVED and extension is not None:
        subject = f"Extension approved: {title}"
        body = f"Your environment now expires at {environment.expires_at:%Y-%m-%d %H:%M %Z}."
    elif event == EXTENSION_REJECTED and extension is not None:
        subject = f"Extension rejected: {title}"
        body = (
            f"The extension was rejected: {extension.decision_reason}. It still expires at "
            f"{environment.expires_at:%Y-%m-%d %H:%M %Z}."
        )
    elif event == REJECTED:
        subject, body = f"Rejected: {title}", f"Your request was rejected: {environment.last_error}"
    elif event == READY:
        subject = f"Ready: {title}"
        body = "Your environment is ready:\n" + "\n".join(environment.urls.values())
    elif event == FAILED:
        subject, body = f"Failed: {title}", f"Provisioning failed: {environment.last_error}"
    elif event == EXPIRING:
        subject = f"Expiring soon: {title}"
        body = (
            f"Your environment expires at {environment.expires_at:%Y-%m-%d %H:%M %Z}. "
            "Extend it in the portal if you still need it."
        )
    else:
        subject, body = f"Expired: {title}", "Your environment expired and is being torn down."
    return subject, f"{body}\n\n{link}", owner


def _done_key(key: str, step: str) -> str:
    return f"notification:{key}:{step}"


def deliver(event: str, environment_id: str, key: str = "") -> str:
    """Email the people concerned and queue one delivery per subscribed webhook.

    Raises on a database or mail error, so RQ retries it (``DELIVERY_RETRY``). With a
    ``key`` (every job ``send_later`` queues has one) each step is marked done in Redis
    once made, so a retry after a partial failure sends nothing twice. Jobs queued by
    the previous release have no key and run as before.
    """
    environment = (
        Environment.objects.select_related("owner", "team", "blueprint_version")
        .filter(pk=environment_id)
        .first()
    )
    if environment is None:
        return "no such environment"
    if environment.pooled:
        return "pooled: nobody to tell until it is claimed"
    if Drill.objects.filter(environment_id=environment.pk).exists():
        return "a restore drill's scratch environment: nobody is told"
    subject, body, recipients = message_for(event, environment)
    return _send_once(
        key,
        subject=subject,
        body=body,
        recipients=recipients,
        event=event,
        environment=environment,
    )


def _send_once(
    key: str,
    *,
    subject: str,
    body: str,
    recipients: list[str],
    event: str,
    environment: Environment | None,
    extra: dict | None = None,
) -> str:
    """Email ``recipients`` and queue one delivery per subscribed webhook of the
    environment's team (none without an environment), its payload ``webhook_payload``'s
    with ``extra`` added.

    With a ``key`` each step is marked done in Redis once made (for a week), so a retry
    after a partial failure sends nothing twice.
    """
    done_for = 7 * 86400
    emailed = 0
    if recipients and not (key and cache.get(_done_key(key, "email"))):
        send_mail(subject, body, None, recipients)
        emailed = len(recipients)
        if key:
            cache.set(_done_key(key, "email"), 1, done_for)
    hooks = 0
    if environment is None:
        return f"emailed {emailed}, {hooks} webhook(s)"
    for webhook in Webhook.objects.filter(team_id=environment.team_id, active=True):
        if webhook.events and event not in webhook.events:
            continue
        if key and cache.get(_done_key(key, f"webhook:{webhook.pk}")):
            continue
        # Committed before its job is queued (the job must find it); taken back if the
        # job cannot be queued, so a retry does not leave an orphan delivery behind.
        payload = {**webhook_payload(event, environment, subject), **(extra or {})}
        delivery = WebhookDelivery.objects.create(webhook=webhook, event=event, payload=payload)
        try:
            django_rq.get_queue("default").enqueue(
                "environments.tasks.send_webhook",
                delivery.pk,
                retry=Retry(max=4, interval=[10, 60, 300, 900]),
            )
        except Exception:
            WebhookDelivery.objects.filter(pk=delivery.pk).delete()
            raise
        if key:
            cache.set(_done_key(key, f"webhook:{webhook.pk}"), 1, done_for)
        hooks += 1
    return f"emailed {emailed}, {hooks} webhook(s)"


def webhook_payload(event: str, environment: Environment, subject: str) -> dict:
    """Slack-compatible: ``text`` is what a Slack incoming webhook shows."""
    return {
        "text": f"Ephemera: {subject}",
        "event": event,
        "environment": {
            "id": str(environment.pk),
            "name": environment.name,
            "state": environment.state,
            "blueprint": environment.blueprint_version.blueprint.name,
            "owner": environment.owner.email,
            "team": environment.team.slug,
            "urls": environment.urls,
            "expires_at": environment.expires_at.isoformat() if environment.expires_at else None,
            "link": f"{settings.SITE_URL}/environments/{environment.pk}/",
        },
    }


class WebhookFailed(Exception):
    """Raised so RQ retries the delivery with backoff."""


def send_webhook(delivery_id: int) -> str:
    delivery = WebhookDelivery.objects.select_related("webhook").filter(pk=delivery_id).first()
    if delivery is None or delivery.delivered_at is not None:
        return "nothing to do"
    body = json.dumps(delivery.payload, sort_keys=True).encode()
    refused = egress.refused_url(delivery.webhook.url)
    if refused:
        WebhookDelivery.objects.filter(pk=delivery_id).update(
            attempts=delivery.attempts + 1, last_error=f"refused: {refused}"
        )
        raise WebhookFailed(f"{egress.masked_url(delivery.webhook.url)}: {refused}")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        delivery.webhook.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "Ephemera-Webhook",
            "X-Ephemera-Event": delivery.event,
            "X-Ephemera-Delivery": str(delivery.pk),
            "X-Ephemera-Signature": sign(delivery.webhook.secret, body),
        },
    )
    status, error = None, ""
    try:
        with egress.opener.open(request, timeout=10) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status, error = exc.code, f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        error = f"could not connect: {getattr(exc, 'reason', exc)}"
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        attempts=delivery.attempts + 1,
        last_status=status,
        last_error=error,
        delivered_at=timezone.now() if status and 200 <= status < 300 else None,
    )
    if not (status and 200 <= status < 300):
        where = egress.masked_url(delivery.webhook.url)  # the URL is a credential
        log.warning("webhook %s failed: %s", where, error)
        raise WebhookFailed(f"{where}: {error}")
    return f"delivered ({status})"


# --- Restore drills (issue 15) ---------------------------------------------------------


def send_drill_failed(drill_id) -> None:
    """After the caller commits: tell the blueprint's owners a drill failed (their email,
    and the webhooks of the drilled environment's team that take ``drill_failed``)."""
    key = uuid.uuid4().hex

    def enqueue() -> None:
        try:
            django_rq.get_queue("default").enqueue(
                "environments.tasks.deliver_drill_notification",
                str(drill_id),
                key,
                retry=Retry(max=len(DELIVERY_RETRY), interval=list(DELIVERY_RETRY)),
            )
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("could not queue the drill notification for %s: %s", drill_id, exc)

    transaction.on_commit(enqueue)


def drill_recipients(blueprint: str) -> list[str]:
    """The blueprint's owners (who published its versions); the admins if none is left."""
    ids = BlueprintVersion.objects.filter(
        blueprint__name=blueprint, published_by__isnull=False
    ).values_list("published_by", flat=True)
    owners = get_user_model().objects.filter(pk__in=ids, is_active=True)
    emails = sorted({u.email for u in owners if u.email})
    if emails:
        return emails
    admins = get_user_model().objects.filter(
        Q(is_superuser=True) | Q(groups__name="admin"), is_active=True
    )
    return sorted({u.email for u in admins if u.email})


def deliver_drill(drill_id: str, key: str = "") -> str:
    """Email the owners of a failed drill's blueprint and queue its webhook deliveries
    (once each, like ``deliver``)."""
    drill = Drill.objects.select_related("source_environment").filter(pk=drill_id).first()
    if drill is None or drill.result != Drill.Result.FAILED:
        return "nothing to tell"
    subject = f"Restore drill failed: {drill.blueprint}"
    body = (
        f"The restore drill of {drill.blueprint} (snapshot {drill.snapshot_number}, "
        f"{drill.get_trigger_display().lower()}) failed: {drill.reason}\n\n"
        f"{settings.SITE_URL}/recovery/"
    )
    return _send_once(
        key,
        subject=subject,
        body=body,
        recipients=drill_recipients(drill.blueprint),
        event=DRILL_FAILED,
        environment=drill.source_environment,
        extra={"drill": {"id": str(drill.pk), "reason": drill.reason}},
    )
