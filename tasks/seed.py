"""Demo and test data: a dummy list of leads shaped like a real call center's.

The rows are deliberately awkward: NULLs in every nullable column, empty strings, zero dates,
accented and non-Latin names, trailing spaces and newlines, every ENUM value, and the whole range
of DATE, DATETIME and TIMESTAMP values Vicidial stores.

``seed_demo`` is the seed's test procedure and must be safe on a production Vicidial server:

- it only INSERTs, and never an ID that is taken: the list ID is in no table, and the lead IDs lie
  above every lead ID of vicidial_list and vicidial_list_archive and above every ID the database
  has handed out (AUTO_INCREMENT), so a dummy never overwrites a real lead, its archived history,
  or the call logs, callbacks and custom fields that other tables keep by lead_id;
- the list is inactive and its leads' phone numbers are fictional (NANP 555-0100..555-0199 with
  country code 1), so the dialer could never reach a person;
- the list's description records its lead ID range, and ``remove_demo`` deletes only rows of that
  list, within that range, with a fictional number; the list row goes last, once nothing is left.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from tasks.archive import SQL_MODE
from tasks.db import autocommit_dbapi
from tasks.ddl import CALLED_SINCE_LAST_RESET, GENDERS
from tasks.errors import SeedError
from tasks.schema import ARCHIVE_TABLE, LIVE_TABLE

# The first list ID seed-demo tries; it takes the first one from here that no table uses.
DEMO_LIST_ID = 9_990_001
DEMO_LIST_NAME = "LeadArchive demo"
LISTS_TABLE = "vicidial_lists"
# vicidial_list.lead_id is INT(9) UNSIGNED; vicidial_lists.list_id BIGINT(14) UNSIGNED.
MAX_LEAD_ID = 4_294_967_295
MAX_LIST_ID = 99_999_999_999_999

# Column order of every generated row (all 35 of vicidial_list, lead_id first).
LEAD_COLUMNS = (
    "lead_id",
    "entry_date",
    "modify_date",
    "status",
    "user",
    "vendor_lead_code",
    "source_id",
    "list_id",
    "gmt_offset_now",
    "called_since_last_reset",
    "phone_code",
    "phone_number",
    "title",
    "first_name",
    "middle_initial",
    "last_name",
    "address1",
    "address2",
    "address3",
    "city",
    "state",
    "province",
    "postal_code",
    "country_code",
    "gender",
    "date_of_birth",
    "alt_phone",
    "email",
    "security_phrase",
    "comments",
    "called_count",
    "last_local_call_time",
    "rank",
    "owner",
    "entry_list_id",
)

FIRST_NAMES = (
    "José",
    "Zoë",
    "Björn",
    "Łukasz",
    "Иван",
    "李",
    "محمد",
    "Nguyễn",
    "Ólafur",
    "O'Brien",
    "Anne-Marie",
    "Bob",
    "BOB",
    "bob",
    "Søren",
    "Ñandú",
    "Αλέξανδρος",
    "たろう",
    "",
    "Dave ",
)
LAST_NAMES = (
    "García",
    "Müller",
    "Smith",
    "Ó Súilleabháin",
    "Петров",
    "王",
    "Nowak",
    "D'Angelo",
    "van der Berg",
    "Øster",
    "",
    "Lee\t",
    "Back\\slash",
    'Quote"d',
)
STATUSES = ("NEW", "NA", "B", "DROP", "SALE", "DNC", "CALLBK", "A", "N", "PU", "XFER", "ADC", "")
CITIES = ("Miami", "São Paulo", "Montréal", "Zürich", "Kraków", "東京", "", "New York")
COMMENTS = (
    "",
    "call back after 5pm",
    "ends with a newline\n",
    "tab\tinside",
    "trailing space ",
    "unicode ✓ — «quoted»",
    "x' OR '1'='1",
    "multi\r\nline",
    "100% done; DROP TABLE x;",
)
STREETS = ("Main St", "Calle Mayor", "Rue d\u2019\u00c9t\u00e9", "Hauptstra\u00dfe")
ZERO_DATETIME = "0000-00-00 00:00:00"


def _maybe(rng: random.Random, value: Any, null_rate: float = 0.15) -> Any:
    return None if rng.random() < null_rate else value


def _datetime(rng: random.Random, start: int = 2005, end: int = 2026) -> str:
    base = datetime(start, 1, 1)
    span = (datetime(end, 1, 1) - base).total_seconds()
    return (base + timedelta(seconds=rng.randrange(int(span)))).strftime("%Y-%m-%d %H:%M:%S")


# Area codes in service; with exchange 555 and lines 0100-0199, which NANPA reserves for fiction,
# no number in any of them reaches a person.
AREA_CODES = ("201", "212", "305", "312", "415", "512", "617", "702", "813", "916")
# The same numbers as a LIKE pattern: area code, 55501, two digits.
FICTIONAL_PHONE_LIKE = "___55501__"
_PHONE_CODE, _PHONE, _ALT_PHONE = (
    LEAD_COLUMNS.index(c) for c in ("phone_code", "phone_number", "alt_phone")
)


def fictional_phone(number: str) -> str:
    """A fictional NANP number (555-01xx), derived from ``number``'s digits."""
    digits = int(number)
    return f"{AREA_CODES[digits % len(AREA_CODES)]}55501{digits % 100:02d}"


