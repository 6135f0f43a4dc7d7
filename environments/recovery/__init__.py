"""Recovery (issue 15): snapshots, deterministic restore, automatic restore, retention.

``snapshots`` takes and verifies snapshots; ``restore`` creates an environment from one
(a new one, or in place of one whose namespace vanished); ``retention`` prunes per the
blueprint's ``retention``; ``signing`` signs and checks them. See docs/recovery.md.
"""
