"""Archive by selection through the real API and worker: POST /vicidial/leads/archive/selection ->
a job of many batches -> MariaDB -> its status (``progress`` while it runs, the summed report when
it ends); a dry run; DELETE stopping it after its current batch; refused bodies and keys."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine

from tasks.seed import insert_leads, lead_rows
from tasks.settings import Settings
from tests.api.conftest import ALICE, BOB, add_keys, poll_until_done
from tests.helpers import admin_log_rows, archive, live, wait_for

pytestmark = pytest.mark.usefixtures("worker")

URL = "/vicidial/leads/archive/selection"
LEADS = 1_500
# Every fourth lead is on list 2002; the others on list 1001.
SELECTED = [i for i in range(1, LEADS + 1) if i % 4]
SCOPED = {
    "archiver": ("archiver-test-key-0123456789abcd", "actions=archive+delete"),
    "selector": ("selector-test-key-0123456789abcd", "actions=archive+delete+selection"),
    "gentle": ("gentle-test-key-0123456789abcdef", "actions=archive+selection"),
    "listed": ("listed-test-key-0123456789abcdef", "actions=archive+delete+selection&lists=2002"),
}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Key={SCOPED[name][0]}"}


@pytest.fixture(autouse=True)
def scoped_keys(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    add_keys(settings, monkeypatch, SCOPED)


@pytest.fixture
def leads(vicidial: Connection) -> dict[int, Any]:
    insert_leads(vicidial, lead_rows(LEADS, list_id=1001, seed=41))
    vicidial.exec_driver_sql("UPDATE vicidial_list SET list_id = 2002 WHERE MOD(lead_id, 4) = 0")
    vicidial.commit()
    return live(vicidial)


BODY = {"list_ids": [1001], "delete_leads": True}


def test_a_selection_from_submit_to_final_report(
    client: TestClient, vicidial: Connection, leads: dict[int, Any]
) -> None:
    answer = client.post(URL, json=BODY, headers=ALICE)

    assert answer.status_code == 202, answer.text
    body = answer.json()
    status_url = f"/vicidial/leads/archive/{body['job_id']}"
    assert answer.headers["location"] == body["status_url"] == status_url
    final = poll_until_done(client, status_url, ALICE)
    assert final["status"] == "succeeded", final
    assert final["request"] == {
        "kind": "selection",
        "list_ids": [1001],
        "insert_leads": True,
        "update_leads": True,
        "delete_leads": True,
        "dry_run": False,
    }
    selected = len(SELECTED)
    assert final["progress"] == {"selected": selected, "done": selected}
    result = final["result"]
    assert (result["selected"], result["done"]) == (selected, selected)
    assert result["counts"]["insert"]["inserted"] == selected
    assert result["counts"]["delete"]["deleted"] == selected
    assert (result["left_live"], result["left_live_total"]) == ([], 0)
    assert result["last_lead_id"] == LEADS
    now_live, archived = live(vicidial), archive(vicidial)
    assert set(now_live) == set(range(4, LEADS + 1, 4))
    assert all(archived[i] == leads[i] for i in SELECTED) and len(archived) == selected
    assert client.get(status_url, headers=BOB).status_code == 404


def test_a_dry_run_gives_the_count_the_counts_and_a_sample(
    client: TestClient, vicidial: Connection, leads: dict[int, Any]
) -> None:
    answer = client.post(URL, json={**BODY, "dry_run": True}, headers=ALICE)

    final = poll_until_done(client, answer.headers["location"], ALICE)
    result = final["result"]
    assert result["selected"] == len(SELECTED)
    assert result["sample"] == SELECTED[:20]
    assert result["counts"]["delete"]["deleted"] == len(SELECTED)
    assert live(vicidial) == leads and archive(vicidial) == {}


def test_delete_stops_a_running_selection_after_its_current_batch(
    client: TestClient, vicidial: Connection, engine: Engine, leads: dict[int, Any]
) -> None:
    answer = client.post(URL, json=BODY, headers=ALICE)
    url = answer.headers["location"]
    with engine.connect() as dialer:
        # Once a batch has run, the test's read lock (a busy dialer's) holds the next one at
        # its first write, so the cancel surely lands while the job runs.
        wait_for(lambda: client.get(url, headers=ALICE).json().get("progress", {}).get("done"))
        dialer.exec_driver_sql("LOCK TABLES vicidial_list READ")
        try:
            stopping = client.delete(url, headers=ALICE)
        finally:
            dialer.exec_driver_sql("UNLOCK TABLES")

    assert stopping.status_code == 202, stopping.text
    assert stopping.json()["status"] == "running" and stopping.json()["cancel_requested"]
    final = poll_until_done(client, url, ALICE)
    assert final["status"] == "cancelled", final
    result = final["result"]
    assert 0 < result["done"] < len(SELECTED)
    walked = [i for i in SELECTED if i <= result["last_lead_id"]]
    assert result["done"] == len(walked) == result["counts"]["delete"]["deleted"]
    now_live, archived = live(vicidial), archive(vicidial)
    # What it walked is archived; nothing after the batch it stopped after was touched.
    assert all(i not in now_live and archived[i] == leads[i] for i in walked)
    assert all(now_live[i] == leads[i] for i in leads if i > result["last_lead_id"])
    assert set(archived) == set(walked)
    # The run that stopped wrote its admin-log row, with what it did.
    (row,) = admin_log_rows(vicidial)
    assert (
        f"leads={result['done']} actions=insert,update,delete status=cancelled"
        in row["event_notes"]
    )
    # Cancelling it again: it has ended.
    assert client.delete(url, headers=ALICE).status_code == 200


def test_a_key_limited_to_lists_selects_only_in_its_lists(
    client: TestClient, vicidial: Connection, leads: dict[int, Any]
) -> None:
    answer = client.post(
        URL, json={"statuses": ["NEW"], "delete_leads": True}, headers=auth("listed")
    )
    final = poll_until_done(client, answer.headers["location"], auth("listed"))

    assert final["status"] == "succeeded", final
    picked = [i for i in range(4, LEADS + 1, 4) if leads[i][_status(vicidial)] == b"NEW"]
    assert final["result"]["done"] == len(picked) > 0
    assert final["result"]["counts"]["delete"]["forbidden"] == 0
    assert set(archive(vicidial)) == set(picked)
    now_live = live(vicidial)
    assert all(now_live[i] == leads[i] for i in SELECTED)


def _status(conn: Connection) -> int:
    """The position of vicidial_list.status in a row as tests.helpers.live reads it."""
    names = [row[0] for row in conn.exec_driver_sql("SHOW COLUMNS FROM vicidial_list")]
    return names.index("status")


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize(
    ("headers", "body", "status", "detail"),
    [
        (ALICE, {"delete_leads": True}, 422, "at least one filter"),
        (ALICE, {"list_ids": [1], "insert_leads": False, "update_leads": False}, 422, "be true"),
        (ALICE, {"list_ids": [1001], "lead_ids": [1]}, 422, "lead_ids"),
        (ALICE, {"list_ids": ["1001"]}, 422, "list_ids"),
        (ALICE, {"list_ids": [1001.0]}, 422, "list_ids"),
        (ALICE, {"list_ids": []}, 422, "list_ids"),
        (ALICE, {"last_call_before": "last tuesday"}, 422, "last_call_before"),
        (ALICE, {"statuses": ["NEW"], "delete_lead": True}, 422, "delete_lead"),
        (ALICE, {"statuses": ["NEW"], "list_ids": None}, 422, "list_ids: null is not a filter"),
        (ALICE, {"entry_date_before": 20240101}, 422, "as text"),
        (auth("archiver"), BODY, 403, "'selection'"),
        (auth("gentle"), BODY, 403, "'delete'"),
    ],
    ids=[
        "no filter",
        "no action",
        "lead IDs",
        "list ID as text",
        "list ID as a float",
        "empty filter",
        "not a date",
        "typo",
        "null filter",
        "number as a date",
        "key without selection",
        "key without delete",
    ],
)
def test_refused_selections_enqueue_nothing(
    client: TestClient, headers: dict[str, str], body: dict[str, Any], status: int, detail: str
) -> None:
    answer = client.post(URL, json=body, headers=headers)

    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert detail in problem["detail"]
    if status == 403:  # the action refused, by name, as for every scoped key
        assert f"'{problem['action']}'" == detail


def test_a_key_with_selection_may_select(
    client: TestClient, vicidial: Connection, leads: dict[int, Any]
) -> None:
    answer = client.post(URL, json={**BODY, "dry_run": True}, headers=auth("selector"))
    final = poll_until_done(client, answer.headers["location"], auth("selector"))
    assert final["status"] == "succeeded" and final["result"]["selected"] == len(SELECTED)


def test_a_method_the_selection_path_does_not_serve_is_405_allowing_post_only(
    client: TestClient,
) -> None:
    # The path also fits the job status route's /vicidial/leads/archive/{job_id}; it is no
    # job's URL, so only its own method is allowed.
    answer = client.put(URL, json=BODY, headers=ALICE)
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"
    job_url = "/vicidial/leads/archive/" + "A" * 22
    assert client.put(job_url, headers=ALICE).headers["allow"] == "DELETE, GET"
