"""Roles as groups, and a trigger that makes the audit log append-only in the database."""

from django.db import migrations

ROLES = ("requester", "approver", "admin")


def create_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLES:
        Group.objects.get_or_create(name=name)


APPEND_ONLY = """
CREATE OR REPLACE FUNCTION environments_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER environments_auditevent_append_only
    BEFORE UPDATE OR DELETE ON environments_auditevent
    FOR EACH ROW EXECUTE FUNCTION environments_auditevent_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS environments_auditevent_append_only ON environments_auditevent;
DROP FUNCTION IF EXISTS environments_auditevent_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("environments", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
        migrations.RunSQL(APPEND_ONLY, DROP),
    ]
