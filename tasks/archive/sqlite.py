"""SQLite, the embedded demo's database: each chunk in one ``BEGIN IMMEDIATE`` transaction.

IMMEDIATE takes SQLite's write lock before the chunk's state is read, so the check and the
statements are one atomic step; the chunk is rolled back on any error.
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
    """One chunk in a ``BEGIN IMMEDIATE`` transaction, rolled back on any error."""
    # The embedded default: IMMEDIATE takes SQLite's write lock before the check.
    cursor.run("BEGIN IMMEDIATE")
    try:
        plans = apply_chunk(cursor, sql, chunk, actions, after_read, lists)
    except BaseException:
        cursor.run("ROLLBACK")
        raise
    cursor.run("COMMIT")
    return plans
