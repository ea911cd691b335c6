"""A batch of a key scoped to lists, on the real Vicidial schema, MyISAM and InnoDB, on MariaDB.

A lead whose list (its live row's; for a lead only in the archive, its archive row's) is not one
of the job's lists is ``forbidden`` for every requested action, and both its rows stay byte for
byte as they were; the other leads are archived exactly as by an unscoped job. An unscoped job
sends the same statements as before scopes existed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Connection, Engine

from tasks.archive import Actions, BatchReport, LeadState, Tuning, plan_lead, run_batch
from tasks.archive.restore import run_restore
from tasks.errors import BatchError
from tasks.scopes import Lists
from tasks.seed import insert_leads, lead_rows
from tests.helpers import archive, live
from tests.tasks.test_dialer_holds import cron_like

ALL = Actions(insert=True, update=True, delete=True)
ALLOWED = Lists.parse("1001-1004+3000")
# A single chunk, however fast the server: the statements of two runs can be compared.
ONE_CHUNK = Tuning(first_chunk=50, min_chunk=50, max_chunk=50)

Runner = Callable[..., BatchReport]


@pytest.fixture(params=["default", "locked"])
def runner(request: pytest.FixtureRequest, database_url: str, conn: Connection) -> Runner:
    """Run the batch as the connection's own user, or as a cron-like user (the locked path)."""

    def run(c: Connection, ids: list[int], actions: Actions, **options: object) -> BatchReport:
        if request.param == "default":
            return run_batch(c, ids, actions, **options)  # type: ignore[arg-type]
        with cron_like(conn, database_url) as limited:
            return run_batch(limited, ids, actions, **options)  # type: ignore[arg-type]

    return run


def seed_lists(conn: Connection) -> None:
    """Leads 1-4 in list 1001, 5-8 in list 2001 (not allowed), 9-10 in list 1004, 11 in 3000."""
    insert_leads(conn, lead_rows(4, first_lead_id=1, list_id=1001, seed=1))
    insert_leads(conn, lead_rows(4, first_lead_id=5, list_id=2001, seed=2))
    insert_leads(conn, lead_rows(2, first_lead_id=9, list_id=1004, seed=3))
    insert_leads(conn, lead_rows(1, first_lead_id=11, list_id=3000, seed=4))


def archive_some(conn: Connection) -> None:
    """Archive copies that would be refreshed or justify a delete, were the leads allowed:
    leads 2 (allowed) and 6 (not) have stale copies, 3 and 7 identical ones, and lead 8 of list
    2001 is in the archive only."""
    run_batch(conn, [2, 3, 6, 7, 8], Actions(insert=True, update=False))
    conn.exec_driver_sql(
        "UPDATE vicidial_list SET first_name = 'Changed', modify_date = modify_date"
        " WHERE lead_id IN (2, 6)"
    )
    run_batch(conn, [8], Actions(insert=False, update=False, delete=True))


def by_id(report: BatchReport) -> dict[int, dict[str, object]]:
    return {lead["lead_id"]: lead for lead in report.as_json()["leads"]}


def test_leads_of_other_lists_are_forbidden_and_left_byte_for_byte(
    conn: Connection, runner: Runner
) -> None:
    seed_lists(conn)
    archive_some(conn)
    before_live, before_archive = live(conn), archive(conn)
    forbidden = [5, 6, 7, 8]

    report = runner(conn, list(range(1, 13)), ALL, lists=ALLOWED)

    leads = by_id(report)
    for lead_id in forbidden:
        assert {leads[lead_id][a] for a in ("insert", "update", "delete")} == {"forbidden"}
        assert "held_by" not in leads[lead_id]
    # Reported where they are: live (5, 6, 7), archived (6, 7 and 8, the archive-only lead).
    assert [(leads[i]["archived"], leads[i]["live"]) for i in forbidden] == [
        (False, True),
        (True, True),
        (True, True),
        (True, False),
    ]
    after_live, after_archive = live(conn), archive(conn)
    for lead_id in forbidden:
        assert after_live.get(lead_id) == before_live.get(lead_id)
        assert after_archive.get(lead_id) == before_archive.get(lead_id)
    # The allowed leads are archived as by any job: copied, refreshed, deleted.
    allowed = [1, 2, 3, 4, 9, 10, 11]
    assert [leads[i]["delete"] for i in allowed] == ["deleted"] * 7
    assert leads[2]["update"] == "updated" and leads[3]["insert"] == "already_archived"
    assert not set(allowed) & set(after_live)
    for lead_id in allowed:
        assert after_archive[lead_id] == before_live[lead_id]
    assert leads[12] == {
        "lead_id": 12,
        "insert": "not_found",
        "update": "not_found",
        "delete": "not_found",
        "archived": False,
        "live": False,
    }
    counts = report.counts
    assert counts["insert"] == {
        "inserted": 5,
        "already_archived": 2,
        "not_found": 1,
        "forbidden": 4,
    }
    assert counts["update"]["forbidden"] == counts["delete"]["forbidden"] == 4
    assert counts["update"]["updated"] == 1
    assert counts["delete"]["deleted"] == 7 and counts["delete"]["not_found"] == 1
    for outcomes in counts.values():
        assert sum(outcomes.values()) == 12


