"""Reading the tables back byte for byte, to check data rather than reports."""

from __future__ import annotations

from sqlalchemy import Connection

from tasks.seed import LEAD_COLUMNS

Row = tuple[bytes | None, ...]

_BYTES = ", ".join(f"CAST(`{c}` AS BINARY)" for c in LEAD_COLUMNS)


def table_rows(conn: Connection, table: str) -> dict[int, Row]:
    """Every row of ``table`` as raw bytes per column (TIMESTAMPs read in UTC), by lead_id."""
    conn.exec_driver_sql("SET SESSION time_zone = '+00:00'")
    rows = conn.exec_driver_sql(f"SELECT lead_id, {_BYTES} FROM `{table}`").all()
    return {int(r[0]): tuple(r[1:]) for r in rows}


def live(conn: Connection) -> dict[int, Row]:
    return table_rows(conn, "vicidial_list")


def archive(conn: Connection) -> dict[int, Row]:
    return table_rows(conn, "vicidial_list_archive")


def column(name: str) -> int:
    """Position of a column in the rows ``table_rows`` returns."""
    return LEAD_COLUMNS.index(name)
