"""The job API end to end: HTTP -> Redis -> a real Celery worker -> MariaDB -> polling."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection

from tasks.seed import insert_leads, lead_rows
from tests.api.conftest import (
    ALICE,
    BOB,
    SEED_REQUEST,
    FakeClock,
    make_settings,
    poll_until_done,
    wait_for,
)
from tests.conftest import claim_redis_database
from tests.helpers import archive, live, private_redis

pytestmark = pytest.mark.usefixtures("worker")

URL = "/vicidial/leads/archive"


def submit(client: TestClient, body: object, headers: dict[str, str] | None = None):
    return client.post(URL, json=body, headers={**ALICE, **(headers or {})})


def run_marker_job(client: TestClient) -> None:
    """Submit a dry run and wait for it to end: the worker takes messages one at a time, in the
    order sent, so every message sent before it has then been handled."""
    marker = submit(client, {"lead_ids": [4294967295], "dry_run": True})
    assert poll_until_done(client, marker.headers["location"], ALICE)["status"] == "succeeded"


def test_seed_request_from_submit_to_final_report(client: TestClient, vicidial: Connection) -> None:
    insert_leads(vicidial, lead_rows(3, seed=11))
    rows = live(vicidial)
    lead_1 = rows[1]

    answer = submit(client, SEED_REQUEST)

    assert answer.status_code == 202
    body = answer.json()
    assert body["status"] == "queued"
    assert answer.headers["location"] == body["status_url"] == f"{URL}/{body['job_id']}"
    final = poll_until_done(client, answer.headers["location"], ALICE)
    assert final["status"] == "succeeded"
    assert final["request"] == {
        "insert_leads": True,
        "update_leads": True,
        "delete_leads": True,
        "dry_run": False,
        "lead_count": 2,
    }
    assert final["submitted_at"] <= final["started_at"] <= final["finished_at"]
    assert final["result"]["leads"] == [
        {
            "lead_id": 0,
            "insert": "not_found",
            "update": "not_found",
            "delete": "not_found",
            "archived": False,
            "live": False,
        },
        {
            "lead_id": 1,
            "insert": "inserted",
            "update": "unchanged",
            "delete": "deleted",
            "archived": True,
            "live": False,
        },
    ]
    assert final["result"]["counts"]["insert"] == {
        "inserted": 1,
        "already_archived": 0,
        "not_found": 1,
    }
    assert final["result"]["duplicates"] == []
    assert archive(vicidial) == {1: lead_1}
    assert live(vicidial) == {2: rows[2], 3: rows[3]}


def test_defaults_duplicates_and_dry_run(client: TestClient, vicidial: Connection) -> None:
    insert_leads(vicidial, lead_rows(2, seed=12))
    before = (live(vicidial), archive(vicidial))

    answer = submit(client, {"lead_ids": [2, 1, 2], "dry_run": True})

    final = poll_until_done(client, answer.headers["location"], ALICE)
    assert final["status"] == "succeeded"
    assert final["request"]["delete_leads"] is False  # the documented default
    assert final["request"]["lead_count"] == 3
    assert final["result"]["duplicates"] == [2]
    assert [lead["insert"] for lead in final["result"]["leads"]] == ["inserted", "inserted"]
    assert "delete" not in final["result"]["counts"]
    assert (live(vicidial), archive(vicidial)) == before


# --- refusals: each answers problem+json and enqueues nothing ---------------------------------


def _problem(answer, status: int) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Key",
        "Key=",
        "Bearer alice-test-key-0123456789abcdef",
        "Key alice-test-key-0123456789abcdef",
        "key=alice-test-key-0123456789abcdef",
        "Key=alice-test-key-0123456789abcdeF",  # one character off
        "Key=alice-test-key-0123456789abcde",  # one character short
        "Key=alice-test-key-0123456789abcdef ",
        "Key=" + "x" * 300,
    ],
)
def test_missing_malformed_or_unknown_key_is_401(
    client: TestClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    answer = client.post(URL, json=SEED_REQUEST, headers=headers)

    problem = _problem(answer, 401)
    assert answer.headers["www-authenticate"] == "Key"
    assert "alice-test-key" not in answer.text
    # A well-formed header (a key of 16 to 256 printable characters) whose key the service
    # does not know is told so; any other is told what to send.
    well_formed = re.fullmatch(r"Key=[\x21-\x7e]{16,256}", authorization or "")
    assert problem["detail"] == (
        "this API key is not one of the service's keys (LEADARCHIVE_API_KEYS)"
        if well_formed
        else "send the header Authorization: Key=<API key>"
    )


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[0, 1]", "application/json", 400),
        (b'"lead_ids"', "application/json", 400),
        (b'{"lead_ids": [1], "x": "\xff\xfe"}', "application/json", 400),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 413),
        (b"[" * 20_000 + b"]" * 20_000, "application/json", 400),
        (json.dumps(SEED_REQUEST).encode(), "text/plain", 415),
        (b"lead_ids=1", "application/x-www-form-urlencoded", 415),
        (json.dumps({"lead_ids": list(range(20_000))}).encode(), "application/json", 413),
    ],
)
def test_bodies_that_are_not_a_json_object_are_refused(
    client: TestClient, content: bytes, content_type: str, status: int
) -> None:
    answer = client.post(URL, content=content, headers={**ALICE, "Content-Type": content_type})

    _problem(answer, status)


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"lead_ids": [1], "insert_leads": "true"}, "insert_leads"),
        ({"lead_ids": [1], "delete_leads": 1}, "delete_leads"),
        ({"lead_ids": [1], "dry_run": None}, "dry_run"),
        ({"lead_ids": [1.0]}, "lead_ids"),
        ({"lead_ids": ["42"]}, "lead_ids"),
        ({"lead_ids": [True]}, "lead_ids"),
        ({"lead_ids": [None]}, "lead_ids"),
        ({"lead_ids": [-1]}, "lead_ids"),
        ({"lead_ids": [4294967296]}, "lead_ids"),
        ({"lead_ids": []}, "lead_ids"),
        ({"lead_ids": 1}, "lead_ids"),
        ({}, "lead_ids"),
        ({"lead_ids": [1], "delete_lead": True}, "delete_lead"),
        ({"lead_ids": [1], "lead_ids; DROP TABLE vicidial_list": 1}, "DROP TABLE"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(
    client: TestClient, body: dict, field: str
) -> None:
    problem = _problem(submit(client, body), 422)

    assert field in json.dumps(problem["errors"])


@pytest.mark.usefixtures("nothing_enqueued")
def test_no_action_requested_is_422(client: TestClient) -> None:
    body = {"insert_leads": False, "update_leads": False, "delete_leads": False, "lead_ids": [1]}

    problem = _problem(submit(client, body), 422)

    assert "at least one of" in problem["detail"]


@pytest.mark.usefixtures("nothing_enqueued")
def test_more_ids_than_the_limit_is_422_naming_the_limit(client: TestClient) -> None:
    problem = _problem(submit(client, {"lead_ids": list(range(501))}), 422)

    assert "501" in problem["detail"] and "500" in problem["detail"]


def test_the_limit_counts_values_sent_duplicates_included(
    client: TestClient, vicidial: Connection
) -> None:
    accepted = submit(client, {"lead_ids": [7] * 500})
    _problem(submit(client, {"lead_ids": [7] * 501}), 422)

    assert accepted.status_code == 202
    final = poll_until_done(client, accepted.headers["location"], ALICE)
    assert final["status"] == "succeeded"
    assert (final["request"]["lead_count"], final["result"]["duplicates"]) == (500, [7])


@pytest.mark.usefixtures("nothing_enqueued")
def test_inside_office_hours_is_503_with_retry_after_and_opens_at(
    client: TestClient, clock: FakeClock
) -> None:
    clock.now = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # Monday 10:00 in New York

    problem = _problem(submit(client, SEED_REQUEST), 503)

    assert problem["opens_at"] == "2026-11-30T23:00:00.000+00:00"  # 18:00 EST
    assert client.post(URL, json=SEED_REQUEST, headers=ALICE).headers["retry-after"] == str(
        8 * 3600
    )


def test_unreachable_redis_is_503_with_a_clear_message(database_url: str, clock: FakeClock) -> None:
    from api.app import create_app
    from tasks.celery_config import create_celery
    from tasks.runtime import Runtime
    from tests.api.conftest import make_settings

    # Nothing listens on port 1.
    settings = make_settings(database_url, "redis://127.0.0.1:1/0")
    app = create_app(
        settings, runtime=Runtime(settings, clock=clock), celery=create_celery(settings)
    )
    with TestClient(app, raise_server_exceptions=False) as offline:
        submitted = offline.post(URL, json=SEED_REQUEST, headers=ALICE)
        # A well-formed ID: a malformed one is answered 404 without asking Redis.
        polled = offline.get(f"{URL}/{'x' * 22}", headers=ALICE)

    for answer in (submitted, polled):
        problem = _problem(answer, 503)
        assert "Redis" in problem["detail"]
        assert "Traceback" not in answer.text


def test_rate_limit_answers_429_with_retry_after(
    client: TestClient,
    vicidial: Connection,
    database_url: str,
    redis_url: str,
    clock: FakeClock,
    celery_app,
) -> None:
    from api.app import create_app
    from tasks.runtime import Runtime
    from tests.api.conftest import make_settings

    settings = make_settings(database_url, redis_url, rate_limit="3/minute")
    app = create_app(settings, runtime=Runtime(settings, clock=clock), celery=celery_app)
    with TestClient(app) as limited:
        answers = [limited.post(URL, json={"lead_ids": [999]}, headers=BOB) for _ in range(4)]
        other_key = limited.post(URL, json={"lead_ids": [999]}, headers=ALICE)

    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    _problem(answers[3], 429)
    assert 1 <= int(answers[3].headers["retry-after"]) <= 60
    assert other_key.status_code == 202
    for answer, headers in [*((a, BOB) for a in answers[:3]), (other_key, ALICE)]:
        assert poll_until_done(client, answer.headers["location"], headers)["status"] == (
            "succeeded"
        )


@contextmanager
def own_app(
    database_url: str, redis_url: str, clock: FakeClock, **overrides: Any
) -> Iterator[tuple[FastAPI, redis.Redis]]:
    """An API app on a Redis of the test's own (no worker takes its jobs), rate limit off unless
    ``overrides`` say otherwise: the app, and a client on its broker's database."""
    from api.app import create_app
    from tasks.celery_config import create_celery
    from tasks.runtime import Runtime

    settings = make_settings(database_url, redis_url, **{"rate_limit": "", **overrides})
    runtime = Runtime(settings, clock=clock)
    broker = redis.Redis.from_url(settings.broker_url)
    try:
        yield create_app(settings, runtime=runtime, celery=create_celery(settings)), broker
    finally:
        broker.close()
        runtime.close()


