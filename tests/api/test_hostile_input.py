"""Hostile and broken requests that tests/api/test_archive_api.py does not already send.

Each one must get a clear problem+json answer and change nothing: no job record, no message for
the worker, no job counted as submitted, and both Vicidial tables byte for byte as they were.
(Already proven there: the common malformed Authorization forms, a key one character off at the
end or one short, invalid UTF-8 in the body, 100,000 and 20,000 levels of nesting at the default
cap, text/plain and form bodies, 1.0 / "42" / true / null / -1 / 2**32 in lead_ids, unknown fields.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Connection

from api import metrics
from tasks.seed import insert_leads, lead_rows
from tests.api.conftest import SEED_REQUEST, poll_until_done
from tests.helpers import ALICE, ALICE_KEY, BOB_KEY, archive, live, make_settings

pytestmark = pytest.mark.usefixtures("worker")

URL = "/vicidial/leads/archive"
SQL = [
    "1; DROP TABLE vicidial_list; --",
    "' OR '1'='1",
    "1 UNION SELECT * FROM vicidial_list",
    "`rank`); DELETE FROM vicidial_list_archive; --",
]


def _one_off(key: str, position: int) -> str:
    """``key`` with the character at ``position`` changed (to another printable one)."""
    changed = "x" if key[position] != "x" else "y"
    return key[:position] + changed + key[position + 1 :]


@pytest.fixture
def unchanged(
    vicidial: Connection, redis_client: redis.Redis, client: TestClient
) -> Iterator[None]:
    """Leads in both tables; after the test, the tables, Redis and the counters as they were."""
    insert_leads(vicidial, lead_rows(5, seed=51))
    # Archive leads 1 and 2, so that an update or delete would show in both tables.
    archived = poll_until_done(
        client,
        client.post(URL, json={"lead_ids": [1, 2]}, headers=ALICE).headers["location"],
        ALICE,
    )
    tables = (live(vicidial), archive(vicidial))
    assert archived["status"] == "succeeded"
    assert tables[1] == {i: tables[0][i] for i in (1, 2)}
    records = set(redis_client.keys("leadarchive:job:*"))
    submitted = metrics.JOBS_SUBMITTED._value.get()
    yield
    assert redis_client.llen("leadarchive") == 0
    assert redis_client.hlen("unacked") == 0
    assert set(redis_client.keys("leadarchive:job:*")) == records
    assert metrics.JOBS_SUBMITTED._value.get() == submitted
    assert (live(vicidial), archive(vicidial)) == tables


def _problem(answer, status: int) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    assert "Traceback" not in answer.text
    return body


# --- keys -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "authorization",
    [
        # One character off: first, middle, last (of each configured key).
        f"Key={_one_off(ALICE_KEY, 0)}",
        f"Key={_one_off(ALICE_KEY, len(ALICE_KEY) // 2)}",
        f"Key={_one_off(ALICE_KEY, len(ALICE_KEY) - 1)}",
        f"Key={_one_off(BOB_KEY, 0)}",
        f"Key={_one_off(BOB_KEY, len(BOB_KEY) // 2)}",
        # One character longer, and the key twice.
        f"Key={ALICE_KEY}x",
        f"Key={ALICE_KEY}{ALICE_KEY}",
        # The other forms a client might try.
        f"KEY={ALICE_KEY}",
        f"Key:{ALICE_KEY}",
        f"Key = {ALICE_KEY}",
        f"Key=={ALICE_KEY}",
        f" Key={ALICE_KEY}",
        f"Key= {ALICE_KEY}",
        f"Key=\t{ALICE_KEY}",
        f'Key="{ALICE_KEY}"',
        f"Key={ALICE_KEY}, Key={BOB_KEY}",
        f"Key={ALICE_KEY},Key={BOB_KEY}",
        f"Key={ALICE_KEY};",
        f"Basic {ALICE_KEY}",
        f"Bearer {ALICE_KEY}",
        f"Token {ALICE_KEY}",
        f"{ALICE_KEY}",
        f"Key={ALICE_KEY.upper()}",
        "Key=" + "a" * 15,  # shorter than any key
        "Key=" + "a" * 257,  # longer than any key
        "Key=" + "é" * 20,  # not ASCII (sent as latin-1)
        "Key=" + "\x7f" * 20,
        # SQL in the key.
        *(f"Key={fragment.replace(' ', '_')}0123456789abcdef" for fragment in SQL),
        "Key=' OR 1=1 --0123456789",
    ],
)
def test_every_malformed_or_unknown_key_is_401_and_changes_nothing(
    client: TestClient, authorization: str
) -> None:
    headers = {"Authorization": authorization.encode("latin-1")}

    posted = client.post(URL, json=SEED_REQUEST, headers=headers)
    polled = client.get(f"{URL}/anything", headers=headers)
    cancelled = client.delete(f"{URL}/anything", headers=headers)

    for answer in (posted, polled, cancelled):
        _problem(answer, 401)
        assert answer.headers["www-authenticate"] == "Key"
        assert ALICE_KEY not in answer.text and BOB_KEY not in answer.text


@pytest.mark.usefixtures("unchanged")
def test_two_authorization_headers_are_refused(client: TestClient) -> None:
    # A proxy that adds its own header must not let a request through on either one.
    answer = client.post(
        URL,
        json=SEED_REQUEST,
        headers=[
            ("Authorization", "Key=not-a-real-key-000000"),
            ("Authorization", ALICE["Authorization"]),
        ],
    )

    _problem(answer, 401)


# --- bodies -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("content", "status"),
    [
        # Invalid UTF-8 in several places, overlong forms, lone surrogates, a BOM.
        (b'{"lead_ids": [1]}\xff', 400),
        (b'{"lead_\xc0\xafids": [1]}', 400),
        (b'{"lead_ids": [1], "\xed\xa0\x80": 1}', 400),
        (b'\xef\xbb\xbf{"lead_ids": [1]}', 400),
        ('{"lead_ids": [1]}'.encode("utf-16"), 400),
        (b'{"lead_ids": ["\\ud800"]}', 422),
        # Not an object, or nothing at all.
        (b"", 400),
        (b"null", 400),
        (b"true", 400),
        (b"42", 400),
        (b" ", 400),
        (b"\x00", 400),
        # JSON that Python would take but the contract does not mean.
        (b'{"lead_ids": [NaN]}', 422),
        (b'{"lead_ids": [Infinity]}', 422),
        (b'{"lead_ids": [-Infinity]}', 422),
        (b'{"lead_ids": [1e400]}', 422),
        # An integer of 5,000 digits: past Python's int-from-text limit, not a crash.
        (b'{"lead_ids": [' + b"9" * 5000 + b"]}", 400),
        # Duplicate keys: refused, whichever of the two a parser would keep (issue 13).
        (b'{"lead_ids": [1], "lead_ids": "1"}', 422),
        # Truncated or trailing garbage.
        (b'{"lead_ids": [1]', 400),
        (b'{"lead_ids": [1]}{"lead_ids": [2]}', 400),
    ],
)
def test_broken_json_bodies_are_refused(client: TestClient, content: bytes, status: int) -> None:
    answer = client.post(
        URL, content=content, headers={**ALICE, "Content-Type": "application/json"}
    )

    _problem(answer, status)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("content", "key"),
    [
        (b'{"lead_ids": [1], "delete_leads": false, "delete_leads": true}', "delete_leads"),
        (b'{"delete_leads": true, "lead_ids": [1], "delete_leads": false}', "delete_leads"),
        (b'{"lead_ids": [1], "lead_ids": [2]}', "lead_ids"),
        (b'{"lead_ids": [1], "x": {"a": 1, "a": 2}}', "a"),
    ],
)
def test_a_key_named_twice_is_refused_not_read_as_either_value(
    client: TestClient, content: bytes, key: str
) -> None:
    """`{"delete_leads": false, "delete_leads": true}` once archived and deleted: json.loads
    keeps the last value, another parser (a proxy, a log reader) may keep the first."""
    answer = client.post(
        URL, content=content, headers={**ALICE, "Content-Type": "application/json"}
    )

    body = _problem(answer, 422)
    assert body["type"].endswith("duplicate-key")
    assert f'"{key}"' in body["detail"]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("content", "locs"),
    [
        (b'{"lead_ids": [1], "delete_leads": false, "delete_leads": true}', [["delete_leads"]]),
        (b'{"lead_ids": [1], "x": {"a": 1, "a": 2}}', [["x", "a"]]),
        (b'{"lead_ids": [1], "x": [{}, {"b": 1, "b": 1, "b": 2}]}', [["x", 1, "b"]]),
        (
            b'{"lead_ids": [1], "x": {"a": {"c": 1, "c": 1}}, "lead_ids": [1]}',
            [["lead_ids"], ["x", "a", "c"]],
        ),
    ],
)
def test_a_member_named_twice_is_422_naming_it_in_detail_and_errors(
    client: TestClient, content: bytes, locs: list
) -> None:
    """Issue 13's strict input: each member named twice is named where a client looks for it
    (``errors[].loc``, from the body's top, as for any invalid field), in document order."""
    answer = client.post(
        URL, content=content, headers={**ALICE, "Content-Type": "application/json"}
    )

    body = _problem(answer, 422)
    assert body["type"] == "urn:leadarchive:problem:duplicate-key"
    assert all(json.dumps(loc[-1]) in body["detail"] for loc in locs)
    assert [e["loc"] for e in body["errors"]] == locs


MALFORMED_JOB_IDS = [
    "anything",
    "x" * 21,
    "x" * 23,
    "x" * 21 + "!",
    "x" * 21 + "%00",
    "x" * 21 + "%2A",
    "leadarchive:job:*",
    "%2A" * 22,
    "1%3B%20DROP%20TABLE%20vicidial_list",
    "%C3%A9" * 11,
]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_malformed_job_id_is_404_before_redis_is_asked(
    database_url: str, clock, method: str
) -> None:
    """On an app whose Redis does not answer: a job ID the API could not have given is 404 (Redis
    was not asked), while every ID it gives (tasks.jobs.new_job_id) reaches Redis (503). The key is
    still checked first."""
    from api.app import create_app
    from tasks.celery_config import create_celery
    from tasks.jobs import new_job_id
    from tasks.runtime import Runtime

    # Nothing listens on port 1.
    settings = make_settings(database_url, "redis://127.0.0.1:1/0")
    runtime = Runtime(settings, clock=clock)
    app = create_app(settings, runtime=runtime, celery=create_celery(settings))
    try:
        with TestClient(app, raise_server_exceptions=False) as offline:
            malformed = [
                offline.request(method, f"{URL}/{job_id}", headers=ALICE)
                for job_id in MALFORMED_JOB_IDS
            ]
            keyless = offline.request(method, f"{URL}/anything")
            well_formed = [
                offline.request(method, f"{URL}/{new_job_id()}", headers=ALICE) for _ in range(20)
            ]
    finally:
        runtime.close()

    for answer in malformed:
        assert _problem(answer, 404)["type"] == "urn:leadarchive:problem:not-found"
    _problem(keyless, 401)
    for answer in well_formed:
        assert "Redis" in _problem(answer, 503)["detail"]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("shape", ["body", "lead_ids", "unknown field"])
def test_deep_nesting_is_refused_without_a_recursion_error(
    database_url: str, redis_url: str, rt, celery_app, depth: int, shape: str
) -> None:
    """A cap large enough for the whole document to reach the parser (the default cap stops the
    100,000-level form at 413, as test_archive_api proves)."""
    from api.app import create_app

    nested = b"[" * depth + b"]" * depth
    content = {
        "body": nested,
        "lead_ids": b'{"lead_ids": ' + nested + b"}",
        "unknown field": b'{"lead_ids": [1], "x": ' + nested + b"}",
    }[shape]
    settings = make_settings(database_url, redis_url, max_body_bytes=1_000_000)
    app = create_app(settings, runtime=rt, celery=celery_app)
    with TestClient(app, raise_server_exceptions=True) as big:
        answer = big.post(
            URL, content=content, headers={**ALICE, "Content-Type": "application/json"}
        )

    problem = _problem(answer, 400 if shape == "body" or depth > 900 else 422)
    assert "Recursion" not in json.dumps(problem)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "lead_ids",
    [
        [4294967296],  # INT UNSIGNED max + 1
        [2**63 - 1],  # BIGINT max
        [2**63],
        [2**64 - 1],  # BIGINT UNSIGNED max
        [2**64],
        [10**30],
        [-1],
        [-(2**63)],
        [-(2**64)],
        [0.0],
        [1.0],
        [1.5],
        [1e3],
        [-0.0],
        [False],
        [True],
        [""],
        ["1"],
        ["0x10"],
        ["1e3"],
        [None],
        [[1]],
        [{"lead_id": 1}],
        [1, "2"],
        [1, None],
        *([fragment] for fragment in SQL),
    ],
    ids=repr,
)
def test_lead_ids_that_are_not_json_integers_in_range_are_422(
    client: TestClient, lead_ids: list
) -> None:
    problem = _problem(client.post(URL, json={"lead_ids": lead_ids}, headers=ALICE), 422)

    assert problem["errors"][0]["loc"][0] == "lead_ids"


