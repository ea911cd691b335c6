"""The same batch semantics on SQLite, the embedded default's database."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection

from tasks.archive import Actions, run_batch
from tasks.errors import SchemaMismatchError
from tasks.seed import insert_leads, lead_rows
from tests.helpers import archive, live
from tests.tasks.test_archive_properties import (
    PLACES,
    _check_report_against_tables,
    build_tables,
)

ALL = Actions(insert=True, update=True, delete=True)


def test_seed_request_and_second_run_on_sqlite(lite: Connection) -> None:
    insert_leads(lite, lead_rows(3, seed=41))
    before = live(lite)

    first = run_batch(lite, [0, 1], ALL).as_json()
    tables = (live(lite), archive(lite))
    second = run_batch(lite, [0, 1], ALL).as_json()

    assert [(x["insert"], x["update"], x["delete"]) for x in first["leads"]] == [
        ("not_found", "not_found", "not_found"),
        ("inserted", "unchanged", "deleted"),
    ]
    assert archive(lite) == {1: before[1]}
    assert (live(lite), archive(lite)) == tables
    assert [(x["insert"], x["update"], x["delete"]) for x in second["leads"]][1] == (
        "already_archived",
        "unchanged",
        "not_found",
    )


@pytest.mark.parametrize(
    "change",
    ["first_name = 'BOB'", "first_name = 'bob '", "comments = ''", "`rank` = 9"],
)
def test_a_stale_copy_is_a_mismatch_on_sqlite(lite: Connection, change: str) -> None:
    insert_leads(lite, lead_rows(1, seed=42))
    lite.exec_driver_sql("UPDATE vicidial_list SET first_name = 'bob', comments = NULL, `rank` = 1")
    run_batch(lite, [1], Actions(insert=True, update=False))
    lite.exec_driver_sql(f"UPDATE vicidial_list SET {change}")

    report = run_batch(lite, [1], Actions(insert=False, update=False, delete=True))

    assert report.leads[0].delete == "mismatch"
    assert set(live(lite)) == {1}


def test_update_then_delete_and_in_use_on_sqlite(lite: Connection) -> None:
    insert_leads(lite, lead_rows(3, seed=43))
    run_batch(lite, [1, 2, 3], Actions(insert=True, update=False))
    lite.exec_driver_sql("UPDATE vicidial_list SET first_name = 'Changed' WHERE lead_id = 1")
    lite.exec_driver_sql("INSERT INTO vicidial_hopper (lead_id, list_id) VALUES (3, 1)")
    newest = live(lite)[1]

    report = run_batch(lite, [1, 2, 3], ALL)

    assert [lead.update for lead in report.leads] == ["updated", "unchanged", "unchanged"]
    assert [lead.delete for lead in report.leads] == ["deleted", "deleted", "in_use"]
    assert archive(lite)[1] == newest
    assert set(live(lite)) == {3}


def test_schema_drift_is_refused_on_sqlite(lite: Connection) -> None:
    lite.exec_driver_sql("ALTER TABLE vicidial_list_archive DROP COLUMN entry_list_id")

    with pytest.raises(SchemaMismatchError, match="entry_list_id"):
        run_batch(lite, [1], ALL)


SQLITE_VARIANTS = (
    "first_name = UPPER(IFNULL(first_name, 'x'))",
    "comments = IFNULL(comments, '') || ' '",
    "comments = CASE WHEN comments IS NULL THEN '' ELSE NULL END",
    "modify_date = '1999-01-01 00:00:00'",
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    states=st.lists(
        st.tuples(st.sampled_from(PLACES), st.booleans(), st.integers(0, 3)), min_size=1, max_size=6
    ),
    requested=st.lists(st.integers(0, 8), min_size=1, max_size=10),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()).filter(
        lambda f: f[0] or f[1] or f[2]
    ),
)
def test_any_batch_keeps_the_invariant_on_sqlite(
    lite: Connection,
    states: list[tuple[str, bool, int]],
    requested: list[int],
    flags: tuple[bool, bool, bool, bool],
) -> None:
    actions = Actions(insert=flags[0], update=flags[1], delete=flags[2], dry_run=flags[3])
    build_tables(lite, states, SQLITE_VARIANTS)
    before = (live(lite), archive(lite))

    report = run_batch(lite, requested, actions)
    after = (live(lite), archive(lite))

    for i in set(before[0]) | set(before[1]):
        if i in before[0]:
            assert i in after[0] or after[1].get(i) == before[0][i]
        else:
            assert after[1][i] == before[1][i]
    _check_report_against_tables(report, actions, before, after)
    run_batch(lite, requested, actions)
    assert (live(lite), archive(lite)) == after
