"""Security, against the real processes (``leadarchive api`` and ``leadarchive worker``).

- The API key (the secret) appears nowhere the service writes: the JSON logs of the API and of the
  worker, any Redis value (job records, idempotency claims, rate-limit counters, the Celery
  message itself, base64 body included), job results, /metrics of the API and of the worker.
- The worker accepts JSON messages only: a pickled Celery message on the real queue is refused,
  never unpickled and never run.

Covered elsewhere, not repeated here: Flower refuses requests without or with wrong credentials
(tests/worker/test_observability.py); the least-privilege grant runs every batch and cannot drop,
alter, create or truncate a table (tests/deploy/test_grants.py); another key gets 404 for a job,
also when cancelling a queued one (tests/api/test_hostile_input.py).
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis
from sqlalchemy import Engine

from tasks.celery_config import QUEUE
from tasks.jobs import RedisJobStore
from tasks.lifecycle import ARCHIVE_TASK
from tasks.requests import ArchiveRequest
from testkit.services import Live, wait_for_job
from tests.helpers import archive, stored, wait_for
from tests.helpers import live as live_rows

PATH = "/vicidial/leads/archive"


# --- a scan of everything Redis holds -----------------------------------------------------------


def redis_values(client: redis.Redis) -> list[bytes]:
    """Every key name and value in the database, the decoded body of every Celery message, and
    the compressed fields of job records decompressed."""
    found: list[bytes] = []
    for key in client.scan_iter(count=1000):
        found.append(key)
        kind = client.type(key).decode()
        if kind == "string":
            found.append(client.get(key) or b"")
        elif kind == "hash":
            for field, value in client.hgetall(key).items():
                found += [field, value]
                if value.startswith(b"z:"):  # a job record's compressed field: read it too
                    found.append(zlib.decompress(base64.b64decode(value[2:])))
        elif kind == "list":
            found += client.lrange(key, 0, -1)
        elif kind == "set":
            found += list(client.smembers(key))
        elif kind == "zset":
            found += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for _, entry in client.xrange(key):
                for field, value in entry.items():
                    found += [field, value]
    decoded = []
    for value in found:
        # Celery messages (in the queue, or kept as unacknowledged) carry a base64 body.
        for candidate in _json_objects(value):
            body = candidate.get("body")
            if isinstance(body, str) and candidate.get("properties", {}).get("body_encoding") == (
                "base64"
            ):
                decoded.append(base64.b64decode(body))
    return found + decoded


def _json_objects(value: bytes) -> list[dict]:
    try:
        parsed = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return []
    if isinstance(parsed, list):
        return [p for p in parsed if isinstance(p, dict)]
    return [parsed] if isinstance(parsed, dict) else []


def secret_forms(key: str) -> list[bytes]:
    """The key as text and in base64 (at each of the three alignments), so an encoded copy is
    found too."""
    raw = key.encode()
    forms = [raw]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        # Drop the characters that depend on the neighbouring bytes.
        forms.append(encoded[4:-4])
    return forms


def leaks(haystack: list[bytes] | str, key: str) -> list[str]:
    values = [haystack.encode()] if isinstance(haystack, str) else haystack
    found = []
    for value in values:
        for form in secret_forms(key):
            if form in value:
                found.append(value[:200].decode(errors="replace"))
    return found


@pytest.fixture
def service(start_live) -> Iterator[tuple[Live, Engine]]:
    with start_live(worker=False, rate_limit="100/second") as started:
        yield started


def test_the_scan_finds_a_key_hidden_in_a_celery_message(service: tuple[Live, Engine]) -> None:
    """The scanner itself: a key planted in a base64 message body is found."""
    live, _ = service
    client = redis.Redis.from_url(live.redis_url)
    try:
        body = base64.b64encode(json.dumps([[], {"key": live.key}, {}]).encode()).decode()
        message = {"body": body, "properties": {"body_encoding": "base64"}}
        client.hset("canary", "message", json.dumps(message))
        found = leaks(redis_values(client), live.key)
        client.delete("canary")
    finally:
        client.close()

    assert found


def test_the_key_appears_in_no_log_redis_value_message_result_or_metric(
    service: tuple[Live, Engine],
) -> None:
    live, engine = service
    with engine.connect() as conn:
        seeded = live_rows(conn)
    client = live.client()
    rclient = redis.Redis.from_url(live.redis_url)
    try:
        # A job, with an idempotency key; polled; refused attempts with near-miss keys.
        body = json.dumps({"lead_ids": [1, 2, 3], "delete_leads": True}).encode()
        client.headers = {**live.headers, "Idempotency-Key": "security-scan-1"}
        answer = client.request("POST", PATH, body)
        assert answer.status == 202, answer.body
        url = answer.headers["location"]
        for wrong in (live.key[:-1] + "x", live.key + "x", live.key.upper()):
            near = live.client({"Authorization": f"Key={wrong}"})
            assert near.request("POST", PATH, body).status == 401
            near.close()
        bad_form = live.client({"Authorization": f"Bearer {live.key}"})
        assert bad_form.request("GET", url).status == 401
        bad_form.close()
        # The message waits in the queue: no worker yet.
        assert rclient.llen(QUEUE) == 1
        queued_values = redis_values(rclient)

        live.start_worker()
        final = wait_for_job(live, url, timeout=90)
        assert final["status"] == "succeeded", final
        assert final["result"]["counts"]["delete"]["deleted"] == 3
        done_values = redis_values(rclient)
        api_metrics = client.request("GET", "/metrics").body.decode()
        worker_metrics = wait_for(
            lambda: _get(f"http://127.0.0.1:{live.worker_metrics_port}/metrics"), timeout=30
        )
        # The worker logs "job succeeded" just after it records the job as ended.
        logs = wait_for(lambda: (text := live.log_text()) and '"job succeeded"' in text and text)
    finally:
        client.close()
        rclient.close()

    with engine.connect() as conn:
        tables = (live_rows(conn), archive(conn))
    assert tables == ({i: r for i, r in seeded.items() if i > 3}, {i: seeded[i] for i in (1, 2, 3)})
    # Each place was really looked at: the message, the record, the metrics, the log lines.
    assert any(b"leadarchive.archive_leads" in v for v in queued_values)
    assert any(b'"deleted"' in v for v in done_values)
    assert "leadarchive_jobs_submitted_total 1.0" in api_metrics
    assert 'leadarchive_jobs_total{status="succeeded"} 1.0' in worker_metrics
    assert '"job succeeded"' in logs and '"job queued"' in logs
    for place, haystack in [
        ("Redis while queued", queued_values),
        ("Redis after the job", done_values),
        ("API /metrics", api_metrics),
        ("worker /metrics", worker_metrics),
        ("API and worker logs", logs),
    ]:
        assert leaks(haystack, live.key) == [], place


def _get(url: str) -> str | None:
    try:
        answer = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None
    return answer.text if answer.status_code == 200 else None


class Bomb:
    """Unpickling this creates the marker file: proof that the worker unpickled the message."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_pickled_message_is_refused_never_unpickled_and_never_run(
    service: tuple[Live, Engine], tmp_path: Path
) -> None:
    from tasks.celery_config import create_celery
    from tests.helpers import make_settings

    live, engine = service
    marker = tmp_path / "unpickled"
    settings = make_settings(live.database_url, live.redis_url, office_hours="")
    rclient = redis.Redis.from_url(live.redis_url)
    store = RedisJobStore(rclient, settings.result_ttl)
    with engine.connect() as conn:
        before = (live_rows(conn), archive(conn))
    # A real job record, so that a task that did run would find it and archive its leads.
    request = ArchiveRequest(
        lead_ids=[1, 2, 3, 4, 5],
        insert_leads=True,
        update_leads=True,
        delete_leads=True,
        dry_run=False,
    )
    job_id, _ = store.create("load", request)
    sender = create_celery(settings)
    # The sender may pickle; only the worker's accept_content matters.
    sender.conf.accept_content = ["json", "pickle"]
    kwargs = {"job_id": job_id, "lead_ids": request.lead_ids, "delete_leads": True}
    sender.send_task(ARCHIVE_TASK, kwargs=kwargs, queue=QUEUE, serializer="pickle")
    sender.send_task(
        ARCHIVE_TASK,
        kwargs={**kwargs, "lead_ids": [Bomb(marker)]},
        queue=QUEUE,
        serializer="pickle",
    )
    assert rclient.llen(QUEUE) == 2
    content_types = [json.loads(m)["content-type"] for m in rclient.lrange(QUEUE, 0, -1)]
    assert content_types == ["application/x-python-serialize"] * 2

    try:
        live.start_worker()
        # A JSON job sent after them runs: the worker read past both pickled messages.
        client = live.client()
        answer = client.request("POST", PATH, json.dumps({"lead_ids": [7]}).encode())
        client.close()
        assert answer.status == 202
        assert wait_for_job(live, answer.headers["location"], timeout=90)["status"] == "succeeded"
        wait_for(lambda: rclient.llen(QUEUE) == 0 and rclient.hlen("unacked") == 0, timeout=30)
        record = stored(store.get(job_id))
        with engine.connect() as conn:
            after = (live_rows(conn), archive(conn))
        logs = live.log_text()
    finally:
        sender.close()
        rclient.close()

    assert not marker.exists()
    assert record is not None and record["status"] == "queued" and "attempts" not in record
    # Only lead 7 moved (the JSON job); leads 1-5 are where they were.
    assert {k: v for k, v in after[0].items() if k != 7} == {
        k: v for k, v in before[0].items() if k != 7
    }
    assert set(after[1]) - set(before[1]) == {7}
    assert "ContentDisallowed" in logs or "untrusted content" in logs