def test_the_ends_of_the_lead_id_range_are_accepted(
    client: TestClient, vicidial: Connection
) -> None:
    """0 and INT UNSIGNED's maximum are valid IDs (0..4294967295 in the contract); a lead with
    the largest ID is archived like any other."""
    insert_leads(vicidial, lead_rows(1, first_lead_id=4294967295, seed=54))
    rows = live(vicidial)

    answer = client.post(URL, json={"lead_ids": [0, 4294967295]}, headers=ALICE)

    final = poll_until_done(client, answer.headers["location"], ALICE)
    assert final["status"] == "succeeded"
    assert [lead["lead_id"] for lead in final["result"]["leads"]] == [0, 4294967295]
    assert [lead["insert"] for lead in final["result"]["leads"]] == ["not_found", "inserted"]
    assert set(rows) == {4294967295}
    assert (live(vicidial), archive(vicidial)) == (rows, rows)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("field", ["insert_leads", "update_leads", "delete_leads", "dry_run"])
@pytest.mark.parametrize("value", [*SQL, "true", 1, 0, None, [], {}])
def test_sql_and_non_booleans_in_every_flag_are_422(
    client: TestClient, field: str, value: object
) -> None:
    problem = _problem(client.post(URL, json={"lead_ids": [1], field: value}, headers=ALICE), 422)

    assert field in json.dumps(problem["errors"])


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("name", [*SQL, "", " ", "lead_ids ", "LEAD_IDS", "x" * 10_000])
def test_sql_and_lookalikes_as_field_names_are_422(client: TestClient, name: str) -> None:
    body = {"lead_ids": [1], name: True}

    _problem(client.post(URL, json=body, headers=ALICE), 422)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "idempotency_key",
    [
        "",
        " ",
        "x" * 256,
        "tab\tinside",
        "' OR '1'='1",  # spaces are not printable ASCII for this header
        "é",  # not ASCII (sent as latin-1)
        "\x7f",
    ],
)
def test_malformed_idempotency_keys_are_400(client: TestClient, idempotency_key: str) -> None:
    answer = client.post(
        URL,
        json=SEED_REQUEST,
        headers={**ALICE, "Idempotency-Key": idempotency_key.encode("latin-1")},
    )

    problem = _problem(answer, 400)
    assert "Idempotency-Key" in problem["detail"]


