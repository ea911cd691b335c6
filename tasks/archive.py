"""The archive batch: insert, refresh and verified delete of Vicidial leads, on MySQL/MariaDB.

A plain function over a database connection; no Celery here. The invariant it keeps at every
instant, for every lead: the lead is in ``vicidial_list``, or its identical copy is in
``vicidial_list_archive``.

How a batch runs. The unique lead IDs are sorted and cut into chunks. For each chunk the rows are
locked (``LOCK TABLES`` on MyISAM, row locks in ``lead_id`` order on InnoDB), their state is read
(live? archived? identical? queued or in a call?), and the insert, update and delete statements run
on exactly the leads that state calls for, each statement still guarded in SQL on its own: the
delete compares every column, NULL-safe and byte for byte, in the deleting statement itself. The
lock is released after every chunk, and the chunk size follows a target lock time (like
pt-online-schema-change's ``--chunk-time``) so the dialer never waits long for the table.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, Literal, cast

from sqlalchemy import Connection

from tasks.db import autocommit_dbapi
from tasks.errors import BatchBusyError, BatchError, ConcurrentChangeError, InUseUnknownError
from tasks.schema import (
    ARCHIVE_TABLE,
    ER_NO_SUCH_TABLE,
    LIVE_TABLE,
    Column,
    Hold,
    TablePair,
    inspect_tables,
    probe_in_use_tables,
)

InsertOutcome = Literal["inserted", "already_archived", "not_found"]
UpdateOutcome = Literal["updated", "unchanged", "not_archived", "not_found", "id_reused"]
DeleteOutcome = Literal["deleted", "not_archived", "mismatch", "in_use", "not_found", "id_reused"]

INSERT_OUTCOMES: tuple[InsertOutcome, ...] = ("inserted", "already_archived", "not_found")
UPDATE_OUTCOMES: tuple[UpdateOutcome, ...] = (
    "updated",
    "unchanged",
    "not_archived",
    "not_found",
    "id_reused",
)
DELETE_OUTCOMES: tuple[DeleteOutcome, ...] = (
    "deleted",
    "not_archived",
    "mismatch",
    "in_use",
    "not_found",
    "id_reused",
)

MAX_LEAD_ID = 4_294_967_295

# An observer of run_batch: called with a chunk's lead IDs between reading and writing them.
AfterRead = Callable[[list[int]], None]

# Strict for every table (STRICT_TRANS_TABLES lets a multi-row MyISAM statement store adjusted
# values after its first row). No NO_ZERO_DATE: Vicidial rows carry zero dates that must copy.
SQL_MODE = (
    "STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION"
)

# MySQL error numbers after which a chunk is rolled back and tried again (InnoDB).
ER_LOCK_WAIT_TIMEOUT = 1205
ER_LOCK_DEADLOCK = 1213


@dataclass(slots=True)
class LeadResult:
    """One requested lead: an outcome per requested action and where the lead is at the end."""

    lead_id: int
    archived: bool
    live: bool
    insert: InsertOutcome | None = None
    update: UpdateOutcome | None = None
    delete: DeleteOutcome | None = None
    # What the dialer still needs the lead for, when its delete is ``in_use`` (schema.HELD_BY).
    held_by: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The lead as the job status shows it: actions not requested are left out."""
        shown: dict[str, Any] = {"lead_id": self.lead_id}
        for action in ("insert", "update", "delete"):
            outcome = getattr(self, action)
            if outcome is not None:
                shown[action] = outcome
        if self.delete == "in_use":
            shown["held_by"] = self.held_by
        shown["archived"], shown["live"] = self.archived, self.live
        return shown


@dataclass(slots=True)
class BatchReport:
    """What a batch did (or, in a dry run, would do) to every requested lead."""

    counts: dict[str, dict[str, int]]
    duplicates: list[int]
    leads: list[LeadResult]

    def as_json(self) -> dict[str, Any]:
        """The report as the job status shows it."""
        return {
            "counts": self.counts,
            "duplicates": self.duplicates,
            "leads": [lead.as_json() for lead in self.leads],
        }


