"""The restore batch: archived leads back into ``vicidial_list`` (Vicidial's ``lead_dearchive``).

A plain function over a database connection, like ``run_batch``; no Celery here. It keeps the
archive's invariant at every instant, for every lead: the lead is in ``vicidial_list``, or its
identical copy is in ``vicidial_list_archive``.

How a chunk runs (the unique lead IDs, sorted, in chunks sized to the target lock time):

1. with the chunk's rows held still (``LOCK TABLES`` on MyISAM, row locks in ``lead_id`` order
   on InnoDB, ``BEGIN IMMEDIATE`` on SQLite), read which leads are live and which archived, and
   copy every archived lead that is not live into ``vicidial_list``: one ``INSERT ... SELECT`` of
   every column, itself guarded (``NOT EXISTS`` a live row). A lead already live is refused
   (``already_live``, as ``lead_dearchive`` refuses it), one in neither table is ``not_archived``;
   for a job of a key limited to lists (``lists``), a lead whose list (its live row's, else its
   archive row's, read in the same held step) is not one of them is ``forbidden``, and neither
   of its rows is written;
2. the locks are released (the dialer may write the live copy from here on), ``after_insert`` is
   told (tests stage the dialer's write there);
3. the archive rows are removed by one ``DELETE`` that compares each with its live copy, every
   column, NULL-safe and byte for byte (``tasks.archive.sql.same``), in the deleting statement
   itself: a lead the dialer changed in between keeps its archive row (both rows kept, nothing
   lost; the outcome is still ``restored``). No archive row is ever deleted without it.

Both steps run under the batch lock (``batch_lock``, MySQL/MariaDB; taken once per window of
``LOCK_WINDOW`` leads): a restore and an archive batch never interleave on one database. Before its
first write a restore checks, with statements that change nothing, that its user may INSERT into
``vicidial_list`` and DELETE from the archive (the archive's least-privilege user may not;
``deploy/grants.sql``'s ``[restore]`` block): without them it fails with ``RestoreGrantError`` and
nothing changed. A dry run only reads.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection

from tasks.archive.batch import (
    checked_statements,
    chunk_sizer,
    open_session,
    require_list_column,
)
from tasks.archive.chunk import LockWaits, Tuning, batch_lock
from tasks.archive.cursor import Cursor, StatementObserver
from tasks.archive.innodb import prepare_session, with_retries
from tasks.archive.plan import FORBIDDEN, LeadsReport, validate_lead_ids
from tasks.archive.sql import Statements, id_list, q
from tasks.errors import MYSQL_ACCESS_DENIED, BatchError, ConcurrentChangeError, mysql_error_code
from tasks.schema import ARCHIVE_TABLE, LIVE_TABLE
from tasks.scopes import Lists

RestoreOutcome = Literal["restored", "already_live", "not_archived", "forbidden"]
# Every job's outcomes; a job scoped to lists has FORBIDDEN too.
RESTORE_OUTCOMES: tuple[RestoreOutcome, ...] = ("restored", "already_live", "not_archived")

# The batch lock is held for at most this many leads at a time (SNAPSHOT_WINDOW's size).
LOCK_WINDOW = 500

# An observer of run_restore: called with a chunk's restored lead IDs between the INSERT (its
# locks released) and the DELETE of their archive rows.
AfterInsert = Callable[[list[int]], None]

GRANT_HINT = (
    "a restore needs INSERT on vicidial_list and DELETE on vicidial_list_archive"
    " (deploy/grants.sql, the [restore] block)"
)


class RestoreGrantError(BatchError):
    """The database user lacks a privilege a restore needs; nothing was changed."""


@dataclass(slots=True)
class RestoreResult:
    """One requested lead: its restore outcome and where the lead is at the end."""

    lead_id: int
    restore: RestoreOutcome
    archived: bool
    live: bool

    def as_json(self) -> dict[str, Any]:
        """The lead as the job status shows it."""
        return {
            "lead_id": self.lead_id,
            "restore": self.restore,
            "archived": self.archived,
            "live": self.live,
        }


@dataclass(slots=True)
class RestoreReport(LeadsReport):
    """What a restore did (or, in a dry run, would do) to every requested lead."""

    leads: list[RestoreResult]


@dataclass(frozen=True, slots=True)
class RestoreStatements:
    """A restore's SQL, from the archive batch's ``Statements`` (same columns, same ``same``)."""

    sql: Statements

    def states(self, ids: str, with_list: bool = False) -> str:
        """(lead_id, live, list_id) rows: live 1 for each live lead, 0 for each archived one;
        the row's list_id ``with_list``, else NULL."""
        live_list, archive_list = ("l.list_id", "a.list_id") if with_list else ("NULL", "NULL")
        return (
            f"SELECT l.lead_id, 1, {live_list} FROM {self.sql.live_by_id}"
            f" WHERE l.lead_id IN ({ids})"
            f" UNION ALL SELECT a.lead_id, 0, {archive_list} FROM {self.sql.archive_by_id}"
            f" WHERE a.lead_id IN ({ids})"
        )

    def insert(self, ids: str) -> str:
        """Copy the archive rows of leads with no live row into ``vicidial_list``."""
        values = ", ".join(f"a.{q(c.name)}" for c in self.sql.pair.columns)
        return (
            f"INSERT INTO {q(LIVE_TABLE)} ({self.sql.insert_columns})"
            f" SELECT {values} FROM {self.sql.archive_by_id} WHERE a.lead_id IN ({ids})"
            f" AND NOT EXISTS (SELECT 1 FROM {q(LIVE_TABLE)} AS l WHERE l.lead_id = a.lead_id)"
        )

    def delete(self, ids: str) -> str:
        """Delete the archive rows whose live copy is identical, column by column."""
        # The guard is the comparison itself, evaluated by the deleting statement.
        if self.sql.pair.dialect == "sqlite":
            return (
                f"DELETE FROM {self.sql.archive_by_id} WHERE a.lead_id IN ({ids})"
                f" AND EXISTS (SELECT 1 FROM {self.sql.live_by_id}"
                f" WHERE l.lead_id = a.lead_id AND {self.sql.identical})"
            )
        return (
            f"DELETE a FROM {self.sql.archive_by_id} JOIN {self.sql.live_by_id}"
            f" ON l.lead_id = a.lead_id WHERE a.lead_id IN ({ids}) AND {self.sql.identical}"
        )

    def still_archived(self, ids: str) -> str:
        """Which of the leads still have an archive row."""
        return f"SELECT a.lead_id FROM {self.sql.archive_by_id} WHERE a.lead_id IN ({ids})"

    @property
    def lock_tables(self) -> str:
        """MyISAM: the insert step's table locks (the live table written, the archive read)."""
        return (
            f"LOCK TABLES {q(LIVE_TABLE)} WRITE, {q(LIVE_TABLE)} AS l READ,"
            f" {q(ARCHIVE_TABLE)} AS a READ"
        )

    def probes(self) -> tuple[str, str]:
        """Statements that change nothing but need the restore's two privileges."""
        return (
            f"INSERT INTO {q(LIVE_TABLE)} ({self.sql.insert_columns})"
            f" SELECT {self.sql.insert_columns} FROM {q(ARCHIVE_TABLE)} WHERE 0",
            f"DELETE FROM {q(ARCHIVE_TABLE)} WHERE 0",
        )


