"""Old job paths, kept for one release: jobs queued before the upgrade still run.

RQ stores a job's function as a dotted path. Jobs enqueued by the previous release
name ``environments.jobs.provision`` and ``environments.jobs.teardown``; this shim
sends them to the current entry points. Remove it in the release after next. Nothing
in the project imports this module (an import-linter contract enforces that).
"""

from environments.tasks import provision, teardown

__all__ = ["provision", "teardown"]