@dataclass(frozen=True, slots=True)
class Actions:
    """Which actions a batch carries out (``tasks.requests.ArchiveRequest.actions`` builds it
    from a request, whose validator ensures that at least one is asked for)."""

    insert: bool = True
    update: bool = True
    delete: bool = False
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class Tuning:
    """How a batch shares the tables with the dialer."""

    # How long one chunk may hold the table lock (pt-online-schema-change's --chunk-time).
    chunk_time: timedelta = timedelta(milliseconds=5)
    first_chunk: int = 25
    # Each statement has a fixed cost of its own (about 2.5 ms for a whole locked chunk): below
    # a few leads a chunk is all overhead, and no faster for the dialer.
    min_chunk: int = 8
    max_chunk: int = 500
    # How many times a chunk is tried again after a deadlock or lock wait timeout (InnoDB).
    chunk_retries: int = 5
    # How long LOCK TABLES and row locks may wait before the batch gives up.
    lock_wait_timeout: timedelta = timedelta(seconds=50)


@dataclass(frozen=True, slots=True)
class LeadState:
    """A lead's state, read while its rows are locked."""

    live: bool = False
    archived: bool = False
    identical: bool = False
    # The live and archive rows have the same entry_date: one lead, not two sharing a reused ID.
    same_lead: bool = True
    # Why the dialer still needs the lead (schema.HELD_BY), or None.
    held_by: str | None = None


def plan_lead(lead_id: int, state: LeadState, actions: Actions) -> LeadResult:
    """Decide every requested action's outcome for one lead, in the order insert, update, delete.

    A live row and an archive row whose entry_date differ are two leads that share a reused ID
    (Vicidial sets entry_date at load and never changes it): the archive row is another
    person's history, neither refreshed nor taken as the live lead's copy (``id_reused``).
    """
    live, archived, identical = state.live, state.archived, state.identical
    reused = live and archived and not state.same_lead
    result = LeadResult(lead_id, archived, live)
    if actions.insert:
        if archived:
            result.insert = "already_archived"
        elif live:
            result.insert = "inserted"
            archived = identical = True
        else:
            result.insert = "not_found"
    if actions.update:
        if not archived:
            result.update = "not_archived" if live else "not_found"
        elif reused:
            result.update = "id_reused"
        elif live and not identical:
            result.update = "updated"
            identical = True
        else:
            result.update = "unchanged"
    if actions.delete:
        if not live:
            result.delete = "not_found"
        elif not archived:
            result.delete = "not_archived"
        elif reused:
            result.delete = "id_reused"
        elif not identical:
            result.delete = "mismatch"
        elif state.held_by is not None:
            result.delete = "in_use"
            result.held_by = state.held_by
        else:
            result.delete = "deleted"
            live = False
    if not actions.dry_run:
        result.archived, result.live = archived, live
    return result


def make_report(
    ids: Sequence[int], results: dict[int, LeadResult], actions: Actions
) -> BatchReport:
    """Assemble the report: every requested ID once, in request order, with counts."""
    seen = Counter(ids)
    order = list(dict.fromkeys(ids))
    leads = [results[i] for i in order]
    counts: dict[str, dict[str, int]] = {}
    for action, outcomes in (
        ("insert", INSERT_OUTCOMES),
        ("update", UPDATE_OUTCOMES),
        ("delete", DELETE_OUTCOMES),
    ):
        if getattr(actions, action):
            tally = Counter(getattr(lead, action) for lead in leads)
            counts[action] = {outcome: tally[outcome] for outcome in outcomes}
    return BatchReport(
        counts=counts,
        duplicates=[i for i in order if seen[i] > 1],
        leads=leads,
    )


def validate_lead_ids(ids: Iterable[int]) -> list[int]:
    """Refuse anything but integers in Vicidial's lead_id range (bool is not an integer here)."""
    checked = []
    for i in ids:
        if type(i) is not int or not 0 <= i <= MAX_LEAD_ID:
            raise ValueError(f"lead_id must be an integer from 0 to {MAX_LEAD_ID}, got {i!r}")
        checked.append(i)
    if not checked:
        raise ValueError("at least one lead_id is required")
    return checked


def q(identifier: str) -> str:
    """Quote a MySQL identifier (`rank` is reserved since MySQL 8.0.2)."""
    return "`" + identifier.replace("`", "``") + "`"


def _id_list(ids: Iterable[int]) -> str:
    # Only ints validated by validate_lead_ids reach here, so inlining them is injection-free
    # and saves the driver's per-value escaping on every chunk.
    return ",".join(str(int(i)) for i in ids)


