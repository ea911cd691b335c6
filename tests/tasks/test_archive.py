"""The archive batch on the real Vicidial schema, MyISAM and InnoDB, against MariaDB."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Connection, Engine

from tasks.archive import SNAPSHOT, Actions, BatchReport, Tuning, run_batch
from tasks.archive.restore import run_restore
from tasks.errors import BatchError, MissingTableError, SchemaMismatchError
from tasks.seed import LEAD_COLUMNS, insert_leads, lead_rows
from tests.helpers import archive, column, live, mysql_user, wait_for
from tests.tasks.test_dialer_holds import cron_like

ALL = Actions(insert=True, update=True, delete=True)


def seed(conn: Connection, count: int = 20, first: int = 1) -> None:
    insert_leads(conn, lead_rows(count, first_lead_id=first, seed=first))


def outcomes(report_json: dict, lead_id: int) -> dict:
    return next(lead for lead in report_json["leads"] if lead["lead_id"] == lead_id)


def test_seed_request_moves_lead_and_reports_missing_one(conn: Connection) -> None:
    seed(conn, 3)
    before = live(conn)

    report = run_batch(conn, [0, 1], ALL).as_json()

    assert outcomes(report, 0) == {
        "lead_id": 0,
        "insert": "not_found",
        "update": "not_found",
        "delete": "not_found",
        "archived": False,
        "live": False,
    }
    assert outcomes(report, 1) == {
        "lead_id": 1,
        "insert": "inserted",
        "update": "unchanged",
        "delete": "deleted",
        "archived": True,
        "live": False,
    }
    assert report["counts"] == {
        "insert": {"inserted": 1, "already_archived": 0, "not_found": 1},
        "update": {
            "updated": 0,
            "unchanged": 1,
            "not_archived": 0,
            "not_found": 1,
            "id_reused": 0,
        },
        "delete": {
            "deleted": 1,
            "not_archived": 0,
            "mismatch": 0,
            "in_use": 0,
            "not_found": 1,
            "id_reused": 0,
        },
    }
    assert report["duplicates"] == []
    assert archive(conn) == {1: before[1]}
    assert set(live(conn)) == {2, 3}


def test_second_run_changes_nothing_and_says_so(conn: Connection) -> None:
    seed(conn, 10)
    run_batch(conn, list(range(1, 11)), ALL)
    tables = (live(conn), archive(conn))

    again = run_batch(conn, list(range(1, 11)), ALL).as_json()

    assert (live(conn), archive(conn)) == tables
    assert again["counts"]["insert"]["already_archived"] == 10
    assert again["counts"]["update"]["unchanged"] == 10
    assert again["counts"]["delete"]["not_found"] == 10
    assert all(lead["archived"] and not lead["live"] for lead in again["leads"])


def test_update_refreshes_every_column_including_modify_date(conn: Connection) -> None:
    seed(conn, 5)
    run_batch(conn, [1, 2], Actions(insert=True, update=False))
    conn.exec_driver_sql(
        "UPDATE vicidial_list SET first_name = 'Changed', `rank` = 42, comments = NULL,"
        " modify_date = '2030-01-02 03:04:05' WHERE lead_id = 1"
    )

    report = run_batch(conn, [1, 2], Actions(insert=False, update=True)).as_json()

    assert outcomes(report, 1)["update"] == "updated"
    assert outcomes(report, 2)["update"] == "unchanged"
    assert archive(conn)[1] == live(conn)[1]
    assert archive(conn)[1][column("modify_date")] == b"2030-01-02 03:04:05"
    assert archive(conn)[1][column("rank")] == b"42"


def test_update_without_insert_reports_leads_not_yet_archived(conn: Connection) -> None:
    seed(conn, 2)

    report = run_batch(conn, [1, 2, 3], Actions(insert=False, update=True)).as_json()

    assert [lead["update"] for lead in report["leads"]] == [
        "not_archived",
        "not_archived",
        "not_found",
    ]
    assert archive(conn) == {}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("first_name = 'Bob'", "case only ('bob' -> 'Bob')"),
        ("first_name = 'bob '", "a trailing space"),
        ("comments = ''", "NULL becomes an empty string"),
        ("modify_date = modify_date + INTERVAL 1 SECOND", "one second of modify_date"),
        ("gmt_offset_now = -4.00", "a DECIMAL value"),
        ("called_since_last_reset = 'D'", "an ENUM value"),
        ("date_of_birth = '0000-00-00'", "NULL becomes a zero date"),
        ("`rank` = IF(`rank` = 7, 8, 7)", "the reserved-word column rank"),
        ("first_name = 'bób'", "an accent (equal under utf8_unicode_ci)"),
    ],
)
def test_delete_refuses_a_lead_whose_archive_copy_differs(
    conn: Connection, change: str, why: str
) -> None:
    seed(conn, 1)
    conn.exec_driver_sql(
        "UPDATE vicidial_list SET first_name = 'bob', comments = NULL, date_of_birth = NULL,"
        " called_since_last_reset = 'N', gmt_offset_now = -5.00 WHERE lead_id = 1"
    )
    run_batch(conn, [1], Actions(insert=True, update=False))
    conn.exec_driver_sql(f"UPDATE vicidial_list SET {change} WHERE lead_id = 1")
    changed = live(conn)[1]
    assert changed != archive(conn)[1], why

    report = run_batch(conn, [1], Actions(insert=False, update=False, delete=True)).as_json()

    assert outcomes(report, 1)["delete"] == "mismatch", why
    assert live(conn)[1] == changed
    assert outcomes(report, 1)["live"] is True


def test_delete_with_update_refreshes_then_deletes(conn: Connection) -> None:
    seed(conn, 1)
    run_batch(conn, [1], Actions(insert=True, update=False))
    conn.exec_driver_sql("UPDATE vicidial_list SET first_name = 'BOB' WHERE lead_id = 1")
    newest = live(conn)[1]

    report = run_batch(conn, [1], ALL).as_json()

    assert outcomes(report, 1) | {} == {
        "lead_id": 1,
        "insert": "already_archived",
        "update": "updated",
        "delete": "deleted",
        "archived": True,
        "live": False,
    }
    assert archive(conn) == {1: newest}


@pytest.mark.parametrize(
    "busy",
    [
        "INSERT INTO vicidial_hopper (lead_id, campaign_id, list_id) VALUES (2, 'C1', 1)",
        "INSERT INTO vicidial_auto_calls (server_ip, lead_id, campaign_id, status)"
        " VALUES ('10.10.10.15', 2, 'C1', 'LIVE')",
        "INSERT INTO vicidial_live_agents (server_ip, lead_id, user, status)"
        " VALUES ('10.10.10.15', 2, 'agent', 'INCALL')",
    ],
)
def test_lead_queued_or_in_a_call_is_in_use_and_stays_live(conn: Connection, busy: str) -> None:
    seed(conn, 3)
    conn.exec_driver_sql(busy)

    report = run_batch(conn, [1, 2, 3], ALL).as_json()

    assert [lead["delete"] for lead in report["leads"]] == ["deleted", "in_use", "deleted"]
    assert set(live(conn)) == {2}
    assert set(archive(conn)) == {1, 2, 3}
    assert archive(conn)[2] == live(conn)[2]


def test_dialer_tables_are_optional(conn: Connection) -> None:
    seed(conn, 2)
    conn.exec_driver_sql("DROP TABLE vicidial_hopper, vicidial_auto_calls, vicidial_live_agents")

    report = run_batch(conn, [1, 2], ALL).as_json()

    assert report["counts"]["delete"]["deleted"] == 2
    assert live(conn) == {}


def test_delete_without_insert_keeps_leads_that_have_no_archive_copy(conn: Connection) -> None:
    seed(conn, 2)
    run_batch(conn, [1], Actions(insert=True, update=False))

    report = run_batch(conn, [1, 2], Actions(insert=False, update=False, delete=True)).as_json()

    assert [lead["delete"] for lead in report["leads"]] == ["deleted", "not_archived"]
    assert set(live(conn)) == {2}


def test_dry_run_changes_nothing_and_predicts_the_real_run(conn: Connection) -> None:
    seed(conn, 12)
    run_batch(conn, [1, 2, 3, 4], Actions(insert=True, update=False))
    conn.exec_driver_sql("UPDATE vicidial_list SET first_name = 'X' WHERE lead_id IN (2, 5)")
    conn.exec_driver_sql("INSERT INTO vicidial_hopper (lead_id, list_id) VALUES (6, 1)")
    ids = [0, *range(1, 14), 3]
    tables = (live(conn), archive(conn))

    dry = run_batch(conn, ids, Actions(insert=True, update=True, delete=True, dry_run=True))

    assert (live(conn), archive(conn)) == tables
    assert all(lead.live == (lead.lead_id in tables[0]) for lead in dry.leads)
    assert all(lead.archived == (lead.lead_id in tables[1]) for lead in dry.leads)
    real = run_batch(conn, ids, ALL)

    def outcomes(report: BatchReport) -> list[tuple[int, str | None, str | None, str | None]]:
        return [(lead.lead_id, lead.insert, lead.update, lead.delete) for lead in report.leads]

    assert outcomes(dry) == outcomes(real)
    assert dry.counts == real.counts


def test_nulls_in_every_nullable_column_copy_and_compare_exactly(conn: Connection) -> None:
    nullable = [
        c
        for c in LEAD_COLUMNS
        if c not in {"lead_id", "modify_date", "list_id", "phone_number", "rank", "entry_list_id"}
    ]
    conn.exec_driver_sql(
        "INSERT INTO vicidial_list (lead_id, phone_number, "
        + ", ".join(f"`{c}`" for c in nullable)
        + ") VALUES (7, '5550001', "
        + ", ".join("NULL" for _ in nullable)
        + ")"
    )
    original = live(conn)[7]
    assert sum(value is None for value in original) == len(nullable)

    report = run_batch(conn, [7], ALL).as_json()

    assert outcomes(report, 7)["delete"] == "deleted"
    assert archive(conn) == {7: original}


def test_non_ascii_zero_dates_and_odd_text_survive_byte_for_byte(conn: Connection) -> None:
    conn.exec_driver_sql(
        "INSERT INTO vicidial_list (lead_id, phone_number, first_name, last_name, comments,"
        " entry_date, date_of_birth, last_local_call_time, `rank`, city) VALUES"
        " (9, '5550009', 'Иван', '王 Nguyễn', 'ends with a newline\\n', '0000-00-00 00:00:00',"
        " '0000-00-00', '0000-00-00 00:00:00', -32768, 'São Paulo ')"
    )
    original = live(conn)[9]

    run_batch(conn, [9], ALL)

    assert archive(conn) == {9: original}
    row = archive(conn)[9]
    assert row[column("first_name")] == "Иван".encode()
    assert row[column("comments")] == b"ends with a newline\n"
    assert row[column("entry_date")] == b"0000-00-00 00:00:00"
    assert row[column("rank")] == b"-32768"


def test_realistic_seeded_leads_move_in_many_small_chunks(conn: Connection) -> None:
    seed(conn, 300)
    before = live(conn)
    ids = list(range(1, 301))

    report = run_batch(conn, ids, ALL, Tuning(first_chunk=7, max_chunk=13)).as_json()

    assert report["counts"]["delete"]["deleted"] == 300
    assert live(conn) == {}
    assert archive(conn) == before


def test_duplicates_are_processed_once_and_listed(conn: Connection) -> None:
    seed(conn, 3)

    report = run_batch(conn, [3, 1, 3, 3, 2, 1], ALL).as_json()

    assert [lead["lead_id"] for lead in report["leads"]] == [3, 1, 2]
    assert sorted(report["duplicates"]) == [1, 3]
    assert sum(report["counts"]["insert"].values()) == 3


def _drift(conn: Connection, alter: str) -> None:
    seed(conn, 2)
    conn.exec_driver_sql(f"ALTER TABLE vicidial_list_archive {alter}")


@pytest.mark.parametrize(
    ("alter", "named"),
    [
        ("DROP COLUMN entry_list_id", "`entry_list_id` is missing from vicidial_list_archive"),
        (
            "MODIFY called_since_last_reset ENUM('Y','N','Y1','Y2','Y3','Y4','Y5','Y6','Y7','Y8',"
            "'Y9','Y10') DEFAULT 'N'",
            "`called_since_last_reset` is enum(",
        ),
        ("MODIFY comments VARCHAR(100)", "`comments` is varchar(255)"),
        ("ADD COLUMN extra INT", "`extra` is in vicidial_list_archive but not in vicidial_list"),
        ("MODIFY first_name VARCHAR(30) CHARACTER SET latin1", "character set"),
        ("MODIFY email VARCHAR(70) NOT NULL DEFAULT ''", "`email` allows NULL"),
    ],
)
@pytest.mark.parametrize("warm", [False, True], ids=["new connection", "after a batch"])
def test_schema_drift_is_refused_naming_the_difference_and_changes_nothing(
    conn: Connection, alter: str, named: str, warm: bool
) -> None:
    if warm:  # the connection has checked the tables before they changed
        run_batch(conn, [99], ALL)
    _drift(conn, alter)
    before = live(conn)

    with pytest.raises(SchemaMismatchError) as refused:
        run_batch(conn, [1, 2], ALL)

    assert named in str(refused.value)
    assert live(conn) == before
    assert conn.exec_driver_sql("SELECT COUNT(*) FROM vicidial_list_archive").scalar() == 0


def test_a_column_added_to_both_tables_between_batches_is_copied_and_compared(
    conn: Connection,
) -> None:
    seed(conn, 3)
    run_batch(conn, [1], ALL)  # the connection has checked the tables before they changed
    for table in ("vicidial_list", "vicidial_list_archive"):
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN extra VARCHAR(10) NULL")
    conn.exec_driver_sql("UPDATE vicidial_list SET extra = 'new' WHERE lead_id IN (2, 3)")
    run_batch(conn, [2, 3], Actions(insert=True, update=False))
    conn.exec_driver_sql("UPDATE vicidial_list SET extra = 'newer' WHERE lead_id = 2")
    copied = live(conn)[3]

    report = run_batch(conn, [2, 3], Actions(insert=False, update=False, delete=True)).as_json()

    assert outcomes(report, 2)["delete"] == "mismatch"
    assert outcomes(report, 3)["delete"] == "deleted"
    assert archive(conn)[3] == copied
    extra = "SELECT lead_id, extra FROM vicidial_list_archive ORDER BY lead_id"
    assert conn.exec_driver_sql(extra).all() == [(1, None), (2, "new"), (3, "new")]


def test_archive_without_its_primary_key_is_refused(conn: Connection) -> None:
    _drift(conn, "DROP PRIMARY KEY")

    with pytest.raises(SchemaMismatchError, match=r"vicidial_list_archive needs PRIMARY KEY"):
        run_batch(conn, [1], ALL)
    assert archive(conn) == {}


def test_missing_archive_table_is_refused(conn: Connection) -> None:
    seed(conn, 1)
    conn.exec_driver_sql("DROP TABLE vicidial_list_archive")

    with pytest.raises(MissingTableError, match="vicidial_list_archive does not exist"):
        run_batch(conn, [1], ALL)
    assert set(live(conn)) == {1}


def test_older_display_widths_and_defaults_are_compatible(conn: Connection) -> None:
    """Vicidial's old archives differ in cosmetic ways (defaults, int display width) only."""
    seed(conn, 2)
    conn.exec_driver_sql(
        "ALTER TABLE vicidial_list_archive MODIFY list_id BIGINT(20) UNSIGNED NOT NULL DEFAULT 0,"
        " MODIFY modify_date TIMESTAMP NOT NULL DEFAULT '2000-01-01 00:00:00'"
    )
    before = live(conn)

    run_batch(conn, [1, 2], ALL)

    assert archive(conn) == before


