"""`leadarchive submit`'s client against the real API and a real worker."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx2 as httpx
import pytest
import redis
from celery import Celery
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import Connection

from leadarchive.client import (
    EXIT_FAILED,
    EXIT_LEFT_LIVE,
    EXIT_OK,
    SubmitError,
    Submitter,
    print_summary,
    read_lead_ids,
    submit_all,
)
from tasks.seed import insert_leads, lead_rows
from tests.api.conftest import FakeClock
from tests.helpers import ALICE_KEY, archive, live, make_settings

pytestmark = pytest.mark.usefixtures("worker")

MOVE = {"insert_leads": True, "update_leads": True, "delete_leads": True, "dry_run": False}


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=100)


def test_ids_are_batched_polled_and_summed_up(client: TestClient, vicidial: Connection) -> None:
    insert_leads(vicidial, lead_rows(7, seed=51))
    before = live(vicidial)
    progress = _quiet()

    summary = submit_all(
        Submitter(client, ALICE_KEY, poll_interval=0.02),
        [1, 2, 3, 4, 5, 6, 7, 99],
        MOVE,
        batch_size=3,
        console=progress,
    )

    assert len(summary.jobs) == 3
    assert summary.counts["delete"]["deleted"] == 7
    assert summary.counts["delete"]["not_found"] == 1
    assert summary.exit_code() == EXIT_OK
    assert archive(vicidial) == before
    assert live(vicidial) == {}
    shown = progress.file.getvalue()  # type: ignore[attr-defined]
    assert "submitted" in shown and "3/3" in shown
    table = io.StringIO()
    print_summary(summary, table)
    assert "deleted" in table.getvalue() and "3 jobs" in table.getvalue()


def test_batch_size_defaults_to_the_servers_limit(client: TestClient) -> None:
    assert Submitter(client, ALICE_KEY).server_limit() == 500


def test_running_the_same_input_again_creates_no_new_job(
    client: TestClient, vicidial: Connection, redis_client: redis.Redis
) -> None:
    insert_leads(vicidial, lead_rows(4, seed=52))
    rows = live(vicidial)
    submitter = Submitter(client, ALICE_KEY, poll_interval=0.02)
    first = submit_all(submitter, [1, 2, 3, 4], MOVE, batch_size=2, console=_quiet())
    jobs_after_first = len(redis_client.keys("leadarchive:job:*"))

    again = submit_all(submitter, [1, 2, 3, 4], MOVE, batch_size=2, console=_quiet())

    assert first.counts["delete"]["deleted"] == 4
    assert (live(vicidial), archive(vicidial)) == ({}, rows)
    assert [j["job_id"] for j in again.jobs] == [j["job_id"] for j in first.jobs]
    assert len(redis_client.keys("leadarchive:job:*")) == jobs_after_first
    fresh = submit_all(submitter, [1, 2, 3, 4], MOVE, batch_size=2, salt="rerun", console=_quiet())
    assert {j["job_id"] for j in fresh.jobs}.isdisjoint(j["job_id"] for j in first.jobs)
    assert fresh.counts["delete"]["not_found"] == 4


def test_exit_code_says_leads_were_left_undeleted(client: TestClient, vicidial: Connection) -> None:
    insert_leads(vicidial, lead_rows(3, seed=53))
    rows = live(vicidial)
    vicidial.exec_driver_sql("INSERT INTO vicidial_hopper (lead_id, list_id) VALUES (2, 1)")

    summary = submit_all(
        Submitter(client, ALICE_KEY, poll_interval=0.02), [1, 2, 3], MOVE, console=_quiet()
    )

    assert summary.exit_code() == EXIT_LEFT_LIVE
    assert summary.left_live == [2]
    assert summary.as_json()["left_live"] == [2]
    # Left live, unchanged, next to its identical copy; the others moved.
    assert (live(vicidial), archive(vicidial)) == ({2: rows[2]}, rows)


def test_exit_code_says_a_job_failed(client: TestClient, vicidial: Connection) -> None:
    vicidial.exec_driver_sql("ALTER TABLE vicidial_list_archive DROP COLUMN owner")

    summary = submit_all(
        Submitter(client, ALICE_KEY, poll_interval=0.02), [1], MOVE, console=_quiet()
    )

    assert summary.exit_code() == EXIT_FAILED
    assert summary.as_json()["failed"][0]["error"]["type"] == "SchemaMismatchError"


def test_lead_ids_are_read_from_lines_commas_and_spaces() -> None:
    assert read_lead_ids(["1, 2 3\n", "\n", "4\t5,,6"]) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="line 2: '7x' is not a lead ID"):
        read_lead_ids(["1", "7x"])
    with pytest.raises(ValueError, match="'-3'"):
        read_lead_ids(["-3"])


class _CountingSubmitter(Submitter):
    """Records how many of the run's jobs were unfinished whenever one more was submitted."""

    def __init__(self, http: httpx.Client, key: str) -> None:
        super().__init__(http, key, poll_interval=0.02)
        self.unfinished: set[str] = set()
        self.seen: list[int] = []

    def submit(self, body: dict[str, Any], idempotency_key: str) -> str:
        url = super().submit(body, idempotency_key)
        self.unfinished.add(url)
        self.seen.append(len(self.unfinished))
        return url

    def wait(self, status_url: str) -> dict[str, Any]:
        job = super().wait(status_url)
        self.unfinished.discard(status_url)
        return job


