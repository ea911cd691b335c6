"""deploy/grants.sql, for real: enough for every batch, and nothing more.

Each sandbox is a fresh database with Vicidial's tables and 20 leads, and a fresh user with a random
name and password and no privileges; the test applies grants.sql to that user and connects as it.
Both are dropped afterwards, whatever happens.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pymysql
import pytest
from sqlalchemy import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError

from leadarchive.cli import main as leadarchive
from tasks import admin_log
from tasks.admin_log import TABLE as ADMIN_LOG_TABLE
from tasks.admin_log import JobOutcome
from tasks.archive import Actions, run_batch
from tasks.db import make_engine
from tasks.ddl import create_archive_table, create_vicidial_tables
from tasks.schema import ARCHIVE_TABLE, IN_USE_TABLES, LIVE_TABLE, inspect_tables
from tasks.seed import insert_leads, lead_rows, remove_demo, seed_demo
from tests.conftest import SERVER_URL
from tests.deploy.compose import ROOT
from tests.deploy.mariadb import (
    ACCESS_DENIED,
    ER_NO_SUCH_TABLE,
    ER_TABLEACCESS_DENIED,
    GRANTS_SQL,
    database_url,
    render_grants,
    run_sql,
    scratch_database,
    scratch_user,
    show_grants,
)
from tests.helpers import archive, live

ALL = Actions(insert=True, update=True, delete=True)
INIT_SCRIPT = ROOT / "deploy" / "mariadb-init" / "02-leadarchive-user.sh"


@dataclass
class Sandbox:
    """A Vicidial database with leads, a root connection to it, and a user with no privileges."""

    database: str
    user: str
    password: str
    host: str
    root: Connection

    def grant(self, *options: str) -> None:
        run_sql(self.database, render_grants(self.database, self.user, self.host, options))

    def url(self) -> str:
        return database_url(self.database, self.user, self.password)

    def grants(self) -> dict[str, set[str]]:
        return show_grants(self.user, self.host)


def make_sandbox(table_engine: str = "MyISAM") -> Iterator[Sandbox]:
    with (
        scratch_database("leadarchive_grant_test") as database,
        scratch_user() as (user, password, host),
    ):
        root = make_engine(database_url(database))
        try:
            with root.connect() as conn:
                create_vicidial_tables(conn, table_engine)
                insert_leads(conn, lead_rows(20))
                yield Sandbox(database, user, password, host, conn)
        finally:
            root.dispose()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    yield from make_sandbox()


@pytest.fixture(params=["MyISAM", "InnoDB"])
def engine_sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    yield from make_sandbox(str(request.param))


@pytest.fixture
def as_user(sandbox: Sandbox) -> Iterator[Engine]:
    """An engine connected as the sandbox's user, after grants.sql (no options)."""
    sandbox.grant()
    engine = make_engine(sandbox.url())
    yield engine
    engine.dispose()


def error_code(exc: DBAPIError) -> int:
    code = exc.orig.args[0] if exc.orig is not None else None
    assert isinstance(code, int), exc
    return code


def documented_grants(db: str) -> dict[str, set[str]]:
    """What grants.sql's header promises, and nothing else."""
    return {
        f"{db}.*": {"LOCK TABLES", "CREATE TEMPORARY TABLES"},
        # Least privilege by capability: archiving never writes a live lead's row and never
        # deletes an archive row (restore, which does, is another user's capability).
        f"{db}.{LIVE_TABLE}": {"SELECT", "DELETE"},
        f"{db}.{ARCHIVE_TABLE}": {"SELECT", "INSERT", "UPDATE"},
        **{f"{db}.{table}": {"SELECT"} for table in IN_USE_TABLES},
        f"{db}.{ADMIN_LOG_TABLE}": {"INSERT"},
    }


def test_grants_are_exactly_the_documented_ones(sandbox: Sandbox) -> None:
    sandbox.grant()
    assert sandbox.grants() == documented_grants(sandbox.database)


