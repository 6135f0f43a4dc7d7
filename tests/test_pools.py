"""Warm pools (issue 16): the `pool:` field, claims that take a ready environment at
once (and never one for two people), refills, quotas, and pooled environments that
nobody sees before they are claimed."""

from __future__ import annotations

import threading
from datetime import timedelta

import django_rq
import kubernetes
import pytest
from django.db import connection
from django.utils import timezone

from environments.access import tokens
from environments.catalog.publishing import publish_blueprint
from environments.catalog.spec import BlueprintInvalid, load_blueprint
from environments.governance import quotas
from environments.lib.errors import ServiceError
from environments.lifecycle import pools, services
from environments.lifecycle.states import State
from environments.models import AuditEvent, Environment, Membership, Quota, Team
from tests.conftest import client_for, make_user, wait_for
from tests.factories import make_environment

POOLED = """
name: pooled-lab
title: Pooled lab
purpose: training
ttl: {default: 1h, max: 4h}
approval: auto
parameters:
  - {name: level, type: choice, choices: [basic, advanced], default: basic}
components:
  - name: web
    image: nginxinc/nginx-unprivileged:1.27-alpine
    port: 8080
    resources: {cpu: 50m, memory: 32Mi}
pool: {size: SIZE}
"""


def pooled_blueprint(size: int = 2, name: str = "pooled-lab"):
    source = POOLED.replace("SIZE", str(size)).replace("pooled-lab", name)
    return publish_blueprint(source=source)[0]


def _errors(text: str) -> list[str]:
    with pytest.raises(BlueprintInvalid) as caught:
        load_blueprint(text)
    return [f"{path}: {reason}" for path, reason in caught.value.errors]


def test_it_reads_and_validates_the_pool_field():
    spec = load_blueprint(POOLED.replace("SIZE", "3"))
    assert spec.pool is not None and spec.pool.size == 3
    # A blueprint without a pool keeps its stored form (and digest) unchanged.
    assert "pool" not in load_blueprint(POOLED.replace("pool: {size: SIZE}\n", "")).to_dict()
    assert _errors(POOLED.replace("SIZE", "0")) == [
        "pool.size: 0 is not a whole number from 1 to 20"
    ]
    assert _errors(POOLED.replace("SIZE", "'many'")) == [
        "pool.size: 'many' is not a whole number from 1 to 20"
    ]
    assert _errors(POOLED.replace("{size: SIZE}", "{size: 2, warm: yes}")) == [
        "pool.warm: unknown field"
    ]
    assert _errors(POOLED.replace("{size: SIZE}", "3")) == [
        "pool: must be a mapping like {size: 3}, got int"
    ]
    assert _errors(POOLED.replace("SIZE", "2").replace("approval: auto", "approval: required")) == [
        "pool: a blueprint whose every request needs approval cannot keep a warm pool"
    ]
    no_default = POOLED.replace("SIZE", "2").replace(
        "  - {name: level, type: choice, choices: [basic, advanced], default: basic}",
        "  - {name: level, type: string}",
    )
    assert _errors(no_default) == [
        "pool: parameter 'level' has no default; a pool starts its environments with the defaults"
    ]


@pytest.fixture
def pool_version(db, team):
    version = pooled_blueprint(size=2)
    pools.set_pool_team(blueprint=version.blueprint, team=team, actor=None)
    return version


def pooled(version, team, *, state=State.READY, count=1):
    account = pools.pool_account()
    return [
        make_environment(
            owner=account,
            team=team,
            version=version,
            state=state,
            pooled=True,
            ready_at=timezone.now() - timedelta(minutes=5),
            expires_at=timezone.now() + timedelta(hours=4),
        )
        for _ in range(count)
    ]


@pytest.mark.django_db
def test_it_hides_unclaimed_pooled_environments_from_everyone(
    pool_version, team, owner, portal_admin
):
    (waiting,) = pooled(pool_version, team)
    theirs = make_environment(owner=owner, team=team, version=pool_version)
    for user in (owner, portal_admin):
        for url in ("/environments/", "/environments/team/", "/admin-portal/environments/"):
            page = client_for(user).get(url)
            if page.status_code == 200:
                assert waiting.name not in page.content.decode()
        assert client_for(user).get(waiting.get_absolute_url()).status_code == 404
        assert not Environment.objects.visible_to(user).filter(pk=waiting.pk).exists()
    assert theirs.name in client_for(owner).get("/environments/").content.decode()
    # The API: a personal token and the paying team's own token see nothing of it.
    for token in (
        tokens.create_token(user=owner, name="me", scope="write", days=1)[1],
        tokens.create_token(user=owner, name="ci", scope="write", days=1, team=team)[1],
    ):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        client = client_for(owner)
        listed = client.get("/api/v1/environments", {"scope": "team"}, **headers).json()
        assert [row["name"] for row in listed] == [theirs.name]
        assert client.get(f"/api/v1/environments/{waiting.name}", **headers).status_code == 404
        assert client.delete(f"/api/v1/environments/{waiting.pk}", **headers).status_code == 404
    # Operators see the pool's size in the metrics, without anybody's name.
    metrics = client_for(owner).get("/metrics").content.decode()
    assert 'ephemera_pool_environments{blueprint="pooled-lab",state="ready"} 1.0' in metrics
    # The pools' account is no person: not on the People page.
    people = client_for(portal_admin).get("/admin-portal/people/")
    assert people.status_code == 200 and pools.POOL_USERNAME not in people.content.decode()
    # The admins' blueprint page shows the pool: its size, how many are ready, its cost.
    page = client_for(portal_admin).get("/admin-portal/blueprints/").content.decode()
    assert 'id="pool-pooled-lab"' in page and "Sales" in page