def test_batches_go_out_in_a_sliding_window(client: TestClient, vicidial: Connection) -> None:
    insert_leads(vicidial, lead_rows(7, seed=54))
    submitter = _CountingSubmitter(client, ALICE_KEY)

    summary = submit_all(
        submitter, list(range(1, 8)), MOVE, batch_size=1, window=3, console=_quiet()
    )

    assert submitter.seen == [1, 2, 3, 3, 3, 3, 3]
    assert [job["status"] for job in summary.jobs] == ["succeeded"] * 7
    assert summary.counts["delete"]["deleted"] == 7
    assert live(vicidial) == {}
    with pytest.raises(ValueError, match="window"):
        submit_all(submitter, [1], MOVE, window=0, console=_quiet())


def _limited_client(
    database_url: str, redis_url: str, clock: FakeClock, celery_app: Celery, statuses: list[int]
) -> TestClient:
    from api.app import create_app
    from tasks.runtime import Runtime

    settings = make_settings(database_url, redis_url, rate_limit="2/second")
    app = create_app(settings, runtime=Runtime(settings, clock=clock), celery=celery_app)
    limited = TestClient(app)
    limited.event_hooks["response"].append(lambda answer: statuses.append(answer.status_code))
    return limited


def test_a_busy_server_is_waited_out_as_retry_after_says(
    vicidial: Connection, database_url: str, redis_url: str, clock: FakeClock, celery_app: Celery
) -> None:
    insert_leads(vicidial, lead_rows(6, seed=55))
    statuses: list[int] = []
    with _limited_client(database_url, redis_url, clock, celery_app, statuses) as limited:
        started = time.monotonic()
        summary = submit_all(
            Submitter(limited, ALICE_KEY, poll_interval=0.02),
            list(range(1, 7)),
            MOVE,
            batch_size=1,
            console=_quiet(),
        )
        elapsed = time.monotonic() - started

    assert statuses.count(429) >= 1
    assert statuses.count(202) == 6
    assert elapsed >= 1.0  # six submissions at two a second, each 429 waited out
    assert summary.counts["delete"]["deleted"] == 6
    assert live(vicidial) == {}


def test_a_busy_server_past_max_wait_stops_the_run(
    vicidial: Connection, database_url: str, redis_url: str, clock: FakeClock, celery_app: Celery
) -> None:
    statuses: list[int] = []
    with _limited_client(database_url, redis_url, clock, celery_app, statuses) as limited:
        impatient = Submitter(limited, ALICE_KEY, poll_interval=0.02, max_wait=0)
        with pytest.raises(SubmitError, match="429"):
            submit_all(impatient, [1, 2, 3, 4], MOVE, batch_size=1, console=_quiet())

    assert statuses.count(429) == 1
