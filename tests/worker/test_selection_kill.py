"""A selection job in the real worker process (`leadarchive worker`), the whole worker killed
(SIGKILL of its process group) twice in the middle of a batch: each time a new worker resumes the
job from its checkpoint, and it ends with every selected lead archived byte for byte and gone from
vicidial_list, no lead skipped, every other lead untouched.

A read lock held by the test (as a busy dialer's would be) pins the batch in flight at its first
write to vicidial_list, so each kill lands inside a batch, after the checkpoint of the one before.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine

from tasks.celery_config import create_celery
from tasks.publishing import publish
from tasks.records import JobRecord
from tasks.requests import SelectionRequest
from tasks.runtime import Runtime
from tasks.seed import insert_leads, lead_rows
from testkit.processes import kill_group, service_env, start_worker
from tests.conftest import claim_redis_database
from tests.helpers import archive, live, make_settings, wait_for

LEADS = 4_000
BATCH = 100
OTHER_LIST = 2002  # every fifth lead: not selected
SELECTED = [i for i in range(1, LEADS + 1) if i % 5]
# Short enough that a killed worker's job is taken up again within seconds: the lease and
# kombu's redelivery both wait for the visibility timeout.
TIMINGS = {"visibility_timeout": "8s", "task_time_limit": "4s", "lock_wait_timeout": "4s"}


@pytest.fixture
def own_redis() -> Iterator[str]:
    # Not the session's database: the in-thread test worker must not take this job.
    with claim_redis_database() as url:
        yield url


def test_a_selection_killed_twice_mid_batch_resumes_and_skips_no_lead(
    engine: Engine, vicidial: Connection, database_url: str, own_redis: str, tmp_path: Path
) -> None:
    insert_leads(vicidial, lead_rows(LEADS, list_id=1001, seed=51))
    vicidial.exec_driver_sql(
        f"UPDATE vicidial_list SET list_id = {OTHER_LIST} WHERE MOD(lead_id, 5) = 0"
    )
    vicidial.commit()
    before = live(vicidial)
    overrides = {"max_lead_ids": BATCH, **TIMINGS}
    settings = make_settings(database_url, own_redis, office_hours="", **overrides)
    env = service_env(database_url, own_redis, **overrides)
    rt = Runtime(settings)
    request = SelectionRequest(list_ids=[1001], delete_leads=True)
    log_path = tmp_path / "worker.log"
    log = log_path.open("ab")
    workers = [start_worker(env, log)]

    def record() -> JobRecord:
        found = rt.jobs.get(job_id)
        assert found is not None
        return found

    def done() -> int:
        return int((record().progress or {}).get("done", 0))

    try:
        job_id, _ = rt.jobs.create("alice", request)
        publish(create_celery(settings), job_id, request)
        checkpoints = []
        for stop_at in (LEADS // 5, LEADS // 2):
            # The worker process boots first: up to a minute on a loaded 2-core machine.
            wait_for(lambda s=stop_at: done() >= s, timeout=90)
            with engine.connect() as dialer:
                dialer.exec_driver_sql("LOCK TABLES vicidial_list READ")
                try:
                    time.sleep(0.5)  # the batch in flight reaches its first write and waits
                    pinned = record()
                    assert pinned.status == "running"
                    checkpoints.append(int(pinned.checkpoint["last_lead_id"]))  # type: ignore[index]
                    # Killed inside a batch: it had copied leads past the checkpoint.
                    copied = vicidial.exec_driver_sql(
                        "SELECT MAX(lead_id) FROM vicidial_list_archive"
                    ).scalar()
                    vicidial.commit()
                    assert copied is not None and copied > checkpoints[-1]
                    kill_group(workers[-1])
                finally:
                    dialer.exec_driver_sql("UNLOCK TABLES")
            workers.append(start_worker(env, log))
        final = wait_for(lambda: (r := record()).status in ("succeeded", "failed") and r, 150)
    finally:
        for process in workers:
            kill_group(process)
        rt.close()
        log.close()

    assert final.status == "succeeded", log_path.read_text()[-3000:]
    assert final.attempts is not None and final.attempts >= 3
    assert checkpoints == sorted(checkpoints) and checkpoints[0] > 0
    result = final.result
    assert result is not None
    assert result["selected"] == len(SELECTED) and result["last_lead_id"] == LEADS
    assert (result["left_live"], result["left_live_total"]) == ([], 0)
    # Every selected lead counted once: those a killed batch had deleted from its saved IDs.
    assert result["done"] == len(SELECTED) and "in_flight" not in result
    # No lead skipped: every selected lead archived as it was and gone; the others untouched.
    now_live, archived = live(vicidial), archive(vicidial)
    for lead_id in SELECTED:
        assert lead_id not in now_live and archived[lead_id] == before[lead_id], lead_id
    assert now_live == {i: row for i, row in before.items() if i % 5 == 0}
    assert set(archived) == set(SELECTED)
