"""The scheduler that several replicas can run at once: each job once per tick.

RQ's cron scheduler (``rq.cron``) keeps its timing in the process: two schedulers
enqueue every job twice, each on its own clock. This one is RQ's scheduler with two
changes, so any number of replicas can run side by side with no leader to elect:

- **Ticks are aligned to the wall clock**: a job every 60 s is due at every minute's
  start (epoch seconds divisible by 60), the same instants in every replica.
- **One job per tick**: the job's id names the tick
  (``cron-<instance>-<job>-<tick's epoch seconds>``), and it is enqueued with RQ's
  ``unique=True``, which checks, saves and pushes in one Lua script. The first replica
  enqueues it; the others get ``DuplicateJobError`` and skip that tick.

When a replica dies (even ``kill -9``) the others still wake at every tick, so nothing
is missed and nothing needs to take over. A job's record outlives its tick (its result
is kept at least one interval), so a replica that starts mid-tick finds the tick taken.

Everything else is RQ's: the CronScheduler registry and heartbeats (health checks and
the RQ dashboard read them), each job's history (``rq:cron_job:<name>:jobs``) and the
config module of ``rq.cron.register`` calls (``environments.cron``).
``CRON_INTERVAL_SCALE`` multiplies every interval (tests use short ticks; 1 otherwise).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django_rq.cron import DjangoCronScheduler
from redis import Redis
from rq import cron_job_registry
from rq.cron import CronJob
from rq.defaults import DEFAULT_CRON_JOB_HISTORY_LIMIT, DEFAULT_CRON_JOB_HISTORY_TTL
from rq.exceptions import DuplicateJobError
from rq.job import Job
from rq.queue import Queue
from rq.utils import now

log = logging.getLogger(__name__)


def tick_start(at: datetime, interval: float) -> datetime:
    """The start of the tick ``at`` falls in: a multiple of ``interval`` since the epoch."""
    seconds = at.timestamp()
    return datetime.fromtimestamp(seconds - seconds % interval, tz=UTC)


def tick_job_id(name: str, tick: datetime) -> str:
    """The job id of ``name``'s run for ``tick``: the same in every replica."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", f"{settings.EPHEMERA_INSTANCE}-{name}")
    return f"cron-{safe}-{int(tick.timestamp())}"


class TickCronJob(CronJob):
    """A cron job that runs once per tick, whichever replica enqueues it."""

    @classmethod
    def adopt(cls, job: CronJob) -> TickCronJob:
        """The same job (as ``rq.cron`` built it from its registration), run per tick."""
        tick_job = cls.__new__(cls)
        tick_job.__dict__.update(job.__dict__)
        if tick_job.interval:
            # The job's record must outlive its tick, or a late replica could take it again.
            result_ttl = tick_job.job_options.get("result_ttl", 0)
            tick_job.job_options["result_ttl"] = max(result_ttl, 2 * tick_job.interval)
        return tick_job

    def current_tick(self) -> datetime:
        if self.interval:
            return tick_start(now(), self.interval)
        # A cron expression's times are the same instants in every replica already.
        assert self.next_enqueue_time is not None
        return self.next_enqueue_time

    def enqueue(self, connection: Redis) -> Job | None:  # type: ignore[override]
        """Enqueue this tick's run unless another replica did; None if it did."""
        if not self.func:
            raise ValueError("this cron job has no function (it was loaded for monitoring)")
        tick = self.current_tick()
        queue = Queue(self.queue_name, connection=connection)
        try:
            job = queue.enqueue(
                self.func,
                *self.args,
                **self.kwargs,
                **self.job_options,
                job_id=tick_job_id(self.name, tick),
                unique=True,  # check, save and push atomically (a Lua script)
            )
        except DuplicateJobError:
            log.debug("%s: tick %s already enqueued by another scheduler", self.name, tick)
            return None
        assert job.enqueued_at is not None
        enqueued = job.enqueued_at.timestamp()
        # RQ's own bookkeeping for the job's history (the dashboard's cron pages).
        with connection.pipeline() as pipeline:
            pipeline.zadd(self.job_history_key, {job.id: enqueued})
            pipeline.zremrangebyrank(self.job_history_key, 0, -(DEFAULT_CRON_JOB_HISTORY_LIMIT + 1))
            pipeline.expire(self.job_history_key, DEFAULT_CRON_JOB_HISTORY_TTL)
            cron_job_registry.add(self.name, pipeline, enqueue_timestamp=enqueued)
            pipeline.execute()
        log.info("Enqueued %s for tick %s to queue %s", self.name, tick, self.queue_name)
        return job

    def get_next_enqueue_time(self) -> datetime:
        if self.interval and self.latest_enqueue_time:
            return tick_start(self.latest_enqueue_time, self.interval) + timedelta(
                seconds=self.interval
            )
        return super().get_next_enqueue_time()


class TickScheduler(DjangoCronScheduler):
    """django-rq's cron scheduler with every job run once per tick across replicas."""

    # The same arguments as RQ's (by keyword, as rq.cron's config loader passes them).
    def register(self, func, queue_name, **options: Any):  # type: ignore[override]
        if options.get("interval"):
            options["interval"] = max(1, round(options["interval"] * settings.CRON_INTERVAL_SCALE))
        job = super().register(func, queue_name, **options)
        tick_job = TickCronJob.adopt(job)
        self._cron_jobs[self._cron_jobs.index(job)] = tick_job
        return tick_job
