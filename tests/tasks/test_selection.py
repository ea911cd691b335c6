"""Archive by selection: every filter and their combinations against a hand-computed expectation,
on Vicidial's tables (MyISAM, InnoDB and the embedded SQLite), and the walk in lead_id order."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from sqlalchemy import Connection, Engine, event

from tasks import selection
from tasks.ddl import create_vicidial_tables, drop_vicidial_tables
from tasks.seed import insert_leads, lead_rows
from tasks.selection import SAMPLE, SelectionFilters, count, next_batch, storable

ZONE = ZoneInfo("America/New_York")
LEADS = 400
CAMPAIGN_OF = {1001: "CAMPA", 1002: "CAMPA", 1003: "CAMPB", 2001: "CAMPC"}  # list 9999: no row
LISTS = (*CAMPAIGN_OF, 9999)
STATUSES = ("NEW", "SALE", "DNC", "NA", None)
ENTRY_DATES = (
    None,
    "2023-06-01 10:00:00",
    "2024-01-01 00:00:00",
    "2024-06-30 23:59:59",
    "2025-02-01 08:00:00",
)
CALL_TIMES = (None, "2023-12-31 23:59:59", "2024-03-01 12:00:00", "2025-01-15 09:00:00")


@dataclass(frozen=True)
class Lead:
    lead_id: int
    list_id: int
    status: str | None
    entry_date: str | None
    last_call: str | None


@pytest.fixture(params=["MyISAM", "InnoDB", "SQLite"])
def tables(request: pytest.FixtureRequest) -> Iterator[tuple[Connection, list[Lead]]]:
    """Vicidial's tables with ``LEADS`` leads whose selected columns the test sets itself."""
    if request.param == "SQLite":
        yield _fill(request.getfixturevalue("lite"))
        return
    engine: Engine = request.getfixturevalue("engine")
    with engine.connect() as conn:
        drop_vicidial_tables(conn)
        create_vicidial_tables(conn, request.param)
        try:
            yield _fill(conn)
        finally:
            drop_vicidial_tables(conn)


def _fill(conn: Connection) -> tuple[Connection, list[Lead]]:
    rng = random.Random(14)
    # Lead IDs with gaps, as on a server that archived before: the walk must not care.
    ids = sorted(rng.sample(range(1, LEADS * 3), LEADS))
    leads = [
        Lead(
            lead_id,
            rng.choice(LISTS),
            rng.choice(STATUSES),
            rng.choice(ENTRY_DATES),
            rng.choice(CALL_TIMES),
        )
        for lead_id in ids
    ]
    for lead in leads:
        rows = lead_rows(1, first_lead_id=lead.lead_id, list_id=lead.list_id, seed=lead.lead_id)
        insert_leads(conn, rows)
    marker = "?" if conn.dialect.name == "sqlite" else "%s"
    for lead in leads:
        conn.exec_driver_sql(
            f"UPDATE vicidial_list SET status = {marker}, entry_date = {marker},"
            f" last_local_call_time = {marker} WHERE lead_id = {marker}",
            (lead.status, lead.entry_date, lead.last_call, lead.lead_id),
        )
    for list_id, campaign in CAMPAIGN_OF.items():
        conn.exec_driver_sql(
            "INSERT INTO vicidial_lists (list_id, list_name, campaign_id, active)"
            f" VALUES ({marker}, {marker}, {marker}, 'Y')",
            (list_id, f"list {list_id}", campaign),
        )
    conn.commit()
    return conn, leads


