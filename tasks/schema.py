"""The live and archive tables as the batch finds them, checked before it touches a row.

``inspect_tables`` reads both tables' columns, engines and primary keys from
``information_schema`` (never assuming Vicidial's DDL, which lives in ``tasks.ddl`` for the tests,
the benchmarks and the demo) and refuses a pair the archive cannot hold exact copies in: a missing
table, a column missing or typed differently, another character set, a NULL the archive would
refuse, a primary key other than ``lead_id``. It also finds which of the dialer's holds on a lead
(``HOLDS``: queued, in a call, with an agent, previewed, a pending callback) can be read: a hold
whose table exists but cannot be read makes deletes impossible, never silently skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pymysql.constants import ER
from sqlalchemy import Connection, bindparam, text
from sqlalchemy.exc import DBAPIError

from tasks.errors import MissingTableError, SchemaMismatchError, is_transient, mysql_error_code

LIVE_TABLE = "vicidial_list"
ARCHIVE_TABLE = "vicidial_list_archive"


@dataclass(frozen=True, slots=True)
class Hold:
    """One way the dialer still needs a lead: a row of ``table`` whose ``column`` is its ID
    (and, when ``statuses`` is given, whose ``status`` is one of them).

    ``reason`` is what the report's ``held_by`` says.
    """

    reason: str
    table: str
    column: str
    statuses: tuple[str, ...] = ()

    def condition(self, alias: str) -> str:
        """SQL: the row ``alias`` names the lead whose ID is ``lead``."""
        return f"{alias}.`{self.column}` = {{lead}}{self.status_condition(alias)}"

    def status_condition(self, alias: str) -> str:
        """SQL: `` AND`` the row ``alias`` has one of the statuses; empty without statuses."""
        if not self.statuses:
            return ""
        listed = ", ".join(f"'{status}'" for status in self.statuses)
        return f" AND {alias}.`status` IN ({listed})"


# Every way the dialer can still need a lead (VICIDIAL.md): queued to be dialed, in a live call,
# with an agent, previewed by an agent before dialing, or promised a scheduled callback (the
# hopper promotes callbacks through a join on vicidial_list, so a deleted lead's never fires).
HOLDS = (
    Hold("hopper", "vicidial_hopper", "lead_id"),
    Hold("live_call", "vicidial_auto_calls", "lead_id"),
    Hold("agent", "vicidial_live_agents", "lead_id"),
    Hold("preview", "vicidial_live_agents", "preview_lead_id"),
    Hold("callback", "vicidial_callbacks", "lead_id", ("ACTIVE", "LIVE")),
)
HELD_BY = tuple(hold.reason for hold in HOLDS)
# The dialer tables those holds read, each once.
IN_USE_TABLES = tuple(dict.fromkeys(hold.table for hold in HOLDS))


@dataclass(frozen=True, slots=True)
class Column:
    """One column as ``information_schema`` describes it."""

    name: str
    data_type: str
    column_type: str
    nullable: bool
    charset: str | None

    @property
    def is_numeric(self) -> bool:
        """True for exact numeric types, compared as numbers rather than bytes."""
        return self.data_type in {
            "tinyint",
            "smallint",
            "mediumint",
            "int",
            "bigint",
            "decimal",
            "bit",
            "year",
        }


# MySQL 8 hides integer display widths and MariaDB shows them; they never change the data.
_DISPLAY_WIDTH = re.compile(r"^(tinyint|smallint|mediumint|int|bigint)\(\d+\)")


def _normalized_type(column_type: str) -> str:
    return _DISPLAY_WIDTH.sub(r"\1", column_type.lower())


@dataclass(frozen=True, slots=True)
class TablePair:
    """The live and archive tables' shared columns, checked compatible, and their engines."""

    columns: tuple[Column, ...]
    live_engine: str
    archive_engine: str
    # The holds whose tables exist and can be read: a lead any of them names is not deleted.
    holds: tuple[Hold, ...]
    dialect: str = "mysql"
    # Dialer tables that may exist but cannot be read (no SELECT): deletes must not run.
    unreadable_in_use: tuple[str, ...] = ()
    # The holds whose column leads an index of its table (how the check is best written).
    indexed_holds: frozenset[str] = frozenset()

    @property
    def in_use_tables(self) -> tuple[str, ...]:
        """The dialer tables the in-use check reads."""
        return tuple(dict.fromkeys(hold.table for hold in self.holds))

    @property
    def transactional(self) -> bool:
        """True when both tables support transactions and row locks (InnoDB)."""
        return self.live_engine == "InnoDB" and self.archive_engine == "InnoDB"


