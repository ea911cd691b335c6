"""Archive by selection: which live leads a selection's filters pick, walked in lead_id order.

A selection job (issue 14) archives "every lead of lists 1001-1004 not called since 2024" batch by
batch; this module decides which leads, and reads them a window of lead IDs at a time.

Invariants:

- at least one filter; filters combine with AND, the values of one filter with OR;
- ``campaign_ids`` picks the leads of the lists whose ``vicidial_lists.campaign_id`` is one of
  them; ``last_call_before`` picks leads last called (``last_local_call_time``) before it, and a
  never-called lead (NULL) only if its ``entry_date`` is before it too; a NULL ``entry_date`` or
  ``status`` meets no filter on it;
- dates are local times of the office-hours zone, the zone Vicidial writes its DATETIME columns
  in: a date means its midnight, an aware datetime is converted to that zone first;
- text is compared as the database compares it (Vicidial's utf8_unicode_ci: ``sale`` is ``SALE``);
- the walk reads the live table one window of the primary key at a time (``lead_id > after AND
  lead_id <= after + window``), never the whole table in one statement, so each read holds
  MyISAM's table lock about as long as a chunk does; the position it returns is the checkpoint:
  resuming from it neither skips nor repeats a lead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from time import perf_counter, sleep
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    column,
    exists,
    func,
    literal_column,
    or_,
    select,
    table,
)

from tasks.schema import ARCHIVE_TABLE, LIVE_TABLE
from tasks.scopes import Lists

# Read this many lead IDs of the primary key per statement (about 2 ms of a MyISAM read lock on
# a 1M-lead table); a batch takes as many windows as it needs to fill up.
WINDOW = 5_000
SAMPLE = 20
# The count waits this many times as long as each window's read took before the next (see count).
PAUSE = 1.0
# A selection an index alone can count is counted in one statement when it is at most this many
# leads (reading 250,000 entries of Vicidial's list_status index took 30 ms on a 2-core VM).
INDEX_COUNT = 250_000

ListId = Annotated[int, Field(ge=0, le=2**63 - 1)]
# Vicidial's widths: vicidial_list.status is VARCHAR(6), vicidial_lists.campaign_id VARCHAR(8).
Status = Annotated[str, Field(min_length=1, max_length=6)]
CampaignId = Annotated[str, Field(min_length=1, max_length=8)]


def _moment(value: object) -> object:
    """A filter's date from its JSON text: ISO 8601 only (``2024-01-01``, ``2024-01-01T08:00``,
    ``2024-01-01T08:00:00-05:00``); a number (pydantic would read a Unix time) or any other
    text is refused. A date or datetime given in Python passes as it is."""
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a date (2024-01-01) or a datetime (2024-01-01T08:00:00) as text")
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            "must be an ISO 8601 date (2024-01-01) or datetime (2024-01-01T08:00:00-05:00)"
        ) from None


# A date (its midnight) or a datetime, as JSON text; kept as given (a date stays a date).
Moment = Annotated[date | datetime, BeforeValidator(_moment)]

_live = table(
    LIVE_TABLE,
    column("lead_id"),
    column("list_id"),
    column("status"),
    column("entry_date"),
    column("last_local_call_time"),
)
_lists = table("vicidial_lists", column("list_id"), column("campaign_id"))
_archive = table(ARCHIVE_TABLE, column("lead_id"))


class SelectionFilters(BaseModel):
    """Which live leads a selection picks (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # At most so many values: the largest selection still fits in the API's body limit (64 KB by
    # default), even with every character of its text written as a JSON escape.
    list_ids: list[ListId] | None = Field(default=None, min_length=1, max_length=1000)
    campaign_ids: list[CampaignId] | None = Field(default=None, min_length=1, max_length=100)
    statuses: list[Status] | None = Field(default=None, min_length=1, max_length=100)
    entry_date_before: Moment | None = Field(
        default=None, description="entry_date before this (a date: its midnight)"
    )
    last_call_before: Moment | None = Field(
        default=None,
        description="last_local_call_time before this; a never-called lead only if its"
        " entry_date is before it too",
    )

    @model_validator(mode="after")
    def _at_least_one(self) -> Self:
        if all(getattr(self, name) is None for name in SelectionFilters.model_fields):
            raise ValueError(
                "at least one filter: list_ids, campaign_ids, statuses, entry_date_before"
                " or last_call_before"
            )
        return self

    def condition(self, zone: ZoneInfo, lists: Lists | None = None) -> ColumnElement[bool]:
        """The filters as one SQL condition on the live table (bound parameters only); with
        ``lists`` (a scoped key's), only leads of those lists."""
        live = _live.c
        found: list[ColumnElement[bool]] = []
        if lists is not None:
            found.append(or_(*(live.list_id.between(low, high) for low, high in lists.ranges)))
        if self.list_ids is not None:
            found.append(live.list_id.in_(self.list_ids))
        if self.campaign_ids is not None:
            campaign_lists = select(_lists.c.list_id).where(
                _lists.c.campaign_id.in_(self.campaign_ids)
            )
            found.append(live.list_id.in_(campaign_lists))
        if self.statuses is not None:
            found.append(live.status.in_(self.statuses))
        if self.entry_date_before is not None:
            found.append(live.entry_date < _local(self.entry_date_before, zone))
        if self.last_call_before is not None:
            before = _local(self.last_call_before, zone)
            never_called = and_(live.last_local_call_time.is_(None), live.entry_date < before)
            found.append(or_(live.last_local_call_time < before, never_called))
        return and_(*found)


def _local(moment: datetime | date, zone: ZoneInfo) -> str:
    """A filter's date as the local DATETIME text it is compared with."""
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, time())
    elif moment.tzinfo is not None:
        try:
            moment = moment.astimezone(zone).replace(tzinfo=None)
        except OverflowError:  # within hours of year 1 or 9999: before or after any lead
            moment = datetime.min if moment.year == 1 else datetime.max
    if moment.microsecond and moment < datetime.max.replace(microsecond=0):
        # DATETIME holds whole seconds: before 08:30:15.5 is before 08:30:16.
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    # Not strftime: its %Y writes year 1 as "1", which MariaDB reads as 2001.
    return moment.isoformat(sep=" ", timespec="seconds")