def expected(leads: list[Lead], filters: dict[str, Any]) -> list[int]:
    """The hand-computed selection: AND between filters, OR within one."""

    def local(value: Any) -> str:
        if isinstance(value, datetime):
            if value.tzinfo is not None:
                value = value.astimezone(ZONE).replace(tzinfo=None)
            return value.strftime("%Y-%m-%d %H:%M:%S")
        return f"{value.isoformat()} 00:00:00"

    def picked(lead: Lead) -> bool:
        if "list_ids" in filters and lead.list_id not in filters["list_ids"]:
            return False
        campaigns = filters.get("campaign_ids")
        if campaigns is not None and CAMPAIGN_OF.get(lead.list_id) not in campaigns:
            return False
        if "statuses" in filters and lead.status not in filters["statuses"]:
            return False
        if "entry_date_before" in filters:
            before = local(filters["entry_date_before"])
            if lead.entry_date is None or not lead.entry_date < before:
                return False
        if "last_call_before" in filters:
            before = local(filters["last_call_before"])
            called = lead.last_call is not None and lead.last_call < before
            never = lead.last_call is None and lead.entry_date is not None
            if not (called or (never and lead.entry_date is not None and lead.entry_date < before)):
                return False
        return True

    return [lead.lead_id for lead in leads if picked(lead)]


CASES: dict[str, dict[str, Any]] = {
    "one list": {"list_ids": [1001]},
    "lists": {"list_ids": [1001, 1003, 9999]},
    "a list nobody has": {"list_ids": [424242]},
    "campaign": {"campaign_ids": ["CAMPA"]},
    "campaigns": {"campaign_ids": ["CAMPB", "CAMPC", "NOSUCH"]},
    "status": {"statuses": ["SALE"]},
    "statuses": {"statuses": ["NEW", "NA"]},
    "entered before a date": {"entry_date_before": date(2024, 1, 1)},
    "entered before a datetime": {"entry_date_before": datetime(2024, 6, 30, 23, 59, 59)},
    "entered before an aware datetime": {
        "entry_date_before": datetime(2024, 1, 1, 5, 0, 1, tzinfo=UTC)  # 00:00:01 in New York
    },
    "last called before": {"last_call_before": date(2024, 3, 1)},
    "last called before, later": {"last_call_before": datetime(2025, 1, 15, 9, 0, 1)},
    # Exactly one of the call times: a lead called then was not called before it.
    "last called before, at a call": {"last_call_before": datetime(2024, 3, 1, 12, 0, 0)},
    "lists and statuses": {"list_ids": [1001, 1002], "statuses": ["NEW", "SALE"]},
    "campaign and not called since": {
        "campaign_ids": ["CAMPA"],
        "last_call_before": date(2024, 1, 1),
    },
    "every filter": {
        "list_ids": [1001, 1002, 1003],
        "campaign_ids": ["CAMPA", "CAMPB"],
        "statuses": ["NEW", "SALE", "NA"],
        "entry_date_before": date(2025, 1, 1),
        "last_call_before": date(2025, 1, 1),
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_filter_and_their_combinations_select_the_expected_leads(
    tables: tuple[Connection, list[Lead]], case: str
) -> None:
    conn, leads = tables
    filters = SelectionFilters.model_validate(CASES[case])
    want = expected(leads, CASES[case])

    total, sample = count(conn, filters, ZONE, window=97)
    walked = _walk(conn, filters, limit=500)

    assert walked == want
    assert (total, sample) == (len(want), want[:SAMPLE])
    if case != "a list nobody has":
        assert 0 < len(want) < LEADS  # the case really filters
    if set(CASES[case]) == {"last_call_before"}:
        # The data exercise both sides of the rule for a lead never called.
        never_called = {lead.lead_id for lead in leads if lead.last_call is None}
        assert never_called & set(want)
        assert any(lead.entry_date and lead.lead_id in never_called - set(want) for lead in leads)


def _walk(conn: Connection, filters: SelectionFilters, limit: int, window: int = 13) -> list[int]:
    walked: list[int] = []
    position = 0
    while True:
        batch = next_batch(conn, filters, ZONE, position, limit, window=window)
        assert len(batch.lead_ids) <= limit
        assert all(position < lead_id <= batch.position for lead_id in batch.lead_ids)
        walked += batch.lead_ids
        assert batch.position >= position
        position = batch.position
        if batch.done:
            return walked


@pytest.mark.parametrize(("limit", "window"), [(1, 13), (7, 13), (7, 1), (50, 5_000)])
def test_the_walk_resumes_from_its_checkpoint_without_skipping_or_repeating(
    tables: tuple[Connection, list[Lead]], limit: int, window: int
) -> None:
    conn, leads = tables
    filters = SelectionFilters(campaign_ids=["CAMPA", "CAMPB"])

    walked = _walk(conn, filters, limit, window)

    assert walked == expected(leads, {"campaign_ids": ["CAMPA", "CAMPB"]})
    assert len(walked) == len(set(walked))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({}, "at least one filter"),
        ({"list_ids": []}, "at least 1 item"),
        ({"list_ids": ["1001"]}, "valid integer"),
        ({"statuses": ["SALE"], "campaign": ["X"]}, "Extra inputs"),
        ({"entry_date_before": "yesterday"}, "entry_date_before"),
        # A number is no date (pydantic alone would read it as a Unix time), nor is its text.
        ({"entry_date_before": 20240101}, "as text"),
        ({"last_call_before": "1704067200"}, "ISO 8601"),
        ({"last_call_before": "2024-13-01"}, "ISO 8601"),
    ],
)
def test_a_selection_without_a_usable_filter_is_refused(body: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        SelectionFilters.model_validate(body)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("2024-01-01", date(2024, 1, 1)),
        ("2024-01-01T08:30:00", datetime(2024, 1, 1, 8, 30)),
        ("2024-01-01T08:30:00-05:00", datetime(2024, 1, 1, 13, 30, tzinfo=UTC)),
    ],
)
def test_dates_are_read_from_iso_text_and_shown_as_given(text: str, kept: date) -> None:
    filters = SelectionFilters.model_validate({"entry_date_before": text})
    assert filters.entry_date_before == kept
    assert type(filters.entry_date_before) is type(kept)
    # What the job's status shows, and its message carries: the same value, the same text.
    shown = filters.model_dump(mode="json")["entry_date_before"]
    assert shown == text
    assert SelectionFilters.model_validate({"entry_date_before": shown}) == filters