SNAPSHOT = "leadarchive_snapshot"
# Kept in SQLAlchemy's per-DBAPI-connection ``info``: the checked tables, the snapshot's columns.
_TABLES_INFO = "leadarchive.tables"
_SNAPSHOT_INFO = "leadarchive.snapshot"
# The next AUTO_INCREMENT value changes with every insert, the table's definition does not.
_AUTO_INCREMENT = re.compile(r" AUTO_INCREMENT=\d+")
# A batch's snapshot covers at most this many leads (a MEMORY table of about 2 MB).
SNAPSHOT_WINDOW = 500
ER_ACCESS_DENIED = (1044, 1142)
ER_CANT_USE_BLOB = 1163


def _same(column: Column, left: str, right: str, dialect: str) -> str:
    """NULL-safe, byte-exact equality of one column between two aliases."""
    name = q(column.name)
    if dialect == "sqlite":
        # IS is NULL-safe, and SQLite's default BINARY collation compares bytes.
        return f"{left}.{name} IS {right}.{name}"
    if column.is_numeric:
        return f"{left}.{name} <=> {right}.{name}"
    # Bytes, not the collation: 'Bob' vs 'BOB' and 'x' vs 'x ' differ. Temporal values compare
    # as their text in the session's fixed UTC time zone, which maps TIMESTAMPs one to one.
    return f"CAST({left}.{name} AS BINARY) <=> CAST({right}.{name} AS BINARY)"


def _held(hold: Hold, alias: str, *, indexed: bool) -> str:
    """True while ``hold`` names the live lead ``l`` (never NULL).

    Written for the plan it should get, measured at 1M leads with 500 agents and 20,000
    callbacks: MariaDB turns an EXISTS into a semi-join that materialises the whole subquery per
    statement (every pending callback: 10 ms for a 20-lead chunk). On an indexed column a scalar
    subquery stays a per-lead index lookup instead; an unindexed one (``preview_lead_id``,
    ``vicidial_auto_calls.lead_id``) is best read once per statement, as an uncorrelated IN
    whose NULLs are left out (a NULL would make NOT IN unknown, and the delete never happen).
    """
    if indexed:
        condition = hold.condition(alias).format(lead="l.lead_id")
        return f"(SELECT 1 FROM {q(hold.table)} AS {alias} WHERE {condition} LIMIT 1) IS NOT NULL"
    column = f"{alias}.{q(hold.column)}"
    return (
        f"l.lead_id IN (SELECT {column} FROM {q(hold.table)} AS {alias}"
        f" WHERE {column} IS NOT NULL{hold.status_condition(alias)})"
    )


