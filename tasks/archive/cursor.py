"""The batch's cursor: every statement a batch sends goes through one ``Cursor``.

A thin DB-API cursor wrapper with one rule: any warning on a write is an error (strict mode turns
truncation into errors; a warning left over would mean a copy that is not exact). An optional
``StatementObserver`` is told each statement and how long it took, from sending it to its result
or its error; it only watches (benchmarks time statements with it) and never changes what runs.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from tasks.errors import BatchError


class StatementObserver(Protocol):
    """Told each statement a batch sends through its cursor, once it has run (or failed)."""

    def statement(self, sql: str, seconds: float) -> None:
        """``sql`` took ``seconds``, from sending it to its rows, its row count or its error."""


class Cursor:
    """A thin DB-API cursor wrapper that turns any warning on a write into an error."""

    def __init__(self, dbapi_connection: Any, observer: StatementObserver | None = None) -> None:
        self._cursor = dbapi_connection.cursor()
        self._observer = observer

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` and return every row."""
        started = time.perf_counter()
        try:
            self._cursor.execute(sql)
            return list(self._cursor.fetchall())
        finally:
            self._observed(sql, started)

    def run(self, sql: str) -> None:
        """Run ``sql``, a statement with neither rows nor a row count the batch needs."""
        started = time.perf_counter()
        try:
            self._cursor.execute(sql)
        finally:
            self._observed(sql, started)

    def write(self, sql: str) -> int:
        """Run the writing statement ``sql``; how many rows it touched. Refuses any warning."""
        started = time.perf_counter()
        try:
            self._cursor.execute(sql)
            if getattr(self._cursor, "warning_count", 0):
                self._cursor.execute("SHOW WARNINGS")
                warnings = "; ".join(f"{r[0]} {r[1]}: {r[2]}" for r in self._cursor.fetchall())
                raise BatchError(f"the database warned on a write, refusing to go on: {warnings}")
            return int(self._cursor.rowcount)
        finally:
            self._observed(sql, started)

    def _observed(self, sql: str, started: float) -> None:
        if self._observer is not None:
            self._observer.statement(sql, time.perf_counter() - started)
