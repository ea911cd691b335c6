"""The engine's paths that only trouble takes (issue 11), each provoked for real on MariaDB.

InnoDB's retry loop (a lock wait timeout and a deadlock, made by a second session), a chunk whose
writes keep meeting a concurrent change until its retries run out (ConcurrentChangeError), another
batch holding the batch lock (BatchBusyError), the snapshot table re-created when it is gone or no
longer fits the tables, the snapshot's engine fallback, and a job whose last retry fails.

Tested elsewhere, not repeated here: the MyISAM fallback to the locked path for a user without
CREATE TEMPORARY TABLES (tests/tasks/test_archive.py's
``test_without_create_temporary_tables_the_batch_takes_its_slower_path``, and every ``locked``
case of tests/tasks/test_dialer_holds.py); a ConcurrentChangeError retried until the chunk
succeeds (tests/tasks/test_guard_races.py's ``test_a_hold_that_appears_between_the_read_and_the_
delete[InnoDB]``); a lock wait timeout retried by the task until the job succeeds
(tests/api/test_archive_api.py's ``test_a_lock_wait_timeout_is_retried_until_the_batch_succeeds``).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Collection, Iterator
from datetime import timedelta

import pytest
from pymysql.constants import ER
from sqlalchemy import Connection, Engine, make_url

from tasks.archive import SNAPSHOT, Actions, BatchReport, Tuning, run_batch
from tasks.celery_config import create_celery
from tasks.db import make_engine
from tasks.ddl import create_vicidial_tables, drop_vicidial_tables
from tasks.errors import BatchBusyError, ConcurrentChangeError, mysql_error_code
from tasks.lifecycle import ARCHIVE_TASK, MAX_RETRIES
from tasks.requests import ArchiveRequest
from tasks.runtime import Runtime
from tasks.seed import insert_leads, lead_rows
from tests.helpers import archive, live, make_settings, stored, wait_for
from tests.tasks.test_dialer_holds import HOLD, cron_like
from tests.tasks.test_guard_races import waiting_for_lock

ALL = Actions(insert=True, update=True, delete=True)
COPY = Actions(insert=True, update=False)


@pytest.fixture
def innodb(engine: Engine) -> Iterator[Connection]:
    """InnoDB Vicidial tables with three leads."""
    with engine.connect() as c:
        drop_vicidial_tables(c)
        create_vicidial_tables(c, "InnoDB")
        insert_leads(c, lead_rows(3, seed=21))
        yield c
        drop_vicidial_tables(c)


@pytest.fixture
def myisam(vicidial: Connection) -> Connection:
    """MyISAM Vicidial tables with three leads."""
    insert_leads(vicidial, lead_rows(3, seed=22))
    return vicidial


class BatchThread:
    """run_batch on a connection of its own, in a thread, while the test holds locks."""

    def __init__(self, engine: Engine, ids: list[int], actions: Actions, tuning: Tuning) -> None:
        self.report: BatchReport | None = None
        self.error: BaseException | None = None
        self.connection_id: int | None = None
        opened = threading.Event()

        def run() -> None:
            try:
                with engine.connect() as c:
                    self.connection_id = c.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
                    opened.set()
                    self.report = run_batch(c, ids, actions, tuning)
            except BaseException as exc:  # checked by the test
                self.error = exc
            finally:
                opened.set()

        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert opened.wait(30), "the batch's connection did not open"

    def lock_wait(self, observer: Connection, other_than: Collection[int] = ()) -> int | None:
        """The query ID of the batch's statement waiting for a lock, if not in ``other_than``."""
        assert self.connection_id is not None
        query_id = waiting_for_lock(observer, self.connection_id)
        return None if query_id in other_than else query_id

    def join(self) -> None:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the batch never ended"


# --- InnoDB's retry loop ----------------------------------------------------------------------