@pytest.mark.django_db
def test_it_claims_a_ready_pooled_environment_for_a_matching_request(
    pool_version, team, owner, django_capture_on_commit_callbacks
):
    (waiting,) = pooled(pool_version, team)
    waiting_since = waiting.created_at
    page = client_for(owner).get("/blueprints/pooled-lab/request/").content.decode()
    assert "1 waiting in the warm pool" in page
    with django_capture_on_commit_callbacks(execute=True):
        claimed = services.request_environment(
            user=owner, version=pool_version, ttl_seconds=1800, reason="workshop"
        )
    assert claimed.pk == waiting.pk and claimed.from_pool
    assert claimed.state == State.READY and not claimed.pooled
    assert claimed.owner == owner and claimed.team == team
    assert claimed.created_at > waiting_since
    assert abs((claimed.expires_at - timezone.now()) - timedelta(seconds=1800)) < timedelta(
        seconds=30
    )
    entry = AuditEvent.objects.get(action="environment.request", object_id=str(claimed.pk))
    assert entry.actor == owner.email and entry.after["from_pool"] is True
    assert claimed.events.filter(message__startswith="Taken from the warm pool").exists()
    # The pool refilled on commit: two new ones start (size 2, none left unclaimed).
    refilled = Environment.objects.filter(pooled=True, state=State.APPROVED)
    assert refilled.count() == 2
    assert {e.team_id for e in refilled} == {team.pk}
    # Other parameters are not the pool's: a normal request.
    other = services.request_environment(
        user=owner, version=pool_version, parameters={"level": "advanced"}
    )
    assert not getattr(other, "from_pool", False) and other.state == State.APPROVED


@pytest.mark.django_db
def test_a_claim_respects_the_claimers_quota_and_moves_it(pool_version, team, other_team):
    (waiting,) = pooled(pool_version, team)
    claimer = make_user("claimer@example.com")
    Membership.objects.create(team=other_team, user=claimer)
    # The pooled environment counts against the paying team, not the claimer's.
    assert quotas.usage(team=team).environments == 1
    assert quotas.usage(team=other_team).environments == 0
    Quota.objects.create(user=claimer, max_environments=0)
    with pytest.raises(ServiceError, match="0 of 0 environments"):
        services.request_environment(user=claimer, version=pool_version)
    waiting.refresh_from_db()
    assert waiting.pooled and waiting.owner_id != claimer.pk
    Quota.objects.filter(user=claimer).update(max_environments=1)
    claimed = services.request_environment(user=claimer, version=pool_version)
    assert claimed.pk == waiting.pk
    assert quotas.usage(team=team).environments == 0
    assert quotas.usage(team=other_team).environments == 1
    assert quotas.usage(user=claimer).environments == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_never_hand_one_environment_to_two_people(team):
    version = pooled_blueprint(size=3)
    pools.set_pool_team(blueprint=version.blueprint, team=team, actor=None)
    waiting = {e.pk for e in pooled(version, team, count=3)}
    people = []
    for n in range(8):
        person = make_user(f"claimer{n}@example.com")
        # Each in a team of their own: the quota decision's row locks (team, person) do
        # not serialise them, so only the claim's guarded UPDATE keeps them apart.
        own = Team.objects.create(name=f"Team {n}", slug=f"team-{n}")
        Membership.objects.create(team=own, user=person)
        people.append(person)
    start = threading.Barrier(len(people))
    got: dict[int, object] = {}
    failures: list[BaseException] = []

    def claim(person):
        try:
            start.wait()
            environment = services.request_environment(user=person, version=version)
            got[person.pk] = environment.pk if getattr(environment, "from_pool", False) else None
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(p,)) for p in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    claimed = [pk for pk in got.values() if pk is not None]
    assert len(claimed) == 3 and set(claimed) == waiting  # each one once, none twice
    for person_pk, pk in got.items():
        if pk is not None:
            assert Environment.objects.get(pk=pk).owner_id == person_pk
    # The others were ordinary requests, and the pool is refilling.
    assert Environment.objects.filter(pooled=False, state=State.APPROVED).count() == 5
    assert Environment.objects.filter(pooled=True, state=State.APPROVED).count() == 3
    for name in ("default", "provision", "teardown"):
        django_rq.get_queue(name).empty()


