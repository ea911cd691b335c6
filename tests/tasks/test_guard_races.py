"""The deleting statement's own guard, under a staged race (issue 11, MyISAM's snapshot path).

On MyISAM the batch reads its leads once into a snapshot, copies them into the archive from
there, then deletes. A dialer write that lands after the snapshot is caught by nothing but the
comparison inside the DELETE itself. These tests stop the batch deterministically between the two
(another session holds a READ lock on the archive, so the batch waits for its own archive lock
right after the snapshot), make the dialer's write, let the batch go on, and prove the lead
survives with the newer data while the archive keeps the older copy. Each would fail if the
comparison were dropped from the DELETE or made collation-based.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, Engine, text

from tasks.archive import Actions, BatchReport, run_batch
from tasks.seed import insert_leads, lead_rows
from tests.helpers import archive, live, wait_for

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
