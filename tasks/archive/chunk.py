"""What every strategy does with a chunk of leads: how it shares the tables, and its steps.

A chunk's steps, whatever holds its rows still (a table lock, row locks, SQLite's write lock):
read each lead's state (``read_states``), plan every lead (``plan_lead``), then run each of
insert, update and delete on exactly the leads planned for it (``write_planned``), which must touch
exactly that many rows or the chunk is refused (``ConcurrentChangeError``). Batches on
non-transactional tables of one database are serialised by a named lock (``batch_lock``).

A job scoped to lists (``lists``, ``tasks.scopes.Lists``) reads each lead's ``list_id`` in the
same locked read, and ``plan_lead`` makes a lead of another list ``forbidden``: it is in no
statement's list of leads, so nothing writes either of its rows. Whatever the list was at the
read, the guarded DELETE still compares every column, ``list_id`` included, with the archive
copy: a lead moved to another list after a snapshot stays live (``mismatch``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection

from tasks.archive.cursor import Cursor
from tasks.archive.plan import Actions, LeadResult, LeadState, plan_lead
from tasks.archive.sql import Statements, id_list
from tasks.errors import BatchBusyError, ConcurrentChangeError
from tasks.scopes import Lists

# An observer of run_batch: called with a chunk's lead IDs between reading and writing them.
AfterRead = Callable[[list[int]], None]


@dataclass(frozen=True, slots=True)
class Tuning:
    """How a batch shares the tables with the dialer."""

    # How long one chunk may hold the table lock (pt-online-schema-change's --chunk-time).
    chunk_time: timedelta = timedelta(milliseconds=5)
    # After a chunk during which a session waited for a table lock, the batch lets the table go
    # this long before the next chunk: the waiting statement got the table at the chunk's end,
    # and the dialer's next one (it reads a lead, then updates it) gets it too instead of
    # waiting a whole chunk more. Like pt-archiver's --sleep, but only when someone waits (on
    # MyISAM's locked path, after every chunk: who waits for its LOCK TABLES cannot be seen).
    yield_time: timedelta = timedelta(microseconds=500)
    first_chunk: int = 25
    # Each statement has a fixed cost of its own (about 2.5 ms for a whole locked chunk): below
    # a few leads a chunk is all overhead, and no faster for the dialer.
    min_chunk: int = 8
    max_chunk: int = 500
    # How many times a chunk is tried again after a deadlock or lock wait timeout (InnoDB).
    chunk_retries: int = 5
    # How long LOCK TABLES and row locks may wait before the batch gives up.
    lock_wait_timeout: timedelta = timedelta(seconds=50)


def read_states(
    cursor: Cursor,
    sql: Statements,
    chunk: list[int],
    source: str = "",
    lists: Lists | None = None,
) -> dict[int, LeadState]:
    """Each lead's state, its live row read from the live table or the given ``source``; with
    ``lists``, a lead whose list (its live row's, else its archive row's) is not one of them is
    ``forbidden``."""
    if lists is not None:
        return _read_scoped_states(cursor, sql, chunk, source, lists)
    states = {i: LeadState() for i in chunk}
    for lead_id, live, archived, identical, same_lead, held_by in cursor.rows(
        sql.states(id_list(chunk), source)
    ):
        if live:
            states[int(lead_id)] = LeadState(
                live=True,
                archived=bool(archived),
                identical=bool(identical),
                same_lead=bool(same_lead),
                held_by=as_text(held_by),
            )
        elif not states[int(lead_id)].live:
            states[int(lead_id)] = LeadState(archived=True)
    return states


def _read_scoped_states(
    cursor: Cursor, sql: Statements, chunk: list[int], source: str, lists: Lists
) -> dict[int, LeadState]:
    """``read_states`` for a job scoped to ``lists``: the same read, with each row's list."""
    states = {i: LeadState() for i in chunk}
    for lead_id, live, archived, identical, same_lead, held_by, list_id in cursor.rows(
        sql.states(id_list(chunk), source, with_list=True)
    ):
        forbidden = not lists.allows(list_id)
        if live:
            states[int(lead_id)] = LeadState(
                live=True,
                archived=bool(archived),
                identical=bool(identical),
                same_lead=bool(same_lead),
                held_by=as_text(held_by),
                forbidden=forbidden,
            )
        elif not states[int(lead_id)].live:
            states[int(lead_id)] = LeadState(archived=True, forbidden=forbidden)
    return states