def test_a_batch_archives_and_deletes_with_only_these_grants(engine_sandbox: Sandbox) -> None:
    sandbox = engine_sandbox
    sandbox.grant()
    before = live(sandbox.root)
    engine = make_engine(sandbox.url())
    try:
        with engine.connect() as conn:
            report = run_batch(conn, [1, 2, 3], ALL)
    finally:
        engine.dispose()

    assert report.counts["delete"]["deleted"] == 3
    assert report.counts["insert"]["inserted"] == 3
    after_live, after_archive = live(sandbox.root), archive(sandbox.root)
    for lead_id in (1, 2, 3):
        assert lead_id not in after_live
        assert after_archive[lead_id] == before[lead_id], "the archive copy is byte-identical"
    assert set(after_live) == set(before) - {1, 2, 3}


def test_the_in_use_guard_sees_the_dialers_tables(sandbox: Sandbox) -> None:
    # Without SELECT on these tables they vanish from information_schema and the guard with them.
    sandbox.grant()
    sandbox.root.exec_driver_sql(
        "INSERT INTO vicidial_hopper (lead_id, list_id, campaign_id) VALUES (4, 1, 'DEMO')"
    )
    sandbox.root.exec_driver_sql(
        "INSERT INTO vicidial_auto_calls (server_ip, lead_id, campaign_id)"
        " VALUES ('10.10.10.15', 5, 'DEMO')"
    )
    sandbox.root.exec_driver_sql(
        "INSERT INTO vicidial_live_agents (server_ip, lead_id, user, status)"
        " VALUES ('10.10.10.15', 6, 'agent1', 'INCALL')"
    )
    sandbox.root.exec_driver_sql(
        "INSERT INTO vicidial_live_agents (server_ip, lead_id, preview_lead_id, user, status)"
        " VALUES ('10.10.10.15', 0, 7, 'agent2', 'PAUSED')"
    )
    sandbox.root.exec_driver_sql(
        "INSERT INTO vicidial_callbacks (lead_id, list_id, status, callback_time)"
        " VALUES (8, 1, 'ACTIVE', '2030-01-01 10:00:00')"
    )
    engine = make_engine(sandbox.url())
    try:
        with engine.connect() as conn:
            assert inspect_tables(conn).in_use_tables == IN_USE_TABLES
            report = run_batch(conn, [4, 5, 6, 7, 8, 9], ALL)
    finally:
        engine.dispose()
    outcomes = {lead.lead_id: (lead.delete, lead.held_by) for lead in report.leads}
    assert outcomes == {
        4: ("in_use", "hopper"),
        5: ("in_use", "live_call"),
        6: ("in_use", "agent"),
        7: ("in_use", "preview"),
        8: ("in_use", "callback"),
        9: ("deleted", None),
    }
    assert {4, 5, 6, 7, 8} <= set(live(sandbox.root))


def test_check_and_inspect_tables_work_with_these_grants(sandbox: Sandbox, as_user: Engine) -> None:
    with as_user.connect() as conn:
        pair = inspect_tables(conn)
    assert (pair.live_engine, pair.archive_engine) == ("MyISAM", "MyISAM")
    assert len(pair.columns) == 35
    assert pair.in_use_tables == IN_USE_TABLES
    assert leadarchive(["check", "--database-url", sandbox.url()]) == 0


DENIED = [
    # What only restore (another user's capability) may do: a leaked archive password can
    # neither rewrite live leads nor wipe the archive.
    "INSERT INTO vicidial_list (lead_id, phone_number) VALUES (999999, '2015550123')",
    "UPDATE vicidial_list SET first_name = 'x'",
    "DELETE FROM vicidial_list_archive",
    "UPDATE vicidial_callbacks SET status = 'INACTIVE'",
    "DELETE FROM vicidial_callbacks",
    "DROP TABLE vicidial_list",
    "DROP TABLE vicidial_list_archive",
    "ALTER TABLE vicidial_list ADD COLUMN x INT",
    "ALTER TABLE vicidial_list_archive ADD COLUMN x INT",
    "CREATE TABLE x (a INT)",
    "CREATE TABLE vicidial_list_copy LIKE vicidial_list",
    "CREATE INDEX city ON vicidial_list (city)",
    "TRUNCATE TABLE vicidial_list_archive",
    "DELETE FROM vicidial_lists",
    "INSERT INTO vicidial_lists (list_id, list_name) VALUES (1, 'x')",
    "SELECT * FROM vicidial_lists",
    # The admin log: INSERT only. Other administrators' rows are neither read nor changed.
    "SELECT * FROM vicidial_admin_log",
    "UPDATE vicidial_admin_log SET event_notes = ''",
    "DELETE FROM vicidial_admin_log",
    "TRUNCATE TABLE vicidial_admin_log",
    "DELETE FROM vicidial_hopper",
    "UPDATE vicidial_live_agents SET lead_id = 0",
    "INSERT INTO vicidial_auto_calls (server_ip, lead_id) VALUES ('10.10.10.15', 1)",
    "SELECT * FROM mysql.user",
    "CREATE DATABASE leadarchive_grant_test_never",
]