def run_restore(
    conn: Connection,
    lead_ids: Sequence[int],
    dry_run: bool = False,
    tuning: Tuning | None = None,
    *,
    after_insert: AfterInsert | None = None,
    observer: StatementObserver | None = None,
    lists: Lists | None = None,
) -> RestoreReport:
    """Restore ``lead_ids`` from the archive and report every lead's outcome, in request order.

    ``after_insert``, an observer, is called with each chunk's restored lead IDs after their
    live copies are inserted and the locks released, before their archive rows are deleted.
    Nothing in the product passes one; tests stage the dialer's races there. ``observer`` is
    told every statement, as ``run_batch``'s. ``lists``: the lists a scoped key may touch
    (None: every list); a lead of another list is ``forbidden``, and both its rows stay as they
    are.
    """
    tuning = tuning or Tuning()
    ids = validate_lead_ids(lead_ids)
    unique = sorted(set(ids))
    dbapi, cursor, sqlite = open_session(conn, tuning, observer, "the restore")
    rsql = RestoreStatements(checked_statements(conn, cursor))
    pair = rsql.sql.pair
    require_list_column(pair, lists)
    if pair.transactional:
        prepare_session(cursor, tuning)
    if not dry_run and not sqlite:
        _check_grants(cursor, rsql)
    sizer = chunk_sizer(tuning)
    results: dict[int, RestoreResult] = {}
    # MyISAM: each chunk's INSERT locks vicidial_list as a whole under LOCK TABLES, then its
    # DELETE reads it. After a chunk someone waited for, the restore makes way for the dialer
    # (``LockWaits``), as the archive's deletes do; but a dialer waiting for the INSERT waits for
    # a metadata lock, which the reading cannot see, so chunks never grow past the target on it.
    myisam = not (dry_run or sqlite or pair.transactional)
    waits = LockWaits(cursor, tuning) if myisam and unique else None
    for start in range(0, len(unique), LOCK_WINDOW):
        window = unique[start : start + LOCK_WINDOW]
        # The batch lock, once per window (as the archive's snapshot path takes it): other
        # batches wait at most one window; the dialer never waits for it.
        lock: AbstractContextManager[None] = (
            nullcontext() if sqlite or dry_run else batch_lock(cursor, conn, tuning)
        )
        with lock:
            position = 0
            while position < len(window):
                chunk = window[position : position + sizer.size]
                started = time.perf_counter()
                if dry_run:
                    states = _read(cursor, rsql, chunk, lists)
                    results.update(_plan(chunk, states, dry_run=True))
                else:
                    results.update(
                        _run_chunk(cursor, dbapi, rsql, chunk, tuning, after_insert, lists)
                    )
                sizer.record(len(chunk), time.perf_counter() - started)
                if waits is not None:
                    waits.after_chunk()
                position += len(chunk)
    return _report(ids, results, scoped=lists is not None)


