"""Scoped keys through the real API and worker: refused actions (403) and the key's own lead
limit (422) enqueue nothing; a key scoped to lists archives its lists' leads and reports the
others ``forbidden``, leaving both their rows byte for byte; an unscoped key is unchanged."""

from __future__ import annotations

import io
from typing import Any

import pytest
import redis
from celery import Celery
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import Connection

from api.auth import KeyName, require_action, scope_of
from api.problems import Problem
from leadarchive.client import (
    DEARCHIVE_PATH,
    EXIT_LEFT_LIVE,
    BatchTooLarge,
    Submitter,
    print_summary,
    submit_all,
)
from tasks.publishing import publish
from tasks.requests import ArchiveRequest
from tasks.runtime import Runtime
from tasks.scopes import KeyScope, Lists, parse_scope
from tasks.seed import insert_leads, lead_rows
from tasks.settings import Settings
from tests.api.conftest import ALICE, add_keys, poll_until_done
from tests.helpers import archive, live

pytestmark = pytest.mark.usefixtures("worker")

URL = "/vicidial/leads/archive"
# name -> (key, scope)
SCOPED = {
    "crm": ("crm-test-key-0123456789abcdef01", "actions=archive&lists=1001-1004&max=5"),
    "ops": ("ops-test-key-0123456789abcdef01", "actions=archive+delete&lists=1001-1004+3000"),
    "purger": ("purger-test-key-0123456789abcdef", "actions=delete"),
    "restorer": ("restorer-test-key-0123456789abcd", "actions=restore"),
    "listed-restorer": ("listed-test-key-0123456789abcdef", "actions=restore&lists=1001"),
}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Key={SCOPED[name][0]}"}


