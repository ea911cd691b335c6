"""An API app, a real Celery worker thread on the real Redis, and Vicidial tables on MariaDB."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine

from api.app import create_app
from api.auth import hash_key
from tasks import runtime as runtime_module
from tasks.celery_app import create_celery
from tasks.runtime import Runtime
from tasks.schema import create_vicidial_tables, drop_vicidial_tables
from tasks.settings import Settings
from worker import steps

ALICE_KEY = "alice-test-key-0123456789abcdef"
BOB_KEY = "bob-test-key-0123456789abcdef012"
ALICE = {"Authorization": f"Key={ALICE_KEY}"}
BOB = {"Authorization": f"Key={BOB_KEY}"}
SEED_REQUEST = {
    "insert_leads": True,
    "update_leads": True,
    "delete_leads": True,
    "lead_ids": [0, 1],
}


@dataclass
class FakeClock:
    """A clock the tests move by hand; the API and the worker both read it."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 28, 3, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now


def make_settings(database_url: str, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "broker_url": redis_url,
        "result_backend": redis_url,
        "api_keys": f"alice:{hash_key(ALICE_KEY)},bob:{hash_key(BOB_KEY)}",
        "rate_limit": "",
        "office_hours": "mon-fri 08:00-18:00",
        "timezone": "America/New_York",
        "release_interval": timedelta(milliseconds=200),
        "lock_wait_timeout": timedelta(seconds=1),
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)


SATURDAY_NIGHT = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)  # outside the test office hours


@pytest.fixture(scope="session")
def session_clock() -> FakeClock:
    return FakeClock(SATURDAY_NIGHT)


@pytest.fixture
def clock(session_clock: FakeClock) -> FakeClock:
    """The shared clock, set outside office hours at the start of every test."""
    session_clock.now = SATURDAY_NIGHT
    return session_clock


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url, redis_url)


@pytest.fixture(scope="session")
def rt(settings: Settings, session_clock: FakeClock) -> Iterator[Runtime]:
    runtime = Runtime(settings, clock=session_clock)
    runtime_module.configure(runtime)
    yield runtime
    runtime_module.configure(None)


@pytest.fixture(scope="session")
def celery_app(settings: Settings, rt: Runtime) -> Celery:
    return steps.install(create_celery(settings))


@pytest.fixture(scope="session")
def worker(celery_app: Celery) -> Iterator[None]:
    """A real Celery worker (solo pool, in a thread) consuming from the real Redis."""
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield


@pytest.fixture
def client(settings: Settings, rt: Runtime, celery_app: Celery, clock: FakeClock) -> TestClient:
    return TestClient(create_app(settings, runtime=rt, celery=celery_app))


@pytest.fixture
def vicidial(engine: Engine) -> Iterator[Connection]:
    """Fresh MyISAM Vicidial tables, as on a real Vicidial server."""
    with engine.connect() as c:
        drop_vicidial_tables(c)
        create_vicidial_tables(c, "MyISAM")
        yield c
        drop_vicidial_tables(c)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll until ``predicate()`` is truthy; its value, or an assertion error on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def poll_until_done(client: TestClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(url, headers=headers).json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    result: dict[str, Any] = wait_for(finished)
    return result