@pytest.mark.parametrize("statement", DENIED)
def test_everything_else_is_denied(sandbox: Sandbox, as_user: Engine, statement: str) -> None:
    definitions_before = table_state(sandbox.root)
    with as_user.connect() as conn, pytest.raises(DBAPIError) as denied:
        conn.exec_driver_sql(statement)
    assert error_code(denied.value) in ACCESS_DENIED, denied.value
    assert table_state(sandbox.root) == definitions_before


def test_the_user_writes_vicidials_admin_log_and_only_adds_to_it(
    sandbox: Sandbox, as_user: Engine
) -> None:
    sandbox.root.exec_driver_sql(
        "INSERT INTO vicidial_admin_log (event_date, user, ip_address, event_section, record_id,"
        " event_code, event_notes) VALUES (NOW(), '6666', '', 'USERS', '6666', 'ADMIN MODIFY',"
        " 'another admin')"
    )
    job = JobOutcome("job-1", "alice", 1, ("insert",), {"insert": {"inserted": 1}})

    with as_user.connect() as conn:
        assert admin_log.write(conn, job, user="VDAD", ip_address="192.0.2.1")

    rows = sandbox.root.exec_driver_sql(
        "SELECT user, record_id, event_code, event_notes FROM vicidial_admin_log"
        " ORDER BY admin_log_id"
    ).all()
    assert [tuple(r) for r in rows] == [
        ("6666", "6666", "ADMIN MODIFY", "another admin"),
        ("VDAD", "job-1", "LEAD ARCHIVE API", job.notes()),
    ]


def test_without_vicidials_admin_log_the_last_grant_fails_after_all_others(
    sandbox: Sandbox,
) -> None:
    sandbox.root.exec_driver_sql(f"DROP TABLE {ADMIN_LOG_TABLE}")

    with pytest.raises(DBAPIError) as missing:
        sandbox.grant()

    assert error_code(missing.value) == ER_NO_SUCH_TABLE
    expected = documented_grants(sandbox.database)
    del expected[f"{sandbox.database}.{ADMIN_LOG_TABLE}"]
    assert sandbox.grants() == expected


def test_the_user_cannot_grant_itself_more(sandbox: Sandbox, as_user: Engine) -> None:
    with as_user.connect() as conn, pytest.raises(DBAPIError) as denied:
        conn.exec_driver_sql(
            f"GRANT DROP ON `{sandbox.database}`.* TO '{sandbox.user}'@'{sandbox.host}'"
        )
    assert error_code(denied.value) in ACCESS_DENIED, denied.value


def table_state(conn: Connection) -> dict[str, tuple[str, int]]:
    """Every table's definition and row count."""
    tables = conn.exec_driver_sql("SHOW TABLES").scalars().all()
    return {
        str(t): (
            conn.exec_driver_sql(f"SHOW CREATE TABLE `{t}`").one()[1],
            int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM `{t}`").scalar_one()),
        )
        for t in tables
    }


# What grants.sql's [seed-demo] part adds: a list (read, insert, remove), its leads (insert, remove)
# and their archived copies (remove).
SEED_DEMO_GRANTS = {
    "vicidial_lists": {"SELECT", "INSERT", "DELETE"},
    LIVE_TABLE: {"INSERT", "DELETE"},
    ARCHIVE_TABLE: {"DELETE"},
}


