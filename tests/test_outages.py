"""PostgreSQL and Redis outages: clear 503s (JSON with Retry-After for the API, a friendly
page for people), requests that committed are kept and started when the queue is back,
and notifications are retried without being sent twice.

The shared test servers are never stopped: PostgreSQL is "down" for a web process of
our own pointed at a closed port; Redis is "down" for this process by pointing its
queues and cache at a closed port, then pointing them back.
"""

from __future__ import annotations

import json
from datetime import timedelta

import django_rq
import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from environments.access import tokens
from environments.integrations import notifications
from environments.lifecycle import queue
from environments.lifecycle.states import State
from environments.lifecycle.upkeep import reconcile
from environments.models import Environment, EnvironmentEvent, Webhook, WebhookDelivery
from tests.conftest import client_for, start_watcher, start_worker, wait_for
from tests.test_health import closed_url, free_port, get, web_process  # noqa: F401 (a fixture)

FORM = {"param_customer": "globex", "param_theme": "dark", "ttl_seconds": 3600}


class RedisSwitch:
    """Points this process's queues and cache at a closed port, and back."""

    def __init__(self, settings):
        self.settings = settings
        self.queues = settings.RQ_QUEUES
        self.caches = settings.CACHES
        self.url = settings.REDIS_URL

    def down(self) -> None:
        closed = closed_url("redis")
        self.settings.RQ_QUEUES = {
            name: {**config, "URL": closed} for name, config in self.queues.items()
        }
        self.settings.CACHES = {"default": {**self.caches["default"], "LOCATION": closed}}
        self.settings.REDIS_URL = closed

    def back(self) -> None:
        self.settings.RQ_QUEUES = self.queues
        self.settings.CACHES = self.caches
        self.settings.REDIS_URL = self.url


@pytest.fixture
def redis_switch(settings):
    switch = RedisSwitch(settings)
    yield switch
    switch.back()


# --- PostgreSQL down ---------------------------------------------------------------------


@pytest.mark.cluster
def test_it_answers_503_json_with_retry_after_from_the_api_while_postgresql_is_down(
    web_process,  # noqa: F811
):
    base = web_process(DATABASE_URL=closed_url("postgresql"))
    status, headers, body = get(
        f"{base}/api/v1/environments", {"Authorization": "Bearer eph_not-checked-db-is-down"}
    )
    assert status == 503, body
    assert headers["Content-Type"].startswith("application/json")
    assert int(headers["Retry-After"]) > 0
    answer = json.loads(body)
    assert answer["detail"].startswith("The portal's database is unavailable right now.")
    assert b"Traceback" not in body and b"s3cret" not in body

    # People get the portal's own page (DEBUG is on in that process: no debug page).
    status, headers, body = get(f"{base}/accounts/login/")
    assert status == 503
    assert headers["Content-Type"].startswith("text/html")
    assert int(headers["Retry-After"]) > 0
    assert b"Back in a moment" in body
    assert b"Traceback" not in body and b"OperationalError" not in body


