"""The real worker process (`leadarchive worker`, prefork) killed in the middle of a job.

The job must be delivered again and end ``succeeded`` within a minute, with every lead either
live or identically archived. A read lock held by the test (as a busy dialer would) pins the
batch at its first delete, after its archive copies are written, so the kill lands mid-batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from sqlalchemy import Connection, Engine

from tasks.celery_config import create_celery
from tasks.jobs import JobStore
from tasks.publishing import publish
from tasks.requests import ArchiveRequest
from tasks.runtime import Runtime
from tasks.seed import insert_leads, lead_rows
from testkit.processes import kill_group, service_env, start_worker
from tests.conftest import claim_redis_database
from tests.helpers import archive, live, make_settings, stored, wait_for

LEADS = 300


@pytest.fixture
def own_redis() -> Iterator[str]:
    # Not the session's database: the in-thread test worker must not take this job.
    with claim_redis_database() as url:
        yield url


@pytest.mark.parametrize("victim", ["pool process", "whole worker"])
def test_a_killed_worker_job_runs_again_and_succeeds_within_a_minute(
    engine: Engine,
    vicidial: Connection,
    database_url: str,
    own_redis: str,
    tmp_path: Path,
    victim: str,
) -> None:
    insert_leads(vicidial, lead_rows(LEADS, seed=21))
    before = live(vicidial)
    settings = make_settings(database_url, own_redis, office_hours="")
    env = service_env(database_url, own_redis)
    rt = Runtime(settings)
    jobs: JobStore = rt.jobs
    request = ArchiveRequest(
        lead_ids=list(range(1, LEADS + 1)),
        insert_leads=True,
        update_leads=True,
        delete_leads=True,
        dry_run=False,
    )
    log_path = tmp_path / "worker.log"
    log = log_path.open("ab")
    workers = [start_worker(env, log)]
    try:
        with engine.connect() as dialer:
            # The "dialer" holds a read lock: the batch copies, then waits to delete.
            dialer.exec_driver_sql("LOCK TABLES vicidial_list READ")
            try:
                job_id, _ = jobs.create("alice", request)
                publish(create_celery(settings), job_id, request)
                # The worker process boots first: a minute on a loaded 2-core machine.
                wait_for(
                    lambda: (stored(jobs.get(job_id)) or {}).get("status") == "running", timeout=60
                )
                wait_for(lambda: len(archive(vicidial)) == LEADS, timeout=60)

                parent = psutil.Process(workers[0].pid)
                if victim == "pool process":
                    children = parent.children()
                    assert len(children) == 1
                    children[0].kill()
                else:
                    kill_group(workers[0])
                    workers.append(start_worker(env, log))
                killed_at = datetime.now(UTC)
            finally:
                dialer.exec_driver_sql("UNLOCK TABLES")

        # The batch's own time on a loaded machine comes on top of the minute: room for it.
        record = wait_for(
            lambda: (
                (r := stored(jobs.get(job_id))) and r["status"] in ("succeeded", "failed") and r
            ),
            timeout=150,
        )
    finally:
        for process in workers:
            kill_group(process)
        rt.close()
        log.close()

    assert record["status"] == "succeeded", log_path.read_text()[-3000:]
    assert int(record["attempts"]) >= 2
    # The promise (DESIGN.md): run again within a minute. The worker stamps each start itself,
    # so this measures the redelivery, not how long the test took to look.
    took = (datetime.fromisoformat(record["started_at"]) - killed_at).total_seconds()
    assert took < 60, f"the job started again {took:.0f}s after the kill"
    # The invariant, checked on the tables: every lead is live or identically archived.
    live_after, archive_after = live(vicidial), archive(vicidial)
    for lead_id, row in before.items():
        assert live_after.get(lead_id) == row or archive_after.get(lead_id) == row
    assert live_after == {}
