"""The restore task (``tasks.lifecycle.restore_leads``) follows the archive task's lifecycle: the
record is the truth (a message of the other kind, or one that differs, is refused and runs
nothing), a finished job is never run again, and a user without the restore's grants fails the job
once with a clear error, having changed nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection

from tasks.archive import Actions, run_batch
from tasks.celery_config import create_celery
from tasks.lifecycle import ARCHIVE_TASK, RESTORE_TASK
from tasks.requests import ArchiveRequest, RestoreRequest
from tasks.runtime import Runtime
from tasks.seed import insert_leads, lead_rows
from tests.conftest import claim_redis_database
from tests.helpers import admin_log_rows, archive, live, make_settings, mysql_user

RESTORE = RestoreRequest(lead_ids=[1])
ARCHIVE = ArchiveRequest(lead_ids=[1], delete_leads=True)


def archived_lead_1(vicidial: Connection) -> None:
    insert_leads(vicidial, lead_rows(3, seed=5))
    run_batch(vicidial, [1], Actions(insert=True, update=True, delete=True))


def run_task(
    database_url: str, record: Any, task_name: str, payload: dict[str, Any]
) -> tuple[dict[str, Any], Any]:
    with claim_redis_database() as url:
        rt = Runtime(make_settings(database_url, url, office_hours=""))
        try:
            job_id, _ = rt.jobs.create("alice", record)
            task = create_celery(rt.settings, rt).tasks[task_name]
            result = task.apply(kwargs={"job_id": job_id, **payload}, task_id=job_id).get()
            again = task.apply(kwargs={"job_id": job_id, **payload}, task_id=job_id).get()
            stored = rt.jobs.get(job_id)
        finally:
            rt.close()
    # Delivered again: a finished job is not run again, a refused message is refused again.
    assert again["status"] == result["status"], again
    return result, stored


@pytest.mark.parametrize(
    ("record", "task_name", "payload"),
    [
        (RESTORE, ARCHIVE_TASK, RESTORE.payload()),  # a restore record, the archive task
        (ARCHIVE, RESTORE_TASK, RESTORE.payload()),  # an archive record, the restore task
        (RESTORE, RESTORE_TASK, {"lead_ids": [1, 2], "dry_run": False}),  # widened
        (RESTORE, RESTORE_TASK, {"lead_ids": [1], "dry_run": False, "delete_leads": True}),
    ],
    ids=["restore record to archive task", "archive record to restore task", "widened", "extra"],
)
def test_a_message_that_differs_from_its_record_is_refused(
    database_url: str, vicidial: Connection, record: Any, task_name: str, payload: dict[str, Any]
) -> None:
    archived_lead_1(vicidial)
    before = (live(vicidial), archive(vicidial))
    result, stored = run_task(database_url, record, task_name, payload)
    assert result["status"] == "refused"
    assert stored.status == "queued" and stored.attempts is None
    assert (live(vicidial), archive(vicidial)) == before


def test_the_restore_task_runs_its_record_once(database_url: str, vicidial: Connection) -> None:
    archived_lead_1(vicidial)
    copy = archive(vicidial)[1]
    result, stored = run_task(database_url, RESTORE, RESTORE_TASK, RESTORE.payload())
    assert result["status"] == "succeeded"
    assert result["counts"] == {"restore": {"restored": 1, "already_live": 0, "not_archived": 0}}
    assert (stored.status, stored.attempts) == ("succeeded", 1)
    assert stored.view()["request"] == {"kind": "restore", "dry_run": False, "lead_count": 1}
    assert live(vicidial)[1] == copy and archive(vicidial) == {}
    assert [r["event_code"] for r in admin_log_rows(vicidial)] == ["LEAD DEARCHIVE API"]


def test_without_the_grants_the_job_fails_clearly_and_nothing_changes(
    database_url: str, vicidial: Connection
) -> None:
    archived_lead_1(vicidial)
    before = (live(vicidial), archive(vicidial))
    grants = (
        "SELECT, LOCK TABLES, CREATE TEMPORARY TABLES ON `{db}`.*",
        "DELETE ON `{db}`.`vicidial_list`",
        "INSERT, UPDATE ON `{db}`.`vicidial_list_archive`",
        "INSERT ON `{db}`.`vicidial_admin_log`",
    )
    with mysql_user(vicidial, database_url, *grants) as engine:
        url = engine.url.render_as_string(hide_password=False)
        result, stored = run_task(url, RESTORE, RESTORE_TASK, RESTORE.payload())
    assert result == {"job_id": stored.job_id, "status": "failed", "error": "RestoreGrantError"}
    assert stored.status == "failed"
    assert "INSERT on vicidial_list and DELETE on vicidial_list_archive" in stored.error["detail"]
    assert (live(vicidial), archive(vicidial)) == before
    notes = [r["event_notes"] for r in admin_log_rows(vicidial)]
    assert len(notes) == 1 and "status=failed error=RestoreGrantError" in notes[0]
