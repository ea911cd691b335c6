"""The deleting statement's own guard, under staged races (issue 11), on every path.

MyISAM's snapshot path. The batch reads its leads once into a snapshot, copies them into the
archive from there, then deletes. A dialer write that lands after the snapshot is caught by nothing
but the comparison inside the DELETE itself. These tests stop the batch deterministically between
the two (another session holds a READ lock on the archive, so the batch waits for its own archive
lock right after the snapshot), make the dialer's write, let the batch go on, and prove the lead
survives with the newer data while the archive keeps the older copy. Each would fail if the
comparison were dropped from the DELETE or made collation-based.

InnoDB and MyISAM's locked path have no such window, by construction: InnoDB locks the chunk's live
rows and their archive copies (``SELECT ... FOR UPDATE``, in lead_id order) before it reads their
state and keeps them locked until the chunk commits (a copy that does not exist yet is not locked
under READ COMMITTED, but a copy another session adds meanwhile makes the batch's INSERT fail on
the primary key, and nothing is deleted); the locked path (a user without CREATE TEMPORARY TABLES,
like Vicidial's `cron`) reads and deletes under one ``LOCK TABLES`` that write-locks both tables
and read-locks every dialer table. No other session can stop either between the read and the DELETE
(whatever lock it could hold, the batch already holds or has passed), so these tests use
run_batch's ``after_read`` observer, called at exactly that point: the dialer's write made there
waits for the batch, and lands after the DELETE on a lead that is gone (it changes no row), while
the archive holds the lead exactly as it was read and deleted. They would fail if the row locks or
the table lock were dropped. On these paths the DELETE's comparison can only be reached by a
statement of the batch's own; `test_the_delete_statement_refuses_a_stale_copy` runs it directly, on
MyISAM and InnoDB tables, against copies one column off.

What the dialer's tables hold is not locked on InnoDB (the hopper and live calls are MEMORY
tables): a hold that appears between the read and the DELETE is refused by the DELETE itself (``NOT
in_use``), on the snapshot path and on InnoDB (where the chunk, its DELETE short of what its read
planned, is rolled back and read again: ConcurrentChangeError); the locked path read-locks those
tables too.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection, Engine, text

from tasks.archive import SQL_MODE, Actions, BatchReport, run_batch
from tasks.archive.cursor import Cursor
from tasks.archive.sql import Statements
from tasks.ddl import create_vicidial_tables, drop_vicidial_tables
from tasks.schema import inspect_tables
from tasks.seed import insert_leads, lead_rows
from tests.helpers import archive, live, wait_for
from tests.tasks.test_dialer_holds import HOLD, cron_like

ALL = Actions(insert=True, update=True, delete=True)

# (what lead 2 holds when the batch reads it, what the dialer writes after the snapshot).
# modify_date is set to itself: the change is the only difference, byte for byte.
RACES = {
    "case only": ("first_name = 'Bob'", "first_name = 'BOB'"),
    "trailing space": ("comments = 'call back'", "comments = 'call back '"),
    "NULL to empty": ("comments = NULL", "comments = ''"),
    "zero date": ("date_of_birth = NULL", "date_of_birth = '0000-00-00'"),
}


def staged_race(engine: Engine, conn: Connection, dialer_write: Callable[[], None]) -> BatchReport:
    """Run a batch on leads 1..3 and make ``dialer_write`` land after its snapshot."""
    outcome: dict[str, BatchReport | BaseException] = {}
    with engine.connect() as blocker, engine.connect() as batch:
        batch_id = batch.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
        blocker.exec_driver_sql("LOCK TABLES vicidial_list_archive READ")

        def run() -> None:
            try:
                outcome["report"] = run_batch(batch, [1, 2, 3], ALL)
            except BaseException as exc:  # re-raised in the test's thread
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        try:
            # The batch has taken its snapshot and waits for the archive's lock.
            wait_for(
                lambda: conn.execute(
                    text(
                        "SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = :id"
                        " AND INFO LIKE 'LOCK TABLES%' AND STATE LIKE 'Waiting for table%'"
                    ),
                    {"id": batch_id},
                ).first()
            )
            assert live(conn) != {}, "the batch waits before deleting anything"
            dialer_write()
        finally:
            blocker.exec_driver_sql("UNLOCK TABLES")
            thread.join(timeout=60)
        assert not thread.is_alive(), "the batch did not finish after the lock was released"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    report = outcome["report"]
    assert isinstance(report, BatchReport)
    return report


@pytest.fixture
def myisam(vicidial: Connection) -> Connection:
    """MyISAM Vicidial tables with three leads; the batch takes its snapshot path."""
    insert_leads(vicidial, lead_rows(3, seed=3))
    return vicidial


@pytest.mark.parametrize("race", RACES)
def test_the_delete_itself_keeps_a_lead_the_dialer_changed_after_the_snapshot(
    engine: Engine, myisam: Connection, race: str
) -> None:
    before, write = RACES[race]
    myisam.exec_driver_sql(
        f"UPDATE vicidial_list SET modify_date = modify_date, {before} WHERE lead_id = 2"
    )
    read_by_the_batch = live(myisam)

    def dialer_write() -> None:
        changed = myisam.exec_driver_sql(
            f"UPDATE vicidial_list SET modify_date = modify_date, {write} WHERE lead_id = 2"
        )
        assert changed.rowcount == 1

    report = staged_race(engine, myisam, dialer_write)

    after_live, after_archive = live(myisam), archive(myisam)
    assert [(lead.lead_id, lead.delete) for lead in report.leads] == [
        (1, "deleted"),
        (2, "mismatch"),
        (3, "deleted"),
    ]
    # The newer data stays live; the archive holds the copy the batch read, as it was.
    assert set(after_live) == {2}
    assert after_live[2] != read_by_the_batch[2]
    assert after_archive[2] == read_by_the_batch[2]
    assert after_archive[1] == read_by_the_batch[1]
    assert after_archive[3] == read_by_the_batch[3]


def waiting_for_lock(observer: Connection, connection_id: int) -> int | None:
    """The query ID of the statement with which session ``connection_id`` waits for a lock (a
    table's or an InnoDB row's), or None while it is not waiting.

    Row-lock waits are read from SHOW ENGINE INNODB STATUS: information_schema.INNODB_TRX is a
    cache that is not refreshed while anyone reads it more often than every 0.1 s.
    """
    row = observer.execute(
        text("SELECT STATE, QUERY_ID FROM information_schema.PROCESSLIST WHERE ID = :id"),
        {"id": connection_id},
    ).first()
    if row is None:
        return None
    state, query_id = str(row[0] or ""), int(row[1])
    if state.startswith("Waiting for table"):
        return query_id
    status = str(observer.exec_driver_sql("SHOW ENGINE INNODB STATUS").one()[2])
    for transaction in status.split("---TRANSACTION ")[1:]:
        if re.search(rf"thread id {connection_id}, .* query id {query_id} ", transaction):
            return query_id if "LOCK WAIT" in transaction else None
    return None


class Dialer:
    """One statement of the dialer's, on a connection of its own, in a thread: it may wait."""

    def __init__(self, engine: Engine, statement: str) -> None:
        self.engine, self.statement = engine, statement
        self.thread: threading.Thread | None = None
        self.rowcount: int | None = None
        self.error: BaseException | None = None
        self.connection_id: int | None = None
        self.done = threading.Event()

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            try:
                with self.engine.connect() as c:
                    self.connection_id = c.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
                    ready.set()
                    self.rowcount = c.exec_driver_sql(self.statement).rowcount
            except BaseException as exc:  # re-raised by finish()
                self.error = exc
            finally:
                ready.set()
                self.done.set()

        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert ready.wait(30), "the dialer's connection did not open"

    def blocked(self, observer: Connection) -> bool:
        """The server holds the statement waiting for a lock (a table's or an InnoDB row's)."""
        assert self.connection_id is not None
        return waiting_for_lock(observer, self.connection_id) is not None

    def wait_until_done_or_blocked(self, observer: Connection) -> str:
        """``done`` once the statement has run, ``blocked`` while it waits for a lock."""
        return str(
            wait_for(lambda: "done" if self.done.is_set() else self.blocked(observer) and "blocked")
        )

    def finish(self) -> int:
        """The statement's row count, once it has run (joined; its error re-raised)."""
        if self.thread is not None:
            self.thread.join(timeout=60)
            assert not self.thread.is_alive(), "the dialer's statement never ended"
        if self.error is not None:
            raise self.error
        assert self.rowcount is not None
        return self.rowcount


