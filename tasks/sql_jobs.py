"""Job records in a SQLite file: the embedded default's stand-in for Redis.

Same contract as ``RedisJobStore``, and the same fields (``JobRecord.to_fields``) kept as one JSON
object per job; each status change is one ``BEGIN IMMEDIATE`` transaction,
so a cancel and a starting worker can never both win here either.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tasks.errors import IdempotencyConflict
from tasks.jobs import new_job_id
from tasks.records import JobRecord, Status, encode, now_iso
from tasks.requests import ArchiveRequest

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, status TEXT NOT NULL,"
    " record TEXT NOT NULL, expires_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS idempotency (claim TEXT PRIMARY KEY, job_id TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL, expires_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS deferred (job_id TEXT PRIMARY KEY, not_before REAL NOT NULL)",
)


class SqliteJobStore:
    """Job records, idempotency keys and deferred jobs in one SQLite file."""

    def __init__(self, path: Path, ttl: timedelta) -> None:
        self.path = path
        self.ttl = ttl
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._write() as db:
            for statement in _SCHEMA:
                db.execute(statement)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            self._local.db = db
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _expiry(self) -> float:
        return time.time() + self.ttl.total_seconds()

    def create(
        self,
        owner: str,
        request: ArchiveRequest,
        *,
        idempotency_key: str | None = None,
        fingerprint: str = "",
        now: datetime | None = None,
        client_ip: str = "",
    ) -> tuple[str, bool]:
        """Record a new queued job; see ``RedisJobStore.create``."""
        job_id = new_job_id()
        claim = ""
        with self._write() as db:
            if idempotency_key is not None:
                claim = owner + ":" + hashlib.sha256(idempotency_key.encode()).hexdigest()
                row = db.execute(
                    "SELECT job_id, fingerprint FROM idempotency"
                    " WHERE claim = ? AND expires_at > ?",
                    (claim, time.time()),
                ).fetchone()
                if row is not None:
                    if row[1] != fingerprint:
                        raise IdempotencyConflict(idempotency_key)
                    return str(row[0]), False
                db.execute(
                    "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?)",
                    (claim, job_id, fingerprint, self._expiry()),
                )
            record = JobRecord.queued(
                job_id, owner, request, now=now, client_ip=client_ip, idempotency=claim
            )
            db.execute(
                "INSERT INTO jobs VALUES (?, 'queued', ?, ?)",
                (job_id, json.dumps(record.to_fields()), self._expiry()),
            )
        return job_id, True

    def get(self, job_id: str) -> JobRecord | None:
        """The record, or None when it does not exist or has expired."""
        row = (
            self._db()
            .execute(
                "SELECT record FROM jobs WHERE job_id = ? AND expires_at > ?", (job_id, time.time())
            )
            .fetchone()
        )
        return None if row is None else JobRecord.from_fields(json.loads(row[0]))

    def transition(
        self, job_id: str, allowed: tuple[str, ...], status: Status, **fields: Any
    ) -> str | None:
        """Set ``status`` and ``fields`` if the job is in one of ``allowed``; the old status."""
        with self._write() as db:
            row = db.execute(
                "SELECT status, record FROM jobs WHERE job_id = ? AND expires_at > ?",
                (job_id, time.time()),
            ).fetchone()
            if row is None:
                return None
            before = str(row[0])
            if before in allowed:
                record = json.loads(row[1]) | encode(fields) | {"status": status}
                db.execute(
                    "UPDATE jobs SET status = ?, record = ? WHERE job_id = ?",
                    (status, json.dumps(record), job_id),
                )
            return before

    def count_attempt(self, job_id: str) -> None:
        """Count one more start of the batch."""
        with self._write() as db:
            row = db.execute("SELECT record FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is not None:
                record = json.loads(row[0])
                record["attempts"] = str(int(record.get("attempts", "0")) + 1)
                db.execute(
                    "UPDATE jobs SET record = ? WHERE job_id = ?", (json.dumps(record), job_id)
                )

    def refresh_ttl(self, job_id: str) -> None:
        """Keep a finished job for the whole result lifetime, counted from now."""
        with self._write() as db:
            db.execute("UPDATE jobs SET expires_at = ? WHERE job_id = ?", (self._expiry(), job_id))

    def forget(self, job_id: str) -> None:
        """Remove a record whose task could not be enqueued, and its idempotency claim."""
        with self._write() as db:
            db.execute("DELETE FROM idempotency WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    def defer(self, job_id: str, not_before: datetime) -> bool:
        """Park a job until ``not_before`` (scheduled first, as in ``RedisJobStore.defer``)."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO deferred VALUES (?, ?)", (job_id, not_before.timestamp())
            )
        before = self.transition(
            job_id, ("queued", "running"), "deferred", not_before=now_iso(not_before)
        )
        return before in ("queued", "running")

    def cancel(self, job_id: str) -> str | None:
        """Cancel a job that has not started; the status it had."""
        before = self.transition(job_id, ("queued", "deferred"), "cancelled", finished_at=now_iso())
        if before in ("queued", "deferred"):
            with self._write() as db:
                db.execute("DELETE FROM deferred WHERE job_id = ?", (job_id,))
        return before

    def take_due(self, now: datetime) -> list[str]:
        """Remove and return the deferred jobs whose window has opened."""
        with self._write() as db:
            due = [
                str(r[0])
                for r in db.execute(
                    "SELECT job_id FROM deferred WHERE not_before <= ?", (now.timestamp(),)
                )
            ]
            db.executemany("DELETE FROM deferred WHERE job_id = ?", [(j,) for j in due])
        return [j for j in due if self.transition(j, ("deferred",), "queued") == "deferred"]

    def ping(self) -> None:
        """Raise when the file cannot be read."""
        self._db().execute("SELECT 1").fetchone()