def _with_fictional_phones(row: tuple[Any, ...]) -> tuple[Any, ...]:
    values = list(row)
    # Country code 1: with another one (44, 52, ...) a 555 number could be a real subscriber's.
    values[_PHONE_CODE] = "1"
    values[_PHONE] = fictional_phone(values[_PHONE])
    if values[_ALT_PHONE] is not None:
        values[_ALT_PHONE] = fictional_phone(values[_ALT_PHONE])
    return tuple(values)


def lead_rows(
    count: int,
    *,
    first_lead_id: int = 1,
    list_id: int = DEMO_LIST_ID,
    seed: int = 0,
    fictional_phones: bool = False,
) -> Iterator[tuple[Any, ...]]:
    """Yield ``count`` awkward but valid vicidial_list rows, in ``LEAD_COLUMNS`` order.

    ``fictional_phones`` replaces the phone numbers (555-01xx, country code 1) and nothing else:
    every other value is the same as without it.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible demo data, not secrets
    for n in range(count):
        lead_id = first_lead_id + n
        roll = rng.random()
        row = (
            lead_id,
            ZERO_DATETIME if roll < 0.03 else _maybe(rng, _datetime(rng)),
            # TIMESTAMP: 1970..2038 only, never NULL in this NOT NULL column.
            _datetime(rng, 1999, 2037),
            _maybe(rng, rng.choice(STATUSES)),
            _maybe(rng, rng.choice(("VDAD", "6666", "agent007", ""))),
            _maybe(rng, f"V{rng.randrange(10**9):09d}"),
            _maybe(rng, rng.choice(("web", "import-2024", "", "Fuente_ñ"))),
            list_id,
            _maybe(rng, rng.choice(("-5.00", "-8.00", "5.50", "0.00", "-3.50", "12.75"))),
            _maybe(rng, CALLED_SINCE_LAST_RESET[n % len(CALLED_SINCE_LAST_RESET)], 0.05),
            _maybe(rng, rng.choice(("1", "44", "52", "91"))),
            f"{rng.randrange(2_000_000_000, 9_999_999_999)}",
            _maybe(rng, rng.choice(("Mr", "Ms", "Dr", "", "Sra"))),
            _maybe(rng, rng.choice(FIRST_NAMES)),
            _maybe(rng, rng.choice(("A", "Ñ", "", "z"))),
            _maybe(rng, rng.choice(LAST_NAMES)),
            _maybe(rng, f"{rng.randrange(1, 9999)} {rng.choice(STREETS)}"),
            _maybe(rng, rng.choice(("Apt 4", "", "Piso 2º")), 0.5),
            _maybe(rng, "", 0.8),
            _maybe(rng, rng.choice(CITIES)),
            _maybe(rng, rng.choice(("FL", "NY", "QC", "", "SP"))),
            _maybe(rng, rng.choice(("", "Québec", "Bavaria")), 0.5),
            _maybe(rng, f"{rng.randrange(100000):05d}"),
            _maybe(rng, rng.choice(("USA", "CAN", "BRA", "", "POL"))),
            _maybe(rng, GENDERS[n % len(GENDERS)], 0.05),
            "0000-00-00" if roll > 0.97 else _maybe(rng, _datetime(rng, 1930, 2005)[:10], 0.4),
            _maybe(rng, f"{rng.randrange(10**11, 10**12)}", 0.5),
            _maybe(rng, rng.choice(("a@example.com", "ñandú@example.org", "", "x@y.z")), 0.4),
            _maybe(rng, rng.choice(("", "blue", "Ünïcödé phrase")), 0.5),
            _maybe(rng, rng.choice(COMMENTS), 0.3),
            _maybe(rng, rng.choice((0, 1, 7, 65535)), 0.05),
            ZERO_DATETIME if roll > 0.98 else _maybe(rng, _datetime(rng), 0.3),
            rng.choice((0, 0, 5, -5, 99, -32768, 32767)),
            _maybe(rng, rng.choice(("", "agent1", "Øwner")), 0.1),
            rng.choice((0, list_id)),
        )
        yield _with_fictional_phones(row) if fictional_phones else row


def _marker(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _insert_rows(
    cursor: Any, marker: str, rows: Iterable[tuple[Any, ...]], chunk: int = 2000
) -> int:
    columns = ", ".join(f"`{c}`" for c in LEAD_COLUMNS)
    placeholders = ", ".join([marker] * len(LEAD_COLUMNS))
    statement = f"INSERT INTO vicidial_list ({columns}) VALUES ({placeholders})"  # noqa: S608
    total = 0
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= chunk:
            cursor.executemany(statement, batch)
            total += len(batch)
            batch.clear()
    if batch:
        cursor.executemany(statement, batch)
        total += len(batch)
    return total


def insert_leads(conn: Connection, rows: Iterator[tuple[Any, ...]], chunk: int = 2000) -> int:
    """Insert rows from ``lead_rows`` into vicidial_list; returns how many."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None  # noqa: S101 - a live Connection always has one
    cursor = dbapi.cursor()
    if conn.dialect.name == "mysql":
        cursor.execute(f"SET SESSION sql_mode = '{SQL_MODE}'")
    total = _insert_rows(cursor, _marker(conn), rows, chunk)
    dbapi.commit()
    return total


