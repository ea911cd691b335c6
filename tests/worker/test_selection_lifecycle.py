"""The selection task (``tasks.lifecycle.archive_selection``) run in this process as a worker runs
it, on the real Redis and MariaDB: paused when office hours begin and resumed when they end (a
clock the test sets), given back with a new message when its share of the time limit is used,
cancelled while it waits; its record's progress and checkpoint along the way."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from celery import Celery
from fastapi.testclient import TestClient
from sqlalchemy import Connection

from api.app import create_app
from tasks.celery_config import QUEUE, create_celery
from tasks.lifecycle import SELECTION_TASK
from tasks.requests import SelectionRequest
from tasks.runtime import Runtime
from tasks.sweeps import release_due_jobs
from tests.conftest import claim_redis_database
from tests.helpers import ALICE, admin_log_rows, archive, live, make_settings
from tests.tasks import test_selection_job as walk
from tests.tasks.test_selection_job import HELD, MISMATCH, SELECTED, fill

BATCH = 7
FRIDAY_NIGHT = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)  # 22:00 in New York: archiving allowed
MONDAY_MORNING = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 10:00 in New York: office hours
MONDAY_EVENING = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # 18:00 in New York: they end


@dataclass
class Clock:
    """Reads ``readings`` one after the other, then the last one for ever."""

    readings: list[datetime]
    calls: int = 0

    def __call__(self) -> datetime:
        value = self.readings[min(self.calls, len(self.readings) - 1)]
        self.calls += 1
        return value

    def set(self, *readings: datetime) -> None:
        self.readings, self.calls = list(readings), 0


@dataclass
class Job:
    rt: Runtime
    app: Celery
    broker: redis.Redis
    job_id: str
    request: SelectionRequest

    def deliver(self) -> dict[str, Any]:
        """One delivery of the job's message, as a worker would run it."""
        task = self.app.tasks[SELECTION_TASK]
        kwargs = {"job_id": self.job_id, **self.request.payload()}
        result: dict[str, Any] = task.apply(kwargs=kwargs, task_id=self.job_id).get()
        return result

    def view(self) -> dict[str, Any]:
        record = self.rt.jobs.get(self.job_id)
        assert record is not None
        return record.view()


@pytest.fixture
def clock() -> Clock:
    return Clock([FRIDAY_NIGHT])


@pytest.fixture
def job(
    database_url: str, vicidial: Connection, clock: Clock, request: pytest.FixtureRequest
) -> Iterator[Job]:
    """A selection job of ``tests.tasks.test_selection_job``'s request over its leads, in a Redis
    database of its own (no worker takes its messages), run in batches of BATCH."""
    fill(vicidial)
    overrides = getattr(request, "param", {})
    with claim_redis_database() as url:
        settings = make_settings(database_url, url, max_lead_ids=BATCH, **overrides)
        rt = Runtime(settings, clock=clock)
        broker = redis.Redis.from_url(url)
        try:
            selection = walk.request()
            job_id, _ = rt.jobs.create("alice", selection)
            yield Job(rt, create_celery(settings, rt), broker, job_id, selection)
        finally:
            broker.close()
            rt.close()


def test_office_hours_pause_the_selection_and_their_end_resumes_it(
    job: Job, vicidial: Connection, clock: Clock
) -> None:
    before = live(vicidial)
    # The run's first reading (outside), then one before each batch: three batches run, and
    # office hours have begun before the fourth.
    clock.set(FRIDAY_NIGHT, FRIDAY_NIGHT, FRIDAY_NIGHT, FRIDAY_NIGHT, MONDAY_MORNING)

    paused = job.deliver()

    assert paused == {
        "job_id": job.job_id,
        "status": "deferred",
        "not_before": _iso(MONDAY_EVENING),
    }
    view = job.view()
    assert view["status"] == "deferred" and view["not_before"] == _iso(MONDAY_EVENING)
    assert view["progress"] == {"selected": len(SELECTED), "done": 3 * BATCH}
    walked = SELECTED[: 3 * BATCH]
    assert_moved(vicidial, before, walked)
    now_live = live(vicidial)
    assert all(now_live[i] == before[i] for i in SELECTED[3 * BATCH :])
    # A message delivered again while it waits changes nothing.
    assert job.deliver()["status"] == "deferred"
    assert job.view() == view

    clock.set(MONDAY_EVENING)
    assert release_due_jobs(job.app) == [job.job_id]
    assert job.broker.llen(QUEUE) == 1  # its message, sent again
    resumed = job.deliver()

    assert resumed["status"] == "succeeded", resumed
    view = job.view()
    assert view["attempts"] == 2
    result = view["result"]
    assert result["done"] == result["selected"] == len(SELECTED)
    assert result["counts"]["delete"]["deleted"] == len(SELECTED) - 2
    assert {lead["lead_id"] for lead in result["left_live"]} == {MISMATCH, HELD}
    assert_moved(vicidial, before, SELECTED)