# The column each text filter is compared with: its character set says which values it can hold.
_TEXT_COLUMNS = {
    "statuses": (LIVE_TABLE, "status"),
    "campaign_ids": ("vicidial_lists", "campaign_id"),
}


def storable(conn: Connection, filters: SelectionFilters) -> SelectionFilters:
    """The filters without the text values their columns cannot hold (a 4-byte character in
    Vicidial's ``utf8`` columns, anything beyond Latin-1 in an old install's ``latin1`` ones):
    such a value is no lead's status or campaign, and sent to MariaDB it
    would fail the statement ("illegal mix of collations"). A filter left with no value matches
    no lead. (A lone surrogate never gets here: the request model refuses it.)"""
    charsets: dict[str, str] = {}
    if conn.dialect.name == "mysql":
        for name, (table_name, column_name) in _TEXT_COLUMNS.items():
            found = conn.exec_driver_sql(
                "SELECT CHARACTER_SET_NAME FROM information_schema.COLUMNS"
                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND COLUMN_NAME = %s",
                (table_name, column_name),
            ).scalar()
            charsets[name] = str(found or "")
    kept: dict[str, list[str]] = {}
    for name in _TEXT_COLUMNS:
        values: list[str] | None = getattr(filters, name)
        if values is not None:
            kept[name] = [value for value in values if _fits(value, charsets.get(name, ""))]
    return filters.model_copy(update=kept)


def _fits(value: str, charset: str) -> bool:
    """Whether a column of this MariaDB character set can hold ``value``."""
    if charset in ("utf8", "utf8mb3"):
        return all(ord(char) <= 0xFFFF for char in value)
    if charset == "latin1":  # MariaDB's latin1 is Windows-1252
        try:
            value.encode("cp1252")
        except UnicodeEncodeError:
            return False
    if charset == "ascii":
        return value.isascii()
    return True


@dataclass(frozen=True, slots=True)
class Batch:
    """The next leads of a walk: their IDs, and where the walk stands after them."""

    lead_ids: list[int]
    # Every lead ID up to this one has been read: the checkpoint to resume from.
    position: int
    # Nothing is left above ``position`` (at the time of the read).
    done: bool


def highest_lead_id(conn: Connection, until: int | None = None) -> int:
    """The highest lead_id in vicidial_list now (0 when it is empty), at most ``until``."""
    top: Any = conn.execute(select(func.max(_live.c.lead_id))).scalar()
    highest = int(top or 0)
    return highest if until is None else min(highest, until)


def archived_and_gone(conn: Connection, lead_ids: list[int]) -> int:
    """How many of ``lead_ids`` have an archive copy and are no longer in vicidial_list."""
    if not lead_ids:
        return 0
    gone: Any = conn.execute(
        select(func.count())
        .select_from(_archive)
        .where(
            _archive.c.lead_id.in_(lead_ids),
            ~exists().where(_live.c.lead_id == _archive.c.lead_id),
        )
    ).scalar()
    return int(gone or 0)


