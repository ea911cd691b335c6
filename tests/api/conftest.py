"""An API app, a real Celery worker thread on the real Redis, and Vicidial tables on MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import hash_key
from tasks.celery_config import create_celery
from tasks.runtime import Runtime
from tasks.settings import Settings
from tests.helpers import ALICE, BOB, make_settings, wait_for
from worker import steps

__all__ = ["ALICE", "BOB", "make_settings", "wait_for"]

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
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def celery_app(settings: Settings, rt: Runtime) -> Celery:
    return steps.install(create_celery(settings, rt))


@pytest.fixture(scope="session")
def worker(celery_app: Celery) -> Iterator[None]:
    """A real Celery worker (solo pool, in a thread) consuming from the real Redis."""
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield


@pytest.fixture
def client(settings: Settings, rt: Runtime, celery_app: Celery, clock: FakeClock) -> TestClient:
    return TestClient(create_app(settings, runtime=rt, celery=celery_app))


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def nothing_enqueued(redis_client: redis.Redis) -> Iterator[None]:
    """The test's requests enqueue no message and write no job record."""
    before = set(redis_client.keys("leadarchive:job:*"))
    yield
    assert redis_client.llen("leadarchive") == 0
    assert set(redis_client.keys("leadarchive:job:*")) == before


def add_keys(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, keys: dict[str, tuple[str, str]]
) -> None:
    """alice and bob as always, and ``keys`` (name -> (key, scope)) beside them, for one test."""
    entries = [f"{name}:{hash_key(key)}:{scope}" for name, (key, scope) in keys.items()]
    monkeypatch.setattr(settings, "api_keys", ",".join([settings.api_keys, *entries]))


def poll_until_done(
    client: TestClient, url: str, headers: dict[str, str], timeout: float = 20.0
) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(url, headers=headers).json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    result: dict[str, Any] = wait_for(finished, timeout)
    return result