def apply_chunk(
    cursor: Cursor,
    sql: Statements,
    chunk: list[int],
    actions: Actions,
    after_read: AfterRead | None,
    lists: Lists | None = None,
) -> dict[int, LeadResult]:
    """Read the locked chunk's state, then run exactly the statements it calls for."""
    states = read_states(cursor, sql, chunk, lists=lists)
    if after_read is not None:
        after_read(chunk)
    plans = {i: plan_lead(i, states[i], actions) for i in chunk}
    write_planned(cursor, plans, (sql.insert, sql.update, sql.delete))
    return plans


def write_planned(
    cursor: Cursor, plans: dict[int, LeadResult], statements: Sequence[Callable[[str], str]]
) -> None:
    """Run each of insert, update, delete (in that order) on exactly the leads planned for it."""
    for (action, outcome), statement in zip(
        (("insert", "inserted"), ("update", "updated"), ("delete", "deleted")),
        statements,
        strict=False,
    ):
        targets = [i for i, p in plans.items() if getattr(p, action) == outcome]
        if not targets:
            continue
        done = cursor.write(statement(id_list(targets)))
        if done != len(targets):
            raise ConcurrentChangeError(
                f"{action} touched {done} rows where the locked check expected {len(targets)}"
            )


class LockWaits:
    """Whether anyone waited for a table lock while a chunk held one, and making way if so.

    The snapshot path's deletes are plain statements that lock ``vicidial_list`` as a whole.
    The server counts every table-lock request that had to wait (``Table_locks_waited``, any
    session, any table); read after each chunk, a rise means the dialer (or someone) waited for
    it. A chunk the dialer waited for ends with the dialer's waiting statement getting the
    table; its next one (it reads a lead, then updates it) must not find the next chunk there
    first: ``after_chunk`` then lets the table go for ``Tuning.yield_time``. The reading also
    tells the chunk sizer whether chunks may grow.

    Blind to ``LOCK TABLES``: a statement waiting for tables another session locked that way
    waits for their metadata lock, which the count leaves out (MariaDB 10.11; seeing it needs
    the PROCESS privilege or performance_schema, neither of which the service has). So the
    locked path, whose chunks run under ``LOCK TABLES``, does not read it at all, and restore,
    whose inserts do, reads it for the pause only (its DELETE's read of ``vicidial_list`` is a
    plain statement) and never grows its chunks on it.
    """

    def __init__(self, cursor: Cursor, tuning: Tuning) -> None:
        self._cursor = cursor
        self._pause = tuning.yield_time.total_seconds()
        self._count = self._read()

    def after_chunk(self) -> bool:
        """Read the count again: True, after the pause, when someone waited since the last
        reading; False at once otherwise."""
        before, self._count = self._count, self._read()
        if self._count == before:
            return False
        if self._pause > 0:
            time.sleep(self._pause)
        return True

    def _read(self) -> int:
        rows = self._cursor.rows("SHOW GLOBAL STATUS LIKE 'Table_locks_waited'")
        return int(rows[0][1]) if rows else 0


@contextmanager
def batch_lock(cursor: Cursor, conn: Connection, tuning: Tuning) -> Iterator[None]:
    """Hold the named lock that serialises batches on non-transactional tables (one database).

    Taken for each snapshot window, and for each chunk of the locked path: a chunk there
    verifies and deletes under its own table lock, and must not do so between another batch's
    snapshot and that batch's refresh of the archive from it (the refresh would put the older
    snapshot back over the copy of a lead just deleted).
    """
    lock = "leadarchive." + re.sub(r"\W", "_", conn.engine.url.database or "")[:50]
    wait = max(1, int(tuning.lock_wait_timeout.total_seconds()))
    ((granted,),) = cursor.rows(f"SELECT GET_LOCK('{lock}', {wait})")
    if granted != 1:
        raise BatchBusyError(f"another batch held {lock!r} for {wait}s; try again")
    try:
        yield
    finally:
        cursor.rows(f"SELECT RELEASE_LOCK('{lock}')")


def as_text(value: Any) -> str | None:
    """A text column as str (pymysql hands back bytes for some expressions)."""
    return value.decode() if isinstance(value, bytes | bytearray) else value