def with_seed_demo(db: str) -> dict[str, set[str]]:
    """The documented grants plus the [seed-demo] part's, and nothing else."""
    grants = documented_grants(db)
    for table, privileges in SEED_DEMO_GRANTS.items():
        grants[f"{db}.{table}"] = grants.get(f"{db}.{table}", set()) | privileges
    return grants


def test_seed_demo_and_its_remove_need_their_optional_grant(sandbox: Sandbox) -> None:
    sandbox.grant()
    state_before = table_state(sandbox.root)
    engine = make_engine(sandbox.url())
    try:
        # seed_demo talks to the driver itself: its own error, not SQLAlchemy's.
        with engine.connect() as conn, pytest.raises(pymysql.err.OperationalError) as denied:
            seed_demo(conn, 5)
        assert denied.value.args[0] in ACCESS_DENIED
        assert table_state(sandbox.root) == state_before, "a refusal changes nothing"

        sandbox.grant("seed-demo")
        with engine.connect() as conn:
            demo = seed_demo(conn, 5)
            assert list(demo.lead_ids) == [21, 22, 23, 24, 25]
            assert run_batch(conn, [21, 22], ALL).counts["delete"]["deleted"] == 2
            removal = remove_demo(conn, demo.list_id)
    finally:
        engine.dispose()
    assert (removal.live_deleted, removal.archive_deleted, removal.list_removed) == (3, 2, True)
    assert set(live(sandbox.root)) == set(range(1, 21))
    assert set(archive(sandbox.root)) == set()
    assert sandbox.grants() == with_seed_demo(sandbox.database)


def test_create_archive_table_option_lets_the_service_make_a_missing_archive(
    sandbox: Sandbox,
) -> None:
    sandbox.root.exec_driver_sql(f"DROP TABLE {ARCHIVE_TABLE}")
    # As grants.sql warns: without the option, a missing archive stops the script.
    with pytest.raises(DBAPIError) as missing:
        sandbox.grant()
    assert error_code(missing.value) == ER_NO_SUCH_TABLE

    sandbox.grant("create-archive-table")
    engine = make_engine(sandbox.url())
    try:
        with engine.connect() as conn:
            create_archive_table(conn)
            report = run_batch(conn, [1], ALL)
        assert report.counts["delete"]["deleted"] == 1

        # The documented REVOKE takes the one-time privileges back; archiving still works.
        sandbox.root.exec_driver_sql(
            f"REVOKE CREATE, ALTER ON `{sandbox.database}`.`{ARCHIVE_TABLE}`"
            f" FROM '{sandbox.user}'@'{sandbox.host}'"
        )
        with engine.connect() as conn:
            with pytest.raises(DBAPIError) as denied:
                conn.exec_driver_sql(f"ALTER TABLE {ARCHIVE_TABLE} ADD COLUMN x INT")
            assert error_code(denied.value) == ER_TABLEACCESS_DENIED
            assert run_batch(conn, [2], ALL).counts["delete"]["deleted"] == 1
    finally:
        engine.dispose()
    assert sandbox.grants()[f"{sandbox.database}.{ARCHIVE_TABLE}"] == {
        "SELECT",
        "INSERT",
        "UPDATE",
    }


def sed_expressions(database: str, user: str, host: str, options: tuple[str, ...]) -> list[str]:
    """The sed command grants.sql documents."""
    sed = shutil.which("sed")
    assert sed is not None
    argv = [sed, "-e", f"s/@@DATABASE@@/{database}/g", "-e", f"s/@@USER@@/{user}/g"]
    argv += ["-e", f"s/@@HOST@@/{host}/g"]
    for option in options:
        argv += ["-e", f"s/^-- \\[{option}\\] //"]
    return argv


