"""Approval policies, quotas under concurrency, budgets, cost accrual and the audit trail."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from environments.catalog.publishing import publish_blueprint
from environments.catalog.spec import ParametersInvalid
from environments.governance.billing import accrue
from environments.integrations import notifications
from environments.lifecycle import services
from environments.lifecycle.services import ServiceError
from environments.lifecycle.states import State
from environments.lifecycle.upkeep import reap_expired, remind_approvers, warn_expiring
from environments.models import AuditEvent, CostEntry, Environment, Quota
from tests.factories import make_environment
from tests.test_blueprints import GOOD

TWO_COMPONENTS = GOOD  # web 250m/256Mi + db 500m/512Mi


@pytest.fixture
def rates(settings):
    settings.COST_CURRENCY = "EUR"
    settings.COST_PER_CPU_HOUR = Decimal("0.04")
    settings.COST_PER_GIB_HOUR = Decimal("0.008")
    return settings


def publish(source: str):
    version, _ = publish_blueprint(source=source)
    return version


def with_policy(policy: str, extra: str = "") -> str:
    return TWO_COMPONENTS.replace("purpose: demo", f"purpose: demo\napproval: {policy}\n{extra}")


# --- policies -----------------------------------------------------------------------------


def test_it_approves_automatically_with_the_auto_policy(owner):
    environment = services.request_environment(user=owner, version=publish(with_policy("auto")))
    assert environment.state == State.APPROVED
    assert environment.expires_at is not None
    assert AuditEvent.objects.filter(action="environment.request").count() == 1


def test_it_waits_for_an_approver_with_the_required_policy(owner, approver):
    version = publish(with_policy("required"))
    environment = services.request_environment(user=owner, version=version)
    assert environment.state == State.PENDING_APPROVAL
    assert environment.expires_at is None

    with pytest.raises(services.PermissionDenied):
        services.approve_environment(environment=environment, approver=owner)
    services.approve_environment(environment=environment, approver=approver)
    environment.refresh_from_db()
    assert environment.state == State.APPROVED
    assert environment.approved_by == approver
    assert AuditEvent.objects.filter(action="environment.approve", actor=approver.email).exists()


def test_it_rejects_with_a_reason_the_requester_reads(owner, approver):
    environment = services.request_environment(user=owner, version=publish(with_policy("required")))
    with pytest.raises(ServiceError, match="Say why"):
        services.reject_environment(environment=environment, approver=approver, reason=" ")
    services.reject_environment(
        environment=environment, approver=approver, reason="Use the shared demo instead."
    )
    environment.refresh_from_db()
    assert environment.state == State.REJECTED
    assert environment.last_error == "Use the shared demo instead."
    entry = AuditEvent.objects.get(action="environment.reject")
    assert entry.after["reason"] == "Use the shared demo instead."
    subject, body, recipients = notifications.message_for(notifications.REJECTED, environment)
    assert recipients == [owner.email]
    assert "Use the shared demo instead." in body


def test_it_auto_approves_over_quota_policy_within_quota_and_short_ttl(owner, team):
    version = publish(with_policy("over-quota", "auto_approve_ttl: 8h"))
    Quota.objects.create(team=team, max_environments=1)
    first = services.request_environment(user=owner, version=version, ttl_seconds=4 * 3600)
    assert first.state == State.APPROVED
    # Over quota: goes to approvers instead of being refused.
    second = services.request_environment(user=owner, version=version, ttl_seconds=4 * 3600)
    assert second.state == State.PENDING_APPROVAL
    # Within quota but longer than the auto-approve TTL: approvers too.
    Quota.objects.filter(team=team).update(max_environments=10)
    third = services.request_environment(user=owner, version=version, ttl_seconds=2 * 86400)
    assert third.state == State.PENDING_APPROVAL


def test_it_reminds_approvers_of_a_pending_request_once(owner, approver, settings):
    settings.APPROVAL_REMINDER_MINUTES = 30
    environment = services.request_environment(user=owner, version=publish(with_policy("required")))
    assert remind_approvers() == 0
    Environment.objects.filter(pk=environment.pk).update(
        state_changed_at=timezone.now() - timedelta(minutes=31)
    )
    assert remind_approvers() == 1
    assert remind_approvers() == 0
    subject, _, recipients = notifications.message_for(notifications.REMINDER, environment)
    assert subject.startswith("Still waiting for approval")
    assert approver.email in recipients
    notifications.deliver(notifications.REMINDER, str(environment.pk))
    assert mail.outbox[-1].to == recipients


# --- quotas ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_creates_exactly_n_environments_from_50_concurrent_requests(owner, team):
    limit = 7
    Quota.objects.create(team=team, max_environments=limit)
    version = publish(with_policy("auto"))
    barrier = threading.Barrier(50)
    results: list[str] = []
    lock = threading.Lock()

    def attempt():
        try:
            barrier.wait()
            services.request_environment(user=owner, version=version)
            outcome = "created"
        except ServiceError as exc:
            outcome = str(exc)
        finally:
            connection.close()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=attempt) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("created") == limit
    assert Environment.objects.filter(team=team).count() == limit
    refusals = [r for r in results if r != "created"]
    assert len(refusals) == 50 - limit
    assert all(
        r == f"Team Sales already has {limit} of {limit} environments "
        f"(0 running, {limit} approved or pending); this Shop for 4h needs 1 more, and 0 are left."
        for r in refusals
    ), refusals[0]


def test_it_refuses_cpu_memory_and_ttl_beyond_the_users_quota(owner):
    version = publish(with_policy("auto"))
    Quota.objects.create(user=owner, max_cpu_millicores=500, max_ttl=timedelta(hours=2))
    with pytest.raises(ServiceError) as excinfo:
        services.request_environment(user=owner, version=version)
    message = str(excinfo.value)
    assert "You use 0 of 0.5 CPU; this Shop for 4h needs 0.75 CPU and 0.5 is left." in message
    assert "You may keep an environment for at most 2h; this Shop for 4h asks for 4h." in message
    assert Environment.objects.count() == 0


def test_it_gives_the_exact_budget_message(owner, team, rates):
    version = publish(with_policy("auto"))
    Quota.objects.create(team=team, monthly_budget=Decimal("0.10"))
    # 0.75 CPU * 0.04 + 0.75 GiB * 0.008 = 0.036 per hour; 8 h = 0.288
    with pytest.raises(ServiceError) as excinfo:
        services.request_environment(user=owner, version=version, ttl_seconds=8 * 3600)
    assert str(excinfo.value) == (
        "Team Sales has €0.10 of €0.10 left this month; this Shop for 8h costs €0.29."
    )


def test_it_refuses_a_bad_parameter_with_the_field_named(owner):
    with pytest.raises(ParametersInvalid) as excinfo:
        services.request_environment(
            user=owner, version=publish(with_policy("auto")), parameters={"image_tag": "a b"}
        )
    assert "image_tag" in excinfo.value.errors


# --- extend -------------------------------------------------------------------------------


def ready(environment):
    now = timezone.now()
    Environment.objects.filter(pk=environment.pk).update(
        state=State.READY, ready_at=now, accrued_until=now
    )
    environment.refresh_from_db()
    return environment


def test_it_extends_within_max_ttl_and_records_it(owner, teammate):
    # A team lead may extend a teammate's environment (docs/governance.md).
    teammate.memberships.update(lead=True)
    environment = ready(
        services.request_environment(user=owner, version=publish(GOOD), reason="Globex demo")
    )
    old_expiry = environment.expires_at
    with pytest.raises(ServiceError, match="needs a reason"):
        services.extend_environment(environment=environment, user=owner, seconds=3600)
    services.extend_environment(
        environment=environment, user=teammate, seconds=3600, reason="Customer call moved"
    )
    environment.refresh_from_db()
    assert environment.expires_at == old_expiry + timedelta(hours=1)
    assert environment.extension_count == 1
    # Why it exists stays; why it lives longer is added.
    assert environment.reason == "Globex demo\nExtended: Customer call moved"
    with pytest.raises(ServiceError, match="Extend by at least 1m"):
        services.extend_environment(environment=environment, user=owner, seconds=30, reason="x")
    entry = AuditEvent.objects.get(action="environment.extend")
    assert entry.before["ttl_seconds"] == 4 * 3600
    assert entry.after["ttl_seconds"] == 5 * 3600


def test_it_refuses_a_ttl_too_short_to_be_useful(owner):
    with pytest.raises(ServiceError, match="at least 5m; you asked for 60 s"):
        services.request_environment(user=owner, version=publish(GOOD), ttl_seconds=60)


def test_it_projects_no_further_cost_for_a_failed_environment(owner):
    environment = ready(services.request_environment(user=owner, version=publish(GOOD)))
    assert environment.projected_cost > 0
    Environment.objects.filter(pk=environment.pk).update(state=State.FAILED)
    environment.refresh_from_db()
    assert environment.projected_cost == environment.accrued_cost


def test_it_refuses_to_extend_past_max_ttl(owner):
    environment = ready(services.request_environment(user=owner, version=publish(GOOD)))
    with pytest.raises(ServiceError) as excinfo:
        services.extend_environment(
            environment=environment, user=owner, seconds=3 * 86400, reason="x"
        )
    assert str(excinfo.value) == (
        "Shop may live at most 3d in all; extending by 3d would make it 3d4h."
    )


def test_it_refuses_to_extend_past_the_budget(owner, team, rates):
    environment = ready(services.request_environment(user=owner, version=publish(GOOD)))
    Quota.objects.create(team=team, monthly_budget=Decimal("0.20"))
    with pytest.raises(ServiceError) as excinfo:
        services.extend_environment(
            environment=environment, user=owner, seconds=24 * 3600, reason="Long workshop"
        )
    # committed so far: 4 h * 0.036 = 0.144 -> 0.056 left; 24 h costs 0.864
    assert str(excinfo.value) == (
        "Team Sales has €0.06 of €0.20 left this month; extending Shop by 1d costs €0.86."
    )


def test_it_refuses_an_outsider(owner, outsider):
    environment = services.request_environment(user=owner, version=publish(GOOD))
    with pytest.raises(services.PermissionDenied):
        services.extend_environment(environment=environment, user=outsider, seconds=60)
    with pytest.raises(services.PermissionDenied):
        services.delete_environment(environment=environment, user=outsider)


# --- cost -------------------------------------------------------------------------------


def test_it_accrues_cost_once_for_a_period_matching_the_hand_computed_price(owner, rates):
    environment = ready(services.request_environment(user=owner, version=publish(GOOD)))
    # Hand-computed: web 0.25 CPU + 0.25 GiB, db 0.5 CPU + 0.5 GiB
    #   = 0.75 * 0.04 + 0.75 * 0.008 = 0.030 + 0.006 = 0.036 per hour
    assert environment.hourly_price == Decimal("0.0360")
    start = environment.accrued_until
    later = start + timedelta(minutes=90, seconds=30)
    assert accrue(environment.pk, now=later) == Decimal("0.0540")
    assert accrue(environment.pk, now=later) == Decimal(0)  # same period: nothing
    environment.refresh_from_db()
    assert environment.accrued_cost == Decimal("0.0540")
    assert environment.accrued_until == start + timedelta(minutes=90)
    assert CostEntry.objects.filter(environment=environment).count() == 1
    assert AuditEvent.objects.filter(action="environment.request").count() == 1


def test_it_audits_delete_and_blueprint_publish(owner):
    environment = services.request_environment(user=owner, version=publish(GOOD))
    services.delete_environment(environment=environment, user=owner, ip="10.1.2.3")
    entry = AuditEvent.objects.get(action="environment.delete")
    assert entry.ip == "10.1.2.3"
    assert entry.actor == owner.email
    assert AuditEvent.objects.filter(action="blueprint.publish").exists()


def test_it_warns_the_owner_once_before_expiry(owner, settings):
    settings.EXPIRY_WARNING_MINUTES = 30
    environment = ready(services.request_environment(user=owner, version=publish(GOOD)))
    assert warn_expiring() == 0
    Environment.objects.filter(pk=environment.pk).update(
        expires_at=timezone.now() + timedelta(minutes=20)
    )
    assert warn_expiring() == 1
    assert warn_expiring() == 0
    assert (
        environment.events.filter(message__contains="extend it if you still need it").count() == 1
    )
    subject, _, recipients = notifications.message_for(
        notifications.EXPIRING, Environment.objects.get(pk=environment.pk)
    )
    assert subject.startswith("Expiring soon") and recipients == [owner.email]


def test_it_does_not_let_an_approver_approve_their_own_request(approver):
    environment = services.request_environment(
        user=approver, version=publish(with_policy("required"))
    )
    with pytest.raises(services.PermissionDenied, match="your own request"):
        services.approve_environment(environment=environment, approver=approver)


def test_it_keeps_webhook_secrets_out_of_the_audit_log(client, team, django_user_model):
    admin = django_user_model.objects.create_superuser("root@example.com", "root@example.com", "pw")
    client.force_login(admin)
    response = client.post(
        "/admin/environments/webhook/add/",
        {
            "team": team.pk,
            "url": "https://hooks.example.com/x",
            "secret": "very-secret-value",
            "events": "[]",
            "active": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:500]
    entry = AuditEvent.objects.get(action="webhook.add")
    assert "very-secret-value" not in str(entry.after)
    assert entry.after["secret"] == "(secret)"


def failed(environment):
    Environment.objects.filter(pk=environment.pk).update(state=State.FAILED, accrued_until=None)
    environment.refresh_from_db()
    return environment


def test_it_keeps_the_expiry_and_checks_quotas_on_retry(owner, team):
    version = publish(GOOD)
    first = failed(services.request_environment(user=owner, version=version))
    expiry = first.expires_at
    Quota.objects.create(team=team, max_environments=1)
    services.request_environment(user=owner, version=version)  # takes the only slot
    with pytest.raises(ServiceError, match="1 of 1 environments"):
        services.retry_environment(environment=first, user=owner)
    Quota.objects.filter(team=team).update(max_environments=2)
    services.retry_environment(environment=first, user=owner)
    first.refresh_from_db()
    assert first.state == State.APPROVED
    assert first.expires_at == expiry  # a retry is not a new lifetime

    failed(first)
    Environment.objects.filter(pk=first.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    with pytest.raises(ServiceError, match="expired; clone it"):
        services.retry_environment(environment=first, user=owner)


def test_it_rejects_requests_nobody_decided_on(owner, settings):
    settings.PENDING_APPROVAL_DAYS = 7
    environment = services.request_environment(user=owner, version=publish(with_policy("required")))
    Environment.objects.filter(pk=environment.pk).update(
        state_changed_at=timezone.now() - timedelta(days=8)
    )
    reap_expired()
    environment.refresh_from_db()
    assert environment.state == State.REJECTED
    assert "No approver decided within 7 days" in environment.last_error


def test_it_stops_billing_a_failed_environment(owner, rates):
    environment = ready(services.request_environment(user=owner, version=publish(GOOD)))
    failed(environment)
    later = timezone.now() + timedelta(hours=5)
    assert accrue(environment.pk, now=later) == Decimal(0)


# --- one decision for the service, the estimate and the queue (issue 12, items 4-6) ---


def test_it_decides_requests_and_estimates_with_the_same_function(owner, team, rates):
    from environments.governance import quotas

    over_quota = publish(with_policy("over-quota"))
    Quota.objects.create(team=team, monthly_budget=Decimal("0.01"))
    demand = quotas.demand_for(over_quota, 4 * 3600)
    outcome = quotas.decide(team=team, user=owner, version=over_quota, demand=demand)
    # Over budget on an over-quota blueprint goes to approval; it is not refused.
    assert outcome.needs_approval and not outcome.refused
    assert [b.limit for b in outcome.breaches] == ["budget"]
    assert outcome.summary == "Needs approval: over budget."
    environment = services.request_environment(user=owner, version=over_quota)
    assert environment.state == State.PENDING_APPROVAL

    auto = publish(with_policy("auto").replace("name: shop", "name: shop-auto"))
    demand = quotas.demand_for(auto, 4 * 3600)
    outcome = quotas.decide(team=team, user=owner, version=auto, demand=demand)
    assert outcome.refused and outcome.summary == "Would be refused: over budget."
    with pytest.raises(ServiceError) as excinfo:
        services.request_environment(user=owner, version=auto)
    assert str(excinfo.value) == outcome.message  # the very same sentences


def test_it_checks_ttl_cpu_memory_and_environment_count_in_one_outcome(owner, team):
    from environments.governance import quotas

    version = publish(with_policy("auto"))  # 750m CPU, 768Mi memory
    Quota.objects.create(
        team=team,
        max_environments=0,
        max_cpu_millicores=500,
        max_memory_bytes=512 * 1024**2,
        max_ttl=timedelta(hours=2),
    )
    outcome = quotas.decide(
        team=team, user=owner, version=version, demand=quotas.demand_for(version, 4 * 3600)
    )
    assert outcome.refused
    assert [b.limit for b in outcome.breaches] == ["environments", "cpu", "memory", "ttl"]
    assert [b.short for b in outcome.breaches] == [
        "needs 1 more environment; the team has 0 of 0 left",
        "needs 0.75 CPU; the team has 0.5 left",
        "needs 768 MiB memory; the team has 512 MiB left",
        "4h is over the team's 2h maximum time to live",
    ]


def test_it_names_running_approved_and_pending_use_in_quota_refusals(owner, team):
    version = publish(with_policy("auto"))  # 750m CPU each
    Quota.objects.create(team=team, max_cpu_millicores=2000)
    make_environment(owner=owner, team=team, version=version, state=State.READY)
    make_environment(owner=owner, team=team, version=version, state=State.PENDING_APPROVAL)
    with pytest.raises(ServiceError) as excinfo:
        services.request_environment(user=owner, version=version)
    assert str(excinfo.value) == (
        "Team Sales uses 0.75 CPU running, 0.75 approved or pending of 2 CPU; "
        "this Shop for 4h needs 0.75 CPU and 0.5 is left."
    )


def test_it_keeps_the_reason_in_request_and_extension_audit_entries(owner):
    environment = ready(
        services.request_environment(user=owner, version=publish(GOOD), reason="Globex demo")
    )
    services.extend_environment(
        environment=environment, user=owner, seconds=3600, reason="Customer call moved"
    )
    request_entry = AuditEvent.objects.get(action="environment.request")
    assert request_entry.after["reason"] == "Globex demo"
    extend_entry = AuditEvent.objects.get(action="environment.extend")
    assert extend_entry.after["reason"] == "Customer call moved"
    assert extend_entry.after["extended_by_seconds"] == 3600