def read_columns(conn: Connection, table: str) -> dict[str, Column]:
    rows = conn.execute(
        text(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_SET_NAME"
            " FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :table"
            " ORDER BY ORDINAL_POSITION"
        ),
        {"table": table},
    ).all()
    return {
        r[0]: Column(
            name=r[0],
            data_type=r[1].lower(),
            column_type=r[2],
            nullable=r[3] == "YES",
            charset=r[4],
        )
        for r in rows
    }


def _engines(conn: Connection) -> dict[str, str]:
    rows = conn.execute(
        text(
            "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (:live, :archive)"
            " AND TABLE_TYPE = 'BASE TABLE'"
        ),
        {"live": LIVE_TABLE, "archive": ARCHIVE_TABLE},
    ).all()
    return {r[0]: r[1] for r in rows}


def _primary_keys(conn: Connection) -> dict[str, list[str]]:
    """Both tables' primary key columns, in one information_schema query."""
    keys: dict[str, list[str]] = {LIVE_TABLE: [], ARCHIVE_TABLE: []}
    rows = conn.execute(
        text(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (:live, :archive)"
            " AND INDEX_NAME = 'PRIMARY' ORDER BY TABLE_NAME, SEQ_IN_INDEX"
        ),
        {"live": LIVE_TABLE, "archive": ARCHIVE_TABLE},
    ).all()
    for table, column in rows:
        keys[table].append(column)
    return keys


def compare_columns(live: dict[str, Column], archive: dict[str, Column]) -> list[str]:
    """Describe every difference that would make a copy lossy or a comparison meaningless."""
    differences = [
        f"column `{name}` is missing from {ARCHIVE_TABLE}" for name in live if name not in archive
    ]
    differences += [
        f"column `{name}` is in {ARCHIVE_TABLE} but not in {LIVE_TABLE}"
        for name in archive
        if name not in live
    ]
    for name, lc in live.items():
        ac = archive.get(name)
        if ac is None:
            continue
        if _normalized_type(lc.column_type) != _normalized_type(ac.column_type):
            differences.append(
                f"column `{name}` is {lc.column_type} in {LIVE_TABLE}"
                f" but {ac.column_type} in {ARCHIVE_TABLE}"
            )
        if lc.charset != ac.charset:
            differences.append(
                f"column `{name}` uses character set {lc.charset} in {LIVE_TABLE}"
                f" but {ac.charset} in {ARCHIVE_TABLE}"
            )
        if lc.nullable and not ac.nullable:
            differences.append(
                f"column `{name}` allows NULL in {LIVE_TABLE} but not in {ARCHIVE_TABLE}"
            )
    return differences


def _sqlite_columns(conn: Connection, table: str) -> dict[str, Column]:
    rows = conn.exec_driver_sql(f"PRAGMA table_info({table})").all()
    return {
        r[1]: Column(
            name=r[1],
            data_type=r[2].split("(")[0].lower(),
            column_type=r[2],
            nullable=not r[3] and not r[5],
            charset=None,
        )
        for r in rows
    }


def _sqlite_can(conn: Connection, hold: Hold) -> bool:
    """Whether the embedded database's table has the columns ``hold`` reads."""
    try:
        conn.exec_driver_sql(_probe(hold))
    except DBAPIError:
        return False
    return True


