"""Database engines. Built by whoever needs one (the API, each worker process), never at import."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, create_engine

from tasks.errors import LeadArchiveError


def make_engine(url: str, *, pool_size: int = 2) -> Engine:
    """An engine whose connections autocommit each statement, checked before each use."""
    return create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=2,
        # MySQL drops idle connections after wait_timeout (8 h by default).
        pool_recycle=3600,
    )


def autocommit_dbapi(conn: Connection, error: type[LeadArchiveError], user: str) -> Any:
    """The DB-API connection under ``conn``, which must commit each statement on its own.

    Raises ``error`` (saying that ``user`` needs it) for a closed or transactional connection.
    """
    dbapi = conn.connection.dbapi_connection
    if dbapi is None:
        raise error("the database connection is closed")
    sqlite = conn.dialect.name == "sqlite"
    if not (dbapi.isolation_level is None if sqlite else dbapi.get_autocommit()):
        raise error(f"{user} needs an autocommit connection (tasks.db.make_engine)")
    return dbapi