def test_a_lead_of_an_allowed_list_in_use_is_still_kept_and_says_why(
    conn: Connection, runner: Runner
) -> None:
    seed_lists(conn)
    conn.exec_driver_sql("INSERT INTO vicidial_hopper (lead_id, list_id) VALUES (1, 1001)")
    conn.exec_driver_sql("INSERT INTO vicidial_hopper (lead_id, list_id) VALUES (5, 2001)")

    leads = by_id(runner(conn, [1, 5], ALL, lists=ALLOWED))

    assert leads[1]["delete"] == "in_use" and leads[1]["held_by"] == "hopper"
    assert leads[5]["delete"] == "forbidden" and "held_by" not in leads[5]
    assert set(archive(conn)) == {1}


def test_only_the_requested_actions_are_forbidden(conn: Connection, runner: Runner) -> None:
    seed_lists(conn)

    report = runner(conn, [1, 5], Actions(insert=True, update=False), lists=ALLOWED)

    assert by_id(report)[5] == {
        "lead_id": 5,
        "insert": "forbidden",
        "archived": False,
        "live": True,
    }
    assert report.counts == {
        "insert": {"inserted": 1, "already_archived": 0, "not_found": 0, "forbidden": 1}
    }
    assert set(archive(conn)) == {1}


def test_a_scoped_dry_run_reports_forbidden_and_changes_nothing(conn: Connection) -> None:
    seed_lists(conn)
    archive_some(conn)
    tables = (live(conn), archive(conn))

    report = run_batch(conn, [1, 2, 5, 6, 8], Actions(delete=True, dry_run=True), lists=ALLOWED)

    assert (live(conn), archive(conn)) == tables
    leads = by_id(report)
    assert [leads[i]["delete"] for i in (1, 2, 5, 6, 8)] == [
        "deleted",
        "deleted",
        "forbidden",
        "forbidden",
        "forbidden",
    ]
    assert report.counts["delete"]["forbidden"] == 3


def test_an_unscoped_job_reports_no_forbidden_count_and_touches_every_list(
    conn: Connection, runner: Runner
) -> None:
    seed_lists(conn)

    report = runner(conn, list(range(1, 12)), ALL)

    assert "forbidden" not in report.counts["insert"]
    assert report.counts["delete"]["deleted"] == 11
    assert live(conn) == {}


