"""The schedule, run by `manage.py cron` (environments.lifecycle.scheduler).

Intervals are in seconds and aligned to the clock (every 60 s: at each minute's start).
Every job runs once per tick however many schedulers run; `manage.py rqcron` would
enqueue each job once per scheduler, so use `manage.py cron`.
"""

from rq import cron

from environments import tasks

cron.register(tasks.reap_expired, queue_name="default", interval=60)
cron.register(tasks.warn_expiring, queue_name="default", interval=60)
cron.register(tasks.accrue_cost, queue_name="default", interval=60)
cron.register(tasks.refill_pools, queue_name="default", interval=60)
cron.register(tasks.remind_approvers, queue_name="default", interval=300)
cron.register(tasks.reconcile, queue_name="default", interval=300)
cron.register(tasks.run_schedule, queue_name="default", interval=60)
cron.register(tasks.prune_snapshots, queue_name="default", interval=300)
cron.register(tasks.run_drills, queue_name="default", interval=300)