@pytest.fixture(autouse=True)
def scoped_keys(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    add_keys(settings, monkeypatch, SCOPED)


def _problem(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    return body


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize(
    ("name", "body", "action"),
    [
        ("crm", {"delete_leads": True}, "delete"),
        # insert_leads and update_leads default to true: both need `archive`.
        ("purger", {"delete_leads": True}, "archive"),
        ("purger", {"insert_leads": False, "delete_leads": True}, "archive"),
        ("purger", {"update_leads": False}, "archive"),
        # A dry run asks for the same actions.
        ("crm", {"delete_leads": True, "dry_run": True}, "delete"),
    ],
)
def test_an_action_the_key_may_not_use_is_403_naming_it(
    client: TestClient, name: str, body: dict[str, Any], action: str
) -> None:
    answer = client.post(URL, json={**body, "lead_ids": [1, 2]}, headers=auth(name))

    problem = _problem(answer, 403)
    assert problem["type"] == "urn:leadarchive:problem:action-not-allowed"
    assert problem["action"] == action
    assert repr(action) in problem["detail"]
    assert SCOPED[name][0] not in answer.text


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize(
    ("name", "url", "says"),
    [
        ("crm", "/vicidial/leads/dearchive", "'restore'"),  # no `restore` among its actions
        ("restorer", URL, "'archive'"),  # may restore, not archive
    ],
)
def test_restore_needs_its_action(client: TestClient, name: str, url: str, says: str) -> None:
    answer = client.post(url, json={"lead_ids": [1, 2]}, headers=auth(name))

    problem = _problem(answer, 403)
    assert problem["type"] == "urn:leadarchive:problem:action-not-allowed"
    assert problem["action"] in ("restore", "archive")
    assert says in problem["detail"]


def test_a_key_that_may_restore_restores(client: TestClient, vicidial: Connection) -> None:
    answer = client.post(
        "/vicidial/leads/dearchive",
        json={"lead_ids": [1], "dry_run": True},
        headers=auth("restorer"),
    )

    assert answer.status_code == 202, answer.text
    final = poll_until_done(client, answer.headers["location"], auth("restorer"))
    assert final["status"] == "succeeded", final.get("error")


def test_a_key_limited_to_lists_restores_only_leads_of_those_lists(
    client: TestClient, vicidial: Connection
) -> None:
    insert_leads(vicidial, lead_rows(4, list_id=1001, seed=31))
    vicidial.exec_driver_sql("UPDATE vicidial_list SET list_id = 2002 WHERE lead_id > 2")
    vicidial.commit()
    moved = client.post(URL, json={"lead_ids": [1, 2, 3, 4], "delete_leads": True}, headers=ALICE)
    poll_until_done(client, moved.headers["location"], ALICE)
    archived = archive(vicidial)

    answer = client.post(
        "/vicidial/leads/dearchive", json={"lead_ids": [1, 3]}, headers=auth("listed-restorer")
    )

    assert answer.status_code == 202, answer.text
    final = poll_until_done(client, answer.headers["location"], auth("listed-restorer"))
    assert final["status"] == "succeeded", final.get("error")
    result = final["result"]
    assert result["counts"] == {
        "restore": {"restored": 1, "already_live": 0, "not_archived": 0, "forbidden": 1}
    }
    assert {lead["lead_id"]: lead["restore"] for lead in result["leads"]} == {
        1: "restored",
        3: "forbidden",
    }
    # Lead 3, of list 2002, stays archived as it was; lead 1 is live again, as it was archived.
    assert live(vicidial) == {1: archived[1]}
    assert archive(vicidial) == {i: archived[i] for i in (2, 3, 4)}


@pytest.mark.usefixtures("nothing_enqueued")
def test_more_ids_than_the_keys_own_limit_is_422_naming_that_limit(client: TestClient) -> None:
    problem = _problem(client.post(URL, json={"lead_ids": [1] * 6}, headers=auth("crm")), 422)

    assert problem["type"] == "urn:leadarchive:problem:too-many-lead-ids"
    assert "6" in problem["detail"] and "the limit is 5" in problem["detail"]
    assert problem["limit"] == 5


def test_a_key_within_its_rights_and_limit_is_accepted(
    client: TestClient, vicidial: Connection
) -> None:
    insert_leads(vicidial, lead_rows(2, list_id=1001, seed=31))
    accepted = client.post(URL, json={"lead_ids": [1, 2, 1, 2, 1]}, headers=auth("crm"))
    deleting = client.post(
        URL,
        json={"insert_leads": False, "update_leads": False, "delete_leads": True, "lead_ids": [1]},
        headers=auth("purger"),
    )

    assert accepted.status_code == deleting.status_code == 202
    first = poll_until_done(client, accepted.headers["location"], auth("crm"))
    second = poll_until_done(client, deleting.headers["location"], auth("purger"))
    assert first["status"] == second["status"] == "succeeded"
    assert [lead["insert"] for lead in first["result"]["leads"]] == ["inserted", "inserted"]
    assert second["result"]["leads"][0]["delete"] == "deleted"


def seed_two_lists(conn: Connection) -> None:
    """Leads 1-4 in list 1001 (allowed for ops), 5-8 in 2001 (not); 6 archived and changed
    since, 7 archived identical, 8 in the archive only."""
    insert_leads(conn, lead_rows(4, first_lead_id=1, list_id=1001, seed=32))
    insert_leads(conn, lead_rows(4, first_lead_id=5, list_id=2001, seed=33))
    conn.exec_driver_sql(
        "INSERT INTO vicidial_list_archive SELECT * FROM vicidial_list WHERE lead_id IN (6, 7, 8)"
    )
    conn.exec_driver_sql(
        "UPDATE vicidial_list SET first_name = 'Changed', modify_date = modify_date"
        " WHERE lead_id = 6"
    )
    conn.exec_driver_sql("DELETE FROM vicidial_list WHERE lead_id = 8")


def test_a_mixed_job_archives_its_lists_and_leaves_the_others_byte_for_byte(
    client: TestClient, vicidial: Connection, redis_client: redis.Redis
) -> None:
    seed_two_lists(vicidial)
    before_live, before_archive = live(vicidial), archive(vicidial)
    body = {"delete_leads": True, "lead_ids": list(range(1, 10))}

    answer = client.post(URL, json=body, headers=auth("ops"))

    assert answer.status_code == 202
    job_id = answer.json()["job_id"]
    # The record carries the lists the key was scoped to when the job was submitted.
    assert redis_client.hget(f"leadarchive:job:{job_id}", "lists") == b"1001-1004+3000"
    final = poll_until_done(client, answer.headers["location"], auth("ops"))
    assert final["status"] == "succeeded"
    leads = {lead["lead_id"]: lead for lead in final["result"]["leads"]}
    for lead_id in (5, 6, 7, 8):
        assert (leads[lead_id]["insert"], leads[lead_id]["update"], leads[lead_id]["delete"]) == (
            "forbidden",
            "forbidden",
            "forbidden",
        )
        assert live(vicidial).get(lead_id) == before_live.get(lead_id)
        assert archive(vicidial).get(lead_id) == before_archive.get(lead_id)
    for lead_id in (1, 2, 3, 4):
        assert leads[lead_id]["delete"] == "deleted"
        assert archive(vicidial)[lead_id] == before_live[lead_id]
    assert set(live(vicidial)) == {5, 6, 7}
    counts = final["result"]["counts"]
    assert counts["insert"] == {
        "inserted": 4,
        "already_archived": 0,
        "not_found": 1,
        "forbidden": 4,
    }
    assert counts["update"]["forbidden"] == counts["delete"]["forbidden"] == 4
    assert all(sum(outcomes.values()) == 9 for outcomes in counts.values())
    assert "lists" not in final  # the status shows the request, not the key's scope


def test_an_unscoped_key_is_unchanged(
    client: TestClient, vicidial: Connection, redis_client: redis.Redis
) -> None:
    seed_two_lists(vicidial)
    before_live = live(vicidial)

    answer = client.post(URL, json={"delete_leads": True, "lead_ids": [1, 5, 6, 7]}, headers=ALICE)

    job_id = answer.json()["job_id"]
    assert not redis_client.hexists(f"leadarchive:job:{job_id}", "lists")
    final = poll_until_done(client, answer.headers["location"], ALICE)
    counts = final["result"]["counts"]
    assert counts["insert"] == {"inserted": 2, "already_archived": 2, "not_found": 0}
    assert counts["update"]["updated"] == 1 and "forbidden" not in counts["update"]
    assert counts["delete"]["deleted"] == 4 and "forbidden" not in counts["delete"]
    assert live(vicidial) == {n: before_live[n] for n in (2, 3, 4)}


def test_the_worker_takes_the_lists_from_the_record_not_the_message(
    client: TestClient, vicidial: Connection, rt: Runtime, celery_app: Celery
) -> None:
    """The message carries the request only; the lists are the record's (as submitted)."""
    seed_two_lists(vicidial)
    before = live(vicidial)
    request = ArchiveRequest(lead_ids=[1, 5], delete_leads=True)
    job_id, _ = rt.jobs.create("alice", request, lists=Lists.parse("1001"))

    publish(celery_app, job_id, request, rt.broker)

    final = poll_until_done(client, f"{URL}/{job_id}", ALICE)
    leads = {lead["lead_id"]: lead for lead in final["result"]["leads"]}
    assert (leads[1]["delete"], leads[5]["delete"]) == ("deleted", "forbidden")
    assert live(vicidial)[5] == before[5] and 1 not in live(vicidial)


def test_the_archive_route_documents_its_403(client: TestClient) -> None:
    document = client.get("/openapi.json").json()

    answer = document["paths"][URL]["post"]["responses"]["403"]
    assert "application/problem+json" in answer["content"]
    assert "action" in answer["description"]


def test_require_action_is_a_check_any_route_can_call() -> None:
    scoped = KeyName("ops", parse_scope("actions=restore+selection"))

    require_action("alice", "archive", "delete", "restore", "selection")  # a plain name: unscoped
    require_action(KeyName("alice"), "delete")
    require_action(scoped, "restore", "selection")
    with pytest.raises(Problem) as refused:
        require_action(scoped, "restore", "archive")
    assert (refused.value.status, refused.value.extra["action"]) == (403, "archive")
    with pytest.raises(ValueError, match="not an action"):
        require_action(scoped, "dearchive")
    assert scope_of(scoped) == KeyScope(actions=frozenset({"restore", "selection"}))
    assert scoped == "ops" and isinstance(scoped, str)


def test_the_client_sends_batches_of_the_keys_own_limit(
    client: TestClient, vicidial: Connection
) -> None:
    """`leadarchive submit` with a key limited below the server's limit: its first batch is
    refused for its size (nothing written), and every batch goes again at the key's size."""
    insert_leads(vicidial, lead_rows(12, list_id=1001, seed=33))
    submitter = Submitter(client, SCOPED["crm"][0], poll_interval=0.02)
    flags = {"insert_leads": True, "update_leads": True, "delete_leads": False}

    summary = submit_all(submitter, list(range(1, 13)), flags, console=_quiet())

    assert [job["request"]["lead_count"] for job in summary.jobs] == [5, 5, 2]
    assert summary.counts["insert"]["inserted"] == 12
    assert set(archive(vicidial)) == set(range(1, 13))
    # A batch size the user chose is not changed behind their back.
    with pytest.raises(BatchTooLarge, match="the limit is 5"):
        submit_all(submitter, list(range(1, 13)), flags, batch_size=10, console=_quiet())


def test_the_client_counts_live_forbidden_leads_as_left_undeleted(
    client: TestClient, vicidial: Connection
) -> None:
    """`leadarchive submit --delete` with a key limited to lists: a live lead of another list
    stays in vicidial_list, so the run says so (exit 1), as for any lead the guard kept."""
    seed_two_lists(vicidial)
    submitter = Submitter(client, SCOPED["ops"][0], poll_interval=0.02)
    flags = {"insert_leads": True, "update_leads": True, "delete_leads": True}

    summary = submit_all(submitter, list(range(1, 10)), flags, console=_quiet())

    assert summary.counts["delete"]["forbidden"] == 4
    # Leads 5-7 are live on list 2001; lead 8, of that list too, is in the archive only.
    assert sorted(summary.left_live) == [5, 6, 7] == sorted(live(vicidial))
    assert summary.exit_code() == EXIT_LEFT_LIVE


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=100)


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry run"])
def test_the_client_names_the_leads_a_restore_leaves_not_live(
    client: TestClient, vicidial: Connection, dry_run: bool
) -> None:
    """`leadarchive submit --dearchive` with a key limited to list 1001: a lead in neither
    table, or archived on another list, is not live at the end, so the run says so (exit 1);
    a live lead of another list is live, whatever the key may touch."""
    seed_two_lists(vicidial)
    vicidial.exec_driver_sql(
        "INSERT INTO vicidial_list_archive SELECT * FROM vicidial_list WHERE lead_id IN (1, 2)"
    )
    vicidial.exec_driver_sql("DELETE FROM vicidial_list WHERE lead_id IN (1, 2)")
    submitter = Submitter(
        client, SCOPED["listed-restorer"][0], poll_interval=0.02, path=DEARCHIVE_PATH
    )

    summary = submit_all(submitter, [1, 2, 3, 5, 8, 99], {"dry_run": dry_run}, console=_quiet())

    assert summary.counts["restore"] == {
        "restored": 2,
        "already_live": 1,
        "not_archived": 1,
        "forbidden": 2,
    }
    assert summary.not_restored == [8, 99] and summary.left_live == []
    assert summary.exit_code() == EXIT_LEFT_LIVE
    assert summary.as_json()["not_restored"] == [8, 99]
    shown = io.StringIO()
    print_summary(summary, shown)
    verb = "would not be" if dry_run else "are not"
    assert f"2 leads {verb} live: not archived, or of a list this key may not touch" in (
        " ".join(shown.getvalue().split())
    )
    assert (set(live(vicidial)) >= {1, 2}) is not dry_run
