"""Vicidial's admin log, end to end: a job submitted over HTTP, run by a real worker, leaves one
``vicidial_admin_log`` row, read back from MariaDB and checked against the column sizes."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import pytest
import redis
from celery import Celery
from fastapi.testclient import TestClient
from sqlalchemy import Connection

from api.app import create_app
from api.auth import hash_key
from tasks.lifecycle import ARCHIVE_TASK
from tasks.runtime import Runtime
from tasks.seed import insert_leads, lead_rows
from tasks.settings import Settings
from tests.api.conftest import ALICE, SEED_REQUEST, FakeClock, poll_until_done, wait_for
from tests.helpers import (
    admin_log_rows,
    admin_log_sizes,
    archive,
    assert_within_sizes,
    live,
    mysql_user,
    stored,
)

pytestmark = pytest.mark.usefixtures("worker")

URL = "/vicidial/leads/archive"


def client_from(
    address: str, settings: Settings, rt: Runtime, celery_app: Celery, clock: FakeClock
) -> TestClient:
    """The API as a client at ``address`` reaches it (uvicorn's proxy_headers give the same)."""
    return TestClient(create_app(settings, runtime=rt, celery=celery_app), client=(address, 50000))


def run_job(
    client: TestClient, body: dict[str, Any], headers: dict[str, str] = ALICE
) -> dict[str, Any]:
    answer = client.post(URL, json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    return poll_until_done(client, answer.headers["location"], headers)


def server_now(conn: Connection) -> datetime:
    conn.exec_driver_sql("SET SESSION time_zone = @@global.time_zone")
    now: datetime = conn.exec_driver_sql("SELECT NOW()").scalar_one()
    return now


def test_a_finished_job_writes_one_row_as_vicidial_does(
    settings: Settings, rt: Runtime, celery_app: Celery, clock: FakeClock, vicidial: Connection
) -> None:
    insert_leads(vicidial, lead_rows(3, seed=21))
    rows = live(vicidial)
    client = client_from("203.0.113.7", settings, rt, celery_app, clock)

    final = run_job(client, SEED_REQUEST)

    assert final["status"] == "succeeded"
    assert archive(vicidial) == {1: rows[1]}
    assert live(vicidial) == {2: rows[2], 3: rows[3]}
    (row,) = admin_log_rows(vicidial)
    assert_within_sizes(row, admin_log_sizes(vicidial))
    assert abs((server_now(vicidial) - row.pop("event_date")).total_seconds()) < 60
    row.pop("admin_log_id")
    assert row == {
        "user": "VDAD",
        "ip_address": "203.0.113.7",
        "event_section": "LEADS",
        "event_type": "MODIFY",
        "record_id": final["job_id"],
        "event_code": "LEAD ARCHIVE API",
        "event_sql": "",
        "event_notes": (
            "key=alice leads=2 actions=insert,update,delete status=succeeded"
            " insert: inserted=1 already_archived=0 not_found=1;"
            " update: updated=0 unchanged=1 not_archived=0 not_found=1 id_reused=0;"
            " delete: deleted=1 not_archived=0 mismatch=0 in_use=0 not_found=1 id_reused=0"
        ),
        "user_group": "---ALL---",
    }
    # The notes agree with the job's own report; the status shows neither address nor mark.
    counts = final["result"]["counts"]
    assert all(f"{o}={n}" in row["event_notes"] for a in counts for o, n in counts[a].items())
    assert "203.0.113.7" not in json.dumps(final)
    assert "admin_logged" not in json.dumps(final)
    record = stored(rt.jobs.get(final["job_id"]))
    assert record is not None and "admin_logged" in record


def test_a_dry_run_writes_no_row(client: TestClient, vicidial: Connection) -> None:
    insert_leads(vicidial, lead_rows(2, seed=22))
    rows = live(vicidial)

    final = run_job(client, {**SEED_REQUEST, "lead_ids": [1, 2], "dry_run": True})

    assert final["status"] == "succeeded"
    assert (live(vicidial), archive(vicidial)) == (rows, {})
    assert final["result"]["counts"]["delete"]["deleted"] == 2  # would have deleted
    assert admin_log_rows(vicidial) == []


def test_leadarchive_admin_log_false_writes_no_row(
    client: TestClient, settings: Settings, vicidial: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "admin_log", False)
    insert_leads(vicidial, lead_rows(2, seed=23))
    rows = live(vicidial)

    final = run_job(client, {**SEED_REQUEST, "lead_ids": [1, 2]})

    assert final["status"] == "succeeded"
    assert (live(vicidial), archive(vicidial)) == ({}, rows)
    assert admin_log_rows(vicidial) == []


def test_without_the_table_the_job_succeeds_quietly(
    client: TestClient, vicidial: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    insert_leads(vicidial, lead_rows(2, seed=24))
    rows = live(vicidial)
    vicidial.exec_driver_sql("DROP TABLE vicidial_admin_log")

    with caplog.at_level("DEBUG", logger="leadarchive.worker"):
        final = run_job(client, {**SEED_REQUEST, "lead_ids": [1, 2]})

    assert final["status"] == "succeeded"
    assert final["result"]["counts"]["delete"]["deleted"] == 2
    assert (live(vicidial), archive(vicidial)) == ({}, rows)
    worker_logs = [r for r in caplog.records if r.name == "leadarchive.worker"]
    assert "no vicidial_admin_log table: the admin log is not written" in [
        r.getMessage() for r in worker_logs
    ]
    assert [r.getMessage() for r in worker_logs if r.levelno >= logging.WARNING] == []


def test_without_insert_on_the_table_the_job_keeps_its_result_and_warns(
    client: TestClient,
    rt: Runtime,
    vicidial: Connection,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    insert_leads(vicidial, lead_rows(2, seed=25))
    rows = live(vicidial)
    grants = (
        "SELECT ON `{db}`.*",
        "INSERT, UPDATE, DELETE ON `{db}`.`vicidial_list`",
        "INSERT, UPDATE, DELETE ON `{db}`.`vicidial_list_archive`",
        "LOCK TABLES, CREATE TEMPORARY TABLES ON `{db}`.*",
    )
    with mysql_user(vicidial, database_url, *grants) as limited:
        # The worker's database engine, as a user that may archive but not write the log.
        monkeypatch.setitem(rt.__dict__, "engine", limited)
        with caplog.at_level("INFO", logger="leadarchive.worker"):
            final = run_job(client, {**SEED_REQUEST, "lead_ids": [1, 2]})
        monkeypatch.undo()

    assert final["status"] == "succeeded"
    assert final["result"]["counts"]["delete"]["deleted"] == 2
    assert (live(vicidial), archive(vicidial)) == ({}, rows)
    assert admin_log_rows(vicidial) == []
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warning.getMessage() == "job not written to vicidial_admin_log"
    assert warning.job_id == final["job_id"]  # type: ignore[attr-defined]
    assert "INSERT command denied" in warning.detail  # type: ignore[attr-defined]
    assert "LEADARCHIVE_ADMIN_LOG=false" in warning.hint  # type: ignore[attr-defined]
    record = stored(rt.jobs.get(final["job_id"]))
    assert record is not None and "admin_logged" not in record


def test_a_failed_job_writes_one_row_naming_the_error(
    client: TestClient, vicidial: Connection
) -> None:
    insert_leads(vicidial, lead_rows(1, seed=26))
    rows = live(vicidial)
    vicidial.exec_driver_sql("ALTER TABLE vicidial_list_archive DROP COLUMN entry_list_id")

    final = run_job(client, SEED_REQUEST)

    assert final["status"] == "failed"
    assert live(vicidial) == rows
    # Written just after the job is marked failed.
    (row,) = wait_for(lambda: admin_log_rows(vicidial))
    assert_within_sizes(row, admin_log_sizes(vicidial))
    assert (row["record_id"], row["event_section"], row["event_type"]) == (
        final["job_id"],
        "LEADS",
        "MODIFY",
    )
    assert row["event_notes"] == (
        "key=alice leads=2 actions=insert,update,delete status=failed error=SchemaMismatchError"
    )


def test_a_job_run_again_after_its_row_was_written_writes_no_second_row(
    client: TestClient,
    rt: Runtime,
    celery_app: Celery,
    vicidial: Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis fails just as the job is to be marked succeeded, after its row was written: the job
    goes back to the queue and runs again (the batch is idempotent), and writes no second row."""
    insert_leads(vicidial, lead_rows(2, seed=27))
    rows = live(vicidial)
    transition = rt.jobs.transition
    failed: list[str] = []

    def redis_fails_once_at_success(
        job_id: str, allowed: tuple[str, ...], status: Any, **fields: str
    ) -> str | None:
        if status == "succeeded" and not failed:
            failed.append(job_id)
            raise redis.exceptions.ConnectionError("Redis went away")
        return transition(job_id, allowed, status, **fields)

    monkeypatch.setattr(rt.jobs, "transition", redis_fails_once_at_success)

    final = run_job(client, {**SEED_REQUEST, "lead_ids": [1, 2]})

    assert failed == [final["job_id"]]
    assert final["status"] == "succeeded"
    assert final["attempts"] == 2
    assert (live(vicidial), archive(vicidial)) == ({}, rows)
    # The second run found everything done; the row tells what the first run did.
    assert final["result"]["counts"]["delete"] == {
        "deleted": 0,
        "not_archived": 0,
        "mismatch": 0,
        "in_use": 0,
        "not_found": 2,
        "id_reused": 0,
    }
    (row,) = admin_log_rows(vicidial)
    assert row["record_id"] == final["job_id"]
    assert "delete: deleted=2 " in row["event_notes"]

    # The same message delivered once more, after the job ended: nothing runs, nothing is written.
    again = celery_app.tasks[ARCHIVE_TASK](job_id=final["job_id"], lead_ids=[1, 2])
    assert again == {"job_id": final["job_id"], "status": "succeeded"}
    assert len(admin_log_rows(vicidial)) == 1


@pytest.mark.parametrize(
    ("address", "written"),
    [
        ("2001:db8:85a3::8a2e:370:7334", ""),  # longer than VARCHAR(15)
        ("::ffff:198.51.100.20", "198.51.100.20"),  # IPv4 through an IPv6 socket
        ("testclient", ""),  # not an IP address at all
    ],
)
def test_the_clients_address_is_written_only_when_it_fits(
    settings: Settings,
    rt: Runtime,
    celery_app: Celery,
    clock: FakeClock,
    vicidial: Connection,
    address: str,
    written: str,
) -> None:
    insert_leads(vicidial, lead_rows(1, seed=28))
    rows = live(vicidial)
    client = client_from(address, settings, rt, celery_app, clock)

    final = run_job(client, {"lead_ids": [1]})

    assert final["status"] == "succeeded"
    assert (live(vicidial), archive(vicidial)) == (rows, rows)
    (row,) = admin_log_rows(vicidial)
    assert (row["record_id"], row["ip_address"]) == (final["job_id"], written)


def test_the_longest_key_name_and_user_fit_vicidials_columns(
    client: TestClient, settings: Settings, vicidial: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, key = "k" * 30 + "." + "e" * 33, "long-name-test-key-0123456789abcdef"
    assert len(name) == 64  # the longest name an API_KEYS entry allows
    monkeypatch.setattr(settings, "api_keys", f"{settings.api_keys},{name}:{hash_key(key)}")
    monkeypatch.setattr(settings, "admin_log_user", "U" * 20)
    insert_leads(vicidial, lead_rows(1, seed=29))
    rows = live(vicidial)

    final = run_job(client, {"lead_ids": [1]}, {"Authorization": f"Key={key}"})

    assert final["status"] == "succeeded"
    assert (live(vicidial), archive(vicidial)) == (rows, rows)
    (row,) = admin_log_rows(vicidial)
    assert_within_sizes(row, admin_log_sizes(vicidial))
    assert (row["user"], row["record_id"]) == ("U" * 20, final["job_id"])
    assert row["event_notes"].startswith(f"key={name} leads=1 actions=insert,update ")
