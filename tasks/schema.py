"""Vicidial's tables as its create script defines them (schema 1728), and the archive recipe.

The DDL is used by the tests, the demo seeder and ``leadarchive create-archive-table``; the batch
itself never assumes it and reads the live columns from ``information_schema`` instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from tasks.errors import MissingTableError, SchemaMismatchError

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
        condition = f"{alias}.`{self.column}` = {{lead}}"
        if self.statuses:
            listed = ", ".join(f"'{status}'" for status in self.statuses)
            condition += f" AND {alias}.`status` IN ({listed})"
        return condition


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

CALLED_SINCE_LAST_RESET = (
    "Y",
    "N",
    "Y1",
    "Y2",
    "Y3",
    "Y4",
    "Y5",
    "Y6",
    "Y7",
    "Y8",
    "Y9",
    "Y10",
    "D",
)
GENDERS = ("M", "F", "U")


def _enum(values: tuple[str, ...]) -> str:
    return "ENUM(" + ",".join(f"'{v}'" for v in values) + ")"


VICIDIAL_LIST_DDL = f"""
CREATE TABLE vicidial_list (
  lead_id INT(9) UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  entry_date DATETIME,
  modify_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  status VARCHAR(6),
  user VARCHAR(20),
  vendor_lead_code VARCHAR(20),
  source_id VARCHAR(50),
  list_id BIGINT(14) UNSIGNED NOT NULL DEFAULT '0',
  gmt_offset_now DECIMAL(4,2) DEFAULT '0.00',
  called_since_last_reset {_enum(CALLED_SINCE_LAST_RESET)} DEFAULT 'N',
  phone_code VARCHAR(10),
  phone_number VARCHAR(18) NOT NULL,
  title VARCHAR(4),
  first_name VARCHAR(30),
  middle_initial VARCHAR(1),
  last_name VARCHAR(30),
  address1 VARCHAR(100),
  address2 VARCHAR(100),
  address3 VARCHAR(100),
  city VARCHAR(50),
  state VARCHAR(2),
  province VARCHAR(50),
  postal_code VARCHAR(10),
  country_code VARCHAR(3),
  gender {_enum(GENDERS)} DEFAULT 'U',
  date_of_birth DATE,
  alt_phone VARCHAR(12),
  email VARCHAR(70),
  security_phrase VARCHAR(100),
  comments VARCHAR(255),
  called_count SMALLINT(5) UNSIGNED DEFAULT '0',
  last_local_call_time DATETIME,
  `rank` SMALLINT(5) NOT NULL DEFAULT '0',
  owner VARCHAR(20) DEFAULT '',
  entry_list_id BIGINT(14) UNSIGNED NOT NULL DEFAULT '0',
  INDEX phone_number (phone_number),
  INDEX list_id (list_id),
  INDEX called_since_last_reset (called_since_last_reset),
  INDEX status (status),
  INDEX gmt_offset_now (gmt_offset_now),
  INDEX postal_code (postal_code),
  INDEX last_local_call_time (last_local_call_time),
  INDEX `rank` (`rank`),
  INDEX owner (owner),
  INDEX phone_list (phone_number, list_id),
  INDEX list_phone (list_id, phone_number),
  INDEX list_status (list_id, status)
) ENGINE={{engine}}
"""

# Vicidial's documented recipe: same columns, engine and indexes, AUTO_INCREMENT dropped.
ARCHIVE_RECIPE = (
    "CREATE TABLE vicidial_list_archive LIKE vicidial_list",
    "ALTER TABLE vicidial_list_archive MODIFY lead_id INT(9) UNSIGNED NOT NULL",
)

# Minimal versions of the dialer's tables: only what marks a lead as queued or in a call.
IN_USE_DDL = (
    """
CREATE TABLE vicidial_hopper (
  hopper_id INT(9) UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  lead_id INT(9) UNSIGNED NOT NULL,
  campaign_id VARCHAR(8),
  status ENUM('READY','QUEUE','INCALL','DONE','HOLD','DNC','RHOLD','RQUEUE') DEFAULT 'READY',
  user VARCHAR(20),
  list_id BIGINT(14) UNSIGNED NOT NULL,
  INDEX lead_id (lead_id)
) ENGINE={engine}
""",
    """
CREATE TABLE vicidial_auto_calls (
  auto_call_id INT(9) UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  server_ip VARCHAR(15) NOT NULL DEFAULT '',
  campaign_id VARCHAR(20),
  status VARCHAR(10) DEFAULT 'SENT',
  lead_id INT(9) UNSIGNED NOT NULL,
  uniqueid VARCHAR(20),
  call_time DATETIME,
  INDEX lead_id (lead_id)
) ENGINE={engine}
""",
    """