@dataclass(slots=True)
class _Statements:
    """The SQL of one table pair, built once per batch from the live columns."""

    pair: TablePair
    live_by_id: str = ""
    archive_by_id: str = ""
    identical: str = ""
    same_lead: str = ""
    in_use: str = ""
    held_by: str = ""
    insert_columns: str = ""
    insert_values: str = ""
    update_set: str = ""
    lock_tables: str = ""

    def __post_init__(self) -> None:
        columns = self.pair.columns
        dialect = self.pair.dialect
        # Primary-key lookups, always: on a small or freshly emptied table the optimizer may
        # choose a full scan, which on InnoDB would lock every row it reads.
        by_id = " FORCE INDEX (PRIMARY)" if dialect == "mysql" else ""
        self.live_by_id = f"{q(LIVE_TABLE)} AS l{by_id}"
        self.archive_by_id = f"{q(ARCHIVE_TABLE)} AS a{by_id}"
        self.identical = "(" + " AND ".join(_same(c, "l", "a", dialect) for c in columns) + ")"
        # One lead, not two sharing a reused ID: entry_date is set at load and never changed.
        entry_date = [c for c in columns if c.name == "entry_date"]
        self.same_lead = _same(entry_date[0], "l", "a", dialect) if entry_date else "1"
        # Each hold gets an alias of its own (LOCK TABLES locks every alias a statement uses).
        holds = [(hold, f"u{n}") for n, hold in enumerate(self.pair.holds)]
        checks = [
            (hold.reason, _held(hold, alias, indexed=hold.reason in self.pair.indexed_holds))
            for hold, alias in holds
        ]
        self.in_use = "(" + " OR ".join(check for _, check in checks) + ")" if checks else "0"
        self.held_by = (
            "CASE " + " ".join(f"WHEN {check} THEN '{reason}'" for reason, check in checks) + " END"
            if checks
            else "NULL"
        )
        self.insert_columns = ", ".join(q(c.name) for c in columns)
        self.insert_values = ", ".join(f"l.{q(c.name)}" for c in columns)
        # Every column, modify_date included: left out, ON UPDATE would stamp a new time and the
        # copy could never match again. (SQLite names the target's columns unqualified.)
        target = "a." if dialect == "mysql" else ""
        self.update_set = ", ".join(
            f"{target}{q(c.name)} = l.{q(c.name)}" for c in columns if c.name != "lead_id"
        )
        in_use_locks = [f"{q(hold.table)} AS {alias} READ" for hold, alias in holds]
        self.lock_tables = "LOCK TABLES " + ", ".join(
            [
                f"{q(LIVE_TABLE)} AS l WRITE",
                f"{q(ARCHIVE_TABLE)} AS a WRITE",
                f"{q(ARCHIVE_TABLE)} WRITE",
                *in_use_locks,
            ]
        )

    def classify(self, ids: str) -> str:
        return (
            f"SELECT l.lead_id, a.lead_id IS NOT NULL, {self.identical}, {self.same_lead},"
            f" {self.held_by} FROM {self.live_by_id} LEFT JOIN {self.archive_by_id}"
            f" ON a.lead_id = l.lead_id WHERE l.lead_id IN ({ids})"
        )

    def states(self, ids: str, source: str = "") -> str:
        """Live rows (from ``source``) with their archive comparison, then every archived lead.

        One statement: (lead_id, live, archived, identical, same_lead, held_by) rows. The
        snapshot is never in use itself; its leads' use is checked by the guarded DELETE.
        """
        held_by = "NULL" if source else self.held_by
        by_id = " FORCE INDEX (PRIMARY)" if self.pair.dialect == "mysql" else ""
        return (
            f"SELECT l.lead_id, 1, a.lead_id IS NOT NULL, {self.identical}, {self.same_lead},"
            f" {held_by} FROM {source or self.live_by_id} LEFT JOIN {self.archive_by_id}"
            f" ON a.lead_id = l.lead_id WHERE l.lead_id IN ({ids})"
            f" UNION ALL SELECT lead_id, 0, 1, 0, 1, NULL FROM {q(ARCHIVE_TABLE)}{by_id}"
            f" WHERE lead_id IN ({ids})"
        )

    # insert and update copy from `source`, aliased `l`: the live table, or the snapshot.
    def insert(self, ids: str, source: str = "") -> str:
        # The archive's primary key refuses a second copy; the lock made the check exact.
        return (
            f"INSERT INTO {q(ARCHIVE_TABLE)} ({self.insert_columns})"
            f" SELECT {self.insert_values} FROM {source or self.live_by_id}"
            f" WHERE l.lead_id IN ({ids})"
        )

    def update(self, ids: str, source: str = "") -> str:
        source = source or self.live_by_id
        if self.pair.dialect == "sqlite":
            return (
                f"UPDATE {self.archive_by_id} SET {self.update_set} FROM {source}"
                f" WHERE l.lead_id = a.lead_id AND a.lead_id IN ({ids})"
                f" AND {self.same_lead} AND NOT {self.identical}"
            )
        # Guarded like the delete: never another lead's history (same_lead), never a no-op.
        return (
            f"UPDATE {self.archive_by_id} JOIN {source} ON l.lead_id = a.lead_id"
            f" SET {self.update_set} WHERE a.lead_id IN ({ids})"
            f" AND {self.same_lead} AND NOT {self.identical}"
        )

    def delete(self, ids: str) -> str:
        # The guard is the comparison itself, evaluated by the deleting statement.
        if self.pair.dialect == "sqlite":
            return (
                f"DELETE FROM {self.live_by_id} WHERE l.lead_id IN ({ids})"
                f" AND EXISTS (SELECT 1 FROM {self.archive_by_id}"
                f" WHERE a.lead_id = l.lead_id AND {self.identical}) AND NOT {self.in_use}"
            )
        return (
            f"DELETE l FROM {self.live_by_id} JOIN {self.archive_by_id} ON a.lead_id = l.lead_id"
            f" WHERE l.lead_id IN ({ids}) AND {self.identical} AND NOT {self.in_use}"
        )

    # The snapshot path: the batch's live rows, read once by primary key into a private
    # temporary table aliased `l`, so every expression above serves both sources.
    def snapshot_create(self) -> str:
        return (
            f"CREATE TEMPORARY TABLE {SNAPSHOT} (PRIMARY KEY (lead_id)) ENGINE={{engine}}"
            f" AS SELECT {self.insert_columns} FROM {q(LIVE_TABLE)} LIMIT 0"
        )

    def snapshot_fill(self, ids: str) -> str:
        return (
            f"INSERT INTO {SNAPSHOT} ({self.insert_columns})"
            f" SELECT {self.insert_values} FROM {self.live_by_id} WHERE l.lead_id IN ({ids})"
        )

    def lock_rows(self, table: str, ids: str) -> str:
        return (
            f"SELECT lead_id FROM {q(table)} FORCE INDEX (PRIMARY) WHERE lead_id IN ({ids})"
            " ORDER BY lead_id FOR UPDATE"
        )


