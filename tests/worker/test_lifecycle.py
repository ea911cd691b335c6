"""The job record is the truth: the task runs the request its record holds, and a message that
disagrees with it (widened to other leads, a delete added, or a request the API would refuse) is
refused and logged, runs no batch, and leaves the record alone."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import Connection

from tasks.celery_config import create_celery
from tasks.lifecycle import ARCHIVE_TASK
from tasks.requests import ArchiveRequest
from tasks.runtime import Runtime
from tasks.seed import insert_leads, lead_rows
from tests.conftest import claim_redis_database
from tests.helpers import archive, live, make_settings

SUBMITTED = ArchiveRequest(lead_ids=[1], insert_leads=True, update_leads=True)


@pytest.mark.parametrize(
    "message",
    [
        {"lead_ids": [1, 2, 3]},  # widened to other leads
        {"delete_leads": True},  # a delete the submitter never asked for
        {"insert_leads": False, "update_leads": False},  # no action: the API refuses it
        {"lead_ids": "all"},  # not a request at all
    ],
    ids=["other leads", "delete added", "no action", "malformed"],
)
def test_a_message_that_differs_from_its_record_is_refused_and_runs_nothing(
    database_url: str,
    vicidial: Connection,
    caplog: pytest.LogCaptureFixture,
    message: dict[str, Any],
) -> None:
    insert_leads(vicidial, lead_rows(3, seed=5))
    vicidial.commit()
    before = live(vicidial)
    with claim_redis_database() as url:
        rt = Runtime(make_settings(database_url, url, office_hours=""))
        try:
            job_id, _ = rt.jobs.create("alice", SUBMITTED)
            task = create_celery(rt.settings, rt).tasks[ARCHIVE_TASK]
            kwargs = {"job_id": job_id, **SUBMITTED.payload(), **message}
            with caplog.at_level(logging.ERROR, logger="leadarchive.worker"):
                result = task.apply(kwargs=kwargs, task_id=job_id)
            record = rt.jobs.get(job_id)
        finally:
            rt.close()

    assert result.get() == {"job_id": job_id, "status": "refused"}
    assert record is not None and record.status == "queued" and record.attempts is None
    assert "differs from its job record" in caplog.text
    assert (live(vicidial), archive(vicidial)) == (before, {})


def test_the_message_the_service_sends_runs_the_records_request(
    database_url: str, vicidial: Connection
) -> None:
    insert_leads(vicidial, lead_rows(3, seed=5))
    vicidial.commit()
    with claim_redis_database() as url:
        rt = Runtime(make_settings(database_url, url, office_hours=""))
        try:
            job_id, _ = rt.jobs.create("alice", SUBMITTED)
            task = create_celery(rt.settings, rt).tasks[ARCHIVE_TASK]
            result = task.apply(kwargs={"job_id": job_id, **SUBMITTED.payload()}, task_id=job_id)
            record = rt.jobs.get(job_id)
        finally:
            rt.close()

    assert result.get()["status"] == "succeeded"
    assert record is not None and (record.status, record.attempts) == ("succeeded", 1)
    assert set(archive(vicidial)) == {1}  # lead 1 only, as the record says
    assert set(live(vicidial)) == {1, 2, 3}  # no delete was asked for
