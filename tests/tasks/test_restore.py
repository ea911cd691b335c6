"""The restore batch (``tasks.archive.restore``) on MyISAM, InnoDB and SQLite.

Each lead's outcome (restored, already_live, not_archived, and forbidden for a job scoped to
lists), the archive row edited after
archiving (the edited row comes back), the dialer writing the live copy between the INSERT and the
verified DELETE (both rows kept, nothing lost), a dry run (nothing changes), and the DELETE's own
comparison run directly against copies one column off (what the mutation check removes).
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Connection, Engine

from tasks.archive import Actions, run_batch
from tasks.archive.restore import RestoreStatements, run_restore
from tasks.archive.sql import SQL_MODE, Statements
from tasks.schema import inspect_tables
from tasks.scopes import Lists
from tasks.seed import insert_leads, lead_rows
from tests.helpers import archive, live

ARCHIVE_ALL = Actions(insert=True, update=True, delete=True)


def archived_leads(conn: Connection, count: int, archived: list[int]) -> dict[int, object]:
    """``count`` leads, ``archived`` of them moved to the archive; the rows as loaded."""
    insert_leads(conn, lead_rows(count, seed=7))
    before = live(conn)
    report = run_batch(conn, archived, ARCHIVE_ALL)
    assert report.counts["delete"]["deleted"] == len(archived)
    return dict(before)


def outcomes(report: object) -> dict[int, str]:
    return {lead.lead_id: lead.restore for lead in report.leads}  # type: ignore[attr-defined]


def test_each_outcome(conn: Connection) -> None:
    before = archived_leads(conn, 6, [1, 2, 3])
    # Lead 4 is live and has a (stale) archive copy too: still already_live, both left alone.
    run_batch(conn, [4], Actions(insert=True, update=False, delete=False))
    report = run_restore(conn, [1, 2, 4, 5, 99, 1])

    assert outcomes(report) == {
        1: "restored",
        2: "restored",
        4: "already_live",
        5: "already_live",
        99: "not_archived",
    }
    assert report.counts == {"restore": {"restored": 2, "already_live": 2, "not_archived": 1}}
    assert report.duplicates == [1]
    shown = {lead["lead_id"]: lead for lead in report.as_json()["leads"]}
    assert shown[1] == {"lead_id": 1, "restore": "restored", "archived": False, "live": True}
    assert shown[99] == {"lead_id": 99, "restore": "not_archived", "archived": False, "live": False}
    after_live, after_archive = live(conn), archive(conn)
    for lead_id in (1, 2):
        assert after_live[lead_id] == before[lead_id], "restored byte for byte"
        assert lead_id not in after_archive
    assert set(after_archive) == {3, 4}, "lead 3 not asked for, lead 4 refused"
    assert set(after_live) == {1, 2, 4, 5, 6}


def test_an_archive_row_edited_after_archiving_comes_back_edited(conn: Connection) -> None:
    archived_leads(conn, 3, [2])
    conn.exec_driver_sql(
        "UPDATE vicidial_list_archive SET first_name = 'Edited', comments = NULL,"
        " modify_date = '2020-01-02 03:04:05' WHERE lead_id = 2"
    )
    edited = archive(conn)[2]
    report = run_restore(conn, [2])
    assert outcomes(report) == {2: "restored"}
    assert live(conn)[2] == edited
    assert 2 not in archive(conn)


def test_a_dry_run_changes_nothing(conn: Connection) -> None:
    archived_leads(conn, 4, [1, 2])
    live_before, archive_before = live(conn), archive(conn)
    report = run_restore(conn, [1, 3, 7], dry_run=True)
    assert outcomes(report) == {1: "restored", 3: "already_live", 7: "not_archived"}
    assert report.leads[0].as_json() == {
        "lead_id": 1,
        "restore": "restored",
        "archived": True,
        "live": False,
    }
    assert (live(conn), archive(conn)) == (live_before, archive_before)


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry run"])
def test_a_key_limited_to_lists_restores_only_leads_of_those_lists(
    conn: Connection, dry_run: bool
) -> None:
    archived_leads(conn, 8, [1, 2, 5, 6])
    run_batch(conn, [3, 7], Actions(insert=True, update=False, delete=False))  # copies; still live
    # Leads 1-4 on list 1001, 5-8 on list 2002. A lead's list is its live row's, else its archive
    # row's: lead 2, only in the archive, is on 2002 there; the archive copies of the live leads
    # 3 and 7 say the other list, which does not count.
    for table in ("vicidial_list", "vicidial_list_archive"):
        conn.exec_driver_sql(f"UPDATE {table} SET list_id = IF(lead_id < 5, 1001, 2002)")
    conn.exec_driver_sql(
        "UPDATE vicidial_list_archive SET list_id = IF(lead_id = 7, 1001, 2002)"
        " WHERE lead_id IN (2, 3, 7)"
    )
    live_before, archive_before = live(conn), archive(conn)

    report = run_restore(conn, [1, 2, 5, 3, 7, 99], dry_run, lists=Lists.of([(1001, 1001)]))

    assert outcomes(report) == {
        1: "restored",
        2: "forbidden",
        5: "forbidden",
        3: "already_live",
        7: "forbidden",  # live, on another list: not even already_live
        99: "not_archived",
    }
    assert report.counts == {
        "restore": {"restored": 1, "already_live": 1, "not_archived": 1, "forbidden": 3}
    }
    shown = {lead["lead_id"]: lead for lead in report.as_json()["leads"]}
    assert shown[5] == {"lead_id": 5, "restore": "forbidden", "archived": True, "live": False}
    after_live, after_archive = live(conn), archive(conn)
    if dry_run:
        assert (after_live, after_archive) == (live_before, archive_before)
        return
    assert after_live == {**live_before, 1: archive_before[1]}  # as it was archived
    assert after_archive == {i: archive_before[i] for i in (2, 3, 5, 6, 7)}


@pytest.mark.parametrize(
    "write",
    ["first_name = 'BOB'", "comments = 'call back '", "comments = NULL", "status = 'NEW'"],
)
def test_a_dialer_write_between_insert_and_delete_keeps_both_rows(
    engine: Engine, conn: Connection, write: str
) -> None:
    before = archived_leads(conn, 3, [1, 2, 3])
    conn.exec_driver_sql(
        "UPDATE vicidial_list_archive SET first_name = 'Bob', comments = 'call back',"
        " status = 'OLD' WHERE lead_id = 2"
    )
    archived_copy = archive(conn)[2]

    def dialer(restored: list[int]) -> None:
        assert restored == [1, 2, 3]
        # Another session, as the dialer: the restore holds no lock here, so it lands at once.
        with engine.connect() as other:
            other.exec_driver_sql(
                f"UPDATE vicidial_list SET modify_date = modify_date, {write} WHERE lead_id = 2"
            )

    report = run_restore(conn, [1, 2, 3], after_insert=dialer)
    assert outcomes(report) == {1: "restored", 2: "restored", 3: "restored"}
    assert report.leads[1].as_json() == {
        "lead_id": 2,
        "restore": "restored",
        "archived": True,
        "live": True,
    }
    after_live, after_archive = live(conn), archive(conn)
    assert after_archive == {2: archived_copy}, "the changed lead keeps its archive row"
    assert after_live[2] != archived_copy, "and the dialer's write is live"
    assert after_live[1] == before[1] and after_live[3] == before[3]


def test_the_delete_statement_refuses_a_copy_one_column_off(conn: Connection) -> None:
    # The DELETE itself, without the batch: it removes no archive row whose live copy differs.
    archived_leads(conn, 4, [1, 2, 3, 4])
    conn.exec_driver_sql("UPDATE vicidial_list_archive SET first_name = 'Bob' WHERE lead_id = 1")
    for lead_id in (1, 2, 3, 4):
        conn.exec_driver_sql(
            "INSERT INTO vicidial_list SELECT * FROM vicidial_list_archive"
            f" WHERE lead_id = {lead_id}"
        )
    conn.exec_driver_sql(f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00'")
    changes = {
        1: "first_name = 'BOB'",
        2: "comments = CONCAT(IFNULL(comments, ''), ' ')",
        3: "comments = IF(comments IS NULL, '', NULL)",
    }
    for lead_id, change in changes.items():
        conn.exec_driver_sql(
            "UPDATE vicidial_list SET modify_date = modify_date,"
            f" {change} WHERE lead_id = {lead_id}"
        )
    rsql = RestoreStatements(Statements(inspect_tables(conn)))
    deleted = conn.exec_driver_sql(rsql.delete("1,2,3,4")).rowcount
    assert deleted == 1
    assert set(archive(conn)) == {1, 2, 3}


def test_restore_and_archive_batches_take_turns(engine: Engine, conn: Connection) -> None:
    # Archive and restore the same leads at once, over and over: every lead is live or archived,
    # never lost, never both with different data left behind by a half-done step.
    before = archived_leads(conn, 40, list(range(1, 41, 2)))
    errors: list[BaseException] = []

    def work(restore: bool) -> None:
        try:
            with engine.connect() as c:
                for _ in range(5):
                    if restore:
                        run_restore(c, list(range(1, 41)))
                    else:
                        run_batch(c, list(range(1, 41)), ARCHIVE_ALL)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(flag,)) for flag in (True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    after_live, after_archive = live(conn), archive(conn)
    for lead_id, row in before.items():
        assert after_live.get(lead_id, after_archive.get(lead_id)) == row, lead_id


def test_sqlite(lite: Connection) -> None:
    before = archived_leads(lite, 4, [1, 2])
    report = run_restore(lite, [1, 3, 9])
    assert outcomes(report) == {1: "restored", 3: "already_live", 9: "not_archived"}
    assert live(lite)[1] == before[1]
    assert set(archive(lite)) == {2}