class _Cursor:
    """A thin DB-API cursor wrapper that turns any warning on a write into an error."""

    def __init__(self, dbapi_connection: Any) -> None:
        self._cursor = dbapi_connection.cursor()

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        self._cursor.execute(sql)
        return list(self._cursor.fetchall())

    def run(self, sql: str) -> None:
        self._cursor.execute(sql)

    def write(self, sql: str) -> int:
        self._cursor.execute(sql)
        if getattr(self._cursor, "warning_count", 0):
            self._cursor.execute("SHOW WARNINGS")
            warnings = "; ".join(f"{r[0]} {r[1]}: {r[2]}" for r in self._cursor.fetchall())
            raise BatchError(f"the database warned on a write, refusing to go on: {warnings}")
        return int(self._cursor.rowcount)


@dataclass(slots=True)
class _ChunkSizer:
    """Sizes chunks so each holds the lock for about ``target`` seconds."""

    target: float
    size: int
    max_size: int
    seconds_per_lead: float | None = field(default=None)
    min_size: int = 1

    def record(self, leads: int, seconds: float, *, nobody_waited: bool = False) -> None:
        """Learn from a chunk that took ``seconds``; ``nobody_waited``: no lock wait meanwhile."""
        if leads == 0:
            return
        sample = seconds / leads
        if self.seconds_per_lead is None:
            self.seconds_per_lead = sample
        else:
            self.seconds_per_lead = 0.7 * self.seconds_per_lead + 0.3 * sample
        wanted = int(self.target / max(self.seconds_per_lead, 1e-7))
        if nobody_waited:
            # No session waited for a table lock while this chunk held one: the dialer is
            # idle, so there is nobody to make way for. Grow past the target time, and fall
            # back to it with the first wait (small statements cost up to 1.6x the work). A
            # batch's short last chunk proves nothing either way: it keeps the size.
            wanted = max(wanted, self.size * 2 if leads >= self.size else self.size)
        # Grow gently (a cold key cache makes the first chunks look slow), shrink at once.
        self.size = max(self.min_size, min(self.max_size, wanted, self.size * 2))


# The delete chunk size each database's last batch ended with, per process.
_LEARNED: dict[tuple[str, timedelta, int], tuple[int, float | None]] = {}


def _driver_error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "orig", exc).args
    return args[0] if args and isinstance(args[0], int) else None


