"""`leadarchive submit`'s client against the real API and a real worker."""

from __future__ import annotations

import io

import pytest
import redis
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import Connection

from leadarchive.client import (
    EXIT_FAILED,
    EXIT_LEFT_LIVE,
    EXIT_OK,
    Submitter,
    print_summary,
    read_lead_ids,
    submit_all,
)
from tasks.seed import insert_leads, lead_rows
from tests.helpers import ALICE_KEY, archive, live

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
