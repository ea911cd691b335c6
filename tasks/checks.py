"""What `leadarchive check` reports, and what it tells the administrator to do about it.

Tables, engines, collations, the schema match, column order, the dialer tables the in-use guard
reads, pending callbacks, lists with custom fields, reused lead IDs, privileges, and which MyISAM
path the batches will take. For an archive that drifted from ``vicidial_list`` it prints the exact
``ALTER TABLE`` that makes it match: the administrator runs it; the service never alters a table.

Every statement here is short: the reused-ID scan walks the archive in primary-key ranges, so a
check run while the dialer works never holds MyISAM's table lock for long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from tasks.admin_log import TABLE as ADMIN_LOG_TABLE
from tasks.schema import (
    ARCHIVE_TABLE,
    HOLDS,
    IN_USE_TABLES,
    LIVE_TABLE,
    compare_columns,
    probe_in_use_tables,
    read_columns,
)

# What the batch needs, table by table (see deploy/grants.sql): it copies into the archive and
# refreshes it, and deletes from vicidial_list; it never writes vicidial_list's rows or deletes
# archive rows, so a leaked password can neither rewrite live leads nor wipe the archive.
NEEDED = {
    LIVE_TABLE: {"SELECT", "DELETE"},
    ARCHIVE_TABLE: {"SELECT", "INSERT", "UPDATE"},
    **{t: {"SELECT"} for t in IN_USE_TABLES},
    # Vicidial's admin log, when it exists: one row per finished job. INSERT only, never
    # SELECT (the log holds other administrators' SQL).
    ADMIN_LOG_TABLE: {"INSERT"},
}
CALLBACKS_TABLE = "vicidial_callbacks"
# A column's line in SHOW CREATE TABLE: two spaces, the quoted name, the definition.
_COLUMN_LINE = re.compile(r"^  `(?P<name>(?:[^`]|``)+)` (?P<definition>.*?),?$")
# IDs per statement of the reused-ID scan: a few milliseconds of table lock each.
REUSED_SCAN_RANGE = 20_000
REUSED_SHOWN = 20


@dataclass
class CheckReport:
    """Findings in plain words; ``problems`` empty means ready; ``advice`` is what to run."""

    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

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
        _check_schema(conn, report)
        _report_reused_ids(conn, report)
    _report_dialer_tables(conn, report)
    _report_custom_fields(tables, report)
    held_everywhere, per_table = _held_privileges(conn)
    report.problems += _missing_privileges(tables, held_everywhere, per_table)
    if tables.get(LIVE_TABLE, ("", ""))[0] == "MyISAM":
        _report_batch_path(str(version[2]), str(version[1]), held_everywhere, report)
    report.facts.append(_admin_log_fact(tables, report.problems))
    return report


def _report_batch_path(account: str, database: str, held: set[str], report: CheckReport) -> None:
    """Which of MyISAM's two paths the batches take: without CREATE TEMPORARY TABLES (Vicidial's
    stock ``cron`` user) the locked path, which works but is slower, so it is advice, not a
    problem. ``account`` is ``CURRENT_USER()``, ``database`` the database checked."""
    if "CREATE TEMPORARY TABLES" in held:
        report.facts.append(
            "MyISAM batches copy from a snapshot of their own (CREATE TEMPORARY TABLES granted)"
        )
        return
    report.facts.append(
        "MyISAM batches take the locked path: without CREATE TEMPORARY TABLES each chunk runs"
        " under LOCK TABLES and leaves the table to the dialer after it: about 2.6 times slower"
        " beside a busy dialer"
    )
    user, _, host = account.rpartition("@")
    quoted = database.replace("`", "``")
    report.advice.append("for the faster snapshot path, grant (deploy/grants.sql grants it):")
    report.advice.append(f"GRANT CREATE TEMPORARY TABLES ON `{quoted}`.* TO '{user}'@'{host}';")


def _check_schema(conn: Connection, report: CheckReport) -> None:
    live, archive = read_columns(conn, LIVE_TABLE), read_columns(conn, ARCHIVE_TABLE)
    differences = compare_columns(live, archive)
    if differences:
        report.problems += [f"schema: {d}" for d in differences]
    else:
        report.facts.append("the archive's columns match vicidial_list's")
    shared = [name for name in live if name in archive]
    if [name for name in archive if name in live] != shared:
        # The batch names every column, so it does not mind; Vicidial's own `INSERT ... SELECT *`
        # tools (ADMIN_archive_leads.pl, its cron recipe) would put values in the wrong columns.
        report.problems.append(
            "schema: the archive's columns are in another order than vicidial_list's"
            " (Vicidial's own SELECT * archive tools depend on it)"
        )
    alter = alter_archive_statement(conn)
    if alter:
        report.advice.append(
            "make vicidial_list_archive match vicidial_list (run it yourself, outside office"
            " hours: it rebuilds the archive table; LeadArchive never alters a table):"
        )
        report.advice.append(alter)


def column_definitions(conn: Connection, table: str) -> dict[str, str]:
    """Each column's full definition, in table order, as ``SHOW CREATE TABLE`` states it."""
    ddl = str(conn.exec_driver_sql(f"SHOW CREATE TABLE `{table}`").one()[1])
    found = (_COLUMN_LINE.match(line) for line in ddl.splitlines())
    return {m["name"].replace("``", "`"): m["definition"] for m in found if m}


