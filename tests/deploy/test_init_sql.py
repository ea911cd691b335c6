"""deploy/mariadb-init/01-vicidial.sql: current with tasks.ddl, and the same tables it makes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import ModuleType

from tasks.db import make_engine
from tasks.ddl import ALL_TABLES, create_vicidial_tables
from tasks.schema import inspect_tables
from tests.deploy.compose import ROOT
from tests.deploy.mariadb import database_url, run_sql, scratch_database

SCRIPT = ROOT / "deploy" / "make-init-sql.py"
INIT_SQL = ROOT / "deploy" / "mariadb-init" / "01-vicidial.sql"


def make_init_sql() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_init_sql", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_init_sql_is_what_the_script_renders_now() -> None:
    rendered = make_init_sql().render()
    assert INIT_SQL.read_text(encoding="utf-8") == rendered, (
        "deploy/mariadb-init/01-vicidial.sql is stale: run .venv/bin/python deploy/make-init-sql.py"
    )


def test_script_check_mode_agrees() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def table_definitions(database: str) -> dict[str, str]:
    engine = make_engine(database_url(database))
    try:
        with engine.connect() as conn:
            return {
                table: conn.exec_driver_sql(f"SHOW CREATE TABLE `{table}`").one()[1]
                for table in ALL_TABLES
            }
    finally:
        engine.dispose()


def test_init_sql_makes_the_tables_the_tests_use() -> None:
    # As the mariadb image does: the database exists with the server's defaults, then the file
    # runs inside it.
    with (
        scratch_database("leadarchive_init_test", charset=False) as from_file,
        scratch_database("leadarchive_init_test") as from_code,
    ):
        run_sql(from_file, INIT_SQL.read_text(encoding="utf-8"))
        engine = make_engine(database_url(from_code))
        try:
            with engine.connect() as conn:
                create_vicidial_tables(conn, "MyISAM")
        finally:
            engine.dispose()

        assert table_definitions(from_file) == table_definitions(from_code)

        engine = make_engine(database_url(from_file))
        try:
            with engine.connect() as conn:
                charset, collation = conn.exec_driver_sql(
                    "SELECT @@character_set_database, @@collation_database"
                ).one()
                pair = inspect_tables(conn)
        finally:
            engine.dispose()
    assert (charset, collation) == ("utf8mb3", "utf8mb3_unicode_ci")
    assert (pair.live_engine, pair.archive_engine) == ("MyISAM", "MyISAM")
    assert len(pair.columns) == 35