@dataclass(frozen=True, slots=True)
class DemoList:
    """A list seed-demo made, and the lead IDs it loaded: every one from first to last."""

    list_id: int
    first_lead_id: int
    last_lead_id: int

    @property
    def count(self) -> int:
        return self.last_lead_id - self.first_lead_id + 1

    @property
    def lead_ids(self) -> range:
        return range(self.first_lead_id, self.last_lead_id + 1)

    def description(self) -> str:
        """vicidial_lists.list_description (VARCHAR(255)): the mark ``remove_demo`` reads."""
        return (
            f"LeadArchive seed-demo: dummy leads {self.first_lead_id}-{self.last_lead_id},"
            f" fictional 555-01xx numbers; remove with: leadarchive seed-demo --remove"
            f" {self.list_id}"
        )


_DESCRIPTION = re.compile(r"LeadArchive seed-demo: dummy leads (\d+)-(\d+),")


def parse_demo_list(list_id: int, name: str | None, description: str | None) -> DemoList | None:
    """The demo list a vicidial_lists row describes, or None when seed-demo did not make it."""
    match = _DESCRIPTION.match(description or "")
    if name != DEMO_LIST_NAME or match is None:
        return None
    first, last = int(match[1]), int(match[2])
    return DemoList(list_id, first, last) if 0 < first <= last else None


