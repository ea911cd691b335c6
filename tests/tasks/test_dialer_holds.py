"""What surrounds the batch on a real Vicidial server: leads the dialer still needs, reused IDs.

Against MariaDB with Vicidial's own definitions of the dialer's tables (MEMORY hopper and live
calls, MyISAM live agents and callbacks), on every path a batch can take: MyISAM's snapshot path,
MyISAM's locked path (a user without CREATE TEMPORARY TABLES, like Vicidial's `cron`), InnoDB,
a dry run, and SQLite (the embedded demo).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError, PendingRollbackError

from tasks.archive import Actions, BatchReport, Tuning, run_batch
from tasks.errors import InUseUnknownError, is_transient
from tasks.schema import HELD_BY, inspect_tables, probe_in_use_tables
from tasks.seed import insert_leads, lead_rows
from tests.helpers import CRON_GRANTS, archive, column, live, mysql_user

ALL = Actions(insert=True, update=True, delete=True)
DRY = Actions(insert=True, update=True, delete=True, dry_run=True)

# How the dialer holds lead {id}, one statement per held_by reason, as Vicidial writes them.
HOLD = {
    "hopper": "INSERT INTO vicidial_hopper (lead_id, campaign_id, list_id, status)"
    " VALUES ({id}, 'C1', 1, 'READY')",
    "live_call": "INSERT INTO vicidial_auto_calls"
    " (server_ip, lead_id, campaign_id, status, call_time)"
    " VALUES ('10.0.0.5', {id}, 'C1', 'LIVE', '2026-12-01 21:00:00')",
    "agent": "INSERT INTO vicidial_live_agents (user, server_ip, status, lead_id)"
    " VALUES ('6666', '10.0.0.5', 'INCALL', {id})",
    # Previewing: lead_id is set only when the agent dials.
    "preview": "INSERT INTO vicidial_live_agents"
    " (user, server_ip, status, lead_id, preview_lead_id)"
    " VALUES ('6667', '10.0.0.5', 'PAUSED', 0, {id})",
    "callback": "INSERT INTO vicidial_callbacks (lead_id, list_id, campaign_id, status,"
    " entry_time, callback_time, user, recipient)"
    " VALUES ({id}, 1, 'C1', 'ACTIVE', '2026-11-30 10:00:00', '2026-12-02 10:00:00', '6666',"
    " 'USERONLY')",
}
assert tuple(HOLD) == HELD_BY  # every reason the product knows is tested here


def seed(conn: Connection, count: int) -> None:
    insert_leads(conn, lead_rows(count, seed=count))


def report_of(report: BatchReport, lead_id: int) -> dict[str, object]:
    return next(lead.as_json() for lead in report.leads if lead.lead_id == lead_id)


@contextmanager
def cron_like(conn: Connection, database_url: str) -> Iterator[Connection]:
    """A user like Vicidial's `cron`: no CREATE TEMPORARY TABLES, so the locked path runs."""
    with mysql_user(conn, database_url, CRON_GRANTS) as limited, limited.connect() as c:
        yield c


Runner = Callable[[Connection, list[int], Actions], BatchReport]


@pytest.fixture(params=["default", "locked"])
def runner(
    request: pytest.FixtureRequest, database_url: str
) -> Iterator[Callable[[Connection], Runner]]:
    """Run the batch as the connection's own user, or as a cron-like user (locked path)."""

    def bind(conn: Connection) -> Runner:
        if request.param == "default":
            return run_batch

        def as_cron(_: Connection, ids: list[int], actions: Actions) -> BatchReport:
            with cron_like(conn, database_url) as c:
                return run_batch(c, ids, actions)

        return as_cron

    yield bind


@pytest.mark.parametrize("reason", HELD_BY)
def test_a_lead_the_dialer_still_needs_stays_live_and_says_why(
    conn: Connection, runner: Callable[[Connection], Runner], reason: str
) -> None:
    seed(conn, 3)
    conn.exec_driver_sql(HOLD[reason].format(id=2))
    before = live(conn)

    report = runner(conn)(conn, [1, 2, 3], ALL)

    assert report_of(report, 2) == {
        "lead_id": 2,
        "insert": "inserted",
        "update": "unchanged",
        "delete": "in_use",
        "held_by": reason,
        "archived": True,
        "live": True,
    }
    assert [lead.delete for lead in report.leads] == ["deleted", "in_use", "deleted"]
    assert "held_by" not in report_of(report, 1)
    assert report.counts["delete"]["in_use"] == 1
    assert live(conn) == {2: before[2]}
    assert archive(conn) == before


