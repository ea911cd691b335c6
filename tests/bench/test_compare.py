"""The comparison benchmark's judge (bench/oracle.py) flags planted losses and corruption, byte
for byte, without the engine's comparison."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import Connection, Engine

from bench.compare import ARCHIVE_LIST, ToolOutcome, WriterLog, graded, mysql_connect
from bench.engine import ProbeSamples, ProbeStats
from bench.oracle import (
    BEFORE,
    WRITER_SESSION,
    WRITER_UPDATE,
    drop_copy,
    judge,
    take_copy,
    token,
    writer_time,
)
from tasks.archive import sql as archive_sql
from tasks.schema import Column, inspect_tables
from tasks.seed import insert_leads, lead_rows

REPO = Path(__file__).resolve().parents[2]
IN_LIST = f"list_id = {ARCHIVE_LIST}"


@pytest.fixture
def writer(database_url: str) -> Iterator[pymysql.cursors.Cursor]:
    """A connection of the benchmark's writer, in its session."""
    conn = mysql_connect(database_url)
    cursor = conn.cursor()
    cursor.execute(WRITER_SESSION)
    yield cursor
    conn.close()


def write(cursor: pymysql.cursors.Cursor, log: WriterLog, lead: int, seq: int) -> None:
    """One of the writer's updates, recorded as the writer records it."""
    when = writer_time()
    assert cursor.execute(WRITER_UPDATE, (token(seq), when, when, lead)) == 1
    log.applied.append((lead, seq, when))


def copy_to_archive(vicidial: Connection, lead: int) -> None:
    vicidial.exec_driver_sql(
        f"INSERT INTO vicidial_list_archive SELECT * FROM vicidial_list WHERE lead_id = {lead}"
    )


def test_the_oracle_flags_a_stale_copy_a_vanished_lead_and_a_changed_byte(
    vicidial: Connection, engine: Engine, writer: pymysql.cursors.Cursor
) -> None:
    insert_leads(vicidial, lead_rows(8, seed=1))
    vicidial.exec_driver_sql(f"UPDATE vicidial_list SET {IN_LIST} WHERE lead_id <= 6")
    copy = take_copy(engine, IN_LIST)
    try:
        assert (copy.leads, copy.others) == (6, 2)
        log = WriterLog()
        # Lead 1 copied between its two writes (stale); lead 2 copied after its write (fine);
        # lead 3 written and left live (fine); lead 4 written and deleted uncopied (lost);
        # lead 5 copied with one byte more (corrupted); lead 6 copied intact; lead 8, of
        # another list, deleted (collateral damage).
        write(writer, log, 1, 3)
        copy_to_archive(vicidial, 1)
        write(writer, log, 1, 5)
        write(writer, log, 2, 6)
        copy_to_archive(vicidial, 2)
        write(writer, log, 3, 7)
        write(writer, log, 4, 8)
        for lead in (5, 6):
            copy_to_archive(vicidial, lead)
        vicidial.exec_driver_sql(
            "UPDATE vicidial_list_archive SET comments = CONCAT(IFNULL(comments, ''), '\\t')"
            " WHERE lead_id = 5"
        )
        vicidial.exec_driver_sql("DELETE FROM vicidial_list WHERE lead_id IN (1, 2, 4, 5, 6, 8)")

        verdict = judge(engine, copy, log.applied)

        assert (verdict.stale, verdict.vanished, verdict.corrupted) == ([1], [4], [5])
        assert (verdict.checked, verdict.live, verdict.left_live, verdict.archived) == (6, 1, 1, 2)
        assert verdict.others_gone == 1
        # The benchmark's figures from that verdict: 5 leads gone, 2 lost, 1 corrupted.
        run = graded(
            "bare", "spread", ToolOutcome(1.0, 0.0), verdict, log, ProbeStats.of(ProbeSamples())
        )
        assert (run.archived, run.lost, run.lost_stale, run.lost_vanished) == (5, 2, 1, 1)
        assert (run.corrupted, run.vanished, run.others_gone) == (1, 1, 1)
        assert run.lost_examples == [1, 4]
    finally:
        drop_copy(engine)


