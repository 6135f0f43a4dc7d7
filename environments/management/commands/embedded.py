"""manage.py embedded status|stop|url : the embedded PostgreSQL and Redis."""

from django.conf import settings
from django.core.management.base import BaseCommand

from portal import embedded


class Command(BaseCommand):
    help = "Show or stop the embedded PostgreSQL and Redis (used when DATABASE_URL/REDIS_URL are unset)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "stop"])

    def handle(self, *args, action, **options):
        if action == "stop":
            stopped = embedded.stop(settings.DATA_DIR)
            self.stdout.write("stopped: " + (", ".join(stopped) or "nothing was running"))
        else:
            self.stdout.write(f"data folder: {settings.DATA_DIR}")
            self.stdout.write(
                f"database: {settings.DATABASES['default']['NAME']} "
                f"on {settings.DATABASES['default']['HOST'] or 'localhost'}"
            )
            self.stdout.write(f"redis: {settings.REDIS_URL}")