def next_batch(
    conn: Connection,
    filters: SelectionFilters,
    zone: ZoneInfo,
    after: int,
    limit: int,
    *,
    lists: Lists | None = None,
    until: int | None = None,
    window: int = WINDOW,
) -> Batch:
    """The next (at most) ``limit`` selected leads with a lead_id above ``after``, in order
    (with ``lists``, only leads of those lists; with ``until``, none above that lead_id)."""
    condition = filters.condition(zone, lists)
    highest = highest_lead_id(conn, until)
    found: list[int] = []
    position = after
    while len(found) < limit and position < highest:
        upper = min(position + window, highest)
        wanted = limit - len(found)
        rows = conn.execute(
            select(_live.c.lead_id)
            .where(_live.c.lead_id > position, _live.c.lead_id <= upper, condition)
            .order_by(_live.c.lead_id)
            .limit(wanted)
        ).all()
        found += [int(row[0]) for row in rows]
        # A full batch may end inside the window: the rest of it is read next time.
        position = found[-1] if len(rows) == wanted else upper
    return Batch(found, position, position >= highest)


def count(
    conn: Connection,
    filters: SelectionFilters,
    zone: ZoneInfo,
    *,
    lists: Lists | None = None,
    until: int | None = None,
    window: int = WINDOW,
    pause: float = PAUSE,
    sample: bool = True,
) -> tuple[int, list[int]]:
    """How many live leads the filters select (with ``lists``, of those lists only; with
    ``until``, none above that lead_id), and the first ``SAMPLE`` of them (``sample``: else none).

    A selection MariaDB can count from an index alone (lists and statuses: Vicidial's
    ``list_status`` index) is counted in one statement (``_count_from_index``). Any other is read
    window by window, like the walk, never in one statement, and so is the sample: after each
    window the count pauses ``pause`` times as long as the window took. On MyISAM each read holds
    the table's read lock, which the dialer's updates wait for, and a count of a 1M-lead table
    read back to back (about a second) would let the dialer fall ever further behind.
    """
    condition = filters.condition(zone, lists)
    top = highest_lead_id(conn)
    highest = top if until is None else min(top, until)
    # The leads above ``highest`` are counted apart by primary key: only when they are few.
    total = _count_from_index(conn, condition, highest) if top - highest <= window else None
    counted = total or 0
    found: list[int] = []
    position = 0
    while position < highest and (total is None or (sample and len(found) < SAMPLE)):
        began = perf_counter()
        upper = min(position + window, highest)
        in_window = and_(_live.c.lead_id > position, _live.c.lead_id <= upper, condition)
        if total is None:
            counted += int(conn.execute(select(func.count()).where(in_window)).scalar() or 0)
        if sample and len(found) < SAMPLE:
            rows = conn.execute(
                select(_live.c.lead_id)
                .where(in_window)
                .order_by(_live.c.lead_id)
                .limit(SAMPLE - len(found))
            ).all()
            found += [int(row[0]) for row in rows]
        position = upper
        if pause and position < highest:
            sleep((perf_counter() - began) * pause)
    return counted, found


def _count_from_index(conn: Connection, condition: ColumnElement[bool], highest: int) -> int | None:
    """The count in one statement, when MariaDB reads it from an index alone and it is at most
    ``INDEX_COUNT``; else None (count window by window).

    The plan must look up a range of an index without reading rows (``Using index``, a ``ref``
    or ``range`` access of at most ``INDEX_COUNT`` estimated entries), and the statement reads at
    most ``INDEX_COUNT + 1`` of them whatever the estimate said: one read lock of a few tens of
    milliseconds, instead of hundreds of windows. Secondary MyISAM indexes do not hold the
    lead_id, so the leads above ``highest`` are counted apart (a primary-key range of a few
    leads) and taken off, in the same statement.
    """
    if conn.dialect.name != "mysql":
        return None
    matched: Select[Any] = select(literal_column("1")).select_from(_live).where(condition)
    live_steps = [step for step in _explain(conn, matched) if step["table"] == LIVE_TABLE]
    if not live_steps or not all(
        step["type"] in ("ref", "range")
        and "Using index" in str(step["Extra"] or "").split("; ")
        and int(step["rows"] or 0) <= INDEX_COUNT
        for step in live_steps
    ):
        return None
    capped = matched.limit(INDEX_COUNT + 1).subquery()
    above = (
        select(func.count())
        .where(_live.c.lead_id > highest, condition)
        .with_hint(_live, "FORCE INDEX (PRIMARY)", "mysql")
    )
    statement = select(
        select(func.count()).select_from(capped).scalar_subquery(),
        above.scalar_subquery(),
    )
    every, beyond = conn.execute(statement).one()
    if int(every) > INDEX_COUNT:
        return None
    return int(every) - int(beyond)


def _explain(conn: Connection, statement: Select[Any]) -> list[Any]:
    """MariaDB's plan for ``statement``, one mapping per step (its values bound, never inlined)."""
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    return list(conn.exec_driver_sql("EXPLAIN " + compiled.string, compiled.params).mappings())
