"""Test helpers: reading tables back byte for byte, settings for a test run, polling.

What the tests share with bench/ and soak/ lives in ``testkit`` and is re-exported here, so a
test imports its helpers from one place (MariaDB users with chosen grants among them); what only
tests need (the admin log, the check for jobs a test left behind) is defined here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import redis
from sqlalchemy import Connection

from tasks.records import JobRecord
from testkit.checksum import Row, archive, column, live, table_rows
from testkit.polling import WaitTimeout, wait_until
from testkit.processes import free_port
from testkit.servers import CRON_GRANTS, PrivateRedis, mysql_user, private_redis
from testkit.settings import ALICE, ALICE_KEY, BOB, BOB_KEY, make_settings

# What the tests import from here; each lives in testkit, shared with bench/ and soak/.
__all__ = [
    "ALICE",
    "ALICE_KEY",
    "BOB",
    "BOB_KEY",
    "CRON_GRANTS",
    "PrivateRedis",
    "Row",
    "admin_log_rows",
    "admin_log_sizes",
    "archive",
    "assert_within_sizes",
    "column",
    "free_port",
    "jobs_left_behind",
    "live",
    "make_settings",
    "mysql_user",
    "private_redis",
    "table_rows",
    "wait_for",
]


def stored(record: JobRecord | None) -> dict[str, str] | None:
    """A job record as its store keeps it (``JobRecord.to_fields``), or None."""
    return None if record is None else record.to_fields()


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll until ``predicate()`` is truthy; its value, or an assertion error on timeout."""
    return wait_until(predicate, timeout, interval=interval)


def waits_for_a_table(conn: Connection, statement: str) -> bool:
    """Whether a session on this database runs a statement whose text is LIKE ``statement``
    and waits for a table's lock (a ``LOCK TABLES`` another session holds)."""
    waiting = conn.exec_driver_sql(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE()"
        " AND INFO LIKE %s AND STATE LIKE 'Waiting for table%%'",
        (statement,),
    ).scalar()
    return bool(waiting)


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
    try:
        wait_until(
            lambda: not (client.llen(QUEUE) or client.hlen(UNACKED_KEY)),
            drain_timeout,
            "the queue to drain",
        )
    except WaitTimeout:
        left.append(
            f"{client.llen(QUEUE)} message(s) queued, {client.hlen(UNACKED_KEY)} unacknowledged"
        )
        client.delete(QUEUE)
    return left