# The paths a batch takes on MariaDB: the table engine, and whether the batch's user may create
# the snapshot's temporary table.
PATHS = {
    "MyISAM snapshot": "MyISAM",
    "InnoDB": "InnoDB",
    "MyISAM locked": "MyISAM",
}


@pytest.fixture
def path_tables(engine: Engine, request: pytest.FixtureRequest) -> Iterator[tuple[str, Connection]]:
    """The path named by the test's parameter, with three leads on its tables' engine."""
    path = str(request.param)
    with engine.connect() as c:
        drop_vicidial_tables(c)
        create_vicidial_tables(c, PATHS[path])
        insert_leads(c, lead_rows(3, seed=3))
        yield path, c
        drop_vicidial_tables(c)


@contextmanager
def batch_connection(
    engine: Engine, conn: Connection, database_url: str, path: str
) -> Iterator[Connection]:
    """A connection for the batch that makes it take ``path``."""
    if path == "MyISAM locked":
        with cron_like(conn, database_url) as c:
            yield c
    else:
        with engine.connect() as c:
            yield c


def run_with_dialer(
    engine: Engine,
    conn: Connection,
    database_url: str,
    path: str,
    dialer: Dialer,
    chunks: list[list[int]],
    actions: Actions = ALL,
) -> tuple[BatchReport, str]:
    """Run a batch on leads 1..3 whose first read is followed by ``dialer``'s statement; the
    report, and whether the statement had run (``done``) or waited (``blocked``) meanwhile."""
    seen: list[str] = []

    def after_read(chunk: list[int]) -> None:
        chunks.append(list(chunk))
        if dialer.thread is None:
            dialer.start()
            seen.append(dialer.wait_until_done_or_blocked(conn))

    try:
        with batch_connection(engine, conn, database_url, path) as c:
            report = run_batch(c, [1, 2, 3], actions, after_read=after_read)
    finally:
        if dialer.thread is not None:
            dialer.thread.join(timeout=60)
    assert len(seen) == 1, "the batch read its leads and the dialer's statement was made"
    return report, seen[0]