def test_dates_at_the_ends_of_time_and_within_a_second_compare_as_the_database_does(
    tables: tuple[Connection, list[Lead]],
) -> None:
    conn, leads = tables
    dated = [lead.lead_id for lead in leads if lead.entry_date is not None]
    last_second = [lead.lead_id for lead in leads if lead.entry_date == "2024-06-30 23:59:59"]

    def selected(before: str) -> list[int]:
        filters = SelectionFilters.model_validate({"entry_date_before": before})
        return _walk(conn, filters, 1000, 5000)

    # Year 1 and year 9999, hours off UTC: before and after every lead (never year 2001).
    assert selected("0001-01-01T00:00:00+23:59") == []
    assert selected("9999-12-31T23:59:59-23:59") == dated
    # Half a second after a lead's entry_date: that lead is before it.
    assert last_second
    assert set(last_second) <= set(selected("2024-06-30T23:59:59.5"))
    assert not set(last_second) & set(selected("2024-06-30T23:59:59"))


def test_text_a_column_cannot_hold_matches_no_lead_and_fails_nothing(
    tables: tuple[Connection, list[Lead]],
) -> None:
    conn, leads = tables
    # A 4-byte character (Vicidial's utf8 columns hold none) beside "SALE".
    given = {
        "statuses": ["\U00069450AB", "SALE"],
        "campaign_ids": ["CAMPA", "\U0001f600"],
    }
    filters = storable(conn, SelectionFilters.model_validate(given))

    wanted = expected(leads, {"statuses": ["SALE"], "campaign_ids": ["CAMPA"]})
    assert _walk(conn, filters, 1000, 5000) == wanted
    assert count(conn, filters, ZONE)[0] == len(wanted)
    if conn.dialect.name == "mysql":
        assert (filters.statuses, filters.campaign_ids) == (["SALE"], ["CAMPA"])
    # None left: that filter matches no lead.
    nothing = storable(conn, SelectionFilters.model_validate({"statuses": ["\U00069450"]}))
    assert _walk(conn, nothing, 1000, 5000) == [] and count(conn, nothing, ZONE)[0] == 0


