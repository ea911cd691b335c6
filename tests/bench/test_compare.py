"""The comparison benchmark's safety counters flag planted losses and corruption."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, make_url

from bench.compare import ARCHIVE_LIST, PRISTINE, Dataset, WriterLog
from tasks.schema import inspect_tables
from tasks.seed import insert_leads, lead_rows


def test_counters_flag_a_stale_copy_a_vanished_lead_and_a_changed_byte(
    vicidial: Connection, engine: Engine, database_url: str
) -> None:
    insert_leads(vicidial, lead_rows(6, seed=1))
    vicidial.exec_driver_sql(
        f"UPDATE vicidial_list SET list_id = {ARCHIVE_LIST} WHERE lead_id <= 5"
    )
    vicidial.exec_driver_sql(f"CREATE TABLE {PRISTINE} LIKE vicidial_list")
    try:
        vicidial.exec_driver_sql(f"INSERT INTO {PRISTINE} SELECT * FROM vicidial_list")
        # A tool copied 1, 2 and 5; the writer's newest value reached the copy of 2 but not
        # of 1; 5 lost a byte on the way; then the tool deleted 1, 2, 4 and 5 (4 uncopied).
        vicidial.exec_driver_sql(
            "INSERT INTO vicidial_list_archive SELECT * FROM vicidial_list"
            " WHERE lead_id IN (1, 2, 5)"
        )
        vicidial.exec_driver_sql("UPDATE vicidial_list_archive SET user = 'w3' WHERE lead_id = 1")
        vicidial.exec_driver_sql("UPDATE vicidial_list_archive SET user = 'w6' WHERE lead_id = 2")
        vicidial.exec_driver_sql(
            "UPDATE vicidial_list_archive SET comments = CONCAT(IFNULL(comments, ''), '\\t')"
            " WHERE lead_id = 5"
        )
        vicidial.exec_driver_sql("DELETE FROM vicidial_list WHERE lead_id IN (1, 2, 4, 5)")
        data = Dataset(
            url=make_url(database_url),
            engine=engine,
            leads=6,
            archive_ids=[1, 2, 3, 4, 5],
            pair=inspect_tables(vicidial),
        )
        # Lead 3 was written but stays live; lead 6's write found no row: neither is a loss.
        writes = WriterLog(applied=[(1, 3), (2, 6), (1, 5), (3, 7), (4, 8)], missed=1)

        assert data.losses(writes) == ([1], [4])
        assert data.corrupted({1, 2, 3, 4}) == ([5], 1)
        assert data.live_archive_set() == 1
    finally:
        vicidial.exec_driver_sql(f"DROP TABLE IF EXISTS {PRISTINE}")