@pytest.mark.parametrize("job", ["archive", "restore"])
def test_a_scoped_job_on_tables_without_list_id_is_refused_and_changes_nothing(
    conn: Connection, job: str
) -> None:
    seed_lists(conn)
    archive_some(conn)
    for table in ("vicidial_list", "vicidial_list_archive"):
        conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN list_id")

    def tables() -> list[list[tuple[object, ...]]]:  # every column, as the server has it
        return [
            [tuple(row) for row in conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY lead_id")]
            for t in ("vicidial_list", "vicidial_list_archive")
        ]

    before = tables()

    def scoped(lists: Lists | None) -> object:
        if job == "archive":
            return run_batch(conn, [1, 2, 3, 5], ALL, lists=lists)
        return run_restore(conn, [8], False, lists=lists)

    with pytest.raises(BatchError, match="has no list_id column: a job scoped to lists"):
        scoped(ALLOWED)
    assert tables() == before
    # Without a scope the same job runs: the refusal is the scope's, not the tables'.
    scoped(None)
    assert tables() != before


class Recorder:
    """Every statement a batch sends, in order."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def statement(self, sql: str, seconds: float) -> None:
        self.sent.append(sql)


@pytest.fixture
def batch_conn(engine: Engine, conn: Connection) -> Iterator[Connection]:
    """A second session for the batch (the test's own session plays the dialer)."""
    with engine.connect() as c:
        yield c


def test_scoping_adds_the_list_to_the_state_read_and_changes_no_other_statement(
    conn: Connection, batch_conn: Connection
) -> None:
    """The same leads, once unscoped and once scoped to lists that allow every one of them: the
    only difference is the list_id read with each lead's state. An unscoped job's statements are
    those of the code before scopes (``Statements.states`` without ``with_list``)."""
    sent = {}
    # Unscoped twice: the first run also makes the session's snapshot table, once.
    for scoped in (False, False, True):
        seed_lists(conn)
        archive_some(conn)
        recorder = Recorder()
        lists = Lists.parse("0-99999") if scoped else None
        run_batch(batch_conn, list(range(1, 12)), ALL, ONE_CHUNK, observer=recorder, lists=lists)
        sent[scoped] = recorder.sent
        conn.exec_driver_sql("DELETE FROM vicidial_list")
        conn.exec_driver_sql("DELETE FROM vicidial_list_archive")

    assert len(sent[True]) == len(sent[False])
    differing = [(a, b) for a, b in zip(sent[False], sent[True], strict=True) if a != b]
    assert differing, "the scoped job reads each lead's list"
    for unscoped, scoped_sql in differing:
        assert "UNION ALL" in unscoped and ", l.list_id FROM" not in unscoped
        assert (
            scoped_sql.replace(", l.list_id FROM", " FROM", 1).replace(", list_id FROM", " FROM", 1)
            == unscoped
        )


def test_a_lead_moved_to_another_list_after_the_snapshot_is_kept_by_the_guarded_delete(
    vicidial: Connection, engine: Engine
) -> None:
    """MyISAM's snapshot path reads the lists from its snapshot; a lead the dialer (or an
    administrator) moves to another list before the delete differs from its archive copy in
    ``list_id``, and the DELETE's own comparison keeps it live."""
    seed_lists(vicidial)
    before = live(vicidial)

    def move_lead_3(chunk: list[int]) -> None:
        vicidial.exec_driver_sql(
            "UPDATE vicidial_list SET list_id = 2001, modify_date = modify_date WHERE lead_id = 3"
        )

    with engine.connect() as c:
        report = run_batch(c, [1, 2, 3, 5], ALL, lists=ALLOWED, after_read=move_lead_3)

    leads = by_id(report)
    assert [leads[i]["delete"] for i in (1, 2, 3, 5)] == [
        "deleted",
        "deleted",
        "mismatch",
        "forbidden",
    ]
    assert set(live(vicidial)) == {3, 4, 5, 6, 7, 8, 9, 10, 11}
    assert archive(vicidial)[3] == before[3]  # the copy is of list 1001, as read
    assert live(vicidial)[5] == before[5] and 5 not in archive(vicidial)


def test_plan_lead_makes_every_requested_action_forbidden_and_keeps_where_the_lead_is() -> None:
    state = LeadState(live=True, archived=True, identical=True, forbidden=True)

    result = plan_lead(7, state, Actions(insert=False, update=True, delete=True))

    assert result.as_json() == {
        "lead_id": 7,
        "update": "forbidden",
        "delete": "forbidden",
        "archived": True,
        "live": True,
    }


def test_the_embedded_sqlite_database_forbids_leads_of_other_lists(lite: Connection) -> None:
    seed_lists(lite)
    before = live(lite)

    report = run_batch(lite, [1, 5, 9], ALL, lists=ALLOWED)

    leads = by_id(report)
    assert [leads[i]["delete"] for i in (1, 5, 9)] == ["deleted", "forbidden", "deleted"]
    assert live(lite)[5] == before[5] and 5 not in archive(lite)
    assert archive(lite)[1] == before[1]
