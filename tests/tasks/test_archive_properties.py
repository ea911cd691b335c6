"""Property-based: over random table states and flag combinations, the batch keeps the invariant,
reports the tables as they are, and a second run changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine

from tasks.archive import Actions, BatchReport, run_batch
from tasks.ddl import create_vicidial_tables, drop_vicidial_tables
from tasks.seed import insert_leads, lead_rows
from tests.helpers import Row, archive, column, live

# How an archive copy may differ from its live row: each is different data that the default
# collation would call equal, or a change the dialer or an admin could make.
VARIANTS = (
    "first_name = UPPER(IFNULL(first_name, 'x'))",
    "comments = CONCAT(IFNULL(comments, ''), ' ')",
    "comments = IF(comments IS NULL, '', NULL)",
    "modify_date = modify_date - INTERVAL 1 SECOND",
    "called_since_last_reset = IF(called_since_last_reset = 'D', 'N', 'D')",
    "date_of_birth = IF(date_of_birth IS NULL, '0000-00-00', NULL)",
    "`rank` = IF(`rank` = 3, 4, 3)",
    # Another lead that reused the ID: loaded at another time (NULL-safe: NULL is a value too).
    "entry_date = IF(entry_date IS NULL, '2001-02-03 04:05:06', NULL)",
)

ENTRY_DATE = column("entry_date")
PLACES = ("nowhere", "live", "archived", "both_same", "both_different")

lead_state = st.tuples(
    st.sampled_from(PLACES),
    st.booleans(),  # queued in the hopper
    st.integers(0, len(VARIANTS) - 1),
)


def _actions() -> st.SearchStrategy[Actions]:
    flags = st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()).filter(
        lambda f: f[0] or f[1] or f[2]
    )
    return flags.map(lambda f: Actions(insert=f[0], update=f[1], delete=f[2], dry_run=f[3]))


@pytest.fixture(scope="module", params=["MyISAM", "InnoDB"])
def tables(engine: Engine, request: pytest.FixtureRequest) -> Iterator[Connection]:
    with engine.connect() as c:
        drop_vicidial_tables(c)
        create_vicidial_tables(c, str(request.param))
        yield c
        drop_vicidial_tables(c)


def build_tables(
    conn: Connection, states: list[tuple[str, bool, int]], variants: tuple[str, ...] = VARIANTS
) -> None:
    """Lead i+1 placed as ``states[i]`` says: live, archived, both (equal or a variant), queued."""
    for table in ("vicidial_list", "vicidial_list_archive", "vicidial_hopper"):
        conn.exec_driver_sql(f"DELETE FROM {table}")
    insert_leads(conn, lead_rows(len(states), first_lead_id=1, seed=len(states)))
    for lead_id, (place, queued, variant) in enumerate(states, start=1):
        if place in ("archived", "both_same", "both_different"):
            conn.exec_driver_sql(
                "INSERT INTO vicidial_list_archive SELECT * FROM vicidial_list"
                f" WHERE lead_id = {lead_id}"
            )
        if place == "both_different":
            # modify_date set to itself, or ON UPDATE would stamp it and every variant would
            # differ in modify_date too, hiding the difference the variant is about.
            conn.exec_driver_sql(
                "UPDATE vicidial_list_archive SET modify_date = modify_date,"
                f" {variants[variant]} WHERE lead_id = {lead_id}"
            )
        if place in ("nowhere", "archived"):
            conn.exec_driver_sql(f"DELETE FROM vicidial_list WHERE lead_id = {lead_id}")
        if queued:
            conn.exec_driver_sql(
                f"INSERT INTO vicidial_hopper (lead_id, list_id) VALUES ({lead_id}, 1)"
            )


def hopper_rows(conn: Connection) -> list[tuple[object, ...]]:
    """Every vicidial_hopper row, whole, by lead."""
    return [
        tuple(r) for r in conn.exec_driver_sql("SELECT * FROM vicidial_hopper ORDER BY lead_id")
    ]


def _check_hopper_leads_stay(
    report: BatchReport,
    actions: Actions,
    queued: set[int],
    before: tuple[dict[int, Row], dict[int, Row]],
    after: tuple[dict[int, Row], dict[int, Row]],
) -> None:
    """A lead in the hopper is never deleted: it stays live byte for byte, and its delete says
    ``in_use`` / ``hopper`` whenever nothing else (no copy, a different copy) kept it first."""
    live_before, _ = before
    live_after, archive_after = after
    for i in queued & set(live_before):
        assert live_after.get(i) == live_before[i], i
    for lead in report.leads:
        i = lead.lead_id
        if lead.delete == "in_use":
            assert (i, lead.held_by) in {(q, "hopper") for q in queued}, lead
        else:
            assert lead.held_by is None, lead
        if i in queued and i in live_before and actions.delete:
            assert lead.delete in ("in_use", "not_archived", "mismatch", "id_reused"), lead
            assert lead.live, lead
            if not actions.dry_run and archive_after.get(i) == live_before[i]:
                # An identical copy: only the hopper kept it live.
                assert lead.delete == "in_use", lead


def _check_report_against_tables(
    report: BatchReport,
    actions: Actions,
    before: tuple[dict[int, Row], dict[int, Row]],
    after: tuple[dict[int, Row], dict[int, Row]],
) -> None:
    live_before, archive_before = before
    live_after, archive_after = after
    unique = {lead.lead_id for lead in report.leads}
    assert len(unique) == len(report.leads)
    for action, counts in report.counts.items():
        assert sum(counts.values()) == len(unique), action
    for lead in report.leads:
        i = lead.lead_id
        assert lead.archived == (i in archive_after)
        assert lead.live == (i in live_after)
        if i not in live_before and i not in archive_before:
            assert not lead.archived and not lead.live
        if actions.dry_run:
            continue
        if lead.insert == "inserted":
            assert i not in archive_before
            assert archive_after[i] == live_before[i]
        if lead.update == "updated":
            assert archive_before[i] != live_before[i]
            assert archive_before[i][ENTRY_DATE] == live_before[i][ENTRY_DATE]
        if lead.update == "id_reused":
            assert archive_before[i][ENTRY_DATE] != live_before[i][ENTRY_DATE]
            assert archive_after[i] == archive_before[i]
        if lead.delete == "deleted":
            assert i not in live_after
            assert archive_after[i] == live_before[i]
        if lead.delete in ("mismatch", "in_use", "not_archived", "id_reused"):
            assert live_after[i] == live_before[i]
        if actions.insert:
            newly_archived = i in archive_after and i not in archive_before
            assert (lead.insert == "inserted") == newly_archived


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    states=st.lists(lead_state, min_size=1, max_size=8),
    requested=st.lists(st.integers(0, 10), min_size=1, max_size=12),
    actions=_actions(),
)
def test_any_batch_keeps_the_invariant_and_reports_the_truth(
    tables: Connection,
    states: list[tuple[str, bool, int]],
    requested: list[int],
    actions: Actions,
) -> None:
    conn = tables
    build_tables(conn, states)
    before = (live(conn), archive(conn))
    queued = {i for i, (_, in_hopper, _) in enumerate(states, start=1) if in_hopper}
    hopper_before = hopper_rows(conn)

    report = run_batch(conn, requested, actions)
    after = (live(conn), archive(conn))

    live_before, archive_before = before
    live_after, archive_after = after
    # The invariant: every lead is still live, or its identical copy is archived.
    for i in set(live_before) | set(archive_before):
        if i in live_before:
            assert i in live_after or archive_after.get(i) == live_before[i], i
        else:
            assert archive_after[i] == archive_before[i], i
    # Leads not requested are untouched; a dry run touches nothing.
    for i in (set(live_before) | set(archive_before)) - set(requested):
        assert live_after.get(i) == live_before.get(i)
        assert archive_after.get(i) == archive_before.get(i)
    if actions.dry_run:
        assert after == before
    _check_report_against_tables(report, actions, before, after)
    _check_hopper_leads_stay(report, actions, queued, before, after)
    assert hopper_rows(conn) == hopper_before

    # Idempotent: the same batch again leaves the same tables and says nothing was done.
    again = run_batch(conn, requested, actions)
    assert (live(conn), archive(conn)) == after
    _check_hopper_leads_stay(again, actions, queued, after, after)
    if not actions.dry_run:
        assert again.counts.get("insert", {}).get("inserted", 0) == 0
        assert again.counts.get("update", {}).get("updated", 0) == 0
        assert again.counts.get("delete", {}).get("deleted", 0) == 0
