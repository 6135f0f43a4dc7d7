"""The schedule, run by `manage.py rqcron environments.cron` (RQ's own cron scheduler)."""

from rq import cron

from environments import tasks

cron.register(tasks.reap_expired, queue_name="default", interval=60)
cron.register(tasks.warn_expiring, queue_name="default", interval=60)
cron.register(tasks.accrue_cost, queue_name="default", interval=60)
cron.register(tasks.remind_approvers, queue_name="default", interval=300)
cron.register(tasks.reconcile, queue_name="default", interval=300)
