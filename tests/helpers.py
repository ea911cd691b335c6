"""Test helpers: reading tables back byte for byte, settings for a test run, polling."""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Connection, Engine, make_url

from api.auth import hash_key
from tasks.db import make_engine
from tasks.records import JobRecord
from tasks.seed import LEAD_COLUMNS
from tasks.settings import Settings

Row = tuple[bytes | None, ...]

_BYTES = ", ".join(f"CAST(`{c}` AS BINARY)" for c in LEAD_COLUMNS)


def table_rows(conn: Connection, table: str) -> dict[int, Row]:
    """Every row of ``table`` as raw bytes per column (TIMESTAMPs read in UTC), by lead_id."""
    if conn.dialect.name == "sqlite":
        # SQLite hands back what it stored; the type is part of the value (1 vs '1').
        columns = ", ".join(f"`{c}`" for c in LEAD_COLUMNS)
        rows = conn.exec_driver_sql(f"SELECT lead_id, {columns} FROM `{table}`").all()
        return {int(r[0]): tuple((type(v).__name__, v) for v in r[1:]) for r in rows}  # type: ignore[misc]
    conn.exec_driver_sql("SET SESSION time_zone = '+00:00'")
    rows = conn.exec_driver_sql(f"SELECT lead_id, {_BYTES} FROM `{table}`").all()
    return {int(r[0]): tuple(r[1:]) for r in rows}


def live(conn: Connection) -> dict[int, Row]:
    return table_rows(conn, "vicidial_list")


def archive(conn: Connection) -> dict[int, Row]:
    return table_rows(conn, "vicidial_list_archive")


def column(name: str) -> int:
    """Position of a column in the rows ``table_rows`` returns."""
    return LEAD_COLUMNS.index(name)


ALICE_KEY = "alice-test-key-0123456789abcdef"
BOB_KEY = "bob-test-key-0123456789abcdef012"
ALICE = {"Authorization": f"Key={ALICE_KEY}"}
BOB = {"Authorization": f"Key={BOB_KEY}"}


def stored(record: JobRecord | None) -> dict[str, str] | None:
    """A job record as its store keeps it (``JobRecord.to_fields``), or None."""
    return None if record is None else record.to_fields()


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


@contextmanager
def mysql_user(conn: Connection, database_url: str, *grants: str) -> Iterator[Engine]:
    """An engine for a fresh MariaDB user holding only ``grants`` (``{db}`` is the database).

    Each grant reads like ``SELECT ON `{db}`.*``; the user is dropped afterwards.
    """
    url = make_url(database_url)
    user, password = f"la_{secrets.token_hex(5)}", secrets.token_hex(12)
    account = f"'{user}'@'127.0.0.1'"
    conn.exec_driver_sql(f"CREATE USER {account} IDENTIFIED BY '{password}'")
    engine = make_engine(
        url.set(username=user, password=password).render_as_string(hide_password=False)
    )
    try:
        for grant in grants:
            conn.exec_driver_sql(f"GRANT {grant.format(db=url.database)} TO {account}")
        yield engine
    finally:
        engine.dispose()
        conn.exec_driver_sql(f"DROP USER {account}")


def admin_log_rows(conn: Connection) -> list[dict[str, Any]]:
    """Every vicidial_admin_log row, oldest first, by column name."""
    result = conn.exec_driver_sql("SELECT * FROM vicidial_admin_log ORDER BY admin_log_id")
    return [dict(row._mapping) for row in result]


def admin_log_sizes(conn: Connection) -> dict[str, int]:
    """Each vicidial_admin_log text column's size in characters, as the server defines it."""
    rows = conn.exec_driver_sql(
        "SELECT COLUMN_NAME, CHARACTER_MAXIMUM_LENGTH FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'vicidial_admin_log'"
        " AND CHARACTER_MAXIMUM_LENGTH IS NOT NULL"
    ).all()
    return {str(name): int(size) for name, size in rows}


def assert_within_sizes(row: dict[str, Any], sizes: dict[str, int]) -> None:
    """Every text value of an admin-log row fits its column (read from information_schema)."""
    for name, value in row.items():
        if isinstance(value, str):
            assert name in sizes, f"{name} holds text but is no text column"
            assert len(value) <= sizes[name], f"{name}: {len(value)} > {sizes[name]}"


def jobs_left_behind(client: redis.Redis, drain_timeout: float = 10.0) -> list[str]:
    """What a test left in a Redis database the in-thread worker serves: jobs not ended, and
    messages still queued or unacknowledged. Each is described; empty when nothing is left.

    Left there, the worker would run them during a later test, on that test's tables. What is
    found is cancelled and its messages removed, so the next test starts clean.
    """
    from tasks.celery_config import QUEUE
    from tasks.jobs import RedisJobStore
    from tasks.records import FINAL
    from tasks.sweeps import UNACKED_KEY

    store = RedisJobStore(client, timedelta(days=1))
    left = []
    for key in client.scan_iter("leadarchive:job:*", count=1000):
        job_id = key.decode().removeprefix("leadarchive:job:")
        status = (client.hget(key, "status") or b"").decode()
        if status and status not in FINAL:
            left.append(f"job {job_id} {status}")
            if store.cancel(job_id) == "running":
                # Not cancellable: let it end, so that it runs on no later test's tables.
                wait_for(lambda j=job_id: (stored(store.get(j)) or {}).get("status") in FINAL, 60)
    # A message is acknowledged just after its job is recorded as ended: give it a moment.
    deadline = time.monotonic() + drain_timeout
    while client.llen(QUEUE) or client.hlen(UNACKED_KEY):
        if time.monotonic() > deadline:
            left.append(
                f"{client.llen(QUEUE)} message(s) queued, {client.hlen(UNACKED_KEY)} unacknowledged"
            )
            client.delete(QUEUE)
            break
        time.sleep(0.05)
    return left


class PrivateRedis:
    """A redis-server of this test's own on a free port, which the test may stop (never the
    shared one); no persistence."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        self.process = subprocess.Popen(
            [*command, "--dir", str(folder), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for(self._answers, timeout=30, interval=0.05)
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        assert self.process.poll() is None, "redis-server exited"
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server and wait until it is gone (its port then refuses connections)."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@contextmanager
def private_redis(folder: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(folder)
    try:
        yield server
    finally:
        server.stop()
