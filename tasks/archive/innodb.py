"""InnoDB: each chunk in a short transaction that locks its rows, retried after a deadlock.

The chunk's rows are locked in ``lead_id`` order, live table first, the same in every batch, so
two batches on overlapping IDs wait for each other instead of deadlocking; the state read and
the statements then run in the same transaction, committed at once. A deadlock, a lock wait
timeout or a concurrent change rolls the chunk back, and it is tried again with jittered backoff
up to ``Tuning.chunk_retries`` times.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pymysql.constants import ER

from tasks.archive.chunk import AfterRead, Tuning, apply_chunk
from tasks.archive.cursor import Cursor
from tasks.archive.plan import Actions, LeadResult
from tasks.archive.sql import Statements, id_list
from tasks.errors import ConcurrentChangeError, mysql_error_code
from tasks.schema import ARCHIVE_TABLE, LIVE_TABLE
from tasks.scopes import Lists

T = TypeVar("T")


def prepare_session(cursor: Cursor, tuning: Tuning) -> None:
    """Set the session up for row-locked chunks: the lock wait, and READ COMMITTED if allowed."""
    cursor.run(
        "SET SESSION innodb_lock_wait_timeout = "
        f"{max(1, int(tuning.lock_wait_timeout.total_seconds()))}"
    )
    # The rows a chunk decides on are locked explicitly, so READ COMMITTED loses nothing and
    # spares the gap locks with which two batches on neighbouring IDs deadlock. A server
    # that logs statements (binlog_format=STATEMENT) refuses it: keep REPEATABLE READ there.
    ((statement_binlog,),) = cursor.rows("SELECT @@log_bin = 1 AND @@binlog_format = 'STATEMENT'")
    if not statement_binlog:
        cursor.run("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")


def run_chunk(
    cursor: Cursor,
    dbapi: Any,
    sql: Statements,
    chunk: list[int],
    actions: Actions,
    tuning: Tuning,
    after_read: AfterRead | None,
    lists: Lists | None = None,
) -> dict[int, LeadResult]:
    """One chunk in a transaction that locks its rows; tried again after a deadlock."""
    ids = id_list(chunk)

    def attempt() -> dict[int, LeadResult]:
        cursor.run("START TRANSACTION")
        try:
            # Rows locked in lead_id order, live table first, the same in every batch, so two
            # batches on overlapping IDs wait for each other instead of deadlocking.
            cursor.rows(sql.lock_rows(LIVE_TABLE, ids))
            cursor.rows(sql.lock_rows(ARCHIVE_TABLE, ids))
            plans = apply_chunk(cursor, sql, chunk, actions, after_read, lists)
            dbapi.commit()
            return plans
        except Exception:
            dbapi.rollback()
            raise

    return with_retries(attempt, tuning)


def with_retries(step: Callable[[], T], tuning: Tuning) -> T:
    """Run ``step`` (which rolls its own transaction back when it fails), again after a
    deadlock, a lock wait timeout or a concurrent change, at most ``tuning.chunk_retries``
    times more, with jittered backoff."""
    for tried in range(tuning.chunk_retries + 1):
        try:
            return step()
        except ConcurrentChangeError:
            if tried == tuning.chunk_retries:
                raise
        except Exception as exc:
            if mysql_error_code(exc) not in (ER.LOCK_DEADLOCK, ER.LOCK_WAIT_TIMEOUT):
                raise
            if tried == tuning.chunk_retries:
                raise
        time.sleep(random.uniform(0, 0.01 * 2**tried))  # noqa: S311 - jitter, not crypto
    raise AssertionError("unreachable")  # pragma: no cover