def test_an_innodb_lock_wait_timeout_is_retried_and_the_chunk_then_succeeds(
    engine: Engine, innodb: Connection
) -> None:
    before = live(innodb)
    with engine.connect() as dialer:
        dialer.exec_driver_sql("START TRANSACTION")
        dialer.exec_driver_sql("SELECT lead_id FROM vicidial_list WHERE lead_id = 2 FOR UPDATE")
        batch = BatchThread(engine, [1, 2, 3], ALL, Tuning(lock_wait_timeout=timedelta(seconds=1)))
        try:
            first = wait_for(lambda: batch.lock_wait(innodb))
            # Another statement of the batch's waits: the first one timed out, and the chunk
            # was rolled back and started again.
            wait_for(lambda: batch.lock_wait(innodb, other_than={first}))
        finally:
            dialer.exec_driver_sql("ROLLBACK")
            batch.join()

    assert batch.error is None
    assert batch.report is not None
    assert batch.report.counts["delete"]["deleted"] == 3
    assert live(innodb) == {}
    assert archive(innodb) == before


def test_an_innodb_lock_held_past_every_retry_fails_the_batch_and_changes_nothing(
    engine: Engine, innodb: Connection
) -> None:
    before = live(innodb)
    waits: set[int] = set()
    with engine.connect() as dialer:
        dialer.exec_driver_sql("START TRANSACTION")
        dialer.exec_driver_sql("SELECT lead_id FROM vicidial_list WHERE lead_id = 2 FOR UPDATE")
        batch = BatchThread(
            engine,
            [1, 2, 3],
            ALL,
            Tuning(lock_wait_timeout=timedelta(seconds=1), chunk_retries=2),
        )
        try:

            def ended_or_waits_again() -> bool:
                if not batch.thread.is_alive():
                    return True
                query_id = batch.lock_wait(innodb, other_than=waits)
                if query_id is not None:
                    waits.add(query_id)
                return False

            wait_for(ended_or_waits_again, timeout=60)
        finally:
            dialer.exec_driver_sql("ROLLBACK")
            batch.join()

    assert batch.error is not None
    assert mysql_error_code(batch.error) == ER.LOCK_WAIT_TIMEOUT
    # The first try and both retries waited (each 1 s, so none of them is missed by polling).
    assert len(waits) == 3
    assert live(innodb) == before
    assert archive(innodb) == {}


def test_an_innodb_deadlock_is_retried_and_the_chunk_then_succeeds(
    engine: Engine, innodb: Connection
) -> None:
    """The dialer holds archive row 2, then asks for live row 1 the batch holds: a deadlock.

    InnoDB rolls back the transaction that did less work: the batch's (the dialer changed 200
    rows first). The batch starts the chunk again, waits for the dialer, then archives all three.
    """
    insert_leads(innodb, lead_rows(200, first_lead_id=4, seed=23))
    run_batch(innodb, [1, 2, 3], COPY)
    before = live(innodb)
    with engine.connect() as dialer:
        dialer.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 30")
        dialer.exec_driver_sql("START TRANSACTION")
        changed = dialer.exec_driver_sql(
            "UPDATE vicidial_list SET comments = CONCAT('dialer ', lead_id) WHERE lead_id > 3"
        )
        assert changed.rowcount == 200
        dialer.exec_driver_sql(
            "SELECT lead_id FROM vicidial_list_archive WHERE lead_id = 2 FOR UPDATE"
        )
        batch = BatchThread(engine, [1, 2, 3], ALL, Tuning())  # lock waits of 50 s
        try:
            first = wait_for(lambda: batch.lock_wait(innodb))
            # Granted once the deadlock's victim, the batch, has rolled back (the dialer would
            # get error 1213 here had it been chosen instead).
            dialer.exec_driver_sql("SELECT lead_id FROM vicidial_list WHERE lead_id = 1 FOR UPDATE")
            wait_for(lambda: batch.lock_wait(innodb, other_than={first}))
            assert batch.thread.is_alive(), "the batch waits in its retry, not failed"
        finally:
            dialer.exec_driver_sql("ROLLBACK")
            batch.join()

    assert batch.error is None, f"the deadlock was not retried: {batch.error!r}"
    assert batch.report is not None
    assert batch.report.counts["delete"]["deleted"] == 3
    assert set(live(innodb)) == set(range(4, 204))
    assert {i: before[i] for i in (1, 2, 3)} == archive(innodb)
    assert live(innodb) == {i: before[i] for i in range(4, 204)}, "the dialer's rollback held"