def test_the_oracle_accepts_every_write_replayed_and_flags_a_changed_live_row(
    vicidial: Connection, engine: Engine, writer: pymysql.cursors.Cursor
) -> None:
    """Its replay of the writer's update matches MariaDB's, NULL and wrapping counts included."""
    insert_leads(vicidial, lead_rows(4, seed=2))
    vicidial.exec_driver_sql(f"UPDATE vicidial_list SET {IN_LIST}")
    vicidial.exec_driver_sql("UPDATE vicidial_list SET called_count = NULL WHERE lead_id = 1")
    vicidial.exec_driver_sql("UPDATE vicidial_list SET called_count = 65534 WHERE lead_id = 2")
    copy = take_copy(engine, IN_LIST)
    try:
        log = WriterLog()
        for seq, lead in enumerate((1, 2, 2, 2, 3), start=1):  # lead 2: 65535, then 0, then 1
            write(writer, log, lead, seq)
        copy_to_archive(vicidial, 1)
        copy_to_archive(vicidial, 2)
        vicidial.exec_driver_sql("DELETE FROM vicidial_list WHERE lead_id IN (1, 2)")
        # Lead 4 is still live, but not as it was: a byte changed behind everyone's back.
        vicidial.exec_driver_sql(
            "UPDATE vicidial_list SET address1 = CONCAT(IFNULL(address1, ''), 'x')"
            " WHERE lead_id = 4"
        )
        assert vicidial.exec_driver_sql(
            "SELECT called_count FROM vicidial_list_archive ORDER BY lead_id"
        ).scalars().all() == [0, 1]

        verdict = judge(engine, copy, log.applied)

        assert (verdict.archived, verdict.left_live, verdict.corrupted) == (2, 1, [4])
        assert (verdict.stale, verdict.vanished, verdict.others_gone) == ([], [], 0)
    finally:
        drop_copy(engine)


def test_the_oracle_sees_bytes_a_collation_based_engine_comparison_would_miss(
    vicidial: Connection, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A case-only change and a trailing space are corrupted rows, even with the engine's
    comparison made collation-based: the oracle does not use it."""
    insert_leads(vicidial, lead_rows(3, seed=3))
    vicidial.exec_driver_sql(
        f"UPDATE vicidial_list SET {IN_LIST}, first_name = 'Anna', last_name = 'Smith'"
    )
    copy = take_copy(engine, IN_LIST)
    try:
        for lead in (1, 2, 3):
            copy_to_archive(vicidial, lead)
        vicidial.exec_driver_sql(
            "UPDATE vicidial_list_archive SET first_name = 'ANNA' WHERE lead_id = 1"
        )
        vicidial.exec_driver_sql(
            "UPDATE vicidial_list_archive SET last_name = 'Smith ' WHERE lead_id = 2"
        )
        vicidial.exec_driver_sql("DELETE FROM vicidial_list")

        def collation_based(column: Column, left: str, right: str, dialect: str) -> str:
            return f"{left}.{archive_sql.q(column.name)} <=> {right}.{archive_sql.q(column.name)}"

        monkeypatch.setattr(archive_sql, "same", collation_based)
        identical = archive_sql.Statements(inspect_tables(vicidial)).identical
        seen = vicidial.exec_driver_sql(
            f"SELECT a.lead_id, {identical} FROM vicidial_list_archive AS a"
            f" JOIN {BEFORE} AS l ON l.lead_id = a.lead_id ORDER BY a.lead_id"
        ).all()
        assert [tuple(r) for r in seen] == [(1, 1), (2, 1), (3, 1)]  # blind to both

        verdict = judge(engine, copy, [])

        assert verdict.corrupted == [1, 2]
        assert (verdict.archived, verdict.stale, verdict.vanished) == (1, [], [])
    finally:
        drop_copy(engine)


def test_the_oracle_imports_nothing_of_the_engine() -> None:
    blocked = (
        "import sys; sys.modules['tasks.archive'] = None; import bench.oracle;"
        " assert 'tasks.archive' not in [m for m, v in sys.modules.items() if v is not None]"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocked], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
