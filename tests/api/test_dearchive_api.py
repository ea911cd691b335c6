"""The restore job API end to end: POST /vicidial/leads/dearchive -> worker -> MariaDB -> status;
and ``leadarchive submit --dearchive``'s client against it."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import Connection

from leadarchive.client import (
    DEARCHIVE_PATH,
    EXIT_LEFT_LIVE,
    EXIT_OK,
    Submitter,
    print_summary,
    submit_all,
)
from tasks.archive import Actions, run_batch
from tasks.seed import insert_leads, lead_rows
from tests.api.conftest import ALICE, BOB, FakeClock, poll_until_done
from tests.helpers import ALICE_KEY, admin_log_rows, archive, live

pytestmark = pytest.mark.usefixtures("worker")

URL = "/vicidial/leads/dearchive"
MOVE = Actions(insert=True, update=True, delete=True)


def submit(client: TestClient, body: object, headers: dict[str, str] | None = None):
    return client.post(URL, json=body, headers={**ALICE, **(headers or {})})


def archived(vicidial: Connection, count: int, ids: list[int]) -> dict[int, object]:
    insert_leads(vicidial, lead_rows(count, seed=21))
    before = dict(live(vicidial))
    run_batch(vicidial, ids, MOVE)
    return before


def test_restore_from_submit_to_final_report(client: TestClient, vicidial: Connection) -> None:
    before = archived(vicidial, 3, [1, 2])

    answer = submit(client, {"lead_ids": [1, 3, 99]})

    assert answer.status_code == 202
    body = answer.json()
    assert answer.headers["location"] == body["status_url"] == f"{URL}/{body['job_id']}"
    final = poll_until_done(client, answer.headers["location"], ALICE)
    assert final["status"] == "succeeded", final
    assert final["request"] == {"kind": "restore", "dry_run": False, "lead_count": 3}
    assert final["result"]["counts"] == {
        "restore": {"restored": 1, "already_live": 1, "not_archived": 1}
    }
    assert final["result"]["leads"] == [
        {"lead_id": 1, "restore": "restored", "archived": False, "live": True},
        {"lead_id": 3, "restore": "already_live", "archived": False, "live": True},
        {"lead_id": 99, "restore": "not_archived", "archived": False, "live": False},
    ]
    assert live(vicidial)[1] == before[1]
    assert set(archive(vicidial)) == {2}
    # The archive route's status URL shows the same job; another key is told 404.
    assert client.get(f"/vicidial/leads/archive/{body['job_id']}", headers=ALICE).json() == final
    assert client.get(answer.headers["location"], headers=BOB).status_code == 404
    rows = admin_log_rows(vicidial)
    assert [r["event_code"] for r in rows] == ["LEAD DEARCHIVE API"]
    assert rows[0]["record_id"] == body["job_id"]
    assert "actions=restore" in rows[0]["event_notes"]
    assert "restore: restored=1 already_live=1 not_archived=1" in rows[0]["event_notes"]


def test_a_dry_run_changes_nothing(client: TestClient, vicidial: Connection) -> None:
    archived(vicidial, 2, [1])
    before = (live(vicidial), archive(vicidial))
    answer = submit(client, {"lead_ids": [1, 2], "dry_run": True})
    final = poll_until_done(client, answer.headers["location"], ALICE)
    assert final["result"]["counts"]["restore"] == {
        "restored": 1,
        "already_live": 1,
        "not_archived": 0,
    }
    assert (live(vicidial), archive(vicidial)) == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"lead_ids": []},
        {"lead_ids": [1.0]},
        {"lead_ids": ["1"]},
        {"lead_ids": [True]},
        {"lead_ids": [-1]},
        {"lead_ids": [1], "dry_run": "yes"},
        {"lead_ids": [1], "delete_leads": True},
        {"lead_ids": list(range(501))},
    ],
)
def test_bad_bodies_are_422(client: TestClient, body: object) -> None:
    answer = submit(client, body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")


def test_no_key_is_401(client: TestClient) -> None:
    answer = client.post(URL, json={"lead_ids": [1]})
    assert answer.status_code == 401
    assert (
        client.post(URL, json={"lead_ids": [1]}, headers={"Authorization": "Key=x"}).status_code
        == 401
    )


def test_office_hours_is_503(client: TestClient, clock: FakeClock) -> None:
    from datetime import UTC, datetime

    clock.now = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # a Monday afternoon
    answer = submit(client, {"lead_ids": [1]})
    assert answer.status_code == 503
    assert "opens_at" in answer.json()


def test_idempotency_key_and_the_archive_request_differ(
    client: TestClient, vicidial: Connection
) -> None:
    first = submit(client, {"lead_ids": [5]}, {"Idempotency-Key": "restore-5"})
    again = submit(client, {"lead_ids": [5]}, {"Idempotency-Key": "restore-5"})
    assert first.json()["job_id"] == again.json()["job_id"]
    other = client.post(
        "/vicidial/leads/archive",
        json={"lead_ids": [5], "dry_run": False},
        headers={**ALICE, "Idempotency-Key": "restore-5"},
    )
    assert other.status_code == 422
    poll_until_done(client, first.headers["location"], ALICE)


def test_the_openapi_document_has_the_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"][URL]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["lead_ids"]["maxItems"] == 500
    assert set(post["responses"]) >= {"202", "401", "422", "503"}
    assert "get" in spec["paths"][f"{URL}/{{job_id}}"]


def test_the_client_submits_dearchive_batches(client: TestClient, vicidial: Connection) -> None:
    before = archived(vicidial, 7, [1, 2, 3, 4, 5])
    summary = submit_all(
        Submitter(client, ALICE_KEY, poll_interval=0.02, path=DEARCHIVE_PATH),
        [1, 2, 3, 4, 5, 6, 99],
        {"dry_run": False},
        batch_size=3,
        console=Console(file=io.StringIO(), width=100),
    )
    assert len(summary.jobs) == 3
    assert summary.counts["restore"] == {"restored": 5, "already_live": 1, "not_archived": 1}
    # Lead 99 is in neither table: the run says it is not live at the end.
    assert summary.not_restored == [99]
    assert summary.exit_code() == EXIT_LEFT_LIVE
    assert summary.as_json()["counts"] == {
        "restore": {"restored": 5, "already_live": 1, "not_archived": 1}
    }
    assert live(vicidial) == before
    assert archive(vicidial) == {}
    table = io.StringIO()
    print_summary(summary, table)
    assert "restore" in table.getvalue() and "restored" in table.getvalue()
    assert "1 leads are not live: not archived" in table.getvalue()
    assert Submitter(client, ALICE_KEY, path=DEARCHIVE_PATH).server_limit() == 500


def test_the_command_line_submit_dearchive(
    client: TestClient,
    vicidial: Connection,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import httpx2

    from leadarchive.cli import main

    before = archived(vicidial, 3, [1, 2])
    # `leadarchive submit` opens its own HTTP client: here, the test's client of the real API.
    monkeypatch.setattr(httpx2, "Client", lambda **_: client)
    argv = ["submit", "--dearchive", "--url", "http://testserver", "--key", ALICE_KEY]
    assert main([*argv, "--delete", "1"]) == 2  # archive flags do not apply to a restore
    assert (live(vicidial), archive(vicidial)) != (before, {})
    unchanged = (live(vicidial), archive(vicidial))
    capsys.readouterr()
    # A dry run says so, below the table and in --json.
    assert main([*argv, "--dry-run", "1", "3"]) == EXIT_OK
    assert "\ndry run: nothing was changed, the counts say what a run would do\n" in (
        capsys.readouterr().out
    )
    assert main([*argv, "--dry-run", "--json", "1"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["dry_run"] is True
    assert (live(vicidial), archive(vicidial)) == unchanged
    code = main([*argv, "--json", "--batch-size", "2", "1", "2", "3", "99"])
    report = json.loads(capsys.readouterr().out)
    assert code == EXIT_LEFT_LIVE  # lead 99 is in neither table
    assert report["not_restored"] == [99]
    assert len(report["jobs"]) == 2
    assert report["counts"] == {"restore": {"restored": 2, "already_live": 1, "not_archived": 1}}
    assert report["left_live"] == [] and report["failed"] == [] and report["dry_run"] is False
    assert (live(vicidial), archive(vicidial)) == (before, {})