def test_a_chunk_whose_delete_keeps_meeting_a_new_hold_gives_up_and_changes_nothing(
    engine: Engine, innodb: Connection
) -> None:
    """Each time the chunk has been read, the hopper takes one more of its leads: every DELETE
    keeps a lead its read expected to delete (ConcurrentChangeError), until the retries run out."""
    before = live(innodb)
    reads: list[list[int]] = []

    def after_read(chunk: list[int]) -> None:
        reads.append(list(chunk))
        innodb.exec_driver_sql(HOLD["hopper"].format(id=len(reads)))

    with engine.connect() as c, pytest.raises(ConcurrentChangeError, match="delete touched"):
        run_batch(c, [1, 2, 3], ALL, Tuning(chunk_retries=2), after_read=after_read)

    assert reads == [[1, 2, 3]] * 3
    assert live(innodb) == before
    assert archive(innodb) == {}, "every try, copies included, was rolled back"


# --- the batch lock ---------------------------------------------------------------------------


def batch_lock_name(database_url: str) -> str:
    """The named lock that serialises batches on one database (documented for operators)."""
    database = make_url(database_url).database or ""
    return "leadarchive." + re.sub(r"\W", "_", database)[:50]


@pytest.mark.parametrize("path", ["snapshot", "locked"])
def test_a_batch_waits_for_another_holding_the_batch_lock_then_gives_up(
    engine: Engine, myisam: Connection, database_url: str, path: str
) -> None:
    """On the locked path too: a chunk there must not verify and delete a lead between another
    batch's snapshot and its refresh of the archive, which would put the older snapshot back
    over the copy of the lead just deleted."""
    before = live(myisam)
    lock = batch_lock_name(database_url)
    one_second = Tuning(lock_wait_timeout=timedelta(seconds=1))
    with contextlib.ExitStack() as stack:
        if path == "locked":
            c = stack.enter_context(cron_like(myisam, database_url))
        else:
            c = stack.enter_context(engine.connect())
        with engine.connect() as other:
            assert other.exec_driver_sql(f"SELECT GET_LOCK('{lock}', 0)").scalar_one() == 1
            with pytest.raises(BatchBusyError, match=re.escape(lock)):
                run_batch(c, [1, 2, 3], ALL, one_second)
            assert live(myisam) == before
            assert archive(myisam) == {}
            other.exec_driver_sql(f"SELECT RELEASE_LOCK('{lock}')")

        report = run_batch(c, [1, 2, 3], ALL, one_second)

    assert report.counts["delete"]["deleted"] == 3
    assert archive(myisam) == before


# --- the snapshot table -----------------------------------------------------------------------


def snapshot_ids(c: Connection) -> list[int]:
    """The leads in this session's snapshot table (it keeps the last window's rows)."""
    return [int(i) for i in c.exec_driver_sql(f"SELECT lead_id FROM {SNAPSHOT}").scalars()]


def test_a_snapshot_table_dropped_behind_the_batchs_back_is_created_again(
    engine: Engine, myisam: Connection
) -> None:
    before = live(myisam)
    with engine.connect() as c:
        run_batch(c, [1], ALL)
        assert snapshot_ids(c) == [1]
        c.exec_driver_sql(f"DROP TEMPORARY TABLE {SNAPSHOT}")

        report = run_batch(c, [2, 3], ALL)

        assert snapshot_ids(c) == [2, 3], "the snapshot path ran, on a new snapshot table"
    assert report.counts["delete"]["deleted"] == 2
    assert live(myisam) == {}
    assert archive(myisam) == before


def test_after_a_reconnect_the_batch_makes_a_snapshot_table_in_the_new_session(
    database_url: str, myisam: Connection
) -> None:
    before = live(myisam)
    single = make_engine(database_url, pool_size=1)
    try:
        with single.connect() as c:
            run_batch(c, [1], ALL)
            first_session = c.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
        myisam.exec_driver_sql(f"KILL {int(first_session)}")
        with single.connect() as c:  # the pool's ping finds the session gone and reconnects
            assert c.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one() != first_session
            report = run_batch(c, [2, 3], ALL)
            assert snapshot_ids(c) == [2, 3]
    finally:
        single.dispose()
    assert report.counts["delete"]["deleted"] == 2
    assert archive(myisam) == before


