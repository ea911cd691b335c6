"""Demo and test data: a dummy list of leads shaped like a real call center's.

The rows are deliberately awkward: NULLs in every nullable column, empty strings, zero dates,
accented and non-Latin names, trailing spaces and newlines, every ENUM value, and the whole range
of DATE, DATETIME and TIMESTAMP values Vicidial stores.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from tasks.archive import SQL_MODE
from tasks.schema import CALLED_SINCE_LAST_RESET, GENDERS

DEMO_LIST_ID = 9_990_001

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


def lead_rows(
    count: int, *, first_lead_id: int = 1, list_id: int = DEMO_LIST_ID, seed: int = 0
) -> Iterator[tuple[Any, ...]]:
    """Yield ``count`` awkward but valid vicidial_list rows, in ``LEAD_COLUMNS`` order."""
    rng = random.Random(seed)  # noqa: S311 - reproducible demo data, not secrets
    for n in range(count):
        lead_id = first_lead_id + n
        roll = rng.random()
        yield (
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


def insert_leads(conn: Connection, rows: Iterator[tuple[Any, ...]], chunk: int = 2000) -> int:
    """Insert rows from ``lead_rows`` into vicidial_list; returns how many."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None  # noqa: S101 - a live Connection always has one
    cursor = dbapi.cursor()
    if conn.dialect.name == "mysql":
        cursor.execute(f"SET SESSION sql_mode = '{SQL_MODE}'")
    columns = ", ".join(f"`{c}`" for c in LEAD_COLUMNS)
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
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
    dbapi.commit()
    return total


def seed_demo(
    conn: Connection, count: int = 500, *, list_id: int = DEMO_LIST_ID, first_lead_id: int = 1
) -> int:
    """Create a dummy list and load ``count`` leads into it; returns how many were loaded."""
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(
        "INSERT INTO vicidial_lists (list_id, list_name, campaign_id, active, list_description,"  # noqa: S608 - only the driver's placeholder is spliced in
        f" list_changedate) VALUES ({marker}, 'LeadArchive demo', 'DEMO', 'N',"
        f" 'Dummy leads loaded by leadarchive seed-demo', {marker})",
        (list_id, datetime.now().strftime("%Y-%m-%d %H:%M:%S")),
    )
    return insert_leads(
        conn, lead_rows(count, first_lead_id=first_lead_id, list_id=list_id, seed=list_id)
    )