def _check_grants(cursor: Cursor, rsql: RestoreStatements) -> None:
    """Refuse, before any write, a user without the restore's INSERT and DELETE."""
    for probe in rsql.probes():
        try:
            cursor.write(probe)
        except Exception as exc:
            if mysql_error_code(exc) in MYSQL_ACCESS_DENIED:
                original = getattr(exc, "orig", None) or exc
                raise RestoreGrantError(f"{GRANT_HINT}: {original}") from exc
            raise


@dataclass(slots=True)
class _State:
    """Where a lead is, and whether the job may touch it."""

    live: bool = False
    archived: bool = False
    forbidden: bool = False


def _read(
    cursor: Cursor, rsql: RestoreStatements, chunk: list[int], lists: Lists | None
) -> dict[int, _State]:
    """Each lead's state; with ``lists``, a lead whose list (its live row's, else its archive
    row's) is not one of them is forbidden."""
    states = {i: _State() for i in chunk}
    rows = cursor.rows(rsql.states(id_list(chunk), with_list=lists is not None))
    for lead_id, is_live, list_id in rows:
        state = states[int(lead_id)]
        allowed = lists is None or lists.allows(list_id)
        if is_live:
            state.live, state.forbidden = True, not allowed
        else:
            state.archived = True
            if not state.live:
                state.forbidden = not allowed
    return states


def _plan(
    chunk: list[int], states: dict[int, _State], *, dry_run: bool
) -> dict[int, RestoreResult]:
    """Each lead's outcome; where it will be once restored (where it is, in a dry run)."""
    plans = {}
    for i in chunk:
        state = states[i]
        live, archived = state.live, state.archived
        if state.forbidden:
            plans[i] = RestoreResult(i, FORBIDDEN, archived, live)
        elif live:
            plans[i] = RestoreResult(i, "already_live", archived, live)
        elif archived:
            plans[i] = RestoreResult(i, "restored", archived, not dry_run)
        else:
            plans[i] = RestoreResult(i, "not_archived", archived, live)
    return plans