@pytest.mark.django_db
def test_the_pool_drains_what_no_longer_belongs_and_only_admins_choose_the_payer(
    pool_version, team, owner, portal_admin, django_capture_on_commit_callbacks
):
    old = pooled(pool_version, team, count=1)
    failed = pooled(pool_version, team, state=State.FAILED)
    with django_capture_on_commit_callbacks(execute=True):
        assert pools.refill(pool_version.blueprint_id) == 1  # the failed one is replaced
    assert Environment.objects.get(pk=failed[0].pk).state == State.TEARING_DOWN
    response = client_for(owner).post("/admin-portal/blueprints/pooled-lab/pool/", {"team": ""})
    assert response.status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(portal_admin).post(
            "/admin-portal/blueprints/pooled-lab/pool/", {"team": ""}
        )
    assert response.status_code == 302
    assert not Environment.objects.filter(pooled=True, state__in=[State.READY, State.APPROVED])
    assert {Environment.objects.get(pk=e.pk).state for e in old} == {State.TEARING_DOWN}
    entry = AuditEvent.objects.get(action="blueprint.pool_team", actor=portal_admin.email)
    assert entry.before == {"pool_team": "Sales"} and entry.after == {"pool_team": None}
    for name in ("default", "provision", "teardown"):
        django_rq.get_queue(name).empty()


CLUSTER_POOL = """
name: pool-on-cluster
title: Pool on the cluster
purpose: training
ttl: {default: 1h, max: 4h}
approval: auto
components:
  - name: app
    image: ghcr.io/stefanprodan/podinfo:6.7.1
    resources: {cpu: 10m, memory: 16Mi}
pool: {size: 2}
"""


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_it_fills_the_pool_on_the_cluster_and_a_request_takes_a_ready_one_at_once(
    worker, team, owner, kube_client
):
    """Real worker and watcher processes fill the pool; the request answers ready at
    once, and the pool is full and ready again afterwards."""
    version = publish_blueprint(source=CLUSTER_POOL)[0]
    pools.set_pool_team(blueprint=version.blueprint, team=team, actor=None)
    assert pools.refill(version.blueprint_id) == 0  # set_pool_team's refill started both

    def ready_in_pool():
        return Environment.objects.filter(
            pooled=True, blueprint_version=version, state=State.READY
        ).count()

    wait_for(lambda: ready_in_pool() == 2, timeout=180)
    first = Environment.objects.filter(pooled=True, state=State.READY).order_by("ready_at")[0]
    claimed = services.request_environment(user=owner, version=version)
    assert claimed.from_pool and claimed.pk == first.pk
    assert claimed.state == State.READY and claimed.owner == owner
    namespace = kubernetes.client.CoreV1Api(kube_client).read_namespace(claimed.namespace)
    assert namespace.status.phase == "Active"
    # The refill (on the claim's commit) starts a third; the worker and watcher make it ready.
    wait_for(lambda: ready_in_pool() == 2, timeout=180)
    assert Environment.objects.filter(blueprint_version=version).count() == 3
    # Stop the pool: its environments drain; delete the claimed one; all gone.
    pools.set_pool_team(blueprint=version.blueprint, team=None, actor=None)
    services.delete_environment(environment=claimed, user=owner)
    wait_for(
        lambda: (
            not Environment.objects.filter(blueprint_version=version)
            .exclude(state=State.DELETED)
            .exists()
        ),
        timeout=180,
    )


@pytest.mark.django_db
def test_a_claim_within_the_paying_team_does_not_count_the_environment_twice(
    pool_version, team, owner
):
    """The pooled environment already counts against the team that pays; a teammate who
    takes it keeps the team's count where it was, so a full team can still claim."""
    waiting = pooled(pool_version, team, count=2)
    Quota.objects.create(team=team, max_environments=2)
    claimed = services.request_environment(user=owner, version=pool_version)
    assert claimed.from_pool and claimed.pk in {e.pk for e in waiting}
    assert quotas.usage(team=team).environments == 2
    # Other parameters need a new environment: over the team's limit, refused in numbers.
    with pytest.raises(ServiceError, match="already has 2 of 2 environments"):
        services.request_environment(
            user=owner, version=pool_version, parameters={"level": "advanced"}
        )