CREATE TABLE vicidial_live_agents (
  live_agent_id INT(9) UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user VARCHAR(20),
  server_ip VARCHAR(15) NOT NULL DEFAULT '',
  status ENUM('READY','QUEUE','INCALL','PAUSED','CLOSER','MQUEUE') DEFAULT 'PAUSED',
  lead_id INT(9) UNSIGNED NOT NULL DEFAULT '0',
  campaign_id VARCHAR(8),
  INDEX lead_id (lead_id)
) ENGINE={engine}
""",
)

ADMIN_LOG_DDL = """
CREATE TABLE vicidial_admin_log (
  admin_log_id INT(9) UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  event_date DATETIME NOT NULL,
  user VARCHAR(20) NOT NULL,
  ip_address VARCHAR(15) NOT NULL,
  event_section VARCHAR(30) NOT NULL,
  event_type ENUM('ADD','COPY','LOAD','RESET','MODIFY','DELETE','SEARCH','LOGIN','LOGOUT',
                  'CLEAR','OVERRIDE','EXPORT','OTHER') DEFAULT 'OTHER',
  record_id VARCHAR(50) NOT NULL,
  event_code VARCHAR(255) NOT NULL,
  event_sql MEDIUMTEXT,
  event_notes MEDIUMTEXT,
  user_group VARCHAR(20) DEFAULT '---ALL---',
  INDEX user (user),
  INDEX event_section (event_section),
  INDEX record_id (record_id)
) ENGINE={engine}
"""

# The lists leads belong to (a minimal version: what the demo seeder fills in).
LISTS_DDL = """
CREATE TABLE vicidial_lists (
  list_id BIGINT(14) UNSIGNED NOT NULL PRIMARY KEY,
  list_name VARCHAR(30),
  campaign_id VARCHAR(8),
  active ENUM('Y','N'),
  list_description VARCHAR(255),
  list_changedate DATETIME
) ENGINE={engine}
"""

ALL_TABLES = (ARCHIVE_TABLE, LIVE_TABLE, *IN_USE_TABLES, "vicidial_admin_log", "vicidial_lists")


_SQLITE_REWRITES = (
    # The embedded default's SQLite has no engines, unsigned types, ENUMs or ON UPDATE.
    (re.compile(r"INT\(9\) UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY"), "INTEGER PRIMARY KEY"),
    (re.compile(r"INT\(9\) UNSIGNED NOT NULL PRIMARY KEY"), "INTEGER PRIMARY KEY"),
    (re.compile(r" UNSIGNED"), ""),
    (re.compile(r"ENUM\([^)]*\)"), "TEXT"),
    (re.compile(r" ON UPDATE CURRENT_TIMESTAMP"), ""),
    (re.compile(r"\) ENGINE=\{engine\}"), ")"),
)


def sqlite_ddl(mysql_ddl: str) -> str:
    """This module's MySQL DDL as SQLite DDL: same tables, columns and column names."""
    # Secondary indexes are left out: the demo's tables are small.
    lines = [line for line in mysql_ddl.splitlines() if not line.strip().startswith("INDEX ")]
    ddl = re.sub(r",\s*\n\)", "\n)", "\n".join(lines))
    for pattern, replacement in _SQLITE_REWRITES:
        ddl = pattern.sub(replacement, ddl)
    return ddl


def create_vicidial_tables(conn: Connection, engine: str = "MyISAM", archive: bool = True) -> None:
    """Create Vicidial's lead tables (and the archive, by Vicidial's recipe) on ``engine``."""
    if conn.dialect.name == "sqlite":
        for ddl in (VICIDIAL_LIST_DDL, *IN_USE_DDL, ADMIN_LOG_DDL, LISTS_DDL):
            conn.exec_driver_sql(sqlite_ddl(ddl))
        if archive:
            # No CREATE TABLE ... LIKE in SQLite: the same DDL under the archive's name.
            conn.exec_driver_sql(
                sqlite_ddl(VICIDIAL_LIST_DDL).replace(
                    "CREATE TABLE vicidial_list (", f"CREATE TABLE {ARCHIVE_TABLE} ("
                )
            )
        return
    if engine not in ("MyISAM", "InnoDB", "Aria"):
        raise ValueError(f"unsupported engine {engine!r}")
    conn.exec_driver_sql(VICIDIAL_LIST_DDL.format(engine=engine))
    for ddl in (*IN_USE_DDL, ADMIN_LOG_DDL, LISTS_DDL):
        conn.exec_driver_sql(ddl.format(engine=engine))
    if archive:
        create_archive_table(conn)


def create_archive_table(conn: Connection) -> None:
    """Run Vicidial's own recipe for ``vicidial_list_archive``."""
    for statement in ARCHIVE_RECIPE:
        conn.exec_driver_sql(statement)


def drop_vicidial_tables(conn: Connection) -> None:
    """Drop every table ``create_vicidial_tables`` makes (tests and the demo only)."""
    conn.exec_driver_sql("DROP TABLE IF EXISTS " + ", ".join(ALL_TABLES))


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


ER_NO_SUCH_TABLE = 1146


ER_BAD_FIELD_ERROR = 1054


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
    """
    every = " UNION ALL ".join(f"({_probe(hold)})" for hold in HOLDS)
    try:
        conn.exec_driver_sql(every)
    except DBAPIError:
        pass  # one of them is absent or unreadable: ask hold by hold which
    else:
        return HOLDS, ()
    readable: list[Hold] = []
    unreadable: list[str] = []
    for hold in HOLDS:
        try:
            conn.exec_driver_sql(_probe(hold))
        except DBAPIError as exc:
            args = getattr(exc.orig, "args", ())
            code = args[0] if args else None
            if code not in (ER_NO_SUCH_TABLE, ER_BAD_FIELD_ERROR) and hold.table not in unreadable:
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
    return TablePair(
        columns=tuple(live.values()),
        live_engine=engines[LIVE_TABLE],
        archive_engine=engines[ARCHIVE_TABLE],
        holds=readable,
        unreadable_in_use=unreadable,
    )