def run_batch(
    conn: Connection,
    lead_ids: Sequence[int],
    actions: Actions,
    tuning: Tuning | None = None,
    *,
    after_read: AfterRead | None = None,
) -> BatchReport:
    """Archive ``lead_ids`` as ``actions`` says and report every lead's outcome.

    ``after_read``, an observer, is called with each chunk's lead IDs once their state is read
    and before any statement writes them (on MyISAM's snapshot path: once per window, after the
    snapshot). Nothing in the product passes one; tests stage the dialer's races there.
    """
    tuning = tuning or Tuning()
    ids = validate_lead_ids(lead_ids)
    unique = sorted(set(ids))
    # Every statement commits on its own; the chunks open their short transactions themselves.
    dbapi = autocommit_dbapi(conn, BatchError, "the batch")
    sqlite = conn.dialect.name == "sqlite"
    cursor = _Cursor(dbapi)
    wait = max(1, int(tuning.lock_wait_timeout.total_seconds()))
    if sqlite:
        cursor.run(f"PRAGMA busy_timeout = {wait * 1000}")
    else:
        cursor.run(
            f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00', lock_wait_timeout = {wait}"
        )
    sql = _checked_statements(conn, cursor)
    pair = sql.pair
    if actions.delete and not actions.dry_run and pair.unreadable_in_use:
        raise InUseUnknownError(pair.unreadable_in_use)
    if pair.transactional:
        cursor.run(
            "SET SESSION innodb_lock_wait_timeout = "
            f"{max(1, int(tuning.lock_wait_timeout.total_seconds()))}"
        )
        # The rows a chunk decides on are locked explicitly, so READ COMMITTED loses nothing and
        # spares the gap locks with which two batches on neighbouring IDs deadlock. A server
        # that logs statements (binlog_format=STATEMENT) refuses it: keep REPEATABLE READ there.
        ((statement_binlog,),) = cursor.rows(
            "SELECT @@log_bin = 1 AND @@binlog_format = 'STATEMENT'"
        )
        if not statement_binlog:
            cursor.run("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    sizer = _ChunkSizer(
        target=tuning.chunk_time.total_seconds(),
        size=max(1, min(tuning.first_chunk, tuning.max_chunk)),
        max_size=tuning.max_chunk,
        min_size=max(1, min(tuning.min_chunk, tuning.max_chunk)),
    )
    results: dict[int, LeadResult] = {}
    if not (actions.dry_run or sqlite or pair.transactional) and _snapshot_ready(cursor, conn, sql):
        # Start where this process's last batch on this database left off, not from scratch.
        learned_key = (conn.engine.url.render_as_string(), tuning.chunk_time, tuning.max_chunk)
        sizer.size, sizer.seconds_per_lead = _LEARNED.get(learned_key, (sizer.size, None))
        for start in range(0, len(unique), SNAPSHOT_WINDOW):
            window = unique[start : start + SNAPSHOT_WINDOW]
            results.update(
                _run_window_snapshot(
                    cursor,
                    conn,
                    sql,
                    window,
                    actions,
                    sizer,
                    tuning,
                    first=start == 0,
                    after_read=after_read,
                )
            )
        _LEARNED[learned_key] = (sizer.size, sizer.seconds_per_lead)
        return make_report(ids, results, actions)
    position = 0
    while position < len(unique):
        chunk = unique[position : position + sizer.size]
        started = time.perf_counter()
        if actions.dry_run:
            states = _read_states(cursor, sql, chunk)
            results.update((i, plan_lead(i, states[i], actions)) for i in chunk)
        elif sqlite:
            results.update(_run_chunk_sqlite(cursor, sql, chunk, actions, after_read))
        elif pair.transactional:
            results.update(
                _run_chunk_innodb(cursor, dbapi, sql, chunk, actions, tuning, after_read)
            )
        else:
            with _batch_lock(cursor, conn, tuning):
                results.update(_run_chunk_locked(cursor, sql, chunk, actions, after_read))
        sizer.record(len(chunk), time.perf_counter() - started)
        position += len(chunk)
    return make_report(ids, results, actions)


def _read_states(
    cursor: _Cursor, sql: _Statements, chunk: list[int], source: str = ""
) -> dict[int, LeadState]:
    """Each lead's state, its live row read from the live table or the given ``source``."""
    states = {i: LeadState() for i in chunk}
    for lead_id, live, archived, identical, same_lead, held_by in cursor.rows(
        sql.states(_id_list(chunk), source)
    ):
        if live:
            states[int(lead_id)] = LeadState(
                live=True,
                archived=bool(archived),
                identical=bool(identical),
                same_lead=bool(same_lead),
                held_by=_text(held_by),
            )
        elif not states[int(lead_id)].live:
            states[int(lead_id)] = LeadState(archived=True)
    return states


def _apply(
    cursor: _Cursor,
    sql: _Statements,
    chunk: list[int],
    actions: Actions,
    after_read: AfterRead | None,
) -> dict[int, LeadResult]:
    """Read the locked chunk's state, then run exactly the statements it calls for."""
    states = _read_states(cursor, sql, chunk)
    if after_read is not None:
        after_read(chunk)
    plans = {i: plan_lead(i, states[i], actions) for i in chunk}
    _write_planned(cursor, plans, (sql.insert, sql.update, sql.delete))
    return plans


