"""The audit log refuses TRUNCATE too, not only UPDATE and DELETE.

A statement-level trigger with the same function as 0002's row trigger. Like any
trigger it does not fire in ``session_replication_role = replica``, which only a
superuser may set (the test suite's flush uses it: tests/conftest.py).
"""

from django.db import migrations

BLOCK_TRUNCATE = """
CREATE TRIGGER environments_auditevent_no_truncate
    BEFORE TRUNCATE ON environments_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION environments_auditevent_append_only();
"""
ALLOW_TRUNCATE = """
DROP TRIGGER IF EXISTS environments_auditevent_no_truncate ON environments_auditevent;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("environments", "0010_invitations_and_profiles"),
    ]

    operations = [
        migrations.RunSQL(BLOCK_TRUNCATE, ALLOW_TRUNCATE),
    ]