def _one(cursor: Any, statement: str, params: tuple[Any, ...] = ()) -> Any:
    # Without parameters, no placeholder substitution: a LIKE's % stays as it is.
    if params:
        cursor.execute(statement, params)
    else:
        cursor.execute(statement)
    row = cursor.fetchone()
    return None if row is None else row[0]


def _has_archive(cursor: Any, sqlite: bool) -> bool:
    if sqlite:
        found = _one(
            cursor,
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            (ARCHIVE_TABLE,),
        )
    else:
        found = _one(
            cursor,
            "SELECT 1 FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            (ARCHIVE_TABLE,),
        )
    return found is not None


def _custom_field_lists(cursor: Any, sqlite: bool) -> set[int]:
    """List IDs that have a ``custom_<list_id>`` table: once used, even if the list is gone."""
    if sqlite:
        cursor.execute(
            "SELECT name FROM sqlite_master"
            " WHERE type = 'table' AND name LIKE 'custom\\_%' ESCAPE '\\'"
        )
    else:
        cursor.execute("SHOW TABLES LIKE 'custom\\\\_%'")
    names = [str(row[0]) for row in cursor.fetchall()]
    return {int(n[7:]) for n in names if n[7:].isdigit()}


def _list_id_uses(
    cursor: Any, marker: str, list_id: int, tables: tuple[str, ...], custom: set[int]
) -> list[str]:
    """Where ``list_id`` is in use already (each lookup is on an index)."""
    uses = [
        table
        for table in tables
        if _one(cursor, f"SELECT 1 FROM {table} WHERE list_id = {marker} LIMIT 1", (list_id,))  # noqa: S608 - table names are this module's constants
        is not None
    ]
    if list_id in custom:
        uses.append(f"custom_{list_id}")
    return uses


def _pick_list_id(
    cursor: Any, marker: str, wanted: int | None, tables: tuple[str, ...], custom: set[int]
) -> int:
    if wanted is not None:
        uses = _list_id_uses(cursor, marker, wanted, tables, custom)
        if uses:
            raise SeedError(
                f"list ID {wanted} is already used (in {', '.join(uses)}): nothing was changed;"
                " leave out --list-id and seed-demo picks a free one"
            )
        return wanted
    for candidate in range(DEMO_LIST_ID, DEMO_LIST_ID + 1000):
        if not _list_id_uses(cursor, marker, candidate, tables, custom):
            return candidate
    raise SeedError(f"no free list ID from {DEMO_LIST_ID} on: pass one with --list-id")


def _highest_lead_id(cursor: Any, sqlite: bool, archive: bool) -> int:
    """The highest lead ID either table holds or the database has ever handed out."""
    highest = [_one(cursor, "SELECT MAX(lead_id) FROM vicidial_list") or 0]
    if archive:
        highest.append(_one(cursor, f"SELECT MAX(lead_id) FROM {ARCHIVE_TABLE}") or 0)  # noqa: S608
    if not sqlite:
        # AUTO_INCREMENT is above IDs whose leads were deleted without an archive copy: their
        # call logs, recordings and callbacks still name them, so a dummy must not take one.
        cursor.execute(f"SHOW TABLE STATUS WHERE Name = '{LIVE_TABLE}'")
        status = cursor.fetchone()
        names = [d[0] for d in cursor.description]
        next_id = status[names.index("Auto_increment")] if status else None
        highest.append(int(next_id) - 1 if next_id else 0)
    return int(max(highest))