@pytest.mark.parametrize("reason", HELD_BY)
def test_a_dry_run_predicts_the_hold(conn: Connection, reason: str) -> None:
    seed(conn, 2)
    run_batch(conn, [1, 2], Actions(insert=True, update=False))
    conn.exec_driver_sql(HOLD[reason].format(id=1))
    tables = (live(conn), archive(conn))

    report = run_batch(conn, [1, 2], DRY)

    assert report_of(report, 1)["held_by"] == reason
    assert [lead.delete for lead in report.leads] == ["in_use", "deleted"]
    assert (live(conn), archive(conn)) == tables


@pytest.mark.parametrize("status", ["INACTIVE", "DEAD", ""])
def test_a_callback_that_is_done_does_not_hold_its_lead(conn: Connection, status: str) -> None:
    seed(conn, 2)
    conn.exec_driver_sql(HOLD["callback"].format(id=1).replace("'ACTIVE'", f"'{status}'"))
    conn.exec_driver_sql(HOLD["callback"].format(id=2).replace("'ACTIVE'", "'LIVE'"))

    report = run_batch(conn, [1, 2], ALL)

    assert [(lead.delete, lead.held_by) for lead in report.leads] == [
        ("deleted", None),
        ("in_use", "callback"),
    ]
    assert set(live(conn)) == {2}


def test_an_agent_previewing_another_lead_holds_only_that_one(conn: Connection) -> None:
    seed(conn, 4)
    conn.exec_driver_sql(HOLD["preview"].format(id=3))
    conn.exec_driver_sql(HOLD["agent"].format(id=0))  # an idle agent: lead_id 0

    report = run_batch(conn, [1, 2, 3, 4], ALL)

    assert [lead.held_by for lead in report.leads] == [None, None, "preview", None]
    assert set(live(conn)) == {3}


def test_an_unreadable_callbacks_table_blocks_deletes(conn: Connection, database_url: str) -> None:
    seed(conn, 2)
    grants = [
        "SELECT, DELETE ON `{db}`.`vicidial_list`",
        "SELECT, INSERT, UPDATE ON `{db}`.`vicidial_list_archive`",
        "SELECT ON `{db}`.`vicidial_hopper`",
        "SELECT ON `{db}`.`vicidial_auto_calls`",
        "SELECT ON `{db}`.`vicidial_live_agents`",
        "LOCK TABLES ON `{db}`.*",
    ]
    with mysql_user(conn, database_url, *grants) as limited, limited.connect() as c:
        with pytest.raises(InUseUnknownError, match="cannot read vicidial_callbacks"):
            run_batch(c, [1, 2], ALL)
        copied = run_batch(c, [1, 2], Actions(insert=True, update=True))

    assert set(live(conn)) == {1, 2}
    assert copied.counts["insert"]["inserted"] == 2


def test_an_older_vicidial_without_preview_lead_id_still_archives(conn: Connection) -> None:
    seed(conn, 2)
    conn.exec_driver_sql("ALTER TABLE vicidial_live_agents DROP COLUMN preview_lead_id")
    conn.exec_driver_sql(HOLD["agent"].format(id=2))

    report = run_batch(conn, [1, 2], ALL)

    assert [(lead.delete, lead.held_by) for lead in report.leads] == [
        ("deleted", None),
        ("in_use", "agent"),
    ]


# A reused ID: lead 5 was archived long ago; a new lead, another person, took the ID again.
def make_reused(conn: Connection, entry_dates: tuple[str | None, str | None]) -> None:
    """Lead 5 archived with the first entry_date, then a new live lead 5 with the second."""
    seed(conn, 6)
    run_batch(conn, [5], ALL)
    archived, reloaded = entry_dates
    set_entry_date = "UPDATE {} SET entry_date = :entry_date WHERE lead_id = 5"
    conn.execute(text(set_entry_date.format("vicidial_list_archive")), {"entry_date": archived})
    insert_leads(conn, lead_rows(1, first_lead_id=5, seed=99))
    conn.execute(text(set_entry_date.format("vicidial_list")), {"entry_date": reloaded})


@pytest.mark.parametrize(
    "entry_dates",
    [
        ("2015-03-01 10:00:00", "2026-11-30 09:00:00"),
        (None, "2026-11-30 09:00:00"),
        ("2015-03-01 10:00:00", None),
        ("0000-00-00 00:00:00", "2026-11-30 09:00:00"),
    ],
)
def test_a_reused_id_never_touches_the_other_leads_history(
    conn: Connection,
    runner: Callable[[Connection], Runner],
    entry_dates: tuple[str | None, str | None],
) -> None:
    make_reused(conn, entry_dates)
    history, newcomer = archive(conn)[5], live(conn)[5]
    assert history != newcomer

    report = runner(conn)(conn, [4, 5], ALL)

    assert report_of(report, 5) == {
        "lead_id": 5,
        "insert": "already_archived",
        "update": "id_reused",
        "delete": "id_reused",
        "archived": True,
        "live": True,
    }
    assert report.counts["update"]["id_reused"] == report.counts["delete"]["id_reused"] == 1
    assert archive(conn)[5] == history
    assert live(conn)[5] == newcomer
    assert report_of(report, 4)["delete"] == "deleted"


