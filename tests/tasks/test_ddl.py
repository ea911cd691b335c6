"""tasks.ddl makes Vicidial 2.14's own tables: the facts the product relies on, read back.

Each fact is read from information_schema after ``create_vicidial_tables`` on MariaDB, so a change
to the DDL that would make the tests and benchmarks run against something other than a Vicidial
server fails here. The embedded demo's SQLite copy must keep every table's columns, in order.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, create_engine, text

from tasks.ddl import ALL_TABLES, create_vicidial_tables, drop_vicidial_tables

ENGINES = ("MyISAM", "InnoDB", "Aria")


@pytest.fixture(params=ENGINES)
def made(engine: Engine, request: pytest.FixtureRequest) -> Iterator[tuple[Connection, str]]:
    """Fresh tables on each engine the tests and benchmarks use, and that engine's name."""
    with engine.connect() as c:
        drop_vicidial_tables(c)
        create_vicidial_tables(c, str(request.param))
        yield c, str(request.param)
        drop_vicidial_tables(c)


def engines(conn: Connection) -> dict[str, str]:
    rows = conn.execute(
        text(
            "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = DATABASE()"
        )
    ).all()
    return {r[0]: r[1] for r in rows}


def indexes(conn: Connection, table: str) -> dict[str, list[str]]:
    """Index name -> its columns, in order."""
    found: dict[str, list[str]] = {}
    for name, column in conn.execute(
        text(
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
            " ORDER BY INDEX_NAME, SEQ_IN_INDEX"
        ),
        {"t": table},
    ):
        found.setdefault(name, []).append(column)
    return found


def indexed_columns(conn: Connection, table: str) -> set[str]:
    return {column for columns in indexes(conn, table).values() for column in columns}


def columns(conn: Connection, table: str) -> dict[str, tuple[str, str, str | None, str]]:
    """Column -> (COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA), in ordinal order."""
    rows = conn.execute(
        text(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA"
            " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
            " AND TABLE_NAME = :t ORDER BY ORDINAL_POSITION"
        ),
        {"t": table},
    ).all()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def test_every_table_is_made_and_dropped(made: tuple[Connection, str]) -> None:
    conn, _ = made
    assert set(engines(conn)) == set(ALL_TABLES)
    drop_vicidial_tables(conn)
    assert engines(conn) == {}


def test_hopper_and_auto_calls_are_memory_whatever_the_other_tables_use(
    made: tuple[Connection, str],
) -> None:
    conn, engine = made
    found = engines(conn)
    assert found["vicidial_hopper"] == "MEMORY"
    assert found["vicidial_auto_calls"] == "MEMORY"
    others = set(ALL_TABLES) - {"vicidial_hopper", "vicidial_auto_calls"}
    assert {found[t] for t in others} == {engine}


def test_live_agents_and_callbacks_are_myisam_as_on_a_vicidial_server(vicidial: Connection) -> None:
    found = engines(vicidial)
    for table in ("vicidial_live_agents", "vicidial_callbacks", "vicidial_callbacks_archive"):
        assert found[table] == "MyISAM", table


def test_only_some_dialer_tables_index_lead_id(vicidial: Connection) -> None:
    assert indexes(vicidial, "vicidial_hopper")["lead_id"] == ["lead_id"]
    assert "lead_id" not in indexed_columns(vicidial, "vicidial_auto_calls")
    assert set(indexes(vicidial, "vicidial_auto_calls")) == {
        "PRIMARY",
        "uniqueid",
        "callerid",
        "call_time",
        "last_update_time",
    }
    assert indexes(vicidial, "vicidial_live_agents")["vlali"] == ["lead_id"]
    assert "preview_lead_id" not in indexed_columns(vicidial, "vicidial_live_agents")


def test_live_agents_has_vicidials_columns_with_the_preview_lead(vicidial: Connection) -> None:
    found = columns(vicidial, "vicidial_live_agents")
    # Every column of the 2.14 create script (schema 1719-1720), in its order.
    assert len(found) == 58
    assert list(found)[:7] == [
        "live_agent_id",
        "user",
        "server_ip",
        "conf_exten",
        "extension",
        "status",
        "lead_id",
    ]
    assert list(found)[-1] == "dial_campaign_id"
    assert found["lead_id"] == ("int(9) unsigned", "NO", None, "")
    assert found["preview_lead_id"] == ("int(9) unsigned", "YES", "0", "")


def test_callbacks_and_their_archive(vicidial: Connection) -> None:
    live = columns(vicidial, "vicidial_callbacks")
    assert len(live) == 18
    assert live["callback_id"][3] == "auto_increment"
    assert live["status"][0] == "varchar(10)"
    assert live["lead_status"][2] == "'CALLBK'"
    assert indexes(vicidial, "vicidial_callbacks") == {
        "PRIMARY": ["callback_id"],
        "lead_id": ["lead_id"],
        "status": ["status"],
        "callback_time": ["callback_time"],
    }
    # Vicidial's recipe: LIKE vicidial_callbacks, AUTO_INCREMENT dropped.
    archived = columns(vicidial, "vicidial_callbacks_archive")
    assert list(archived) == list(live)
    assert archived["callback_id"] == ("int(9) unsigned", "NO", None, "")
    assert indexes(vicidial, "vicidial_callbacks_archive") == indexes(
        vicidial, "vicidial_callbacks"
    )


def test_lists_has_every_column_with_defaults(vicidial: Connection) -> None:
    found = columns(vicidial, "vicidial_lists")
    assert len(found) == 45
    assert indexes(vicidial, "vicidial_lists") == {"PRIMARY": ["list_id"]}
    assert found["list_id"][:2] == ("bigint(14) unsigned", "NO")
    assert found["active"][0] == "enum('Y','N')"
    # A row needs only its list_id: every other NOT NULL column has a default.
    required = [name for name, (_, null, default, _) in found.items() if null == "NO"]
    assert [name for name in required if found[name][2] is None] == ["list_id"]


def test_admin_log_column_sizes(vicidial: Connection) -> None:
    found = columns(vicidial, "vicidial_admin_log")
    assert {name: found[name][:2] for name in found} == {
        "admin_log_id": ("int(9) unsigned", "NO"),
        "event_date": ("datetime", "NO"),
        "user": ("varchar(20)", "NO"),
        "ip_address": ("varchar(15)", "NO"),
        "event_section": ("varchar(30)", "NO"),
        "event_type": (
            "enum('ADD','COPY','LOAD','RESET','MODIFY','DELETE','SEARCH','LOGIN','LOGOUT',"
            "'CLEAR','OVERRIDE','EXPORT','OTHER')",
            "YES",
        ),
        "record_id": ("varchar(50)", "NO"),
        "event_code": ("varchar(255)", "NO"),
        "event_sql": ("mediumtext", "YES"),
        "event_notes": ("mediumtext", "YES"),
        "user_group": ("varchar(20)", "YES"),
    }
    assert found["event_type"][2] == "'OTHER'"
    assert found["user_group"][2] == "'---ALL---'"


def test_the_sqlite_demo_has_the_same_tables_and_columns(vicidial: Connection) -> None:
    lite = create_engine("sqlite://")
    try:
        with lite.connect() as c:
            create_vicidial_tables(c)
            for table in ALL_TABLES:
                names = [r[1] for r in c.exec_driver_sql(f"PRAGMA table_info({table})")]
                assert names == list(columns(vicidial, table)), table
            drop_vicidial_tables(c)
            assert not c.exec_driver_sql("SELECT name FROM sqlite_master").all()
    finally:
        lite.dispose()