def test_the_rate_limiter_with_redis_down_answers_503_and_enqueues_nothing(
    database_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    """The limiter counts in the job store's Redis: with that server stopped, a submission gets
    the contract's 503 problem (Retry-After), never a 500, and no message reaches the broker."""
    with (
        claim_redis_database() as broker_url,
        private_redis(tmp_path) as store,
        own_app(database_url, store.url, clock, broker_url=broker_url, rate_limit="2/minute") as (
            app,
            broker,
        ),
        TestClient(app, raise_server_exceptions=False) as api,
    ):
        counted = [submit(api, {"lead_ids": [1]}).status_code for _ in range(3)]
        queued = broker.llen("leadarchive")
        store.stop()
        down = [api.post(URL, json={"lead_ids": [1]}, headers=h) for h in (ALICE, BOB)]
        queued_after = broker.llen("leadarchive")

    assert counted == [202, 202, 429]  # the limiter was counting in that Redis
    assert (queued, queued_after) == (2, 2)
    for answer in down:
        problem = _problem(answer, 503)
        assert problem["type"] == "urn:leadarchive:problem:broker-unavailable"
        assert answer.headers["retry-after"] == "5"
        assert "Traceback" not in answer.text


# --- idempotency, ownership, cancellation ------------------------------------------------------


def test_idempotency_key_returns_the_same_job_and_refuses_a_different_body(
    client: TestClient, vicidial: Connection
) -> None:
    key = {"Idempotency-Key": "batch-2026-11-28-0001"}
    first = submit(client, {"lead_ids": [5, 6]}, key)
    again = submit(client, {"lead_ids": [5, 6]}, key)
    different = submit(client, {"lead_ids": [5, 7]}, key)
    other_owner = client.post(URL, json={"lead_ids": [5, 6]}, headers={**BOB, **key})

    assert first.status_code == again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    _problem(different, 422)
    assert other_owner.status_code == 202
    assert other_owner.json()["job_id"] != first.json()["job_id"]
    for answer, headers in ((first, ALICE), (other_owner, BOB)):
        final = poll_until_done(client, answer.headers["location"], headers)
        assert final["status"] == "succeeded"
        assert [lead["insert"] for lead in final["result"]["leads"]] == ["not_found"] * 2


def test_a_job_is_visible_only_to_its_key(client: TestClient, vicidial: Connection) -> None:
    url = submit(client, {"lead_ids": [1]}).headers["location"]
    poll_until_done(client, url, ALICE)

    _problem(client.get(url, headers=BOB), 404)
    _problem(client.delete(url, headers=BOB), 404)
    _problem(client.get(f"{URL}/no-such-job", headers=ALICE), 404)
    _problem(client.get(url), 401)
    assert client.get(url, headers=ALICE).status_code == 200


def test_a_finished_job_cannot_be_cancelled(client: TestClient, vicidial: Connection) -> None:
    url = submit(client, {"lead_ids": [1]}).headers["location"]
    poll_until_done(client, url, ALICE)

    problem = _problem(client.delete(url, headers=ALICE), 409)

    assert "succeeded" in problem["detail"]


def test_a_job_queued_again_after_its_run_began_cannot_be_cancelled(
    client: TestClient, rt, redis_client: redis.Redis
) -> None:
    """A transient error hands a running job back to the queue after some of its chunks ran:
    cancelling it then would report a job that changed data as cancelled."""
    from datetime import timedelta

    from tasks.requests import ArchiveRequest

    job_id, _ = rt.jobs.create("alice", ArchiveRequest(lead_ids=[1], delete_leads=True))
    rt.jobs.start(job_id, "run", timedelta(seconds=30))
    rt.jobs.transition(job_id, ("running",), "queued", token="run")

    answer = client.delete(f"{URL}/{job_id}", headers=ALICE)
    after = client.get(f"{URL}/{job_id}", headers=ALICE).json()
    rt.jobs.transition(job_id, ("queued",), "failed")  # ended: it has no message to run by

    problem = _problem(answer, 409)
    assert "has started" in problem["detail"]
    assert (after["status"], after["attempts"]) == ("queued", 1)


# --- office hours on the worker side ----------------------------------------------------------


def test_worker_defers_a_job_that_reaches_it_in_office_hours_and_runs_it_after(
    client: TestClient,
    vicidial: Connection,
    clock: FakeClock,
    rt,
    celery_app,
    redis_client: redis.Redis,
) -> None:
    """Submitted outside hours, picked up inside: deferred in Redis, not held by a worker."""
    from tasks.publishing import publish
    from tasks.requests import ArchiveRequest

    insert_leads(vicidial, lead_rows(2, seed=13))
    rows = live(vicidial)
    clock.now = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # Monday 10:00 New York
    request = ArchiveRequest(
        lead_ids=[1, 2], insert_leads=True, update_leads=True, delete_leads=True, dry_run=False
    )
    job_id, _ = rt.jobs.create("alice", request)
    publish(celery_app, job_id, request)
    url = f"{URL}/{job_id}"

    deferred = wait_for(
        lambda: (b := client.get(url, headers=ALICE).json())["status"] == "deferred" and b
    )
    assert deferred["not_before"] == "2026-11-30T23:00:00.000+00:00"
    # Nothing waits in a worker as an ETA message: no unacknowledged or queued message.
    assert redis_client.hlen("unacked") == 0
    assert redis_client.llen("leadarchive") == 0
    assert (live(vicidial), archive(vicidial)) == (rows, {})

    clock.now = datetime(2026, 11, 30, 22, 59, tzinfo=UTC)  # still inside
    assert client.get(url, headers=ALICE).json()["status"] == "deferred"
    clock.now = datetime(2026, 11, 30, 23, 0, 1, tzinfo=UTC)  # the window has opened

    final = poll_until_done(client, url, ALICE)
    assert final["status"] == "succeeded"
    assert live(vicidial) == {}
    assert archive(vicidial) == rows


def test_a_deferred_job_can_be_cancelled_and_never_runs(
    client: TestClient, vicidial: Connection, clock: FakeClock, rt, celery_app
) -> None:
    from tasks.publishing import publish
    from tasks.requests import ArchiveRequest

    insert_leads(vicidial, lead_rows(2, seed=14))
    rows = live(vicidial)
    clock.now = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    # Lead 1's job is cancelled; lead 2's, deferred to the same time, shows when it has come.
    urls = []
    for lead_id in (1, 2):
        request = ArchiveRequest(
            lead_ids=[lead_id],
            insert_leads=True,
            update_leads=True,
            delete_leads=True,
            dry_run=False,
        )
        job_id, _ = rt.jobs.create("alice", request)
        publish(celery_app, job_id, request)
        urls.append(f"{URL}/{job_id}")
    for url in urls:
        wait_for(lambda u=url: client.get(u, headers=ALICE).json()["status"] == "deferred")

    cancelled = client.delete(urls[0], headers=ALICE)
    clock.now = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    # The sweep that released the other job would have released this one too; once that job
    # has ended, and every message sent before the marker has been handled, it is too late.
    released = poll_until_done(client, urls[1], ALICE)
    run_marker_job(client)

    assert released["status"] == "succeeded"
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    final = client.get(urls[0], headers=ALICE).json()
    assert final["status"] == "cancelled"
    assert "attempts" not in final and "started_at" not in final
    assert live(vicidial) == {1: rows[1]}
    assert archive(vicidial) == {2: rows[2]}


# --- failures and retries ---------------------------------------------------------------------


def test_schema_drift_fails_the_job_at_once_naming_the_difference(
    client: TestClient, vicidial: Connection
) -> None:
    insert_leads(vicidial, lead_rows(1, seed=15))
    rows = live(vicidial)
    vicidial.exec_driver_sql("ALTER TABLE vicidial_list_archive DROP COLUMN entry_list_id")

    final = poll_until_done(client, submit(client, SEED_REQUEST).headers["location"], ALICE)

    assert final["status"] == "failed"
    assert final["error"]["type"] == "SchemaMismatchError"
    assert "entry_list_id" in final["error"]["detail"]
    assert final["attempts"] == 1
    assert live(vicidial) == rows
    archived = vicidial.exec_driver_sql("SELECT COUNT(*) FROM vicidial_list_archive").scalar()
    assert archived == 0


def test_a_lock_wait_timeout_is_retried_until_the_batch_succeeds(
    client: TestClient, vicidial: Connection, engine
) -> None:
    """The dialer (here: a READ lock) holds the table past the lock wait timeout, then lets go."""
    insert_leads(vicidial, lead_rows(2, seed=16))
    rows = live(vicidial)
    with engine.connect() as blocker:
        blocker.exec_driver_sql("LOCK TABLES vicidial_list READ")
        url = submit(client, SEED_REQUEST).headers["location"]
        # A second start while the lock is still held: the first timed out and was retried.
        wait_for(lambda: client.get(url, headers=ALICE).json().get("attempts", 0) >= 2, 30)
        blocker.exec_driver_sql("UNLOCK TABLES")

    final = poll_until_done(client, url, ALICE)
    assert final["status"] == "succeeded"
    assert final["attempts"] >= 2
    assert live(vicidial) == {2: rows[2]}
    assert archive(vicidial) == {1: rows[1]}


def test_a_retry_counts_as_queued_from_when_its_countdown_ends(
    client: TestClient,
    vicidial: Connection,
    engine,
    rt,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker holds a retry's message until its countdown ends, which can outlast a lease (a
    third of the visibility timeout): the queued index says the job is queued from then, so the
    lost-message sweep never takes the waiting retry for a message a dead worker left."""
    import tasks.lifecycle
    from tasks.jobs import QUEUED_KEY

    monkeypatch.setattr(tasks.lifecycle, "get_exponential_backoff_interval", lambda **_: 4)
    insert_leads(vicidial, lead_rows(2, seed=16))
    rows = live(vicidial)
    with engine.connect() as blocker:
        blocker.exec_driver_sql("LOCK TABLES vicidial_list READ")
        url = submit(client, SEED_REQUEST).headers["location"]
        job_id = url.rsplit("/", 1)[1]

        def retry_waits() -> bool:
            body = client.get(url, headers=ALICE).json()
            return body["status"] == "queued" and body.get("attempts") == 1

        wait_for(retry_waits, 30)  # the first run met the lock and was retried, countdown 4 s
        due, now = redis_client.zscore(QUEUED_KEY, job_id), rt.jobs.clock()
        blocker.exec_driver_sql("UNLOCK TABLES")

    final = poll_until_done(client, url, ALICE)
    assert due is not None and due > now + 2, (due, now)  # not as of the failure: when it is due
    assert final["status"] == "succeeded"
    assert final["attempts"] == 2
    assert live(vicidial) == {2: rows[2]}
    assert archive(vicidial) == {1: rows[1]}


def test_broker_down_after_the_record_is_made_leaves_no_job_behind(
    database_url: str, redis_url: str, clock: FakeClock, redis_client: redis.Redis
) -> None:
    import time

    from api.app import create_app
    from tasks.celery_config import create_celery
    from tasks.runtime import Runtime
    from tests.api.conftest import make_settings

    settings = make_settings(database_url, redis_url, broker_url="redis://127.0.0.1:1/0")
    app = create_app(
        settings, runtime=Runtime(settings, clock=clock), celery=create_celery(settings)
    )
    before = set(redis_client.keys("leadarchive:*"))
    with TestClient(app) as offline:
        started = time.monotonic()
        answer = offline.post(
            URL, json={"lead_ids": [31337]}, headers={**ALICE, "Idempotency-Key": "k-broker-down"}
        )
        elapsed = time.monotonic() - started

    problem = _problem(answer, 503)
    assert "Redis" in problem["detail"]
    assert set(redis_client.keys("leadarchive:*")) == before
    # At once (a refused connection, no retries): the request alone is timed, with room for a
    # loaded machine; a client's own timeout is typically 30 s or more.
    assert elapsed < 10


def test_a_send_that_fails_after_the_sweep_sent_the_job_answers_with_that_job(
    client: TestClient,
    vicidial: Connection,
    rt,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API's send can outlast a lease while Redis is failing, and meanwhile the lost-message
    sweep sends the job and a worker begins it. The job exists and runs: the answer is its ID
    (202), not a 503 that would make the client submit it again, and its record stays."""
    from datetime import timedelta

    import api.routes.submit

    insert_leads(vicidial, lead_rows(2, seed=16))
    rows = live(vicidial)

    def sent_by_the_sweep_meanwhile(celery: Any, job_id: str, *args: Any) -> None:
        # What the sweep's message does: a worker begins the job (a short lease: this test has
        # no such worker, so the lease hand-back sends it to the session's own).
        assert rt.jobs.start(job_id, "sweep's run", timedelta(seconds=1)) == "started"
        raise redis.ConnectionError("Timeout reading from socket")

    monkeypatch.setattr(api.routes.submit, "publish", sent_by_the_sweep_meanwhile)
    body = {"lead_ids": [1, 2], "delete_leads": True}
    answer = submit(client, body, {"Idempotency-Key": "k-slow-send"})
    monkeypatch.undo()
    again = submit(client, body, {"Idempotency-Key": "k-slow-send"})

    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    assert again.status_code == 202 and again.json()["job_id"] == job_id  # the claim stayed
    final = poll_until_done(client, f"{URL}/{job_id}", ALICE, timeout=60)
    assert final["status"] == "succeeded"
    assert final["attempts"] == 2  # the sweep's run, handed back, then the session worker's
    assert live(vicidial) == {}
    assert archive(vicidial) == rows


def test_logs_name_the_job_and_key_name_never_the_key(
    client: TestClient, vicidial: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.helpers import ALICE_KEY

    with caplog.at_level("INFO", logger="leadarchive"):
        accepted = submit(client, {"lead_ids": [1]})
        client.post(URL, json={"lead_ids": [1]}, headers={"Authorization": "Key=" + "z" * 40})
        assert poll_until_done(client, accepted.headers["location"], ALICE)["status"] == (
            "succeeded"
        )
    job_id = accepted.json()["job_id"]

    queued = [r for r in caplog.records if r.getMessage() == "job queued"]
    assert [(r.job_id, r.key_name) for r in queued] == [(job_id, "alice")]  # type: ignore[attr-defined]
    for record in caplog.records:
        assert ALICE_KEY not in str(record.__dict__)
        assert "z" * 40 not in str(record.__dict__)


def test_a_queued_job_cancelled_before_a_worker_takes_it_never_runs(
    client: TestClient, vicidial: Connection, rt, celery_app, redis_client: redis.Redis
) -> None:
    from tasks.publishing import publish
    from tasks.requests import ArchiveRequest

    insert_leads(vicidial, lead_rows(1, seed=17))
    rows = live(vicidial)
    request = ArchiveRequest(
        lead_ids=[1], insert_leads=True, update_leads=True, delete_leads=True, dry_run=False
    )
    job_id, _ = rt.jobs.create("alice", request)  # recorded, not yet sent
    url = f"{URL}/{job_id}"

    cancelled = client.delete(url, headers=ALICE)
    publish(celery_app, job_id, request)  # arrives late
    # Sent after the late message: once it has ended, the worker has handled that one.
    run_marker_job(client)

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    final = client.get(url, headers=ALICE).json()
    assert final["status"] == "cancelled"
    assert "attempts" not in final and "started_at" not in final
    assert live(vicidial) == rows
    assert archive(vicidial) == {}
    assert redis_client.llen("leadarchive") == 0


def test_a_job_whose_message_was_lost_is_sent_again_and_succeeds(
    client: TestClient, vicidial: Connection, rt, redis_client: redis.Redis
) -> None:
    """kombu's Redis transport loses a message if the worker dies between taking it off the
    queue and recording it as unacknowledged: the job record, still queued, brings it back once
    it has been queued for a job lease, and not before."""
    from tasks.jobs import QUEUED_KEY
    from tasks.requests import ArchiveRequest

    insert_leads(vicidial, lead_rows(3, seed=15))
    rows = live(vicidial)
    request = ArchiveRequest(
        lead_ids=[1, 2, 3], insert_leads=True, update_leads=True, delete_leads=True, dry_run=False
    )
    job_id, _ = rt.jobs.create("alice", request)  # the record, and no message: lost
    # As if queued most of a lease ago (the session worker's lease is 10 s): the test waits
    # only the rest of it.
    lease = rt.settings.lease.total_seconds()
    redis_client.zincrby(QUEUED_KEY, -(lease - 3), job_id)
    queued_at = datetime.now(UTC) - timedelta(seconds=lease - 3)
    assert redis_client.llen("leadarchive") == 0

    final = poll_until_done(client, f"{URL}/{job_id}", ALICE, timeout=60)

    assert final["status"] == "succeeded"
    assert final["attempts"] == 1
    took = (datetime.fromisoformat(final["started_at"]) - queued_at).total_seconds()
    # Not before it had been queued for a lease (the queued index is in Redis's clock in whole
    # seconds), and about then (the sweep runs every third of a lease), not 60 s later.
    assert lease - 2 < took < 3 * lease, f"sent again {took:.1f}s after it was queued"
    assert live(vicidial) == {}
    assert archive(vicidial) == rows
    assert redis_client.zscore(QUEUED_KEY, job_id) is None


# (what puts Redis in the state, what undoes it)
_REDIS_CANNOT_SERVE = {
    "out of memory (noeviction)": (
        [("CONFIG", "SET", "maxmemory-policy", "noeviction"), ("CONFIG", "SET", "maxmemory", "1")],
        [("CONFIG", "SET", "maxmemory", "0")],
    ),
    "a read-only replica": (
        [("REPLICAOF", "127.0.0.1", "1")],
        [("REPLICAOF", "NO", "ONE")],
    ),
}


@pytest.mark.parametrize("state", sorted(_REDIS_CANNOT_SERVE))
def test_a_redis_that_answers_but_cannot_write_gives_503_never_500(
    database_url: str, clock: FakeClock, tmp_path: Path, state: str
) -> None:
    """Redis answers OOM or READONLY as an error reply, not a lost connection (issue 13): a
    submission still gets the contract's 503 problem, and no message reaches the broker."""
    enter, leave = _REDIS_CANNOT_SERVE[state]
    with (
        claim_redis_database() as broker_url,
        private_redis(tmp_path) as store,
        own_app(database_url, store.url, clock, broker_url=broker_url) as (app, broker),
        closing(redis.Redis.from_url(store.url)) as admin,
        TestClient(app, raise_server_exceptions=False) as api,
    ):
        for command in enter:
            admin.execute_command(*command)
        answers = [api.post(URL, json={"lead_ids": [n]}, headers=ALICE) for n in (1, 2)]
        queued = broker.llen("leadarchive")
        for command in leave:
            admin.execute_command(*command)
        after = submit(api, {"lead_ids": [3]})

    # Out of memory, the admission check sees it first (nothing written either way).
    expected = "store-full" if state.startswith("out of memory") else "broker-unavailable"
    for answer in answers:
        problem = _problem(answer, 503)
        assert problem["type"] == f"urn:leadarchive:problem:{expected}"
        assert int(answer.headers["retry-after"]) >= 1
    assert queued == 0
    assert after.status_code == 202  # served again once Redis can write


def test_a_key_with_too_many_unfinished_jobs_gets_429_until_one_ends(
    database_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    """LEADARCHIVE_MAX_PENDING_JOBS: a key's submissions beyond it are refused with 429 and
    Retry-After, nothing enqueued; another key is not held back; a job that ends makes room."""
    with (
        claim_redis_database() as redis_url,
        own_app(database_url, redis_url, clock, max_pending_jobs=2) as (app, broker),
        TestClient(app) as api,  # no worker: the jobs stay queued
    ):
        first, second = (submit(api, {"lead_ids": [n]}) for n in (1, 2))
        refused = api.post(URL, json={"lead_ids": [3]}, headers=ALICE)
        queued = broker.llen("leadarchive")
        other = api.post(URL, json={"lead_ids": [3]}, headers=BOB)
        api.delete(first.headers["location"], headers=ALICE)
        after = api.post(URL, json={"lead_ids": [3]}, headers=ALICE)

    assert (first.status_code, second.status_code) == (202, 202)
    problem = _problem(refused, 429)
    assert problem["type"] == "urn:leadarchive:problem:too-many-pending-jobs"
    assert (problem["pending"], problem["limit"]) == (2, 2)
    assert "limit is 2" in problem["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    assert queued == 2
    assert other.status_code == 202
    assert after.status_code == 202


def test_a_nearly_full_job_store_answers_503_store_full_and_enqueues_nothing(
    database_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    with (
        claim_redis_database() as broker_url,
        private_redis(tmp_path) as store,
        own_app(database_url, store.url, clock, broker_url=broker_url) as (app, broker),
        closing(redis.Redis.from_url(store.url)) as admin,
        TestClient(app) as api,
    ):
        accepted = submit(api, {"lead_ids": [1]})
        used = int(admin.info("memory")["used_memory"])
        # Room for the accepted job's result, not for one more and Redis' own share.
        admin.config_set("maxmemory", used + 1024 * 1024 + 20 * 1024)
        refused = api.post(URL, json={"lead_ids": [2]}, headers=ALICE)
        queued = broker.llen("leadarchive")
        admin.config_set("maxmemory", 0)
        after = api.post(URL, json={"lead_ids": [2]}, headers=ALICE)

    assert accepted.status_code == 202
    problem = _problem(refused, 503)
    assert problem["type"] == "urn:leadarchive:problem:store-full"
    assert "maxmemory" in problem["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    assert queued == 1
    assert after.status_code == 202
