"""Shared fixtures: a fresh MariaDB database per test run, dropped afterwards.

MyISAM cannot roll back, so tests are isolated by recreating tables, never by transactions.
``LEADARCHIVE_TEST_MYSQL_URL`` points the suite at another server (default: root on 127.0.0.1).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from sqlalchemy import Connection, Engine

from tasks.db import make_engine
from tasks.ddl import create_vicidial_tables, drop_vicidial_tables
from tasks.settings import get_settings
from testkit.servers import claim_redis_db, scratch_database
from tests.helpers import jobs_left_behind

SERVER_URL = os.environ.get("LEADARCHIVE_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of its own for this run, with Vicidial's default utf8 / utf8_unicode_ci."""
    server = make_engine(SERVER_URL)
    try:
        with scratch_database(server, "leadarchive_test") as url:
            yield url.render_as_string(hide_password=False)
    finally:
        server.dispose()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, pool_size=5)
    yield eng
    eng.dispose()


@pytest.fixture
def vicidial(engine: Engine) -> Iterator[Connection]:
    """Fresh MyISAM Vicidial tables, as on a real Vicidial server."""
    with engine.connect() as c:
        drop_vicidial_tables(c)
        create_vicidial_tables(c, "MyISAM")
        yield c
        drop_vicidial_tables(c)


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Connection]:
    """The embedded demo's Vicidial tables, in a SQLite file of this test's own."""
    eng = make_engine(f"sqlite:///{tmp_path / 'vicidial.db'}")
    with eng.connect() as c:
        create_vicidial_tables(c)
        yield c
    eng.dispose()


@pytest.fixture(params=["MyISAM", "InnoDB"])
def table_engine(request: pytest.FixtureRequest) -> str:
    """Each test runs on Vicidial's MyISAM and on InnoDB."""
    return str(request.param)


@pytest.fixture
def conn(engine: Engine, table_engine: str) -> Iterator[Connection]:
    """A connection to freshly created, empty Vicidial tables on ``table_engine``."""
    with engine.connect() as c:
        drop_vicidial_tables(c)
        create_vicidial_tables(c, table_engine)
        yield c
        drop_vicidial_tables(c)


REDIS_HOST = os.environ.get("LEADARCHIVE_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("LEADARCHIVE_TEST_REDIS_PORT", "6379"))
CLAIM_KEY = "leadarchive:test-claim"


@contextmanager
def claim_redis_database() -> Iterator[str]:
    """An empty Redis database number, claimed atomically and flushed when done."""
    claim = f"leadarchive-test-{uuid.uuid4().hex}"
    base = f"redis://{REDIS_HOST}:{REDIS_PORT}"
    # Only an empty database is taken, and claimed atomically, so parallel runs (and a
    # developer's own data) are never touched.
    claimed = claim_redis_db(base, CLAIM_KEY, claim, range(15, 1, -1), expire=7200)
    if claimed is None:
        pytest.fail("no empty Redis database (2..15) is free for this test run")
    number, client = claimed
    try:
        yield f"{base}/{number}"
    finally:
        if client.get(CLAIM_KEY) == claim.encode():
            client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database of its own for this run (broker, results and job records)."""
    with claim_redis_database() as url:
        yield url


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A test on the session's Redis (the in-thread worker's) ends every job it made there.

    Checked as the test returns, before its fixtures drop its tables: a job not awaited would
    run during a later test, on that test's tables, and a queued record would be sent again by
    the lost-message sweep. Await each job, or use ``claim_redis_database()``.
    """
    url = getattr(item, "funcargs", {}).get("redis_url")
    passed = False
    try:
        result = yield
        passed = True
        return result
    finally:
        if url is not None:
            client = redis.Redis.from_url(url)
            try:
                left = jobs_left_behind(client)
            finally:
                client.close()
            if left and passed:
                raise AssertionError(f"the test left in the session's Redis: {left}")


@pytest.fixture
def no_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A machine with no LeadArchive settings (no LEADARCHIVE_* variable, no .env, no
    astguiclient.conf), as the operator's commands read them: a test sets what it needs."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("LEADARCHIVE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LEADARCHIVE_ASTGUICLIENT_CONF", str(tmp_path / "missing.conf"))
    monkeypatch.setenv("LEADARCHIVE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