@pytest.mark.parametrize("idempotency_key", [f.replace(" ", "_") for f in SQL])
def test_sql_in_the_idempotency_key_is_only_a_key(
    client: TestClient, vicidial: Connection, redis_client: redis.Redis, idempotency_key: str
) -> None:
    """Printable ASCII is a valid key: the job runs (a dry run, so nothing may change), the same
    key returns the same job, and the key is stored only as a digest."""
    insert_leads(vicidial, lead_rows(3, seed=52))
    tables = (live(vicidial), archive(vicidial))
    headers = {**ALICE, "Idempotency-Key": idempotency_key}
    body = {"lead_ids": [1, 2, 3], "dry_run": True, "delete_leads": True}

    first = client.post(URL, json=body, headers=headers)
    again = client.post(URL, json=body, headers=headers)

    assert first.status_code == again.status_code == 202
    assert first.json()["job_id"] == again.json()["job_id"]
    final = poll_until_done(client, first.headers["location"], ALICE)
    assert final["status"] == "succeeded"
    assert [lead["insert"] for lead in final["result"]["leads"]] == ["inserted"] * 3
    assert (live(vicidial), archive(vicidial)) == tables
    for key in redis_client.scan_iter("leadarchive:*"):
        assert idempotency_key.encode() not in key


