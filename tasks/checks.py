"""What `leadarchive check` reports: tables, engines, collations, schema match, privileges."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from tasks.admin_log import TABLE as ADMIN_LOG_TABLE
from tasks.schema import (
    ARCHIVE_TABLE,
    IN_USE_TABLES,
    LIVE_TABLE,
    compare_columns,
    probe_in_use_tables,
    read_columns,
)

# What the batch needs, table by table (see deploy/grants.sql).
NEEDED = {
    LIVE_TABLE: {"SELECT", "INSERT", "UPDATE", "DELETE"},
    ARCHIVE_TABLE: {"SELECT", "INSERT", "UPDATE", "DELETE"},
    **{t: {"SELECT"} for t in IN_USE_TABLES},
    # Vicidial's admin log, when it exists: one row per finished job. INSERT only, never
    # SELECT (the log holds other administrators' SQL).
    ADMIN_LOG_TABLE: {"INSERT"},
}


@dataclass
class CheckReport:
    """Findings in plain words; ``problems`` empty means ready."""

    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems


def check_database(conn: Connection) -> CheckReport:
    """Inspect a MySQL/MariaDB Vicidial database the way the batch will use it."""
    report = CheckReport()
    version = conn.exec_driver_sql("SELECT VERSION(), DATABASE(), CURRENT_USER()").one()
    report.facts.append(f"connected to {version[0]}, database {version[1]} as {version[2]}")
    tables = {
        r[0]: (r[1], r[2])
        for r in conn.execute(
            text(
                "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = DATABASE()"
            )
        )
    }
    for table in (LIVE_TABLE, ARCHIVE_TABLE):
        if table in tables:
            engine, collation = tables[table]
            report.facts.append(f"{table}: engine {engine}, collation {collation}")
        else:
            report.problems.append(f"{table} does not exist")
    if ARCHIVE_TABLE not in tables and LIVE_TABLE in tables:
        report.problems.append(
            "create it with `leadarchive create-archive-table` (Vicidial's own recipe)"
        )
    if LIVE_TABLE in tables and ARCHIVE_TABLE in tables:
        differences = compare_columns(
            read_columns(conn, LIVE_TABLE), read_columns(conn, ARCHIVE_TABLE)
        )
        if differences:
            report.problems += [f"schema: {d}" for d in differences]
        else:
            report.facts.append("the archive's columns match vicidial_list's")
    readable, unreadable = probe_in_use_tables(conn)
    for table in IN_USE_TABLES:
        if table in unreadable:
            report.problems.append(
                f"cannot read {table}: deletes are refused until SELECT on it is granted"
            )
        elif table not in readable:
            report.facts.append(f"{table} does not exist: its in-use check is skipped")
    report.problems += _missing_privileges(conn, tables)
    report.facts.append(_admin_log_fact(tables, report.problems))
    return report


def _admin_log_fact(tables: dict[str, tuple[str, str]], problems: list[str]) -> str:
    """Whether finished jobs will be written to Vicidial's admin log, in plain words."""
    if ADMIN_LOG_TABLE not in tables:
        # information_schema hides a table the user holds no privilege on, as if absent.
        return (
            f"{ADMIN_LOG_TABLE} is absent, or this user holds no privilege on it: jobs are not"
            " written to Vicidial's admin log (deploy/grants.sql grants INSERT on it)"
        )
    if any(p.endswith(f" on {ADMIN_LOG_TABLE} missing") for p in problems):
        return f"{ADMIN_LOG_TABLE}: jobs are not written to it until INSERT on it is granted"
    return (
        f"{ADMIN_LOG_TABLE}: every finished job that is not a dry run is written to it"
        " (LEADARCHIVE_ADMIN_LOG=false turns this off)"
    )


def _missing_privileges(conn: Connection, tables: dict[str, tuple[str, str]]) -> list[str]:
    grantee = conn.exec_driver_sql(
        "SELECT CONCAT(\"'\", SUBSTRING_INDEX(CURRENT_USER(), '@', 1), \"'@'\","
        " SUBSTRING_INDEX(CURRENT_USER(), '@', -1), \"'\")"
    ).scalar_one()
    params = {"grantee": grantee}
    held_everywhere = {
        r[0]
        for r in conn.execute(
            text(
                "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES"
                " WHERE GRANTEE = :grantee"
                " UNION SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES"
                " WHERE GRANTEE = :grantee AND TABLE_SCHEMA = DATABASE()"
            ),
            params,
        )
    }
    per_table: dict[str, set[str]] = {}
    for table, privilege in conn.execute(
        text(
            "SELECT TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES"
            " WHERE GRANTEE = :grantee AND TABLE_SCHEMA = DATABASE()"
        ),
        params,
    ):
        per_table.setdefault(table, set()).add(privilege)
    missing = []
    for table, needed in NEEDED.items():
        if table not in tables:
            continue
        lacking = needed - held_everywhere - per_table.get(table, set())
        if lacking:
            missing.append(f"privileges: {', '.join(sorted(lacking))} on {table} missing")
    if "LOCK TABLES" not in held_everywhere:
        missing.append("privileges: LOCK TABLES on the database missing (MyISAM batches need it)")
    return missing