def test_the_snapshot_table_follows_a_change_of_the_tables_columns(
    engine: Engine, myisam: Connection
) -> None:
    with engine.connect() as c:
        run_batch(c, [1], ALL)
        for table in ("vicidial_list", "vicidial_list_archive"):
            myisam.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN custom_1 VARCHAR(20)")
        myisam.exec_driver_sql("UPDATE vicidial_list SET custom_1 = CONCAT('c', lead_id)")

        report = run_batch(c, [2, 3], ALL)

        columns = c.exec_driver_sql(f"SHOW COLUMNS FROM {SNAPSHOT}").scalars().all()
        assert "custom_1" in columns
    assert report.counts["delete"]["deleted"] == 2
    copied = myisam.exec_driver_sql(
        "SELECT lead_id, custom_1 FROM vicidial_list_archive WHERE lead_id > 1 ORDER BY lead_id"
    ).all()
    assert [tuple(r) for r in copied] == [(2, "c2"), (3, "c3")]


def test_a_snapshot_of_a_table_with_text_columns_falls_back_from_memory_to_aria(
    engine: Engine, myisam: Connection
) -> None:
    """MEMORY cannot hold TEXT: the next engine is tried, and the batch keeps its fast path."""
    for table in ("vicidial_list", "vicidial_list_archive"):
        myisam.exec_driver_sql(f"ALTER TABLE {table} MODIFY comments TEXT")
    myisam.exec_driver_sql("UPDATE vicidial_list SET comments = REPEAT('long note ', 100)")
    before = live(myisam)
    with engine.connect() as c:
        report = run_batch(c, [1, 2, 3], ALL)
        definition = c.exec_driver_sql(f"SHOW CREATE TABLE {SNAPSHOT}").one()[1]
        assert "ENGINE=Aria" in definition
        assert snapshot_ids(c) == [1, 2, 3]
    assert report.counts["delete"]["deleted"] == 3
    assert archive(myisam) == before


# --- the task's last retry --------------------------------------------------------------------


@pytest.fixture
def task_runtime(database_url: str, redis_url: str) -> Iterator[Runtime]:
    """A runtime for the task, with no office hours."""
    rt = Runtime(make_settings(database_url, redis_url, office_hours=""))
    try:
        yield rt
    finally:
        rt.close()


def test_a_job_whose_last_retry_meets_the_same_lock_fails_with_its_reason(
    engine: Engine, myisam: Connection, task_runtime: Runtime
) -> None:
    """The dialer holds vicidial_list past the lock wait timeout on the job's last two
    deliveries: the next to last is retried, the last fails the job, naming the lock wait.

    Celery's ``apply`` runs the real task in this thread, its retry too, as a redelivery with
    ``retries`` set would (the 22 deliveries before, each a lock wait of its own, are skipped).
    """
    before = live(myisam)
    request = ArchiveRequest(
        lead_ids=[1, 2, 3], insert_leads=True, update_leads=True, delete_leads=True, dry_run=False
    )
    job_id, _ = task_runtime.jobs.create("alice", request)
    task = create_celery(task_runtime.settings, task_runtime).tasks[ARCHIVE_TASK]
    kwargs = {
        "job_id": job_id,
        "lead_ids": request.lead_ids,
        "insert_leads": True,
        "update_leads": True,
        "delete_leads": True,
        "dry_run": False,
    }
    with engine.connect() as dialer:
        dialer.exec_driver_sql("LOCK TABLES vicidial_list READ")
        try:
            result = task.apply(kwargs=kwargs, task_id=job_id, retries=MAX_RETRIES - 1)
        finally:
            dialer.exec_driver_sql("UNLOCK TABLES")

    assert result.get() == {"job_id": job_id, "status": "failed", "error": "OperationalError"}
    record = stored(task_runtime.jobs.get(job_id))
    assert record is not None
    assert record["status"] == "failed"
    assert int(record["attempts"]) == 2
    error = json.loads(record["error"])
    assert error["type"] == "OperationalError"
    assert "Lock wait timeout" in error["detail"]
    # Copied on the way, never deleted: every lead is still live, its copy identical.
    assert live(myisam) == before
    assert archive(myisam) == before
