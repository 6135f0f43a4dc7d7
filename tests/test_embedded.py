"""The embedded PostgreSQL and Redis are real servers whose data survives restarts."""

from __future__ import annotations

import psycopg
import redis

from portal import embedded


def test_it_keeps_redis_data_across_a_restart(tmp_path):
    url = embedded.redis_url(tmp_path)
    client = redis.Redis.from_url(url)
    client.set("ephemera-test", "kept")
    assert embedded.stop(tmp_path) == ["redis"]

    url_again = embedded.redis_url(tmp_path)
    assert url_again == url
    assert redis.Redis.from_url(url_again).get("ephemera-test") == b"kept"
    embedded.stop(tmp_path)


def test_it_keeps_postgres_data_across_a_restart(tmp_path):
    url = embedded.postgres_url(tmp_path)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (value text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
        version = conn.execute("SHOW server_version_num").fetchone()[0]
    assert int(version) >= 180000
    assert "postgres" in embedded.stop(tmp_path)

    with psycopg.connect(embedded.postgres_url(tmp_path)) as conn:
        assert conn.execute("SELECT value FROM kept").fetchone() == ("still here",)
    embedded.stop(tmp_path)


def test_it_starts_one_server_when_asked_twice(tmp_path):
    first = embedded.redis_url(tmp_path)
    second = embedded.redis_url(tmp_path)
    assert first == second
    pid_file = tmp_path / "redis" / "redis.pid"
    assert pid_file.read_text().strip().isdigit()
    embedded.stop(tmp_path)
