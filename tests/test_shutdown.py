"""SIGTERM (Kubernetes stopping a pod): the watcher and an idle RQ worker stop cleanly
and quickly: the watcher gives up the leader lock, the worker deregisters itself."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import django_rq
import pytest
from rq.worker import Worker

from tests.conftest import start_watcher, start_worker, wait_for

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("on_cluster"),
]


def terminate(process: subprocess.Popen) -> tuple[int, float]:
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)
    code = process.wait(timeout=30)
    return code, time.monotonic() - started


def test_the_watcher_stops_on_sigterm_and_a_standby_takes_over(kube_config, tmp_path, processes):
    first = start_watcher(kube_config, tmp_path / "first.log", name="first")
    processes.append(first)
    wait_for(lambda: "leader" in (tmp_path / "first.log").read_text(), 60)
    second = start_watcher(kube_config, tmp_path / "second.log", name="second")
    processes.append(second)
    wait_for(lambda: "standby" in (tmp_path / "second.log").read_text(), 60)

    code, took = terminate(first)
    assert code == 0, (tmp_path / "first.log").read_text()
    assert took < 10
    assert "Traceback" not in (tmp_path / "first.log").read_text()
    # Its lock went with it: the standby leads within seconds.
    wait_for(lambda: "second: leader" in (tmp_path / "second.log").read_text(), 20)


def test_an_idle_worker_stops_on_sigterm_and_deregisters(kube_config, tmp_path, processes):
    connection = django_rq.get_connection("default")
    before = {w.name for w in Worker.all(connection=connection)}
    worker = start_worker(kube_config, tmp_path / "worker.log")
    processes.append(worker)
    wait_for(lambda: {w.name for w in Worker.all(connection=connection)} - before, 60)

    code, took = terminate(worker)
    assert code == 0, (tmp_path / "worker.log").read_text()
    assert took < 15
    assert {w.name for w in Worker.all(connection=connection)} <= before
