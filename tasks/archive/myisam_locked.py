"""MyISAM without CREATE TEMPORARY TABLES (Vicidial's stock ``cron`` user): the locked path.

Each chunk runs under ``LOCK TABLES`` on the live table, the archive and the dialer tables it
reads, which makes the check and the statements one atomic step (MyISAM has no transactions),
and under the batch lock (``batch_lock``, taken by ``run_batch`` for each chunk): a chunk must not
verify and delete between another batch's snapshot and that batch's refresh of the archive. The
table lock is released after every chunk, sized to the target lock time, and ``run_batch`` leaves
the table to the dialer for ``Tuning.yield_time`` before the next: a session waiting for a LOCK
TABLES waits for its metadata lock, which ``LockWaits`` cannot see, so it pauses whoever waits.
"""

from __future__ import annotations

from tasks.archive.chunk import AfterRead, apply_chunk
from tasks.archive.cursor import Cursor
from tasks.archive.plan import Actions, LeadResult
from tasks.archive.sql import Statements
from tasks.scopes import Lists


def run_chunk(
    cursor: Cursor,
    sql: Statements,
    chunk: list[int],
    actions: Actions,
    after_read: AfterRead | None,
    lists: Lists | None = None,
) -> dict[int, LeadResult]:
    """One chunk under ``LOCK TABLES`` (``run_batch`` holds the batch lock around it)."""
    # MyISAM has no transactions: LOCK TABLES makes the check and the statements one atomic
    # step, and flushes MyISAM's key cache once per chunk instead of once per statement.
    cursor.run(sql.lock_tables)
    try:
        return apply_chunk(cursor, sql, chunk, actions, after_read, lists)
    finally:
        cursor.run("UNLOCK TABLES")
