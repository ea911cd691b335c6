"""The lead tables read back byte for byte: the invariant checked from the data, never from a
job's own report.

Every lead's newest data must be its live row in ``vicidial_list`` or, once it is no longer live,
its row in ``vicidial_list_archive``, identical in every column. ``table_rows`` reads each column
as raw bytes (TIMESTAMPs in UTC), so a difference the collation calls equal (``bob`` and ``Bob``)
is still a difference. ``snapshot_leads`` and ``lost_leads`` check the same inside MariaDB, for
tables too large to read into this process.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from tasks.seed import LEAD_COLUMNS

Row = tuple[bytes | None, ...]

_BYTES = ", ".join(f"CAST(`{c}` AS BINARY)" for c in LEAD_COLUMNS)


def table_rows(conn: Connection, table: str) -> dict[int, Row]:
    """Every row of ``table`` as raw bytes per column (TIMESTAMPs read in UTC), by lead_id."""
    if conn.dialect.name == "sqlite":
        # SQLite hands back what it stored; the type is part of the value (1 vs '1').
        columns = ", ".join(f"`{c}`" for c in LEAD_COLUMNS)
        rows = conn.exec_driver_sql(f"SELECT lead_id, {columns} FROM `{table}`").all()
        return {int(r[0]): tuple((type(v).__name__, v) for v in r[1:]) for r in rows}  # type: ignore[misc]
    conn.exec_driver_sql("SET SESSION time_zone = '+00:00'")
    rows = conn.exec_driver_sql(f"SELECT lead_id, {_BYTES} FROM `{table}`").all()
    return {int(r[0]): tuple(r[1:]) for r in rows}


def live(conn: Connection) -> dict[int, Row]:
    """``vicidial_list``, byte for byte."""
    return table_rows(conn, "vicidial_list")


def archive(conn: Connection) -> dict[int, Row]:
    """``vicidial_list_archive``, byte for byte."""
    return table_rows(conn, "vicidial_list_archive")


def column(name: str) -> int:
    """Position of a column in the rows ``table_rows`` returns."""
    return LEAD_COLUMNS.index(name)


@dataclass
class TableCheck:
    """The invariant for every lead, and where each lead is."""

    checked: int
    lost: list[int]
    live: set[int]
    archived: set[int]


def check_tables(conn: Connection, expected: dict[int, Row]) -> TableCheck:
    """For every lead: its newest data (``expected``) is its live row, or, if it is no longer
    live, its archive row, byte for byte in every column."""
    live_rows, archive_rows = live(conn), archive(conn)
    lost = [
        lead_id
        for lead_id, row in expected.items()
        if (live_rows[lead_id] if lead_id in live_rows else archive_rows.get(lead_id)) != row
    ]
    return TableCheck(len(expected), lost, set(live_rows), set(archive_rows))


def describe_loss(conn: Connection, expected: dict[int, Row], lost: list[int]) -> str:
    """The first lost leads, column by column, for the failure message."""
    live_rows, archive_rows = live(conn), archive(conn)
    lines = []
    for lead_id in lost[:5]:
        where, found = ("live", live_rows.get(lead_id))
        if found is None:
            where, found = ("archive", archive_rows.get(lead_id))
        differ = (
            "missing from both tables"
            if found is None
            else ", ".join(
                f"{name}: {found[i]!r} != {expected[lead_id][i]!r}"
                for i, name in enumerate(LEAD_COLUMNS)
                if found[i] != expected[lead_id][i]
            )
        )
        lines.append(f"lead {lead_id} ({where}): {differ}")
    return "; ".join(lines)


SNAPSHOT_TABLE = "leadarchive_load_snapshot"


def snapshot_leads(engine: Engine) -> int:
    """Copy ``vicidial_list`` aside (``SNAPSHOT_TABLE``); the number of leads in it."""
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{SNAPSHOT_TABLE}`")
        conn.exec_driver_sql(f"CREATE TABLE `{SNAPSHOT_TABLE}` LIKE vicidial_list")
        conn.exec_driver_sql(f"INSERT INTO `{SNAPSHOT_TABLE}` SELECT * FROM vicidial_list")
        return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM `{SNAPSHOT_TABLE}`").scalar_one())


def lost_leads(engine: Engine) -> list[int]:
    """Leads of the snapshot that are neither live nor identically archived (the invariant)."""

    def same(alias: str) -> str:
        return " AND ".join(
            f"CAST({alias}.`{c}` AS BINARY) <=> CAST(s.`{c}` AS BINARY)" for c in LEAD_COLUMNS
        )

    sql = (
        f"SELECT s.lead_id FROM `{SNAPSHOT_TABLE}` s"
        " LEFT JOIN vicidial_list l ON l.lead_id = s.lead_id"
        " LEFT JOIN vicidial_list_archive a ON a.lead_id = s.lead_id"
        f" WHERE NOT (l.lead_id IS NOT NULL AND {same('l')})"
        f" AND NOT (a.lead_id IS NOT NULL AND {same('a')})"
    )
    with engine.connect() as conn:
        conn.exec_driver_sql("SET SESSION time_zone = '+00:00'")
        return [int(x) for x in conn.exec_driver_sql(sql).scalars()]