@pytest.mark.parametrize("bad", [True, -1, 4_294_967_296, 1.0, "42", None])
def test_lead_ids_outside_the_lead_id_range_are_refused(conn: Connection, bad: object) -> None:
    seed(conn, 1)

    with pytest.raises(ValueError, match="lead_id must be an integer"):
        run_batch(conn, [1, bad], ALL)  # type: ignore[list-item]
    assert archive(conn) == {}


def test_a_database_warning_on_a_write_stops_the_batch(engine: Engine) -> None:
    """Strict mode turns truncation into errors; any warning left over is one too."""
    from tasks.archive.cursor import Cursor

    with engine.connect() as c:
        dbapi = c.connection.dbapi_connection
        cursor = Cursor(dbapi)
        cursor.run("CREATE TEMPORARY TABLE warn_probe (v VARCHAR(2))")
        cursor.run("SET SESSION sql_mode = ''")
        with pytest.raises(BatchError, match=r"Data truncated|Warning"):
            cursor.write("INSERT INTO warn_probe VALUES ('too long')")


def test_the_batch_refuses_a_connection_inside_a_transaction(engine: Engine) -> None:
    from sqlalchemy import create_engine

    plain = create_engine(engine.url)
    try:
        with plain.connect() as c, pytest.raises(BatchError, match="autocommit"):
            run_batch(c, [1], ALL)
    finally:
        plain.dispose()


