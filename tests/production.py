"""A copy of a production Vicidial database, for the tests of ``seed-demo``.

Its oldest leads (1..50) were archived long ago and are in ``vicidial_list_archive`` only, and the
live table's AUTO_INCREMENT knows nothing of them (as after a dump and restore of the live table,
or InnoDB's restart fallback); real leads 51..80 are live, in a real, active list.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection

from tasks.seed import insert_leads, lead_rows
from tests.helpers import Row, archive, live

REAL_LIST = 1001
ARCHIVED = range(1, 51)
LIVE = range(51, 81)


def load_production(conn: Connection, live_leads: bool = True) -> None:
    """Archived leads 1..50, live leads 51..80 (unless ``live_leads`` is false), list 1001."""
    insert_leads(conn, lead_rows(len(ARCHIVED), list_id=REAL_LIST, seed=61))
    conn.exec_driver_sql("INSERT INTO vicidial_list_archive SELECT * FROM vicidial_list")
    conn.exec_driver_sql("DELETE FROM vicidial_list")
    # The counter falls back to the live table's MAX(lead_id) + 1: here 1, as in the issue.
    conn.exec_driver_sql("ALTER TABLE vicidial_list AUTO_INCREMENT = 1")
    if live_leads:
        insert_leads(
            conn, lead_rows(len(LIVE), first_lead_id=LIVE.start, list_id=REAL_LIST, seed=62)
        )
    conn.exec_driver_sql(
        "INSERT INTO vicidial_lists (list_id, list_name, campaign_id, active, list_description,"
        " list_changedate) VALUES (1001, 'Spring leads', 'SALES', 'Y', 'real customers',"
        " '2024-03-01 09:00:00')"
    )


def lists(conn: Connection) -> dict[int, tuple[Any, ...]]:
    """Every vicidial_lists row, by list_id."""
    rows = conn.exec_driver_sql("SELECT * FROM vicidial_lists").all()
    return {int(r[0]): tuple(r) for r in rows}


def auto_increment(conn: Connection) -> int:
    status = conn.exec_driver_sql("SHOW TABLE STATUS LIKE 'vicidial_list'").mappings().one()
    return int(status["Auto_increment"])


def snapshot(conn: Connection) -> tuple[dict[int, Row], dict[int, Row], dict[int, Any], int]:
    """Both lead tables byte for byte, the lists, and the live table's AUTO_INCREMENT."""
    return live(conn), archive(conn), lists(conn), auto_increment(conn)


def one_line(text: str) -> str:
    """Printed output with rich's line wrapping undone."""
    return " ".join(text.split())


def created_list_id(output: str) -> int:
    match = re.search(r"created demo list (\d+)", output)
    assert match, output
    return int(match[1])