def _write_planned(
    cursor: _Cursor, plans: dict[int, LeadResult], statements: Sequence[Callable[[str], str]]
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
        done = cursor.write(statement(_id_list(targets)))
        if done != len(targets):
            raise ConcurrentChangeError(
                f"{action} touched {done} rows where the locked check expected {len(targets)}"
            )


def _run_chunk_locked(
    cursor: _Cursor,
    sql: _Statements,
    chunk: list[int],
    actions: Actions,
    after_read: AfterRead | None,
) -> dict[int, LeadResult]:
    # MyISAM has no transactions: LOCK TABLES makes the check and the statements one atomic
    # step, and flushes MyISAM's key cache once per chunk instead of once per statement.
    cursor.run(sql.lock_tables)
    try:
        return _apply(cursor, sql, chunk, actions, after_read)
    finally:
        cursor.run("UNLOCK TABLES")


def _checked_statements(conn: Connection, cursor: _Cursor) -> _Statements:
    """The checked table pair and its SQL, inspected again whenever either table's DDL changed.

    Inspecting information_schema costs more than a small batch's own statements, so the result
    is kept with the connection, keyed by both tables' ``SHOW CREATE TABLE`` (every column,
    type, ENUM value, character set, key and the engine) and by which dialer tables can be read.
    """
    if conn.dialect.name == "sqlite":
        return _Statements(inspect_tables(conn))
    try:
        ddl = tuple(
            _AUTO_INCREMENT.sub("", str(cursor.rows(f"SHOW CREATE TABLE {q(table)}")[0][1]))
            for table in (LIVE_TABLE, ARCHIVE_TABLE)
        )
    except Exception:  # the full inspection says what is wrong, or finds nothing wrong
        return _Statements(inspect_tables(conn))
    key = (ddl, probe_in_use_tables(conn))
    info = conn.connection.info  # one per DBAPI connection; cleared when it is replaced
    cached = info.get(_TABLES_INFO)
    if cached is not None and cached[0] == key:
        return cast(_Statements, cached[1])
    sql = _Statements(inspect_tables(conn))
    info[_TABLES_INFO] = (key, sql)
    return sql


def _snapshot_ready(cursor: _Cursor, conn: Connection, sql: _Statements) -> bool:
    """Empty this session's snapshot table, (re)creating it when needed; False without the
    privilege to create it."""
    info = conn.connection.info
    if info.get(_SNAPSHOT_INFO) == sql.pair.columns:
        try:
            cursor.run(f"DELETE FROM {SNAPSHOT}")
            return True
        except Exception as exc:
            if _driver_error_code(exc) != ER_NO_SUCH_TABLE:
                raise
    info.pop(_SNAPSHOT_INFO, None)
    cursor.run(f"DROP TEMPORARY TABLE IF EXISTS {SNAPSHOT}")
    for engine in ("MEMORY", "Aria", "MyISAM"):
        try:
            cursor.run(sql.snapshot_create().format(engine=engine))
        except Exception as exc:
            code = _driver_error_code(exc)
            if code in ER_ACCESS_DENIED:
                # Vicidial's stock `cron` user lacks CREATE TEMPORARY TABLES: the slower path.
                return False
            if code != ER_CANT_USE_BLOB:
                raise
        else:
            info[_SNAPSHOT_INFO] = sql.pair.columns
            return True
    return False


def _run_window_snapshot(
    cursor: _Cursor,
    conn: Connection,
    sql: _Statements,
    window: list[int],
    actions: Actions,
    sizer: _ChunkSizer,
    tuning: Tuning,
    *,
    first: bool,
    after_read: AfterRead | None,
) -> dict[int, LeadResult]:
    """MyISAM: copy from a snapshot without touching vicidial_list, then delete in short chunks.

    1. One primary-key read of the window's live rows into the session's temporary table:
       the only moment vicidial_list is read-locked before the deletes.
    2. Insert and refresh the archive copies from the snapshot, under a lock on the archive
       alone, so the dialer never waits for it.
    3. Delete in chunks sized to the target lock time (larger while no session waits for a
       table lock), each DELETE comparing the live row with its archive copy itself: a lead the
       dialer changed since the snapshot stays (mismatch).
    Batches are serialised by a named lock: a refresh from an older snapshot must never
    overwrite a copy another batch has just verified and deleted the live row of.
    """
    ids = _id_list(window)
    with _batch_lock(cursor, conn, tuning):
        if not first:
            cursor.run(f"DELETE FROM {SNAPSHOT}")
        cursor.write(sql.snapshot_fill(ids))
        cursor.run(f"LOCK TABLES {q(ARCHIVE_TABLE)} WRITE, {q(ARCHIVE_TABLE)} AS a WRITE")
        try:
            snapshot = f"{SNAPSHOT} AS l"
            states = _read_states(cursor, sql, window, snapshot)
            if after_read is not None:
                after_read(window)
            plans = {i: plan_lead(i, states[i], actions) for i in window}
            _write_planned(
                cursor,
                plans,
                (partial(sql.insert, source=snapshot), partial(sql.update, source=snapshot)),
            )
        finally:
            cursor.run("UNLOCK TABLES")
        candidates = [i for i, p in plans.items() if p.delete == "deleted"]
        waits = _table_lock_waits(cursor) if candidates else 0
        position = 0
        while position < len(candidates):
            chunk = candidates[position : position + sizer.size]
            started = time.perf_counter()
            deleted = cursor.write(sql.delete(_id_list(chunk)))
            elapsed = time.perf_counter() - started
            waits, before = _table_lock_waits(cursor), waits
            sizer.record(len(chunk), elapsed, nobody_waited=waits == before)
            if deleted != len(chunk):
                _explain_survivors(cursor, sql, chunk, plans)
            position += len(chunk)
    return plans


@contextmanager
def _batch_lock(cursor: _Cursor, conn: Connection, tuning: Tuning) -> Iterator[None]:
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


def _table_lock_waits(cursor: _Cursor) -> int:
    """The server's count of table-lock requests that had to wait (any session, any table)."""
    rows = cursor.rows("SHOW GLOBAL STATUS LIKE 'Table_locks_waited'")
    return int(rows[0][1]) if rows else 0


def _explain_survivors(
    cursor: _Cursor, sql: _Statements, chunk: list[int], plans: dict[int, LeadResult]
) -> None:
    """Say why the leads a guarded DELETE kept are still live (changed since, or in use)."""
    for lead_id, archived, identical, same_lead, held_by in cursor.rows(
        sql.classify(_id_list(chunk))
    ):
        plan = plans[int(lead_id)]
        plan.live = True
        if not archived:
            plan.delete = "not_archived"
        elif not same_lead:
            plan.delete = "id_reused"
        elif identical and held_by is not None:
            plan.delete, plan.held_by = "in_use", _text(held_by)
        else:
            plan.delete = "mismatch"


def _text(value: Any) -> str | None:
    """A text column as str (pymysql hands back bytes for some expressions)."""
    return value.decode() if isinstance(value, bytes | bytearray) else value


def _run_chunk_sqlite(
    cursor: _Cursor,
    sql: _Statements,
    chunk: list[int],
    actions: Actions,
    after_read: AfterRead | None,
) -> dict[int, LeadResult]:
    # The embedded default: IMMEDIATE takes SQLite's write lock before the check.
    cursor.run("BEGIN IMMEDIATE")
    try:
        plans = _apply(cursor, sql, chunk, actions, after_read)
    except BaseException:
        cursor.run("ROLLBACK")
        raise
    cursor.run("COMMIT")
    return plans


def _run_chunk_innodb(
    cursor: _Cursor,
    dbapi: Any,
    sql: _Statements,
    chunk: list[int],
    actions: Actions,
    tuning: Tuning,
    after_read: AfterRead | None,
) -> dict[int, LeadResult]:
    ids = _id_list(chunk)
    for attempt in range(tuning.chunk_retries + 1):
        cursor.run("START TRANSACTION")
        try:
            # Rows locked in lead_id order, live table first, the same in every batch, so two
            # batches on overlapping IDs wait for each other instead of deadlocking.
            cursor.rows(sql.lock_rows(LIVE_TABLE, ids))
            cursor.rows(sql.lock_rows(ARCHIVE_TABLE, ids))
            plans = _apply(cursor, sql, chunk, actions, after_read)
            dbapi.commit()
            return plans
        except ConcurrentChangeError:
            dbapi.rollback()
            if attempt == tuning.chunk_retries:
                raise
        except Exception as exc:
            dbapi.rollback()
            if _driver_error_code(exc) not in (ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT):
                raise
            if attempt == tuning.chunk_retries:
                raise
        time.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311 - jitter, not crypto
    raise AssertionError("unreachable")  # pragma: no cover