# --- Redis down ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_answers_503_json_from_the_api_while_redis_is_down_and_creates_nothing(
    owner, shop, redis_switch
):
    # The per-token rate limit is counted in Redis: without it the API does not run
    # unmetered, it answers 503 before anything is created.
    client = Client(raise_request_exception=False)
    token = tokens.create_token(user=owner, name="ci", scope="write", days=1)[1]
    redis_switch.down()
    response = client.post(
        "/api/v1/environments",
        {"blueprint": "shop-demo", "parameters": {"customer": "globex", "theme": "dark"}},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 503
    assert response["Content-Type"].startswith("application/json")
    assert int(response["Retry-After"]) > 0
    assert response.json()["detail"].startswith("The portal's job queue is unavailable")
    assert not Environment.objects.exists()  # an error means nothing was created


@pytest.mark.django_db
def test_it_answers_a_friendly_503_page_for_sign_in_while_redis_is_down(redis_switch):
    client = Client(raise_request_exception=False)
    redis_switch.down()  # sign-in rate limits live in Redis
    response = client.post(reverse("account_login"), {"login": "a@example.com", "password": "x"})
    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert b"Back in a moment" in response.content


@pytest.mark.django_db
def test_it_answers_json_for_an_unexpected_api_error(client, owner, shop, monkeypatch):
    from environments.api import environments as api_environments

    def broken(**kwargs):
        raise RuntimeError("a bug with a secret in it: s3cret")

    monkeypatch.setattr(api_environments.services, "request_environment", broken)
    token = tokens.create_token(user=owner, name="ci", scope="write", days=1)[1]
    response = client.post(
        "/api/v1/environments",
        {"blueprint": "shop-demo"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 500
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {
        "detail": "Something went wrong on our side; it was logged. Try again in a minute."
    }


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("on_cluster")
def test_a_request_made_while_redis_is_down_is_kept_and_starts_when_it_is_back(
    owner, shop, redis_switch, kube_config, tmp_path, processes
):
    redis_switch.down()
    response = client_for(owner).post(reverse("request", args=["shop-demo"]), FORM)
    # Accepted: the row committed, so the request stands (no 500, no duplicate on retry).
    assert response.status_code == 302
    environment = Environment.objects.get(owner=owner)
    assert environment.state == State.APPROVED
    assert EnvironmentEvent.objects.filter(
        environment=environment, message=queue.WAITING_FOR_QUEUE
    ).exists()
    # The person is told it will start when the queue is back.
    redirected = client_for(owner).get(response["Location"])
    assert redirected.status_code == 200
    assert queue.WAITING_FOR_QUEUE in redirected.content.decode()

    redis_switch.back()
    # The reconciler leaves a just-approved environment alone for 30 s (its own request's
    # enqueue may be on its way); this one has been waiting that long.
    Environment.objects.filter(pk=environment.pk).update(
        state_changed_at=timezone.now() - timedelta(seconds=31)
    )
    assert reconcile()["restarted"] == 1
    assert reconcile()["restarted"] == 0  # idempotent: the job is queued once
    assert django_rq.get_queue("provision").count == 1

    processes.append(start_worker(kube_config, tmp_path / "worker.log"))
    processes.append(start_watcher(kube_config, tmp_path / "watcher.log"))
    try:
        wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.READY, 120)
        assert Environment.objects.filter(owner=owner).count() == 1
    finally:
        # Leave the shared cluster as we found it, whatever happened.
        from environments.lifecycle import services

        services.delete_environment(
            environment=Environment.objects.get(pk=environment.pk), user=owner
        )
        wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.DELETED, 120)


@pytest.mark.django_db
def test_a_committed_request_whose_job_cannot_be_queued_is_reported_once(
    owner, shop, settings, django_capture_on_commit_callbacks
):
    # Redis goes away between the rate-limit check and the commit: the request stands.
    from environments.lifecycle import services

    switch = RedisSwitch(settings)
    with django_capture_on_commit_callbacks(execute=True):
        environment = services.request_environment(user=owner, version=shop)
        switch.down()
    try:
        assert queue.deferred(environment.pk)
        assert not queue.deferred(environment.pk)  # told once
    finally:
        switch.back()
    assert Environment.objects.filter(pk=environment.pk, state=State.APPROVED).exists()


# --- Notifications ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_notifications_are_queued_with_retries_and_sent_once_per_key(env, team, settings):
    django_rq.get_queue("default").empty()
    notifications.send_later(notifications.READY, env.pk)  # autocommit: queued at once
    (job,) = django_rq.get_queue("default").get_jobs()
    assert job.func_name == "environments.tasks.deliver_notification"
    assert job.retries_left == len(notifications.DELIVERY_RETRY)
    assert job.retry_intervals == list(notifications.DELIVERY_RETRY)
    event, environment_id, key = job.args
    assert (event, environment_id) == (notifications.READY, str(env.pk)) and key

    Webhook.objects.create(team=team, url="https://hooks.example.com/ephemera")
    mail.outbox.clear()
    assert notifications.deliver(event, environment_id, key) == "emailed 1, 1 webhook(s)"
    # The retry after a failure further on (a database blip) sends nothing twice.
    assert notifications.deliver(event, environment_id, key) == "emailed 0, 0 webhook(s)"
    assert len(mail.outbox) == 1
    assert WebhookDelivery.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_failed_delivery_is_retried_by_rq_until_it_succeeds(env, settings):
    """A real worker runs the job; the first attempt meets an unreachable database."""
    from rq import SimpleWorker

    queue_ = django_rq.get_queue("default")
    queue_.empty()
    notifications.send_later(notifications.READY, env.pk)
    (job,) = queue_.get_jobs()
    mail.outbox.clear()
    # The blip: this process's database connection points at a closed port for a moment.
    from django.db import connections

    database = connections["default"]
    saved = {key: database.settings_dict[key] for key in ("HOST", "PORT")}
    database.close()
    database.settings_dict.update(HOST="127.0.0.1", PORT=str(free_port()))
    try:
        SimpleWorker([queue_], connection=queue_.connection).work(burst=True)
    finally:
        database.close()
        database.settings_dict.update(saved)
    job.refresh()
    assert job.get_status() == "scheduled"  # failed once, retried later (RQ Retry)
    assert job.retries_left == len(notifications.DELIVERY_RETRY) - 1
    assert mail.outbox == []
    # Its time comes: the retry delivers.
    queue_.enqueue_job(job)
    SimpleWorker([queue_], connection=queue_.connection).work(burst=True)
    assert job.get_status(refresh=True) == "finished"
    assert len(mail.outbox) == 1