def _inspect_sqlite(conn: Connection) -> TablePair:
    tables = {
        r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    for table in (LIVE_TABLE, ARCHIVE_TABLE):
        if table not in tables:
            raise MissingTableError(f"table {table} does not exist in the database")
    live = _sqlite_columns(conn, LIVE_TABLE)
    archive = _sqlite_columns(conn, ARCHIVE_TABLE)
    differences = compare_columns(live, archive)
    for table in (LIVE_TABLE, ARCHIVE_TABLE):
        keys = conn.exec_driver_sql(f"PRAGMA table_info({table})").all()
        if [r[1] for r in keys if r[5]] != ["lead_id"]:
            differences.append(f"{table} needs PRIMARY KEY (lead_id)")
    if differences:
        raise SchemaMismatchError(differences)
    return TablePair(
        columns=tuple(live.values()),
        live_engine="sqlite",
        archive_engine="sqlite",
        holds=tuple(hold for hold in HOLDS if hold.table in tables and _sqlite_can(conn, hold)),
        dialect="sqlite",
    )


def _indexed_columns(conn: Connection, tables: tuple[str, ...]) -> set[tuple[str, str]]:
    """``(table, column)`` pairs where the column is the first of one of the table's indexes."""
    if not tables:
        return set()
    rows = conn.execute(
        text(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN :tables AND SEQ_IN_INDEX = 1"
        ).bindparams(bindparam("tables", expanding=True)),
        {"tables": list(tables)},
    ).all()
    return {(str(table), str(column)) for table, column in rows}


def _probe(hold: Hold) -> str:
    """A statement that reads nothing but fails unless every column the hold uses is readable."""
    condition = hold.condition("t").format(lead=0)
    return f"SELECT 1 FROM `{hold.table}` AS t WHERE {condition} LIMIT 0"  # noqa: S608 - constants


def probe_in_use_tables(conn: Connection) -> tuple[tuple[Hold, ...], tuple[str, ...]]:
    """``(readable holds, unreadable tables)``; absent tables and columns are in neither.

    information_schema hides tables a user has no privilege on, exactly like absent ones, so
    each table is read instead: only "no such table" (which the server says only to a user who
    may know) means absent; anything else means "exists, perhaps, and cannot be checked". A
    missing column (an older Vicidial without ``preview_lead_id``) cannot name a lead: skipped.
    Trouble a retry may cure (the connection lost, a lock wait timeout) is raised as it is: it
    says nothing about the table, and a lost connection must not be used again.
    """
    every = " UNION ALL ".join(f"({_probe(hold)})" for hold in HOLDS)
    try:
        conn.exec_driver_sql(every)
    except DBAPIError as exc:
        if is_transient(exc):
            raise
        # One of them is absent or unreadable: ask hold by hold which.
    else:
        return HOLDS, ()
    readable: list[Hold] = []
    unreadable: list[str] = []
    for hold in HOLDS:
        try:
            conn.exec_driver_sql(_probe(hold))
        except DBAPIError as exc:
            if is_transient(exc):
                raise
            code = mysql_error_code(exc)
            if code not in (ER.NO_SUCH_TABLE, ER.BAD_FIELD_ERROR) and hold.table not in unreadable:
                unreadable.append(hold.table)
        else:
            readable.append(hold)
    return tuple(readable), tuple(unreadable)


def inspect_tables(conn: Connection) -> TablePair:
    """Read both tables' columns and engines; refuse when the archive cannot hold exact copies."""
    if conn.dialect.name == "sqlite":
        return _inspect_sqlite(conn)
    engines = _engines(conn)
    for table in (LIVE_TABLE, ARCHIVE_TABLE):
        if table not in engines:
            raise MissingTableError(f"table {table} does not exist in the database")
    live = read_columns(conn, LIVE_TABLE)
    archive = read_columns(conn, ARCHIVE_TABLE)
    differences = compare_columns(live, archive)
    if differences:
        raise SchemaMismatchError(differences)
    # Every statement finds its rows by primary key, and the archive's key is what makes a
    # second copy of a lead impossible.
    keys = _primary_keys(conn)
    keyless = [t for t in (LIVE_TABLE, ARCHIVE_TABLE) if keys[t] != ["lead_id"]]
    if keyless:
        raise SchemaMismatchError([f"{t} needs PRIMARY KEY (lead_id)" for t in keyless])
    readable, unreadable = probe_in_use_tables(conn)
    indexed = _indexed_columns(conn, tuple(dict.fromkeys(hold.table for hold in readable)))
    return TablePair(
        columns=tuple(live.values()),
        live_engine=engines[LIVE_TABLE],
        archive_engine=engines[ARCHIVE_TABLE],
        holds=readable,
        indexed_holds=frozenset(h.reason for h in readable if (h.table, h.column) in indexed),
        unreadable_in_use=unreadable,
    )