@pytest.mark.parametrize("path_tables", ["InnoDB", "MyISAM locked"], indirect=True)
@pytest.mark.parametrize("race", RACES)
def test_where_the_batch_locks_its_rows_a_dialer_write_after_the_read_waits_for_the_delete(
    engine: Engine, database_url: str, path_tables: tuple[str, Connection], race: str
) -> None:
    path, conn = path_tables
    before, write = RACES[race]
    conn.exec_driver_sql(
        f"UPDATE vicidial_list SET modify_date = modify_date, {before} WHERE lead_id = 2"
    )
    read_by_the_batch = live(conn)
    dialer = Dialer(
        engine, f"UPDATE vicidial_list SET modify_date = modify_date, {write} WHERE lead_id = 2"
    )
    chunks: list[list[int]] = []

    report, meanwhile = run_with_dialer(engine, conn, database_url, path, dialer, chunks)

    assert meanwhile == "blocked", "the dialer's write waited for the batch's lock"
    assert chunks == [[1, 2, 3]]
    assert [(lead.lead_id, lead.delete) for lead in report.leads] == [
        (1, "deleted"),
        (2, "deleted"),
        (3, "deleted"),
    ]
    # The write ran after the DELETE, on no row: the lead archived is the lead as it was read.
    assert dialer.finish() == 0
    assert live(conn) == {}
    assert archive(conn) == read_by_the_batch


@pytest.mark.parametrize("path_tables", list(PATHS), indirect=True)
def test_a_hold_that_appears_between_the_read_and_the_delete(
    engine: Engine, database_url: str, path_tables: tuple[str, Connection]
) -> None:
    """The hopper takes lead 2 after the batch read it: kept live (snapshot, InnoDB), or the
    hopper's write waits for the batch and the lead is gone before the hold lands (locked)."""
    path, conn = path_tables
    before = live(conn)
    dialer = Dialer(engine, HOLD["hopper"].format(id=2))
    chunks: list[list[int]] = []

    report, meanwhile = run_with_dialer(engine, conn, database_url, path, dialer, chunks)

    assert dialer.finish() == 1
    held = conn.exec_driver_sql("SELECT lead_id FROM vicidial_hopper").scalars().all()
    assert held == [2]
    assert archive(conn) == before
    if path == "MyISAM locked":
        assert meanwhile == "blocked"
        assert [lead.delete for lead in report.leads] == ["deleted", "deleted", "deleted"]
        assert live(conn) == {}
        return
    assert meanwhile == "done", "nothing of the batch's kept the hopper's write waiting"
    assert [(lead.delete, lead.held_by) for lead in report.leads] == [
        ("deleted", None),
        ("in_use", "hopper"),
        ("deleted", None),
    ]
    assert live(conn) == {2: before[2]}
    if path == "InnoDB":
        # The DELETE kept lead 2 where the chunk's read expected it gone: the chunk was rolled
        # back (ConcurrentChangeError) and read again, the hold seen this time.
        assert chunks == [[1, 2, 3], [1, 2, 3]]
    else:
        assert chunks == [[1, 2, 3]]


