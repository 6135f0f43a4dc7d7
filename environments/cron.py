"""The schedule, run by `manage.py rqcron environments.cron` (RQ's own cron scheduler)."""

from rq import cron

from environments import jobs

cron.register(jobs.reap_expired, queue_name="default", interval=60)
cron.register(jobs.warn_expiring, queue_name="default", interval=60)
cron.register(jobs.accrue_cost, queue_name="default", interval=60)
cron.register(jobs.remind_approvers, queue_name="default", interval=300)
cron.register(jobs.reconcile, queue_name="default", interval=300)
