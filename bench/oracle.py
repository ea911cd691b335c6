"""The comparison benchmark's judge of losses and corruption, owing nothing to the engine.

``bench/compare.py`` grades every tool, this service included, with this module, never with the
engine's own comparison (``tasks.archive`` is not imported here, and a test runs this module with
that import blocked). It works on the tables' bytes:

- **Before a run**, ``take_copy`` copies the rows to be archived (the old list) into a table of
  its own, ``oracle_before`` (``CREATE TABLE ... SELECT`` from ``vicidial_list``), and counts the
  other leads.
- **The writer** changes leads with ``WRITER_UPDATE`` only, and records each update that matched
  its row: (lead, sequence number, the time it wrote). ``written`` replays one such update on a
  row's bytes in Python, so every version a lead went through is known exactly.
- **After the run**, ``judge`` reads the copy, ``vicidial_list`` and ``vicidial_list_archive``
  with ``CAST(column AS BINARY)`` for every column, in a UTC session, and compares them in
  Python, byte for byte (``'Bob'`` is not ``'BOB'``, ``'x'`` is not ``'x '``, NULL is not ``''``).

For each lead of the copy, its versions are its copied row and then one more per recorded write;
the newest is what must survive:

- still live: the live row must be the newest version (else *corrupted*); an archive row it has
  must be one of its versions (else *corrupted*);
- gone from ``vicidial_list``: the archive row must be the newest version. An older version is a
  *stale* copy (the writer's update lost); no row is a *vanished* lead; any other bytes are a
  *corrupted* row.

Leads outside the list must all still be live (*others gone* counts the missing ones).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine

LIVE = "vicidial_list"
ARCHIVE = "vicidial_list_archive"
BEFORE = "oracle_before"  # the copy of the rows to be archived, taken before each run
CHUNK = 5000

# What the writer does: its one statement, mirrored by ``written`` below. Every value it sets is
# known to it (the time too: its own clock, in UTC), so that each version of a lead is known.
WRITER_UPDATE = (
    "UPDATE `vicidial_list` SET `user` = %s,"
    " called_count = IF(called_count < 65535, called_count + 1, 0),"
    " last_local_call_time = %s, modify_date = %s WHERE lead_id = %s"
)
WRITER_SESSION = "SET time_zone = '+00:00'"

Row = tuple[bytes | None, ...]


def token(seq: int) -> str:
    """The value the writer's update number ``seq`` stores in ``user``."""
    return f"w{seq}"


def writer_time() -> str:
    """The writer's clock, as it writes ``last_local_call_time`` and ``modify_date``."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def written(row: Row, columns: Sequence[str], seq: int, when: str) -> Row:
    """``row`` after ``WRITER_UPDATE`` number ``seq`` at ``when``, computed in Python."""
    values = list(row)
    index = {name: i for i, name in enumerate(columns)}
    count = values[index["called_count"]]
    # IF(NULL < 65535, ...) takes the ELSE branch: a NULL count becomes 0, as 65535 does.
    old = None if count is None else int(count)
    values[index["called_count"]] = str(old + 1 if old is not None and old < 65535 else 0).encode()
    values[index["user"]] = token(seq).encode()
    values[index["last_local_call_time"]] = when.encode()
    values[index["modify_date"]] = when.encode()
    return tuple(values)


@dataclass(slots=True)
class Copy:
    """What ``take_copy`` saw before the run."""

    leads: int  # rows copied to ``oracle_before``
    others: int  # leads of ``vicidial_list`` outside the copied list


@dataclass(slots=True)
class Verdict:
    """``judge``'s findings; the lists hold lead IDs, ascending."""

    checked: int = 0
    live: int = 0  # leads still in vicidial_list, whatever their bytes
    left_live: int = 0  # leads still live, with their newest version
    archived: int = 0  # leads gone from vicidial_list whose archive row is the newest version
    stale: list[int] = field(default_factory=list)  # gone; the archive has an older version
    vanished: list[int] = field(default_factory=list)  # gone; no archive row
    corrupted: list[int] = field(default_factory=list)  # a row that is no version of the lead
    others_gone: int = 0  # leads outside the list missing from vicidial_list

    @property
    def lost(self) -> list[int]:
        """Gone from ``vicidial_list`` without their newest version in the archive."""
        return sorted(self.stale + self.vanished)


