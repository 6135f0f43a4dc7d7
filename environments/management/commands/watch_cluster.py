"""`manage.py watch_cluster`: the cluster watcher process (see lifecycle.watcher).

Run one or several (each host or pod its own); one leads and acts, the others keep
their view warm and take over within seconds when it goes. SIGTERM or Ctrl-C stops it.
"""

from __future__ import annotations

import logging
import signal
import threading

from django.core.management.base import BaseCommand

from environments.lifecycle import watcher


class Command(BaseCommand):
    help = "Watch the cluster and turn every change into environment state."

    def add_arguments(self, parser):
        parser.add_argument("--id", default=None, help="this watcher's name (default host:pid)")

    def handle(self, *args, **options):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        stop = threading.Event()

        def on_signal(signum, frame):
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        watcher.run(stop, options["id"])