def _plan(
    cursor: Any,
    marker: str,
    count: int,
    wanted: int | None,
    *,
    sqlite: bool,
    archive: bool,
    custom: set[int],
) -> DemoList:
    """Pick the list ID and the lead ID range (reads only: a refusal changes nothing)."""
    tables = (LISTS_TABLE, LIVE_TABLE, *((ARCHIVE_TABLE,) if archive else ()))
    list_id = _pick_list_id(cursor, marker, wanted, tables, custom)
    first = _highest_lead_id(cursor, sqlite, archive) + 1
    demo = DemoList(list_id, first, first + count - 1)
    if demo.last_lead_id > MAX_LEAD_ID:
        raise SeedError(
            f"{count} leads from lead ID {first} would pass {MAX_LEAD_ID}: nothing was changed"
        )
    return demo


def _insert_list(cursor: Any, marker: str, demo: DemoList) -> None:
    cursor.execute(
        f"INSERT INTO {LISTS_TABLE} (list_id, list_name, campaign_id, active, list_description,"  # noqa: S608 - constants and the driver's placeholders only
        f" list_changedate) VALUES ({marker}, {marker}, 'DEMO', 'N', {marker}, {marker})",
        (
            demo.list_id,
            DEMO_LIST_NAME,
            demo.description(),
            datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        ),
    )


def _partly_loaded(demo: DemoList, exc: Exception) -> SeedError:
    return SeedError(
        f"created demo list {demo.list_id} but could not load all its leads ({exc});"
        f" remove what was loaded with: leadarchive seed-demo --remove {demo.list_id}"
    )


def _demo_rows(demo: DemoList, first_lead_id: int, count: int) -> Iterator[tuple[Any, ...]]:
    return lead_rows(
        count,
        first_lead_id=first_lead_id,
        list_id=demo.list_id,
        seed=first_lead_id,
        fictional_phones=True,
    )


def seed_demo(conn: Connection, count: int = 500, *, list_id: int | None = None) -> DemoList:
    """Create an inactive demo list and load ``count`` dummy leads above every lead ID in use.

    ``list_id`` must be in no table (refused otherwise); by default the first free one from
    ``DEMO_LIST_ID`` on is taken. A refusal changes nothing.
    """
    if count < 1:
        raise SeedError("the count of demo leads must be at least 1: nothing was changed")
    if list_id is not None and not 0 < list_id <= MAX_LIST_ID:
        raise SeedError(f"list ID {list_id} is outside 1..{MAX_LIST_ID}: nothing was changed")
    cursor = autocommit_dbapi(conn, SeedError, "seed-demo").cursor()
    marker = _marker(conn)
    if conn.dialect.name == "sqlite":
        # The embedded demo: IMMEDIATE takes SQLite's write lock before the reads, and the whole
        # seed is one transaction.
        cursor.execute("BEGIN IMMEDIATE")
        try:
            demo = _plan(
                cursor,
                marker,
                count,
                list_id,
                sqlite=True,
                archive=_has_archive(cursor, True),
                custom=_custom_field_lists(cursor, True),
            )
            _insert_list(cursor, marker, demo)
            _insert_rows(cursor, marker, _demo_rows(demo, demo.first_lead_id, count))
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")
        return demo
    cursor.execute(f"SET SESSION sql_mode = '{SQL_MODE}'")
    with contextlib.suppress(conn.dialect.loaded_dbapi.Error):
        # MySQL 8 caches table statistics, AUTO_INCREMENT among them, for a day by default.
        # (MariaDB has no such cache, nor this variable.)
        cursor.execute("SET SESSION information_schema_stats_expiry = 0")
    custom = _custom_field_lists(cursor, False)
    archive = _has_archive(cursor, False)
    # Locked so that no dialer load takes an ID between the reads and the inserts. Short: index
    # lookups and two one-row inserts; the rest is loaded after UNLOCK.
    locks = [f"{LIVE_TABLE} WRITE", f"{LISTS_TABLE} WRITE"]
    if archive:
        locks.append(f"{ARCHIVE_TABLE} READ")
    cursor.execute("LOCK TABLES " + ", ".join(locks))
    try:
        demo = _plan(cursor, marker, count, list_id, sqlite=False, archive=archive, custom=custom)
        _insert_list(cursor, marker, demo)
        # The range's last lead goes in first: an explicit lead_id above AUTO_INCREMENT moves
        # AUTO_INCREMENT past it (MyISAM and InnoDB alike), so from here on no dialer load is
        # given an ID inside the range, and the rest can be loaded without holding the lock.
        try:
            _insert_rows(cursor, marker, _demo_rows(demo, demo.last_lead_id, 1))
        except Exception as exc:
            raise _partly_loaded(demo, exc) from exc
    finally:
        cursor.execute("UNLOCK TABLES")
    try:
        _insert_rows(cursor, marker, _demo_rows(demo, demo.first_lead_id, count - 1))
    except Exception as exc:
        raise _partly_loaded(demo, exc) from exc
    return demo


