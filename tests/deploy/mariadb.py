"""Scratch databases and users on the test MariaDB, and SQL files run as the client runs them."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Engine, make_url

from tasks.db import make_engine
from tests.conftest import SERVER_URL
from tests.deploy.compose import ROOT

GRANTS_SQL = ROOT / "deploy" / "grants.sql"
# MariaDB error numbers: command denied on a table, access denied to a database, no such table.
ER_TABLEACCESS_DENIED = 1142
ER_DBACCESS_DENIED = 1044
ER_NO_SUCH_TABLE = 1146
ACCESS_DENIED = (ER_TABLEACCESS_DENIED, ER_DBACCESS_DENIED)


def literal(statement: str) -> str:
    """``statement`` for exec_driver_sql, which passes it through pymysql's %-formatting."""
    return statement.replace("%", "%%")


def sql_statements(text: str) -> list[str]:
    """The statements of a SQL file: ``--`` comment lines dropped, split at ``;`` ending a line."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in re.split(r";\s*$", "\n".join(lines), flags=re.M) if s.strip()]


def render_grants(
    database: str, user: str, host: str, options: Sequence[str] = (), text: str | None = None
) -> str:
    """grants.sql with its tokens filled and ``options`` enabled, as the documented sed does."""
    sql = GRANTS_SQL.read_text(encoding="utf-8") if text is None else text
    sql = sql.replace("@@DATABASE@@", database).replace("@@USER@@", user)
    sql = sql.replace("@@HOST@@", host)
    for option in options:
        sql = re.sub(rf"^-- \[{re.escape(option)}\] ", "", sql, flags=re.M)
    return sql


def server_engine() -> Engine:
    """Root (or LEADARCHIVE_TEST_MYSQL_URL's user) on the test server, no database selected."""
    return make_engine(SERVER_URL)


def client_host() -> str:
    """The host part of a user's account that matches this test process's connections."""
    host = make_url(SERVER_URL).host or "127.0.0.1"
    return "127.0.0.1" if host in ("127.0.0.1", "localhost") else "%"


def database_url(database: str, user: str | None = None, password: str | None = None) -> str:
    """A URL of ``database`` on the test server, as root or as ``user``."""
    url = make_url(SERVER_URL).set(database=database, query={"charset": "utf8mb4"})
    if user is not None:
        url = url.set(username=user, password=password)
    return url.render_as_string(hide_password=False)


@contextmanager
def scratch_database(prefix: str, charset: bool = True) -> Iterator[str]:
    """A new, empty database (utf8 / utf8_unicode_ci like Vicidial's), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    server = server_engine()
    options = " CHARACTER SET utf8 COLLATE utf8_unicode_ci" if charset else ""
    try:
        with server.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{name}`{options}")
        yield name
    finally:
        with server.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        server.dispose()


@contextmanager
def scratch_user(host: str | None = None, create: bool = True) -> Iterator[tuple[str, str, str]]:
    """A new user with a random name and password and no privileges, dropped afterwards."""
    user = f"la_grant_{uuid.uuid4().hex[:12]}"
    password = secrets.token_urlsafe(18)
    host = host or client_host()
    server = server_engine()
    try:
        if create:
            with server.connect() as conn:
                conn.exec_driver_sql(
                    literal(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
                )
        yield user, password, host
    finally:
        with server.connect() as conn:
            conn.exec_driver_sql(literal(f"DROP USER IF EXISTS '{user}'@'{host}'"))
        server.dispose()


def run_sql(database: str, sql: str) -> None:
    """Run every statement of ``sql`` in ``database`` as root."""
    engine = make_engine(database_url(database))
    try:
        with engine.connect() as conn:
            for statement in sql_statements(sql):
                conn.exec_driver_sql(literal(statement))
    finally:
        engine.dispose()


def show_grants(user: str, host: str) -> dict[str, set[str]]:
    """``{object: {privilege, ...}}`` from SHOW GRANTS, USAGE left out."""
    server = server_engine()
    try:
        with server.connect() as conn:
            grants_for = literal(f"SHOW GRANTS FOR '{user}'@'{host}'")
            rows = conn.exec_driver_sql(grants_for).scalars().all()
    finally:
        server.dispose()
    grants: dict[str, set[str]] = {}
    for row in rows:
        match = re.match(r"GRANT (?P<privileges>.+?) ON (?P<object>\S+) TO ", str(row))
        assert match, row
        privileges = {p.strip() for p in match["privileges"].split(",")} - {"USAGE"}
        if privileges:
            grants.setdefault(match["object"].replace("`", ""), set()).update(privileges)
    return grants