def _run_chunk(
    cursor: Cursor,
    dbapi: Any,
    rsql: RestoreStatements,
    chunk: list[int],
    tuning: Tuning,
    after_insert: AfterInsert | None,
    lists: Lists | None,
) -> dict[int, RestoreResult]:
    """Insert the chunk's live copies with its rows held still, then delete the verified
    archive rows."""
    pair = rsql.sql.pair
    if pair.dialect == "sqlite":
        plans = _in_transaction(cursor, dbapi, "BEGIN IMMEDIATE", rsql, chunk, tuning, lists)
    elif pair.transactional:
        plans = _in_transaction(cursor, dbapi, "START TRANSACTION", rsql, chunk, tuning, lists)
    else:
        # MyISAM has no transactions: LOCK TABLES makes the check and the INSERT one step.
        cursor.run(rsql.lock_tables)
        try:
            plans = _insert_planned(cursor, rsql, chunk, lists)
        finally:
            cursor.run("UNLOCK TABLES")
    restored = [i for i, p in plans.items() if p.restore == "restored"]
    if not restored:
        return plans
    if after_insert is not None:
        after_insert(restored)
    ids = id_list(restored)
    deleted = with_retries(lambda: cursor.write(rsql.delete(ids)), tuning)
    if deleted != len(restored):
        # The dialer changed these live copies after the INSERT: their archive rows stay.
        for (lead_id,) in cursor.rows(rsql.still_archived(ids)):
            plans[int(lead_id)].archived = True
    return plans


def _insert_planned(
    cursor: Cursor, rsql: RestoreStatements, chunk: list[int], lists: Lists | None
) -> dict[int, RestoreResult]:
    """Read the held chunk's state and insert exactly the live copies it calls for."""
    plans = _plan(chunk, _read(cursor, rsql, chunk, lists), dry_run=False)
    targets = [i for i, p in plans.items() if p.restore == "restored"]
    if targets:
        done = cursor.write(rsql.insert(id_list(targets)))
        if done != len(targets):
            raise ConcurrentChangeError(
                f"restore inserted {done} rows where the locked check expected {len(targets)}"
            )
    for i in targets:
        # Until the verified DELETE says otherwise, the archive row is there too.
        plans[i].archived = False
    return plans


def _in_transaction(
    cursor: Cursor,
    dbapi: Any,
    begin: str,
    rsql: RestoreStatements,
    chunk: list[int],
    tuning: Tuning,
    lists: Lists | None,
) -> dict[int, RestoreResult]:
    """The insert step in one transaction (InnoDB: its rows locked in ``lead_id`` order, live
    table first, as the archive batch locks them), tried again after a deadlock."""
    ids = id_list(chunk)

    def attempt() -> dict[int, RestoreResult]:
        cursor.run(begin)
        try:
            if rsql.sql.pair.transactional:
                cursor.rows(rsql.sql.lock_rows(LIVE_TABLE, ids))
                cursor.rows(rsql.sql.lock_rows(ARCHIVE_TABLE, ids))
            plans = _insert_planned(cursor, rsql, chunk, lists)
        except BaseException:
            dbapi.rollback()
            raise
        dbapi.commit()
        return plans

    return with_retries(attempt, tuning)


def _report(
    ids: Sequence[int], results: dict[int, RestoreResult], *, scoped: bool
) -> RestoreReport:
    """Every requested ID once, in request order, with counts under ``restore`` (and a
    ``forbidden`` count when the job is ``scoped`` to lists)."""
    seen = Counter(ids)
    order = list(dict.fromkeys(ids))
    leads = [results[i] for i in order]
    tally = Counter(lead.restore for lead in leads)
    outcomes = (*RESTORE_OUTCOMES, FORBIDDEN) if scoped else RESTORE_OUTCOMES
    return RestoreReport(
        counts={"restore": {outcome: tally[outcome] for outcome in outcomes}},
        duplicates=[i for i in order if seen[i] > 1],
        leads=leads,
    )