@dataclass(frozen=True, slots=True)
class Removal:
    """What ``remove_demo`` deleted, and how many rows of the list it left (not its dummies)."""

    demo: DemoList
    live_deleted: int
    archive_deleted: int
    left: int

    @property
    def list_removed(self) -> bool:
        return self.left == 0


def remove_demo(conn: Connection, list_id: int, chunk: int = 2000) -> Removal:
    """Delete a demo list's dummy leads from both tables, then the list once it is empty.

    Refused (nothing changed) unless ``list_id`` is a list seed-demo made and it is inactive.
    Only rows of that list, inside its recorded lead ID range, with a fictional number go.
    """
    cursor = autocommit_dbapi(conn, SeedError, "seed-demo").cursor()
    marker = _marker(conn)
    cursor.execute(
        f"SELECT list_name, active, list_description FROM {LISTS_TABLE} WHERE list_id = {marker}",  # noqa: S608
        (list_id,),
    )
    row = cursor.fetchone()
    if row is None:
        raise SeedError(f"there is no list {list_id}: nothing was changed")
    name, active, description = row
    demo = parse_demo_list(list_id, name, description)
    if demo is None:
        raise SeedError(
            f"list {list_id} ({name!r}) is not a LeadArchive demo list: nothing was changed"
        )
    if active == "Y":
        raise SeedError(
            f"list {list_id} is active: set it inactive first, so that the dialer no longer"
            " calls its leads; nothing was changed"
        )
    tables = [LIVE_TABLE]
    if _has_archive(cursor, conn.dialect.name == "sqlite"):
        tables.append(ARCHIVE_TABLE)
    deleted: dict[str, int] = {}
    for table in tables:
        deleted[table] = 0
        # In chunks of lead IDs: a MyISAM DELETE locks the whole table while it runs.
        for low in range(demo.first_lead_id, demo.last_lead_id + 1, chunk):
            high = min(low + chunk - 1, demo.last_lead_id)
            cursor.execute(
                f"DELETE FROM {table} WHERE lead_id BETWEEN {marker} AND {marker}"  # noqa: S608
                f" AND list_id = {marker} AND phone_number LIKE '{FICTIONAL_PHONE_LIKE}'",
                (low, high, list_id),
            )
            deleted[table] += cursor.rowcount
    left = sum(
        int(_one(cursor, f"SELECT COUNT(*) FROM {table} WHERE list_id = {marker}", (list_id,)))  # noqa: S608
        for table in tables
    )
    if left == 0:
        cursor.execute(
            f"DELETE FROM {LISTS_TABLE} WHERE list_id = {marker} AND list_name = {marker}"  # noqa: S608
            f" AND list_description = {marker}",
            (list_id, name, description),
        )
    return Removal(demo, deleted[LIVE_TABLE], deleted.get(ARCHIVE_TABLE, 0), left)