# --- methods and content types ----------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", URL, "POST"),
        ("PUT", URL, "POST"),
        ("PATCH", URL, "POST"),
        ("DELETE", URL, "POST"),
        ("OPTIONS", URL, "POST"),
        ("POST", f"{URL}/some-job", "DELETE, GET"),
        ("PUT", f"{URL}/some-job", "DELETE, GET"),
        ("PATCH", f"{URL}/some-job", "DELETE, GET"),
        ("OPTIONS", f"{URL}/some-job", "DELETE, GET"),
        ("TRACE", f"{URL}/some-job", "DELETE, GET"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/readyz", "GET"),
    ],
)
def test_wrong_methods_are_405_with_every_allowed_method(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    answer = client.request(method, path, headers=ALICE, json=SEED_REQUEST)

    _problem(answer, 405)
    assert answer.headers["allow"] == allow


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/jsonx",
        "application/json-patch+json",
        "application/problem+json",
        "application/x-json",
        "text/json",
        "text/html",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "application/json, text/plain",
        "json",
        "application/json'; DROP TABLE vicidial_list; --",
    ],
)
def test_content_types_other_than_json_are_415(
    client: TestClient, content_type: str | None
) -> None:
    headers = dict(ALICE)
    if content_type is not None:
        headers["Content-Type"] = content_type
    answer = client.post(URL, content=json.dumps(SEED_REQUEST).encode(), headers=headers)

    _problem(answer, 415)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "APPLICATION/JSON",
        "application/json; charset=utf-8",
        "application/json;",
    ],
)
def test_json_content_type_variants_are_accepted(
    client: TestClient, vicidial: Connection, content_type: str
) -> None:
    answer = client.post(
        URL,
        content=json.dumps({"lead_ids": [9], "dry_run": True}).encode(),
        headers={**ALICE, "Content-Type": content_type},
    )

    assert answer.status_code == 202, answer.text
    final = poll_until_done(client, answer.headers["location"], ALICE)
    assert final["status"] == "succeeded"
    assert final["request"] == {
        "insert_leads": True,
        "update_leads": True,
        "delete_leads": False,
        "dry_run": True,
        "lead_count": 1,
    }


