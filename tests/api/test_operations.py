"""Health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Connection, make_url

from api.app import create_app
from tasks.celery_config import create_celery
from tasks.runtime import Runtime
from tests.api.conftest import SEED_REQUEST, FakeClock
from tests.conftest import claim_redis_database
from tests.helpers import ALICE, make_settings, private_redis

# Nothing listens on port 1.
CLOSED_REDIS = "redis://127.0.0.1:1/0"


def test_healthz_needs_no_key(client: TestClient) -> None:
    answer = client.get("/healthz")

    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_readyz_checks_redis_database_and_archive_schema(
    client: TestClient, vicidial: Connection
) -> None:
    ready = client.get("/readyz")
    vicidial.exec_driver_sql("ALTER TABLE vicidial_list_archive DROP COLUMN `rank`")
    drifted = client.get("/readyz")
    vicidial.exec_driver_sql("DROP TABLE vicidial_list_archive")
    missing = client.get("/readyz")

    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok", "database": "ok"}
    assert drifted.status_code == 503
    assert "`rank` is missing" in drifted.json()["checks"]["database"]
    assert missing.status_code == 503
    assert "vicidial_list_archive does not exist" in missing.json()["checks"]["database"]


def _readiness(clock: FakeClock, database_url: str, redis_url: str, **settings: Any) -> Any:
    """/readyz of an app on these servers: (status code, body)."""
    configured = make_settings(database_url, redis_url, **settings)
    runtime = Runtime(configured, clock=clock)
    app = create_app(configured, runtime=runtime, celery=create_celery(configured))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            answer = client.get("/readyz")
    finally:
        runtime.close()
    assert "Traceback" not in answer.text
    return answer.status_code, answer.json()


def test_readyz_is_503_naming_the_database_when_mariadb_is_unreachable(
    vicidial: Connection, database_url: str, redis_url: str, clock: FakeClock
) -> None:
    closed = make_url(database_url).set(port=1).render_as_string(hide_password=False)

    up = _readiness(clock, database_url, redis_url)
    down = _readiness(clock, closed, redis_url)

    assert up == (200, {"status": "ready", "checks": {"redis": "ok", "database": "ok"}})
    assert down == (
        503,
        {
            "status": "not ready",
            "checks": {"redis": "ok", "database": "unreachable: OperationalError"},
        },
    )


def test_readyz_is_503_naming_redis_once_the_job_store_goes_down(
    vicidial: Connection, database_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    """The same app, ready while its Redis answers, not ready once that server has stopped."""
    with private_redis(tmp_path) as server:
        configured = make_settings(database_url, server.url)
        runtime = Runtime(configured, clock=clock)
        app = create_app(configured, runtime=runtime, celery=create_celery(configured))
        try:
            with TestClient(app, raise_server_exceptions=False) as client:
                ready = client.get("/readyz")
                server.stop()
                stopped = client.get("/readyz")
        finally:
            runtime.close()

    assert (ready.status_code, ready.json()["checks"]) == (200, {"redis": "ok", "database": "ok"})
    assert stopped.status_code == 503
    assert stopped.json() == {
        "status": "not ready",
        "checks": {"redis": "unreachable: ConnectionError", "database": "ok"},
    }


def test_readyz_checks_a_separate_broker_too(
    vicidial: Connection, database_url: str, redis_url: str, clock: FakeClock
) -> None:
    """The broker on a Redis of its own: ready with it, 503 naming it without it (the job store
    answering alone does not make the API able to enqueue)."""
    with claim_redis_database() as broker_url:
        up = _readiness(clock, database_url, redis_url, broker_url=broker_url)
    down = _readiness(clock, database_url, redis_url, broker_url=CLOSED_REDIS)

    assert up == (
        200,
        {"status": "ready", "checks": {"redis": "ok", "broker": "ok", "database": "ok"}},
    )
    assert down == (
        503,
        {
            "status": "not ready",
            "checks": {
                "redis": "ok",
                "broker": "unreachable: ConnectionError",
                "database": "ok",
            },
        },
    )


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.get("/vicidial/leads/archive/some-unknown-job", headers=ALICE)

    text = client.get("/metrics").text

    assert 'route="/vicidial/leads/archive/{job_id}"' in text
    assert "some-unknown-job" not in text
    assert "leadarchive_http_request_duration_seconds_bucket" in text
    assert "alice-test-key" not in text


def test_openapi_documents_the_seed_request_and_docs_render(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    docs = client.get("/docs")

    post = spec["paths"]["/vicidial/leads/archive"]["post"]
    body = post["requestBody"]["content"]["application/json"]
    assert body["example"] == SEED_REQUEST
    assert body["schema"]["additionalProperties"] is False
    assert "/vicidial/leads/archive/{job_id}" in spec["paths"]
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_new_keys_are_prefixed_random_and_accepted(client: TestClient) -> None:
    from api.auth import authenticate, hash_key, new_key

    keys = {new_key() for _ in range(50)}

    assert len(keys) == 50
    assert all(k.startswith("la_") and len(k) == 46 for k in keys)
    key = keys.pop()
    assert authenticate(f"Key={key}", {hash_key(key): "carol"}) == "carol"


def test_openapi_declares_every_error_answer_as_problem_json_and_the_key_scheme(
    client: TestClient,
) -> None:
    spec = client.get("/openapi.json").json()
    archive = spec["paths"]["/vicidial/leads/archive"]
    job = spec["paths"]["/vicidial/leads/archive/{job_id}"]

    # 403: a scoped key asking for an action it may not use.
    submit_errors = {"400", "401", "403", "413", "415", "422", "429", "503"}
    errors = {
        ("post", "/vicidial/leads/archive"): submit_errors,
        ("get", "/vicidial/leads/archive/{job_id}"): {"401", "404", "503"},
        ("delete", "/vicidial/leads/archive/{job_id}"): {"401", "404", "409", "503"},
    }
    for (method, path), expected in errors.items():
        responses = spec["paths"][path][method]["responses"]
        assert {s for s in responses if s >= "400"} == expected, (method, path)
        for status in expected:
            content = responses[status]["content"]
            assert list(content) == ["application/problem+json"]
            assert content["application/problem+json"]["schema"]["$ref"].endswith("/ProblemDetails")
        assert spec["paths"][path][method]["security"] == [{"ApiKey": []}]
    assert archive["post"]["responses"]["401"]["headers"]["WWW-Authenticate"]["required"]
    assert archive["post"]["responses"]["429"]["headers"]["Retry-After"]["required"]
    assert archive["post"]["responses"]["202"]["headers"]["Location"]["required"]
    assert job["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] == (
        "#/components/schemas/JobView"
    )
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": spec["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    idempotency = next(p for p in archive["post"]["parameters"] if p["name"] == "Idempotency-Key")
    assert idempotency["schema"]["pattern"] == r"^[\x21-\x7e]{1,255}$"