def alter_archive_statement(conn: Connection) -> str:
    """The ALTER TABLE that gives the archive vicidial_list's columns, definitions and order.

    Empty when nothing differs. Columns only the archive has are left alone (the check names
    them): dropping one would destroy archived data.
    """
    live = column_definitions(conn, LIVE_TABLE)
    archive = column_definitions(conn, ARCHIVE_TABLE)
    # Vicidial's recipe drops AUTO_INCREMENT from the archive's lead_id: never put it back.
    wanted = {name: re.sub(r" AUTO_INCREMENT\b", "", d) for name, d in live.items()}
    # The archive's shared columns in order, as the clauses so far leave them: the first i
    # already stand where vicidial_list has them.
    order = [name for name in archive if name in wanted]
    clauses = []
    for i, (name, definition) in enumerate(wanted.items()):
        place = f"AFTER `{list(wanted)[i - 1]}`" if i else "FIRST"
        if name not in archive:
            clauses.append(f"ADD COLUMN `{name}` {definition} {place}")
        elif order[i] != name or archive[name] != definition:
            clauses.append(f"MODIFY COLUMN `{name}` {definition} {place}")
            order.remove(name)
        else:
            continue
        order.insert(i, name)
    if not clauses:
        return ""
    return f"ALTER TABLE `{ARCHIVE_TABLE}`\n  " + ",\n  ".join(clauses) + ";"


def _report_reused_ids(conn: Connection, report: CheckReport) -> None:
    """Name the lead IDs whose live and archived rows are two different leads (entry_date)."""
    bounds = conn.exec_driver_sql(
        f"SELECT MIN(lead_id), MAX(lead_id) FROM `{ARCHIVE_TABLE}`"  # noqa: S608 - a constant
    ).one()
    if bounds[0] is None:
        return
    reused: list[int] = []
    for start in range(int(bounds[0]), int(bounds[1]) + 1, REUSED_SCAN_RANGE):
        reused += [
            int(row[0])
            for row in conn.exec_driver_sql(
                f"SELECT a.lead_id FROM `{ARCHIVE_TABLE}` AS a JOIN `{LIVE_TABLE}` AS l"  # noqa: S608 - constants and ints
                " ON l.lead_id = a.lead_id"
                f" WHERE a.lead_id BETWEEN {start} AND {start + REUSED_SCAN_RANGE - 1}"
                " AND NOT (CAST(l.entry_date AS BINARY) <=> CAST(a.entry_date AS BINARY))"
            )
        ]
    if reused:
        shown = ", ".join(map(str, sorted(reused)[:REUSED_SHOWN]))
        more = f" and {len(reused) - REUSED_SHOWN} more" if len(reused) > REUSED_SHOWN else ""
        report.facts.append(
            f"reused lead IDs: {len(reused)} ({shown}{more}): the live lead and the archived one"
            " differ in entry_date, so they are two people; these are never refreshed or"
            " deleted (id_reused)"
        )


def _report_dialer_tables(conn: Connection, report: CheckReport) -> None:
    readable, unreadable = probe_in_use_tables(conn)
    for table in IN_USE_TABLES:
        if table in unreadable:
            report.problems.append(
                f"cannot read {table}: deletes are refused until SELECT on it is granted"
            )
        elif not any(hold.table == table for hold in readable):
            report.facts.append(f"{table} does not exist: its in-use check is skipped")
    checked = [hold.reason for hold in readable]
    skipped = [hold.reason for hold in HOLDS if hold not in readable]
    report.facts.append(
        "leads kept live while held by: "
        + (", ".join(checked) or "nothing")
        + (f" (not checked: {', '.join(skipped)})" if skipped else "")
    )
    if any(hold.table == CALLBACKS_TABLE for hold in readable):
        pending = conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM `{CALLBACKS_TABLE}`"  # noqa: S608 - a constant
            " WHERE status IN ('ACTIVE', 'LIVE')"
        ).scalar_one()
        report.facts.append(
            f"pending callbacks (ACTIVE or LIVE): {pending}; their leads stay live until the"
            " callback is done"
        )


def _report_custom_fields(tables: dict[str, tuple[str, str]], report: CheckReport) -> None:
    lists = sorted(int(t[7:]) for t in tables if re.fullmatch(r"custom_\d+", t))
    if lists:
        report.facts.append(
            "lists with custom fields: " + ", ".join(map(str, lists)) + " (their custom_<list_id>"
            " rows stay behind when a lead is archived, as in Vicidial, and a restored lead finds"
            " them again)"
        )


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


def _held_privileges(conn: Connection) -> tuple[set[str], dict[str, set[str]]]:
    """The current user's privileges on the whole database (or server), and table by table."""
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
    return held_everywhere, per_table


def _missing_privileges(
    tables: dict[str, tuple[str, str]], held_everywhere: set[str], per_table: dict[str, set[str]]
) -> list[str]:
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
