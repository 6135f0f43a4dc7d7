"""The audit log is append-only: the ORM, the queryset and the database refuse changes."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError

from environments.governance import audit
from environments.models import AuditEvent


@pytest.fixture
def entry(db, owner):
    return audit.record(actor=owner, action="test.action", object_type="thing", object_id="1")


def test_it_refuses_save_of_an_existing_row(entry):
    entry.action = "rewritten"
    with pytest.raises(PermissionError):
        entry.save()


def test_it_refuses_delete(entry):
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=entry.pk).update(action="x")


def test_it_refuses_raw_sql_updates(entry):
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE environments_auditevent SET action = 'x' WHERE id = %s", [entry.pk])
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM environments_auditevent")
    assert AuditEvent.objects.get(pk=entry.pk).action == "test.action"


def test_it_records_who_and_what(entry, owner):
    assert entry.actor == owner.email
    assert entry.actor_id == owner.pk