# --- other keys' jobs -------------------------------------------------------------------------


def test_another_key_can_neither_see_nor_cancel_a_queued_job(
    client: TestClient, vicidial: Connection, rt
) -> None:
    """Bob's answers for Alice's waiting job are byte for byte those for a job that does not
    exist, and his cancel changes nothing; Alice's own cancel works."""
    from tasks.requests import ArchiveRequest

    insert_leads(vicidial, lead_rows(2, seed=53))
    rows = live(vicidial)
    job_id, _ = rt.jobs.create(
        "alice",
        ArchiveRequest(
            lead_ids=[1, 2], insert_leads=True, update_leads=True, delete_leads=True, dry_run=False
        ),
    )  # not sent
    url = f"{URL}/{job_id}"
    bob = {"Authorization": f"Key={BOB_KEY}"}

    seen_by_bob = client.get(url, headers=bob)
    cancelled_by_bob = client.delete(url, headers=bob)
    unknown = client.get(f"{URL}/{job_id[::-1]}x", headers=bob)
    unknown_cancel = client.delete(f"{URL}/{job_id[::-1]}x", headers=bob)
    still = client.get(url, headers=ALICE).json()
    cancelled_by_alice = client.delete(url, headers=ALICE)

    for answer, twin in ((seen_by_bob, unknown), (cancelled_by_bob, unknown_cancel)):
        _problem(answer, 404)
        assert answer.content == twin.content
        assert dict(answer.headers) == dict(twin.headers)
    assert still["status"] == "queued"
    assert cancelled_by_alice.status_code == 200
    assert cancelled_by_alice.json()["status"] == "cancelled"
    assert (live(vicidial), archive(vicidial)) == (rows, {})
