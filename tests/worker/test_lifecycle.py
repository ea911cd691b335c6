"""The job lifecycle task reads its request with the request model: a message that holds one the
API would refuse fails its job, with the model's reason, and runs no batch."""

from __future__ import annotations

from tasks.celery_config import create_celery
from tasks.lifecycle import ARCHIVE_TASK
from tasks.requests import ArchiveRequest
from tasks.runtime import Runtime
from tests.conftest import claim_redis_database
from tests.helpers import make_settings


def test_a_message_with_no_action_fails_its_job_and_runs_no_batch(database_url: str) -> None:
    with claim_redis_database() as url:
        rt = Runtime(make_settings(database_url, url, office_hours=""))
        try:
            job_id, _ = rt.jobs.create("alice", ArchiveRequest(lead_ids=[1]))
            task = create_celery(rt.settings, rt).tasks[ARCHIVE_TASK]
            kwargs = {"job_id": job_id, "lead_ids": [1], "insert_leads": False}
            result = task.apply(kwargs={**kwargs, "update_leads": False}, task_id=job_id)
            record = rt.jobs.get(job_id)
        finally:
            rt.close()

    assert result.get() == {"job_id": job_id, "status": "failed", "error": "ValidationError"}
    assert record is not None and record.status == "failed" and record.attempts is None
    assert record.error is not None and "at least one of" in record.error["detail"]