@pytest.mark.parametrize("options", [(), ("seed-demo",), ("seed-demo", "create-archive-table")])
def test_documented_sed_command_renders_the_same_sql(options: tuple[str, ...]) -> None:
    if shutil.which("sed") is None:
        pytest.skip("no sed on this machine")
    rendered = subprocess.run(
        [*sed_expressions("asterisk", "leadarchive", "127.0.0.1", options), str(GRANTS_SQL)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert rendered == render_grants("asterisk", "leadarchive", "127.0.0.1", options)
    assert "@@" not in "\n".join(
        line for line in rendered.splitlines() if not line.startswith("--")
    )


def mysql_client() -> str | None:
    return shutil.which("mariadb") or shutil.which("mysql")


def client_argv(client: str) -> tuple[list[str], dict[str, str]]:
    """The command-line client, connected as the test server's admin user."""
    url = make_url(SERVER_URL)
    argv = [client, "--protocol=tcp", f"--host={url.host}", f"--port={url.port or 3306}"]
    argv.append(f"--user={url.username or 'root'}")
    return argv, {**os.environ, "MYSQL_PWD": url.password or ""}


def test_grants_apply_with_the_documented_sed_and_mysql_pipeline(sandbox: Sandbox) -> None:
    client = mysql_client()
    if client is None:
        pytest.skip("no mariadb/mysql client on this machine")
    rendered = subprocess.run(
        [*sed_expressions(sandbox.database, sandbox.user, sandbox.host, ()), str(GRANTS_SQL)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    argv, env = client_argv(client)
    subprocess.run(argv, input=rendered, text=True, env=env, check=True, capture_output=True)
    assert sandbox.grants() == documented_grants(sandbox.database)


# Stand-ins for the mariadb image's entrypoint functions that 02-leadarchive-user.sh uses; the
# entrypoint sources the script with `set -eo pipefail` on.
IMAGE_HELPERS = r"""
set -eo pipefail
mysql_note() { :; }
mysql_error() { echo "$*" >&2; exit 1; }
# Escape \, newline and ' for a single-quoted SQL string.
docker_sql_escape_string_literal() {
    local s=${1//\\/\\\\}
    s=${s//$'\n'/\\n}
    printf '%s\n' "${s//\'/\\\'}"
}
# The image runs the client as root over the socket; here over TCP to the test server.
docker_process_sql() { eval "$TEST_MYSQL_CLIENT" '"$@"'; }
"""


def test_compose_init_script_creates_a_user_that_can_archive_and_seed() -> None:
    """deploy/mariadb-init/02-leadarchive-user.sh with the mariadb image's helpers stubbed."""
    client, bash = mysql_client(), shutil.which("bash")
    if client is None or bash is None:
        pytest.skip("needs bash and the mariadb/mysql client")
    argv, env = client_argv(client)
    with (
        scratch_database("leadarchive_grant_test") as database,
        # The script creates the user itself, at host '%'; quotes and a backslash in the password
        # prove its escaping.
        scratch_user(host="%", create=False) as (user, _, host),
    ):
        password = "it's a \\ pass"
        root = make_engine(database_url(database))
        try:
            with root.connect() as conn:
                create_vicidial_tables(conn, "MyISAM")
                insert_leads(conn, lead_rows(5))
        finally:
            root.dispose()
        subprocess.run(
            [bash, "-c", IMAGE_HELPERS + '. "$INIT_SCRIPT"\n'],
            env={
                **env,
                "TEST_MYSQL_CLIENT": shlex.join(argv),
                "INIT_SCRIPT": str(INIT_SCRIPT),
                "MARIADB_DATABASE": database,
                "LEADARCHIVE_DB_USER": user,
                "LEADARCHIVE_DB_PASSWORD": password,
                "LEADARCHIVE_GRANTS_SQL": str(GRANTS_SQL),
            },
            check=True,
            capture_output=True,
            text=True,
        )
        assert host == "%"
        engine = make_engine(database_url(database, user, password))
        try:
            with engine.connect() as conn:
                demo = seed_demo(conn, 3, list_id=555)
                report = run_batch(conn, [1, demo.first_lead_id], ALL)
        finally:
            engine.dispose()
        assert list(demo.lead_ids) == [6, 7, 8]
        assert report.counts["delete"]["deleted"] == 2
        assert show_grants(user, host) == with_seed_demo(database)
