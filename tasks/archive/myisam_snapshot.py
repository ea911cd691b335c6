"""MyISAM: copy from a private snapshot, then delete in short chunks (the default path).

The batch reads its window's live rows once, by primary key, into a temporary table of its
session (``SNAPSHOT``); the archive copies are inserted and refreshed from that snapshot under a
lock on the archive alone, so the dialer never waits for them; then the deletes run in chunks
sized to the target lock time, each DELETE comparing the live row with its archive copy itself,
so a lead the dialer changed since the snapshot stays; after a chunk that kept a session waiting,
the table is left to the dialer for ``Tuning.yield_time``. Batches are serialised by the batch lock.
The snapshot table is created once per connection (kept in its ``info``); a user without
CREATE TEMPORARY TABLES gets False from ``snapshot_ready`` and the locked path instead.
"""

from __future__ import annotations

import time
from functools import partial

from pymysql.constants import ER
from sqlalchemy import Connection

from tasks.archive.chunk import (
    AfterRead,
    LockWaits,
    Tuning,
    as_text,
    batch_lock,
    read_states,
    write_planned,
)
from tasks.archive.cursor import Cursor
from tasks.archive.plan import Actions, LeadResult, plan_lead
from tasks.archive.sizing import LEARNED, ChunkSizer
from tasks.archive.sql import SNAPSHOT, Statements, id_list, q
from tasks.errors import MYSQL_ACCESS_DENIED, mysql_error_code
from tasks.schema import ARCHIVE_TABLE
from tasks.scopes import Lists

# A batch's snapshot covers at most this many leads (a MEMORY table of about 2 MB).
SNAPSHOT_WINDOW = 500
# Kept in SQLAlchemy's per-DBAPI-connection ``info``: the columns the snapshot was made with.
_SNAPSHOT_INFO = "leadarchive.snapshot"


def run_windows(
    cursor: Cursor,
    conn: Connection,
    sql: Statements,
    unique: list[int],
    actions: Actions,
    sizer: ChunkSizer,
    tuning: Tuning,
    after_read: AfterRead | None,
    lists: Lists | None = None,
) -> dict[int, LeadResult]:
    """The whole batch (sorted unique IDs), window by window of ``SNAPSHOT_WINDOW`` leads."""
    results: dict[int, LeadResult] = {}
    # Start where this process's last batch on this database left off, not from scratch.
    learned_key = (conn.engine.url.render_as_string(), tuning.chunk_time, tuning.max_chunk)
    sizer.size, sizer.seconds_per_lead = LEARNED.get(learned_key, (sizer.size, None))
    for start in range(0, len(unique), SNAPSHOT_WINDOW):
        window = unique[start : start + SNAPSHOT_WINDOW]
        results.update(
            _run_window(
                cursor,
                conn,
                sql,
                window,
                actions,
                sizer,
                tuning,
                first=start == 0,
                after_read=after_read,
                lists=lists,
            )
        )
    LEARNED[learned_key] = (sizer.size, sizer.seconds_per_lead)
    return results


def snapshot_ready(cursor: Cursor, conn: Connection, sql: Statements) -> bool:
    """Empty this session's snapshot table, (re)creating it when needed; False without the
    privilege to create it."""
    info = conn.connection.info
    if info.get(_SNAPSHOT_INFO) == sql.pair.columns:
        try:
            cursor.run(f"DELETE FROM {SNAPSHOT}")
            return True
        except Exception as exc:
            if mysql_error_code(exc) != ER.NO_SUCH_TABLE:
                raise
    info.pop(_SNAPSHOT_INFO, None)
    cursor.run(f"DROP TEMPORARY TABLE IF EXISTS {SNAPSHOT}")
    for engine in ("MEMORY", "Aria", "MyISAM"):
        try:
            cursor.run(sql.snapshot_create().format(engine=engine))
        except Exception as exc:
            code = mysql_error_code(exc)
            if code in MYSQL_ACCESS_DENIED:
                # Vicidial's stock `cron` user lacks CREATE TEMPORARY TABLES: the slower path.
                return False
            if code != ER.TABLE_CANT_HANDLE_BLOB:
                raise
        else:
            info[_SNAPSHOT_INFO] = sql.pair.columns
            return True
    return False


