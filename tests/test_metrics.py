"""/metrics: Prometheus text format, the numbers moving after a real provision and
teardown on the local cluster, the optional bearer token, and the alert rules in
deploy/chart/files/alerts.yaml naming only metrics that exist."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from environments.lifecycle import services
from environments.lifecycle.states import State
from environments.lifecycle.upkeep import reconcile
from environments.models import Environment
from tests.conftest import ROOT, client_for, wait_for
from tests.test_health import get, web_process  # noqa: F401 (a fixture)

ALERTS = ROOT / "deploy" / "chart" / "files" / "alerts.yaml"


def scrape(client, **headers) -> dict[str, float]:
    """Every sample as 'name{label="value",...}' -> value."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


@pytest.mark.django_db
def test_it_reports_every_family_in_prometheus_text_format(client, env):
    samples = scrape(client)
    assert samples['ephemera_environments{state="ready"}'] == 1
    assert samples['ephemera_environments{state="deleted"}'] == 0
    for name in ("default", "provision", "teardown"):
        assert f'ephemera_queue_jobs{{queue="{name}"}}' in samples
        assert f'ephemera_queue_failed_jobs{{queue="{name}"}}' in samples
    assert 'ephemera_cost_accrued_total{currency="USD"}' in samples
    assert "ephemera_provision_duration_seconds_count" in samples
    assert 'ephemera_provision_duration_seconds_bucket{le="+Inf"}' in samples
    assert "ephemera_teardown_duration_seconds_count" in samples
    assert "ephemera_reconcile_last_success_timestamp_seconds" in samples
    assert "ephemera_billing_vanished_namespaces_total" in samples
    assert "ephemera_worker_last_heartbeat_timestamp_seconds" in samples
    assert "ephemera_scheduler_last_heartbeat_timestamp_seconds" in samples
    assert samples['ephemera_metrics_source_up{source="database"}'] == 1
    assert samples['ephemera_metrics_source_up{source="redis"}'] == 1
    assert 'ephemera_check_ok{check="database"}' in samples


@pytest.mark.django_db
def test_it_counts_request_latency_by_view_method_and_status_class(client, owner):
    key = (
        'ephemera_http_request_duration_seconds_count{method="GET",status="2xx",'
        'view="my_environments"}'
    )
    before = scrape(client).get(key, 0)
    assert client_for(owner).get("/environments/").status_code == 200
    assert scrape(client)[key] == before + 1


@pytest.mark.django_db
def test_it_asks_for_the_bearer_token_when_one_is_set(client, settings):
    settings.METRICS_TOKEN = "metrics-token-for-tests"
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    scrape(client, HTTP_AUTHORIZATION="Bearer metrics-token-for-tests")


@pytest.mark.django_db
def test_it_still_answers_when_redis_is_down_and_says_which_source_failed(client, settings):
    from tests.test_outages import RedisSwitch

    switch = RedisSwitch(settings)
    switch.down()
    try:
        samples = scrape(client)
    finally:
        switch.back()
    assert samples['ephemera_metrics_source_up{source="redis"}'] == 0
    assert samples['ephemera_metrics_source_up{source="database"}'] == 1
    assert samples["ephemera_ready"] == 0
    assert samples['ephemera_check_ok{check="redis"}'] == 0


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_the_numbers_move_after_a_provision_and_a_teardown(client, owner, shop, worker):
    before = scrape(client)
    environment = services.request_environment(user=owner, version=shop)
    try:
        wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.READY, 120)
    except AssertionError:
        environment.refresh_from_db()
        services.delete_environment(environment=environment, user=owner)  # clean up the cluster
        wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.DELETED, 120)
        raise
    after = scrape(client)
    count = "ephemera_provision_duration_seconds_count"
    assert after[count] == before[count] + 1
    assert (
        after["ephemera_provision_duration_seconds_sum"]
        > before["ephemera_provision_duration_seconds_sum"]
    )
    assert after['ephemera_environments{state="ready"}'] == 1
    assert after["ephemera_workers"] >= 1
    assert after["ephemera_worker_last_heartbeat_timestamp_seconds"] > 0

    environment.refresh_from_db()
    services.delete_environment(environment=environment, user=owner)
    wait_for(lambda: Environment.objects.get(pk=environment.pk).state == State.DELETED, 120)
    gone = scrape(client)
    count = "ephemera_teardown_duration_seconds_count"
    assert gone[count] == before[count] + 1
    assert gone['ephemera_environments{state="deleted"}'] == 1


@pytest.mark.cluster
@pytest.mark.django_db
@pytest.mark.usefixtures("on_cluster")
def test_a_reconcile_run_moves_its_timestamp(client):
    before = scrape(client)["ephemera_reconcile_last_success_timestamp_seconds"]
    reconcile()
    assert scrape(client)["ephemera_reconcile_last_success_timestamp_seconds"] > before


# --- The alert rules -------------------------------------------------------------------


def exported_names() -> set[str]:
    """Every sample name /metrics can produce (histograms: _bucket, _count, _sum)."""
    from django.test import Client

    names = set()
    for family in text_string_to_metric_families(Client().get("/metrics").content.decode()):
        names.update(sample.name for sample in family.samples)
    return names


@pytest.mark.django_db
def test_the_alert_rules_are_valid_and_name_only_exported_metrics(env):
    document = yaml.safe_load(ALERTS.read_text())
    assert set(document) == {"groups"}  # a PrometheusRule's spec
    names = exported_names()
    # A histogram with no request yet has no samples: count the family as exported.
    names |= {
        f"ephemera_http_request_duration_seconds{suffix}"
        for suffix in ("_bucket", "_count", "_sum")
    }
    alerts = []
    for group in document["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["runbook"]
            assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s"))
            used = set(re.findall(r"\bephemera_[a-z_]+", rule["expr"]))
            assert used, f"{rule['alert']} names no Ephemera metric"
            assert used <= names, f"{rule['alert']}: {sorted(used - names)} not exported"
            assert rule["expr"].count("(") == rule["expr"].count(")")
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts))
    for needed in (
        "EphemeraEnvironmentStuckProvisioning",
        "EphemeraEnvironmentStuckTearingDown",
        "EphemeraQueueBacklog",
        "EphemeraReconcileStale",
        "EphemeraBillingOnVanishedNamespaces",
        "EphemeraNoWorkerHeartbeat",
        "EphemeraNoSchedulerHeartbeat",
        "EphemeraNotReady",
    ):
        assert needed in alerts


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_gunicorn_workers_add_up_their_request_counts_in_multiprocess_mode(
    web_process,  # noqa: F811 (the fixture imported above)
    tmp_path,
):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    base = web_process(workers=2, threads=1, PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    sent = 0

    def both_workers_answered() -> bool:
        # Sixteen at once, so that both workers get some (a file per worker pid shows it).
        nonlocal sent
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: get(f"{base}/accounts/login/")[0], range(16)))
        assert answers == [200] * 16
        sent += 16
        return len(list(multiproc.glob("histogram_*.db"))) >= 2

    wait_for(both_workers_answered, 120, interval=0.05)
    status, _, body = get(f"{base}/metrics")
    assert status == 200
    counted = {
        sample.labels.get("view"): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "ephemera_http_request_duration_seconds_count"
    }
    assert counted["account_login"] == sent  # every worker's share, added up
