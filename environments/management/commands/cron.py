"""`manage.py cron`: the scheduler process (see lifecycle.scheduler).

Run one or several (each host or pod its own): each job runs once per tick whichever
replica enqueues it, and when one dies the others keep every tick. It registers in
RQ's CronScheduler registry and heartbeats there, like `rqcron`. SIGTERM or Ctrl-C
stops it.
"""

from __future__ import annotations

import logging

from django.core.management.base import BaseCommand

from environments.lifecycle.scheduler import TickScheduler


class Command(BaseCommand):
    help = "Enqueue the scheduled jobs (environments.cron), once per tick across replicas."

    def add_arguments(self, parser):
        parser.add_argument(
            "config_path",
            nargs="?",
            default="environments.cron",
            help="module of rq.cron.register calls (default: environments.cron)",
        )
        parser.add_argument(
            "--logging-level",
            "-l",
            choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
            default="INFO",
        )

    def handle(self, *args, **options):
        scheduler = TickScheduler(logging_level=getattr(logging, options["logging_level"]))
        scheduler.load_config_from_file(options["config_path"])
        self.stdout.write(f"Scheduler {scheduler.name}: {len(scheduler.get_jobs())} jobs")
        scheduler.start()