@contextmanager
def utc_session(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        conn.exec_driver_sql("SET time_zone = '+00:00'")
        yield conn


def take_copy(engine: Engine, where: str) -> Copy:
    """Copy the rows of ``vicidial_list`` matching ``where`` to ``oracle_before``."""
    with utc_session(engine) as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{BEFORE}`")
        conn.exec_driver_sql(
            f"CREATE TABLE `{BEFORE}` (PRIMARY KEY (lead_id)) ENGINE=MyISAM"
            f" SELECT * FROM `{LIVE}` WHERE {where}"
        )
        leads = conn.exec_driver_sql(f"SELECT COUNT(*) FROM `{BEFORE}`").scalar_one()
        total = conn.exec_driver_sql(f"SELECT COUNT(*) FROM `{LIVE}`").scalar_one()
    return Copy(leads=int(leads), others=int(total) - int(leads))


def drop_copy(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{BEFORE}`")


def _columns(conn: Connection, table: str) -> list[str]:
    rows = conn.exec_driver_sql(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (table,),
    ).all()
    return [str(r[0]) for r in rows]


def _rows(
    conn: Connection, table: str, columns: Sequence[str], ids: Sequence[int]
) -> dict[int, Row]:
    cast = ", ".join(f"CAST(`{c}` AS BINARY)" for c in columns)
    listed = ",".join(str(int(i)) for i in ids)
    result = conn.exec_driver_sql(
        f"SELECT lead_id, {cast} FROM `{table}` WHERE lead_id IN ({listed})"
    )
    return {int(r[0]): tuple(_bytes(v) for v in r[1:]) for r in result}


def _bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"CAST(... AS BINARY) gave {type(value).__name__}, not bytes")


def judge(engine: Engine, copy: Copy, writes: Sequence[tuple[int, int, str]]) -> Verdict:
    """Every lead of ``oracle_before`` against ``vicidial_list`` and its archive, byte for byte.

    ``writes``: the writer's updates that matched a row, as (lead_id, seq, when).
    """
    by_lead: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for lead, seq, when in writes:
        by_lead[lead].append((seq, when))
    verdict = Verdict()
    with utc_session(engine) as conn:
        columns = _columns(conn, BEFORE)
        for table in (LIVE, ARCHIVE):
            if sorted(_columns(conn, table)) != sorted(columns):
                raise RuntimeError(f"{table}'s columns are not those of the copy")
        ids = [
            int(r[0])
            for r in conn.exec_driver_sql(f"SELECT lead_id FROM `{BEFORE}` ORDER BY lead_id")
        ]
        for offset in range(0, len(ids), CHUNK):
            part = ids[offset : offset + CHUNK]
            before = _rows(conn, BEFORE, columns, part)
            live = _rows(conn, LIVE, columns, part)
            archive = _rows(conn, ARCHIVE, columns, part)
            for lead in part:
                versions = [before[lead]]
                for seq, when in sorted(by_lead.get(lead, ())):
                    versions.append(written(versions[-1], columns, seq, when))
                _judge_lead(verdict, lead, versions, live.get(lead), archive.get(lead))
        outside = conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM `{LIVE}` AS l LEFT JOIN `{BEFORE}` AS b ON b.lead_id = l.lead_id"
            " WHERE b.lead_id IS NULL"
        ).scalar_one()
    verdict.checked = len(ids)
    verdict.others_gone = copy.others - int(outside)
    return verdict


def _judge_lead(
    verdict: Verdict, lead: int, versions: list[Row], live: Row | None, archived: Row | None
) -> None:
    newest = versions[-1]
    if live is not None:
        verdict.live += 1
        if live != newest or (archived is not None and archived not in versions):
            verdict.corrupted.append(lead)
        else:
            verdict.left_live += 1
    elif archived is None:
        verdict.vanished.append(lead)
    elif archived == newest:
        verdict.archived += 1
    elif archived in versions:
        verdict.stale.append(lead)
    else:
        verdict.corrupted.append(lead)
