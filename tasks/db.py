"""Database engines. Built by whoever needs one (the API, each worker process), never at import."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine


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