def test_chunks_follow_the_target_lock_time(conn: Connection) -> None:
    from tasks.archive.sizing import ChunkSizer

    sizer = ChunkSizer(target=0.010, size=10, max_size=500)
    sizer.record(10, 0.002)  # 0.2 ms a lead -> 50 wanted, growth capped at double
    assert sizer.size == 20
    sizer.record(20, 0.004)
    assert sizer.size == 40
    sizer.record(40, 0.200)  # suddenly slow: shrink at once
    assert sizer.size < 40
    tuning = Tuning(chunk_time=timedelta(microseconds=1), first_chunk=50)
    seed(conn, 30)
    report = run_batch(conn, list(range(1, 31)), ALL, tuning)
    assert report.counts["delete"]["deleted"] == 30


def _make_a_session_wait_for_a_table_lock(engine: Engine) -> None:
    """One session holds a read lock on a table of its own while another's UPDATE waits for it:
    the server's ``Table_locks_waited`` goes up by one, as when the dialer waits for a chunk."""

    def waits() -> int:
        with engine.connect() as c:
            return int(c.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Table_locks_waited'").one()[1])

    def run(statement: str) -> None:
        with engine.connect() as c:
            c.exec_driver_sql(statement)

    before = waits()
    reader = threading.Thread(target=run, args=("SELECT SLEEP(0.15) FROM lock_probe",))
    reader.start()
    time.sleep(0.1)  # the reader holds the table's read lock for 0.3 s
    run("UPDATE lock_probe SET n = n + 1")  # waits for it
    reader.join()
    assert waits() > before


Timed = list[tuple[str, float, float]]  # (SQL, start, end)
WAITS = "Table_locks_waited"


class Recorder:
    """Keeps every statement a batch sends, with when it started and ended; ``hook`` is called
    with them all after each one."""

    def __init__(self, hook: Callable[[Timed], None] | None = None) -> None:
        self.timed: Timed = []
        self._hook = hook

    @property
    def statements(self) -> list[str]:
        return [sql for sql, _, _ in self.timed]

    def statement(self, sql: str, seconds: float) -> None:
        end = time.perf_counter()
        self.timed.append((sql, end - seconds, end))
        if self._hook is not None:
            self._hook(self.timed)


def _run_path(
    path: str,
    vicidial: Connection,
    database_url: str,
    ids: list[int],
    tuning: Tuning,
    recorder: Recorder,
) -> None:
    """Archive ``ids`` on the snapshot path or on the locked path (a user without CREATE
    TEMPORARY TABLES), or archive them untimed and restore them; each must move every lead."""
    if path == "restore":
        run_batch(vicidial, ids, ALL)
        restored = run_restore(vicidial, ids, tuning=tuning, observer=recorder)
        assert restored.counts["restore"]["restored"] == len(ids)
        return
    if path == "locked":
        with cron_like(vicidial, database_url) as c:
            report = run_batch(c, ids, ALL, tuning, observer=recorder)
    else:
        report = run_batch(vicidial, ids, ALL, tuning, observer=recorder)
    assert report.counts["delete"]["deleted"] == len(ids)
    filled = any(sql.startswith(f"INSERT INTO {SNAPSHOT}") for sql in recorder.statements)
    assert filled == (path == "snapshot")


@pytest.mark.parametrize("path", ["snapshot", "restore"])
def test_after_a_chunk_someone_waited_for_the_batch_leaves_the_table_to_the_dialer(
    vicidial: Connection, engine: Engine, database_url: str, path: str
) -> None:
    """The dialer reads a lead, then updates it: after a chunk that kept a session waiting for a
    table lock, the next chunk waits ``yield_time`` so the dialer's next statement goes first;
    after a chunk nobody waited for, the next one follows at once. On the snapshot path's
    deletes and on restore's chunks (the locked path cannot see its waiters: see below)."""
    vicidial.exec_driver_sql("CREATE TABLE lock_probe (n INT) ENGINE=MyISAM")
    # Two rows: a table of one is read before the statement locks it.
    vicidial.exec_driver_sql("INSERT INTO lock_probe VALUES (0), (1)")
    seed(vicidial, 40)
    pause = 0.25
    tuning = Tuning(first_chunk=10, min_chunk=10, max_chunk=10, yield_time=timedelta(seconds=pause))

    def during_the_second_chunk(timed: Timed) -> None:
        # A session waits while the second chunk runs: after its first statement, before the
        # waits are read again.
        if sum(WAITS in sql for sql, _, _ in timed[:-1]) == 2 and WAITS in timed[-2][0]:
            _make_a_session_wait_for_a_table_lock(engine)

    recorder = Recorder(during_the_second_chunk)
    try:
        _run_path(path, vicidial, database_url, list(range(1, 41)), tuning, recorder)
    finally:
        vicidial.exec_driver_sql("DROP TABLE lock_probe")

    # The waits are read before the first chunk and after each of the four.
    timed = recorder.timed
    readings = [n for n, (sql, _, _) in enumerate(timed) if WAITS in sql]
    assert len(readings) == 5
    # From the end of each reading after a chunk to the next chunk's first statement.
    gaps = [timed[n + 1][1] - timed[n][2] for n in readings[1:4]]
    assert gaps[1] >= pause  # the chunk a session waited for
    assert gaps[0] < pause and gaps[2] < pause  # nobody waited


def test_while_nobody_waits_the_snapshot_paths_deletes_grow_past_the_target(
    vicidial: Connection, database_url: str
) -> None:
    """A dialer that waits for nothing needs no room: the snapshot path's delete chunks double
    past the target time (a microsecond here) instead of staying at the smallest."""
    seed(vicidial, 40)
    tuning = Tuning(chunk_time=timedelta(microseconds=1), first_chunk=5, min_chunk=5, max_chunk=40)
    recorder = Recorder()
    _run_path("snapshot", vicidial, database_url, list(range(1, 41)), tuning, recorder)
    chunks = sum(WAITS in sql for sql in recorder.statements) - 1
    # 5, 10, 20, then the last 5; without growth, eight chunks of 5 (a wait another client of
    # the server happened to make meanwhile would cost a doubling, not all of them).
    assert 4 <= chunks < 8


@pytest.mark.parametrize("path", ["locked", "restore"])
def test_chunks_under_lock_tables_never_grow_past_the_target(
    vicidial: Connection, database_url: str, path: str
) -> None:
    """A dialer waiting for a chunk's LOCK TABLES waits for its metadata lock, which
    Table_locks_waited does not count: "nobody waited" cannot be known there, so the locked
    path's chunks and restore's stay at the target time (here a microsecond: the smallest)."""
    seed(vicidial, 40)
    tuning = Tuning(chunk_time=timedelta(microseconds=1), first_chunk=5, min_chunk=5, max_chunk=40)
    recorder = Recorder()
    _run_path(path, vicidial, database_url, list(range(1, 41)), tuning, recorder)
    locked = [sql for sql in recorder.statements if sql.startswith("LOCK TABLES")]
    assert len(locked) == 8  # eight chunks of 5


def test_the_locked_path_leaves_the_table_to_the_dialer_after_every_chunk(
    vicidial: Connection, database_url: str
) -> None:
    """The locked path cannot see who waits for its LOCK TABLES (below), so it makes way after
    every chunk: ``yield_time`` between a chunk's UNLOCK TABLES and the next chunk, none after
    the last."""
    seed(vicidial, 40)
    pause = 0.1
    tuning = Tuning(first_chunk=10, min_chunk=10, max_chunk=10, yield_time=timedelta(seconds=pause))
    recorder = Recorder()
    with cron_like(vicidial, database_url) as c:
        report = run_batch(c, list(range(1, 41)), ALL, tuning, observer=recorder)
        returned = time.perf_counter()
    assert report.counts["delete"]["deleted"] == 40
    timed = recorder.timed
    unlocks = [end for sql, _, end in timed if sql == "UNLOCK TABLES"]
    locks = [start for sql, start, _ in timed if sql.startswith("LOCK TABLES")]
    assert len(unlocks) == len(locks) == 4
    # From each chunk's UNLOCK TABLES to the next chunk's LOCK TABLES.
    assert all(lock - unlock >= pause for unlock, lock in zip(unlocks, locks[1:], strict=False))
    assert returned - unlocks[-1] < pause  # none after the last chunk


def test_a_session_waiting_for_lock_tables_is_not_counted_as_a_table_lock_wait(
    vicidial: Connection, engine: Engine
) -> None:
    """Why the test above holds: MariaDB counts a statement waiting for another session's LOCK
    TABLES nowhere in Table_locks_waited (it waits for the metadata lock). Should that change,
    the locked path could grow its chunks while nobody waits, like the snapshot path."""
    seed(vicidial, 2)

    def waits() -> int:
        with engine.connect() as c:
            return int(c.exec_driver_sql(f"SHOW GLOBAL STATUS LIKE '{WAITS}'").one()[1])

    def dialer() -> None:
        with engine.connect() as c:
            c.exec_driver_sql("UPDATE vicidial_list SET status = 'B' WHERE lead_id = 1")

    with engine.connect() as holder:
        holder.exec_driver_sql("LOCK TABLES vicidial_list WRITE")
        before = waits()
        waiting = threading.Thread(target=dialer)
        waiting.start()
        with engine.connect() as c:
            wait_for(
                lambda: c.exec_driver_sql(
                    "SELECT 1 FROM information_schema.PROCESSLIST"
                    " WHERE DB = DATABASE() AND STATE = 'Waiting for table metadata lock'"
                ).first()
            )
        counted = waits() - before
        holder.exec_driver_sql("UNLOCK TABLES")
        waiting.join()
    assert counted == 0
    assert live(vicidial)[1][column("status")] == b"B"


def test_a_dialer_table_the_user_cannot_read_blocks_deletes(
    conn: Connection, database_url: str
) -> None:
    """information_schema hides a table without privileges as if absent: that must not pass."""
    from tasks.errors import InUseUnknownError

    seed(conn, 2)
    conn.exec_driver_sql("INSERT INTO vicidial_hopper (lead_id, list_id) VALUES (1, 1)")
    with (
        mysql_user(
            conn,
            database_url,
            "SELECT, INSERT, UPDATE, DELETE ON `{db}`.`vicidial_list`",
            "SELECT, INSERT, UPDATE, DELETE ON `{db}`.`vicidial_list_archive`",
            "SELECT ON `{db}`.`vicidial_auto_calls`",
            "SELECT ON `{db}`.`vicidial_live_agents`",
            "LOCK TABLES ON `{db}`.*",
        ) as limited,
        limited.connect() as c,
    ):
        with pytest.raises(InUseUnknownError, match="cannot read vicidial_hopper"):
            run_batch(c, [1, 2], ALL)
        copied = run_batch(c, [1, 2], Actions(insert=True, update=True))

    assert set(live(conn)) == {1, 2}
    assert copied.counts["insert"]["inserted"] == 2


def test_without_create_temporary_tables_the_batch_takes_its_slower_path(
    conn: Connection, database_url: str
) -> None:
    """Vicidial's stock `cron` user lacks CREATE TEMPORARY TABLES: everything still works."""
    seed(conn, 30)
    conn.exec_driver_sql("INSERT INTO vicidial_hopper (lead_id, list_id) VALUES (7, 1)")
    before = live(conn)
    with cron_like(conn, database_url) as c:
        with pytest.raises(Exception, match="denied"):
            c.exec_driver_sql("CREATE TEMPORARY TABLE probe (a INT)")
        report = run_batch(c, list(range(1, 31)), ALL, Tuning(first_chunk=4, max_chunk=8))

    assert report.counts["delete"]["deleted"] == 29
    assert report.counts["delete"]["in_use"] == 1
    assert set(live(conn)) == {7}
    assert archive(conn) == before


def test_chunks_grow_past_the_target_only_while_nobody_waits() -> None:
    from tasks.archive.sizing import ChunkSizer

    sizer = ChunkSizer(target=0.005, size=40, max_size=500)
    sizer.record(40, 0.010, nobody_waited=True)  # twice the target, but the dialer is idle
    assert sizer.size == 80
    sizer.record(80, 0.020, nobody_waited=True)
    assert sizer.size == 160
    sizer.record(160, 0.040, nobody_waited=False)  # someone waited: back to the target
    assert sizer.size == 20
    sizer.record(7, 0.001, nobody_waited=True)  # a short last chunk proves nothing
    assert sizer.size <= 40


def test_a_short_last_chunk_while_nobody_waits_keeps_the_grown_size() -> None:
    from tasks.archive.sizing import ChunkSizer

    sizer = ChunkSizer(target=0.005, size=400, max_size=500)
    sizer.record(400, 0.040, nobody_waited=True)  # 8x the target, the dialer idle: grow
    assert sizer.size == 500
    sizer.record(100, 0.010, nobody_waited=True)  # the batch's remainder, nobody waiting
    assert sizer.size == 500
    sizer.record(100, 0.010, nobody_waited=False)  # someone waited: back to the target
    assert sizer.size == 50


def test_chunks_never_shrink_below_the_minimum() -> None:
    from tasks.archive.sizing import ChunkSizer

    sizer = ChunkSizer(target=0.002, size=25, max_size=500, min_size=8)
    sizer.record(25, 0.100)  # 4 ms a lead against a 2 ms target: one lead would be "right"

    assert sizer.size == 8
