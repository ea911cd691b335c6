"""``run_batch``: one batch from start to end, on the strategy the tables call for.

The session is set up once (strict SQL mode, UTC, the lock waits), the table pair is inspected
(kept with the connection until either table's DDL changes), and the unique lead IDs, sorted, go
through one strategy: MyISAM's snapshot path when the session may create its temporary table,
else MyISAM's locked path; InnoDB's row-locked transactions; SQLite's immediate transactions. A
dry run only reads each chunk's state and plans it. Whatever the path, every lead requested is
reported once, in request order.

A job of a key scoped to lists passes ``lists``: each strategy reads each lead's list with its
state, under the same lock, and a lead of another list is ``forbidden`` and never written. Without
``lists`` every statement is the one sent before scopes existed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection

from tasks.archive import innodb, myisam_locked, myisam_snapshot
from tasks.archive import sqlite as sqlite_strategy
from tasks.archive.chunk import AfterRead, Tuning, batch_lock, read_states
from tasks.archive.cursor import Cursor, StatementObserver
from tasks.archive.plan import (
    Actions,
    BatchReport,
    LeadResult,
    make_report,
    plan_lead,
    validate_lead_ids,
)
from tasks.archive.sizing import ChunkSizer
from tasks.archive.sql import SQL_MODE, Statements, q
from tasks.db import autocommit_dbapi
from tasks.errors import BatchError, InUseUnknownError
from tasks.schema import (
    ARCHIVE_TABLE,
    LIVE_TABLE,
    TablePair,
    inspect_tables,
    probe_in_use_tables,
)
from tasks.scopes import Lists

# Kept in SQLAlchemy's per-DBAPI-connection ``info``: the checked tables and their SQL.
_TABLES_INFO = "leadarchive.tables"
# The next AUTO_INCREMENT value changes with every insert, the table's definition does not.
_AUTO_INCREMENT = re.compile(r" AUTO_INCREMENT=\d+")


def run_batch(
    conn: Connection,
    lead_ids: Sequence[int],
    actions: Actions,
    tuning: Tuning | None = None,
    *,
    after_read: AfterRead | None = None,
    observer: StatementObserver | None = None,
    lists: Lists | None = None,
) -> BatchReport:
    """Archive ``lead_ids`` as ``actions`` says and report every lead's outcome.

    ``after_read``, an observer, is called with each chunk's lead IDs once their state is read
    and before any statement writes them (on MyISAM's snapshot path: once per window, after the
    snapshot). Nothing in the product passes one; tests stage the dialer's races there.
    ``observer`` is told every statement the batch sends through its cursor and how long it
    took (benchmarks time the batch with it); the table inspection runs on ``conn`` itself.
    ``lists``: the lists a scoped key may touch (None: every list); a lead of another list is
    reported ``forbidden`` for every action, and both its rows are left as they are.
    """
    tuning = tuning or Tuning()
    ids = validate_lead_ids(lead_ids)
    unique = sorted(set(ids))
    dbapi, cursor, sqlite = open_session(conn, tuning, observer, "the batch")
    sql = checked_statements(conn, cursor)
    pair = sql.pair
    require_list_column(pair, lists)
    if actions.delete and not actions.dry_run and pair.unreadable_in_use:
        raise InUseUnknownError(pair.unreadable_in_use)
    if pair.transactional:
        innodb.prepare_session(cursor, tuning)
    sizer = chunk_sizer(tuning)
    results: dict[int, LeadResult] = {}
    if not (actions.dry_run or sqlite or pair.transactional) and myisam_snapshot.snapshot_ready(
        cursor, conn, sql
    ):
        results = myisam_snapshot.run_windows(
            cursor, conn, sql, unique, actions, sizer, tuning, after_read, lists
        )
        return make_report(ids, results, actions, scoped=lists is not None)
    # MyISAM's locked path holds LOCK TABLES for each chunk: a dialer waiting for it waits for
    # a metadata lock, which ``LockWaits`` cannot see. So its chunks stay at the target time
    # (grown on a reading that saw nobody, they held the table 50 ms at p99), and every chunk
    # is followed by a pause of ``yield_time``, whoever waits: back to back, they left the
    # dialer one statement per chunk, seconds behind its schedule (bench/README.md).
    locked_path = not (actions.dry_run or sqlite or pair.transactional)
    position = 0
    while position < len(unique):
        chunk = unique[position : position + sizer.size]
        started = time.perf_counter()
        if actions.dry_run:
            states = read_states(cursor, sql, chunk, lists=lists)
            results.update((i, plan_lead(i, states[i], actions)) for i in chunk)
        elif sqlite:
            results.update(
                sqlite_strategy.run_chunk(cursor, sql, chunk, actions, after_read, lists)
            )
        elif pair.transactional:
            results.update(
                innodb.run_chunk(cursor, dbapi, sql, chunk, actions, tuning, after_read, lists)
            )
        else:
            with batch_lock(cursor, conn, tuning):
                results.update(
                    myisam_locked.run_chunk(cursor, sql, chunk, actions, after_read, lists)
                )
        sizer.record(len(chunk), time.perf_counter() - started)
        position += len(chunk)
        if locked_path and position < len(unique):
            time.sleep(tuning.yield_time.total_seconds())
    return make_report(ids, results, actions, scoped=lists is not None)


class Session(NamedTuple):
    """A batch's own connection to the tables: every statement commits on its own (the chunks
    open their short transactions themselves)."""

    dbapi: Any
    cursor: Cursor
    sqlite: bool


def open_session(
    conn: Connection, tuning: Tuning, observer: StatementObserver | None, what: str
) -> Session:
    """``conn``'s DB-API connection in autocommit, with strict SQL mode, UTC and the tuning's
    lock wait (SQLite: its busy timeout); ``what`` names the batch in errors."""
    dbapi = autocommit_dbapi(conn, BatchError, what)
    sqlite = conn.dialect.name == "sqlite"
    cursor = Cursor(dbapi, observer)
    wait = max(1, int(tuning.lock_wait_timeout.total_seconds()))
    if sqlite:
        cursor.run(f"PRAGMA busy_timeout = {wait * 1000}")
    else:
        cursor.run(
            f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00', lock_wait_timeout = {wait}"
        )
    return Session(dbapi, cursor, sqlite)


def require_list_column(pair: TablePair, lists: Lists | None) -> None:
    """Refuse a job scoped to ``lists`` on tables without ``list_id``: it could not tell which
    leads it may touch."""
    if lists is not None and not any(c.name == "list_id" for c in pair.columns):
        raise BatchError(f"{LIVE_TABLE} has no list_id column: a job scoped to lists cannot run")


def chunk_sizer(tuning: Tuning) -> ChunkSizer:
    """A batch's chunk sizer, starting at the tuning's first chunk size."""
    return ChunkSizer(
        target=tuning.chunk_time.total_seconds(),
        size=max(1, min(tuning.first_chunk, tuning.max_chunk)),
        max_size=tuning.max_chunk,
        min_size=max(1, min(tuning.min_chunk, tuning.max_chunk)),
    )


def checked_statements(conn: Connection, cursor: Cursor) -> Statements:
    """The checked table pair and its SQL, inspected again whenever either table's DDL changed.

    Inspecting information_schema costs more than a small batch's own statements, so the result
    is kept with the connection, keyed by both tables' ``SHOW CREATE TABLE`` (every column,
    type, ENUM value, character set, key and the engine) and by which dialer tables can be read.
    """
    if conn.dialect.name == "sqlite":
        return Statements(inspect_tables(conn))
    try:
        ddl = tuple(
            _AUTO_INCREMENT.sub("", str(cursor.rows(f"SHOW CREATE TABLE {q(table)}")[0][1]))
            for table in (LIVE_TABLE, ARCHIVE_TABLE)
        )
    except Exception:  # the full inspection says what is wrong, or finds nothing wrong
        return Statements(inspect_tables(conn))
    key = (ddl, probe_in_use_tables(conn))
    info = conn.connection.info  # one per DBAPI connection; cleared when it is replaced
    cached = info.get(_TABLES_INFO)
    if cached is not None and cached[0] == key:
        return cast(Statements, cached[1])
    sql = Statements(inspect_tables(conn))
    info[_TABLES_INFO] = (key, sql)
    return sql
