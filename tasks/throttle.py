"""Throttles for long jobs (archive by selection): wait while a replica lags or the server is busy.

Like pt-archiver's ``--max-lag`` and gh-ost's ``--max-load``, a job made of many batches asks
before each batch whether it may go on; while it may not, it waits and its status says why.

Invariants:

- a check reads and never writes: ``SHOW GLOBAL STATUS`` on the server the job archives on,
  ``SHOW REPLICA STATUS`` on each configured replica;
- a replica whose lag cannot be known (replication stopped, broken, or the replica unreachable)
  counts as lagging: unknown lag is not "no lag", the job waits and says so;
- no limit configured, no check: a job without throttles runs exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError


@dataclass(frozen=True, slots=True)
class Throttles:
    """When a batch must wait: more than ``max_threads_running`` statements running on the
    server, or any of ``replicas`` more than ``max_lag`` behind (or of unknown lag)."""

    max_threads_running: int | None = None
    max_lag: timedelta | None = None
    replicas: tuple[Engine, ...] = field(default=())

    def reason_to_wait(self, conn: Connection) -> str | None:
        """Why the next batch must wait now, or None when it may run."""
        if conn.dialect.name != "mysql":
            return None
        if self.max_threads_running is not None:
            running = threads_running(conn)
            if running > self.max_threads_running:
                return (
                    f"the database server is busy: Threads_running is {running}"
                    f" (LEADARCHIVE_MAX_THREADS_RUNNING is {self.max_threads_running})"
                )
        if self.max_lag is not None:
            limit = self.max_lag.total_seconds()
            for replica in self.replicas:
                lag = replica_lag(replica)
                where = f"replica {replica.url.host}:{replica.url.port or 3306}"
                if lag is None:
                    return f"{where}: replication is not running, its lag is unknown"
                if lag > limit:
                    return (
                        f"{where} is {lag:.0f} s behind"
                        f" (LEADARCHIVE_MAX_REPLICA_LAG is {limit:.0f} s)"
                    )
        return None


def threads_running(conn: Connection) -> int:
    """Statements running on the server right now, this check's own included."""
    row = conn.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Threads_running'").one()
    return int(row[1])


def replica_lag(replica: Engine) -> float | None:
    """How far the replica's applier is behind its primary (s); None when it is not
    replicating or cannot be read."""
    try:
        with replica.connect() as conn:
            rows = conn.exec_driver_sql("SHOW REPLICA STATUS").mappings().all()
    except SQLAlchemyError:
        return None
    if not rows:
        return None
    row: dict[str, Any] = dict(rows[0])
    running = row.get("Slave_SQL_Running", row.get("Replica_SQL_Running"))
    behind = row.get("Seconds_Behind_Master", row.get("Seconds_Behind_Source"))
    if running != "Yes" or behind is None:
        return None
    return float(behind)