@pytest.mark.parametrize("tables", ["MyISAM"], indirect=True)
def test_text_beyond_latin1_matches_no_lead_of_a_latin1_install(
    tables: tuple[Connection, list[Lead]],
) -> None:
    conn, leads = tables
    # Vicidial installs older than its utf8 default have latin1 columns.
    conn.exec_driver_sql(
        "ALTER TABLE vicidial_list MODIFY status VARCHAR(6) CHARACTER SET latin1 NULL"
    )
    conn.exec_driver_sql(
        "ALTER TABLE vicidial_lists MODIFY campaign_id VARCHAR(8) CHARACTER SET latin1 NULL"
    )
    given = {"statuses": ["\u03a9", "SALE", "\u20ac"], "campaign_ids": ["CAMPA", "\u03a9MEGA"]}
    filters = storable(conn, SelectionFilters.model_validate(given))

    # MariaDB's latin1 is Windows-1252: it holds the euro sign, not the omega.
    assert (filters.statuses, filters.campaign_ids) == (["SALE", "\u20ac"], ["CAMPA"])
    wanted = expected(leads, {"statuses": ["SALE"], "campaign_ids": ["CAMPA"]})
    assert wanted and _walk(conn, filters, 1000, 5000) == wanted
    assert count(conn, filters, ZONE)[0] == len(wanted)
    nothing = storable(conn, SelectionFilters.model_validate({"statuses": ["\u03a9"]}))
    assert _walk(conn, nothing, 1000, 5000) == [] and count(conn, nothing, ZONE)[0] == 0


@contextmanager
def _sent(conn: Connection) -> Iterator[list[str]]:
    """Every statement ``conn``'s engine sends meanwhile."""
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(str(args[2]))

    event.listen(conn.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(conn.engine, "before_cursor_execute", record)


def _windows(sent: list[str]) -> list[str]:
    return [s for s in sent if "lead_id >" in s and "lead_id <=" in s]


@pytest.mark.parametrize(
    ("case", "index_covers"),
    [
        ("lists", True),
        ("lists and statuses", True),
        ("statuses", True),
        ("entered before a date", False),  # entry_date is in no index: the rows must be read
        ("campaign and not called since", False),
    ],
)
def test_a_selection_an_index_covers_is_counted_in_one_statement_the_rest_window_by_window(
    tables: tuple[Connection, list[Lead]], case: str, index_covers: bool
) -> None:
    conn, leads = tables
    filters = SelectionFilters.model_validate(CASES[case])

    with _sent(conn) as sent:
        total, sample = count(conn, filters, ZONE, window=97, sample=False)

    assert (total, sample) == (len(expected(leads, CASES[case])), [])
    in_one = index_covers and conn.dialect.name == "mysql"  # SQLite: always by windows
    assert (_windows(sent) == []) == in_one
    if in_one:
        assert any(s.startswith("EXPLAIN") for s in sent)


def test_a_count_beyond_what_one_statement_may_read_falls_back_to_windows(
    tables: tuple[Connection, list[Lead]], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, leads = tables
    filters = SelectionFilters.model_validate(CASES["lists"])
    want = expected(leads, CASES["lists"])
    monkeypatch.setattr(selection, "INDEX_COUNT", len(want) - 1)

    with _sent(conn) as sent:
        total, sample = count(conn, filters, ZONE, window=97)

    assert (total, sample) == (len(want), want[:SAMPLE])
    assert _windows(sent)  # counted window by window


def test_the_count_from_an_index_leaves_out_the_leads_above_the_walks_end(
    tables: tuple[Connection, list[Lead]],
) -> None:
    """Secondary MyISAM indexes hold no lead_id: the leads above ``until`` are taken off."""
    conn, leads = tables
    filters = SelectionFilters.model_validate(CASES["lists"])
    want = expected(leads, CASES["lists"])
    until = want[len(want) // 2]

    with _sent(conn) as sent:
        total, _ = count(conn, filters, ZONE, until=until, window=5_000, sample=False)

    assert total == len([lead_id for lead_id in want if lead_id <= until])
    assert (_windows(sent) == []) == (conn.dialect.name == "mysql")