@pytest.mark.parametrize("job", [{"task_time_limit": timedelta(milliseconds=20)}], indirect=True)
def test_a_run_that_used_its_share_of_the_time_limit_continues_in_a_new_message(
    job: Job, vicidial: Connection
) -> None:
    before = live(vicidial)
    runs, checkpoints = [], []
    while True:
        runs.append(job.deliver())
        view = job.view()
        if runs[-1]["status"] != "queued":
            break
        # Given back between two batches: queued, its checkpoint saved, a new message sent.
        assert view["status"] == "queued"
        checkpoints.append(view["progress"]["done"])
        assert job.broker.llen(QUEUE) == len(checkpoints)

    assert runs[-1]["status"] == "succeeded", runs[-1]
    assert len(runs) > 2
    # Every run moved the job on, and no lead was walked twice or skipped.
    assert checkpoints == sorted(set(checkpoints)) and checkpoints[0] > 0
    assert view["attempts"] == len(runs)
    assert view["result"]["done"] == len(SELECTED)
    assert_moved(vicidial, before, SELECTED)
    now_live = live(vicidial)
    assert now_live[MISMATCH] == before[MISMATCH] and now_live[HELD] == before[HELD]


# A replica that cannot be reached: its lag is unknown, which counts as lagging.
UNREACHABLE_REPLICA = {
    "task_time_limit": timedelta(milliseconds=20),
    "replica_urls": "mysql+pymysql://leadarchive@127.0.0.1:1/asterisk",
    "max_replica_lag": "5s",
}


@pytest.mark.parametrize("job", [UNREACHABLE_REPLICA], indirect=True)
def test_a_throttled_selection_waits_saying_why_and_gives_its_run_back_in_time(
    job: Job, vicidial: Connection
) -> None:
    before = (live(vicidial), archive(vicidial))

    waited = job.deliver()

    # Held by the throttle past its share of the time limit: given back, not run into the
    # limit, with the reason in its progress and no batch run.
    assert waited == {"job_id": job.job_id, "status": "queued"}
    view = job.view()
    assert view["status"] == "queued" and job.broker.llen(QUEUE) == 1
    progress = view["progress"]
    assert progress["done"] == 0 and progress["selected"] == len(SELECTED)
    assert "127.0.0.1:1" in progress["waiting"] and "lag is unknown" in progress["waiting"]
    assert (live(vicidial), archive(vicidial)) == before


def test_a_selection_paused_by_office_hours_can_be_cancelled_with_what_it_did(
    job: Job, vicidial: Connection, clock: Clock
) -> None:
    clock.set(FRIDAY_NIGHT, FRIDAY_NIGHT, FRIDAY_NIGHT, MONDAY_MORNING)
    assert job.deliver()["status"] == "deferred"
    after_pause = (live(vicidial), archive(vicidial))

    # It has run, yet a selection stops between batches: cancelled at once, not refused.
    client = TestClient(create_app(job.rt.settings, runtime=job.rt, celery=job.app))
    answer = client.delete(f"/vicidial/leads/archive/{job.job_id}", headers=ALICE)

    assert answer.status_code == 200, answer.text
    view = job.view()
    assert answer.json() == view and view["status"] == "cancelled"
    assert view["result"]["done"] == 2 * BATCH == view["progress"]["done"]
    assert view["result"]["last_lead_id"] == SELECTED[2 * BATCH - 1]
    clock.set(MONDAY_EVENING)
    assert release_due_jobs(job.app) == []
    assert job.deliver()["status"] == "cancelled"
    assert (live(vicidial), archive(vicidial)) == after_pause
    # No run ended it: the API wrote its admin-log row, with what its run did.
    (row,) = admin_log_rows(vicidial)
    assert row["record_id"] == job.job_id
    assert f"leads={2 * BATCH} actions=insert,delete status=cancelled" in row["event_notes"]
    assert f"deleted={2 * BATCH - 2} " in row["event_notes"]  # MISMATCH and HELD stay live


def assert_moved(vicidial: Connection, before: dict[int, Any], lead_ids: list[int]) -> None:
    """Every one of ``lead_ids`` but the two a delete leaves live is archived as it was and gone
    from vicidial_list."""
    now_live, archived = live(vicidial), archive(vicidial)
    for lead_id in lead_ids:
        if lead_id not in (MISMATCH, HELD):
            assert lead_id not in now_live and archived[lead_id] == before[lead_id], lead_id


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def test_a_selection_that_fails_mid_way_shows_what_it_did(
    job: Job, vicidial: Connection, clock: Clock
) -> None:
    clock.set(FRIDAY_NIGHT, FRIDAY_NIGHT, FRIDAY_NIGHT, MONDAY_MORNING)
    assert job.deliver()["status"] == "deferred"  # two batches run
    # Meanwhile someone changes the archive table: the next batch refuses to run on it.
    vicidial.exec_driver_sql("ALTER TABLE vicidial_list_archive DROP COLUMN comments")
    vicidial.commit()
    clock.set(MONDAY_EVENING)
    release_due_jobs(job.app)

    failed = job.deliver()

    assert failed["status"] == "failed", failed
    view = job.view()
    assert view["status"] == "failed" and view["error"]["type"] == failed["error"]
    assert view["result"]["done"] == 2 * BATCH  # what its earlier run did
    (row,) = admin_log_rows(vicidial)
    assert f"leads={2 * BATCH} actions=insert,delete status=failed" in row["event_notes"]