def _run_window(
    cursor: Cursor,
    conn: Connection,
    sql: Statements,
    window: list[int],
    actions: Actions,
    sizer: ChunkSizer,
    tuning: Tuning,
    *,
    first: bool,
    after_read: AfterRead | None,
    lists: Lists | None = None,
) -> dict[int, LeadResult]:
    """MyISAM: copy from a snapshot without touching vicidial_list, then delete in short chunks.

    1. One primary-key read of the window's live rows into the session's temporary table:
       the only moment vicidial_list is read-locked before the deletes.
    2. Insert and refresh the archive copies from the snapshot, under a lock on the archive
       alone, so the dialer never waits for it.
    3. Delete in chunks sized to the target lock time (larger while no session waits for a
       table lock), each DELETE comparing the live row with its archive copy itself: a lead the
       dialer changed since the snapshot stays (mismatch). After a chunk during which a session
       waited for a table lock, a pause of ``tuning.yield_time`` before the next.
    Batches are serialised by a named lock: a refresh from an older snapshot must never
    overwrite a copy another batch has just verified and deleted the live row of.
    """
    ids = id_list(window)
    with batch_lock(cursor, conn, tuning):
        if not first:
            cursor.run(f"DELETE FROM {SNAPSHOT}")
        cursor.write(sql.snapshot_fill(ids))
        cursor.run(f"LOCK TABLES {q(ARCHIVE_TABLE)} WRITE, {q(ARCHIVE_TABLE)} AS a WRITE")
        try:
            snapshot = f"{SNAPSHOT} AS l"
            states = read_states(cursor, sql, window, snapshot, lists)
            if after_read is not None:
                after_read(window)
            plans = {i: plan_lead(i, states[i], actions) for i in window}
            write_planned(
                cursor,
                plans,
                (partial(sql.insert, source=snapshot), partial(sql.update, source=snapshot)),
            )
        finally:
            cursor.run("UNLOCK TABLES")
        _delete_in_chunks(cursor, sql, plans, sizer, tuning)
    return plans


def _delete_in_chunks(
    cursor: Cursor,
    sql: Statements,
    plans: dict[int, LeadResult],
    sizer: ChunkSizer,
    tuning: Tuning,
) -> None:
    """The guarded DELETE of the leads planned for it, chunk by chunk."""
    candidates = [i for i, p in plans.items() if p.delete == "deleted"]
    if not candidates:
        return
    # The waits are read after every chunk, not once for them all: they size the next chunk and
    # say whether to pause before it. Without the round trip the probe's p99 doubled (9.5 ->
    # 20.1 ms); with it alone, a read and its update still often each waited a chunk (p99 16-18
    # ms); with the pause, 8.6 ms at the same leads/s (bench/README.md, "selection").
    waits = LockWaits(cursor, tuning)
    position = 0
    while position < len(candidates):
        chunk = candidates[position : position + sizer.size]
        started = time.perf_counter()
        deleted = cursor.write(sql.delete(id_list(chunk)))
        elapsed = time.perf_counter() - started
        sizer.record(len(chunk), elapsed, nobody_waited=not waits.after_chunk())
        if deleted != len(chunk):
            _explain_survivors(cursor, sql, chunk, plans)
        position += len(chunk)


def _explain_survivors(
    cursor: Cursor, sql: Statements, chunk: list[int], plans: dict[int, LeadResult]
) -> None:
    """Say why the leads a guarded DELETE kept are still live (changed since, or in use)."""
    for lead_id, archived, identical, same_lead, held_by in cursor.rows(
        sql.classify(id_list(chunk))
    ):
        plan = plans[int(lead_id)]
        plan.live = True
        if not archived:
            plan.delete = "not_archived"
        elif not same_lead:
            plan.delete = "id_reused"
        elif identical and held_by is not None:
            plan.delete, plan.held_by = "in_use", as_text(held_by)
        else:
            plan.delete = "mismatch"