def test_a_dry_run_predicts_a_reused_id(conn: Connection) -> None:
    make_reused(conn, ("2015-03-01 10:00:00", "2026-11-30 09:00:00"))
    tables = (live(conn), archive(conn))

    report = run_batch(conn, [5], DRY)

    assert (report.leads[0].update, report.leads[0].delete) == ("id_reused", "id_reused")
    assert (live(conn), archive(conn)) == tables


def test_the_same_lead_changed_elsewhere_is_still_refreshed(conn: Connection) -> None:
    """entry_date alike (both NULL): one lead whose other columns changed, not a reused ID."""
    make_reused(conn, (None, None))

    report = run_batch(conn, [5], ALL)

    assert (report.leads[0].update, report.leads[0].delete) == ("updated", "deleted")
    assert 5 not in live(conn)
    assert archive(conn)[5][column("entry_date")] is None


@pytest.mark.parametrize("reason", HELD_BY)
def test_holds_on_the_embedded_sqlite(lite: Connection, reason: str) -> None:
    seed(lite, 2)
    lite.exec_driver_sql(HOLD[reason].format(id=2))

    report = run_batch(lite, [1, 2], ALL)

    assert [(lead.delete, lead.held_by) for lead in report.leads] == [
        ("deleted", None),
        ("in_use", reason),
    ]


def test_a_reused_id_on_the_embedded_sqlite(lite: Connection) -> None:
    make_reused(lite, ("2015-03-01 10:00:00", "2026-11-30 09:00:00"))
    history = archive(lite)[5]

    report = run_batch(lite, [5], ALL)

    assert (report.leads[0].update, report.leads[0].delete) == ("id_reused", "id_reused")
    assert archive(lite)[5] == history
    assert 5 in live(lite)


def test_each_hold_is_checked_the_way_its_index_allows(conn: Connection) -> None:
    """Indexed columns are looked up lead by lead, the others read once per statement: both
    forms hold a lead, whichever a server's indexes call for."""
    assert inspect_tables(conn).indexed_holds == {"hopper", "agent", "callback"}
    seed(conn, 6)
    for lead_id, reason in enumerate(HELD_BY, start=1):
        conn.exec_driver_sql(HOLD[reason].format(id=lead_id))
    conn.exec_driver_sql("DROP INDEX lead_id ON vicidial_callbacks")
    conn.exec_driver_sql("DROP INDEX lead_id ON vicidial_hopper")
    conn.exec_driver_sql("CREATE INDEX preview ON vicidial_live_agents (preview_lead_id)")
    assert inspect_tables(conn).indexed_holds == {"agent", "preview"}

    report = run_batch(conn, list(range(1, 7)), ALL)

    assert [lead.held_by for lead in report.leads] == [*HELD_BY, None]
    assert set(live(conn)) == {1, 2, 3, 4, 5}


def test_a_connection_lost_while_the_dialer_tables_are_probed_is_retried(
    conn: Connection, engine: Engine
) -> None:
    """A lost connection says nothing about the dialer's tables: the probe raises the loss itself,
    which the job retries. (It used to swallow it, then fail the job on SQLAlchemy's refusal to
    use the invalidated connection again: CI's MariaDB restart scenario.)"""
    with engine.connect() as c:
        session = c.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
        conn.exec_driver_sql(f"KILL {int(session)}")

        with pytest.raises(OperationalError) as lost:
            probe_in_use_tables(c)
        assert is_transient(lost.value)
        with pytest.raises(PendingRollbackError) as refused:
            c.exec_driver_sql("SELECT 1")
        assert is_transient(refused.value)


def test_a_dialer_table_locked_past_the_lock_wait_is_retried_not_called_unreadable(
    conn: Connection, engine: Engine
) -> None:
    seed(conn, 2)
    conn.exec_driver_sql("LOCK TABLES vicidial_callbacks WRITE")
    try:
        with engine.connect() as c, pytest.raises(OperationalError) as waited:
            run_batch(c, [1, 2], ALL, Tuning(lock_wait_timeout=timedelta(seconds=1)))
    finally:
        conn.exec_driver_sql("UNLOCK TABLES")
    assert is_transient(waited.value)
    assert set(live(conn)) == {1, 2}

    with engine.connect() as c:
        assert run_batch(c, [1, 2], ALL).counts["delete"]["deleted"] == 2
    assert live(conn) == {}