# Statements.delete run directly: the live lead against an archive copy one column off.
# (column, value in the live row, value in the archive copy), as SQL literals.
STALE = {
    "case only": ("first_name", "'Bob'", "'BOB'"),
    "accent only": ("first_name", "'José'", "'Jose'"),
    "trailing space": ("comments", "'call back'", "'call back '"),
    "NULL vs empty": ("comments", "NULL", "''"),
    "empty vs NULL": ("comments", "''", "NULL"),
    "zero date vs NULL": ("date_of_birth", "'0000-00-00'", "NULL"),
    "zero date vs a date": ("date_of_birth", "'0000-00-00'", "'2000-01-01'"),
    "a different number": ("called_count", "3", "4"),
    "a different decimal": ("gmt_offset_now", "-5.00", "-4.00"),
    "a datetime one second off": (
        "last_local_call_time",
        "'2026-11-30 10:00:00'",
        "'2026-11-30 10:00:01'",
    ),
    "a timestamp one second off": (
        "modify_date",
        "'2026-11-30 10:00:00'",
        "'2026-11-30 10:00:01'",
    ),
}


def check_stale_copy(conn: Connection, stale: str) -> None:
    """Lead 1's copy is identical (deleted: the control), lead 2's one column off (kept)."""
    name, live_value, archive_value = STALE[stale]
    insert_leads(conn, lead_rows(2, seed=11))
    # modify_date set to itself, or its ON UPDATE would stamp a difference of its own.
    keep = "" if name == "modify_date" else "modify_date = modify_date, "
    conn.exec_driver_sql(f"UPDATE vicidial_list SET {keep}{name} = {live_value}")
    conn.exec_driver_sql("INSERT INTO vicidial_list_archive SELECT * FROM vicidial_list")
    conn.exec_driver_sql(
        f"UPDATE vicidial_list_archive SET {keep}{name} = {archive_value} WHERE lead_id = 2"
    )
    before_live, before_archive = live(conn), archive(conn)  # CAST(... AS BINARY), column by column
    assert before_live[1] == before_archive[1]
    assert before_live[2] != before_archive[2], "the copy differs from the live lead"

    cursor = Cursor(conn.connection.dbapi_connection)
    if conn.dialect.name == "mysql":
        cursor.run(f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00'")
    statement = Statements(inspect_tables(conn)).delete("1,2")
    deleted = cursor.write(statement)

    assert deleted == 1
    assert live(conn) == {2: before_live[2]}
    assert archive(conn) == before_archive


@pytest.mark.parametrize("stale", STALE)
def test_the_delete_statement_refuses_a_stale_copy(conn: Connection, stale: str) -> None:
    check_stale_copy(conn, stale)


@pytest.mark.parametrize("stale", STALE)
def test_the_delete_statement_refuses_a_stale_copy_on_the_embedded_sqlite(
    lite: Connection, stale: str
) -> None:
    """SQLite's own DELETE (``IS``, the BINARY collation; its values keep their type)."""
    check_stale_copy(lite, stale)


@pytest.mark.parametrize("path_tables", ["InnoDB"], indirect=True)
def test_on_innodb_a_copy_another_session_archives_after_the_read_fails_the_chunk(
    engine: Engine, database_url: str, path_tables: tuple[str, Connection]
) -> None:
    """A copy that did not exist when the chunk was read is not row-locked (READ COMMITTED has no
    gap locks): one written meanwhile makes the batch's INSERT fail on the archive's primary key,
    and the chunk is rolled back whole, nothing deleted."""
    path, conn = path_tables
    before = live(conn)
    dialer = Dialer(
        engine,
        "INSERT INTO vicidial_list_archive (lead_id, list_id, phone_number)"
        " VALUES (2, 1, '5550100')",
    )

    with pytest.raises(Exception, match="Duplicate entry") as failed:
        run_with_dialer(engine, conn, database_url, path, dialer, [])

    assert getattr(failed.value, "args", (None,))[0] == 1062
    assert dialer.finish() == 1
    assert live(conn) == before
    assert set(archive(conn)) == {2}
    assert archive(conn)[2] != before[2]
