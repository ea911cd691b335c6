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

from tasks.errors import IdempotencyConflict, TooManyPendingJobs
from tasks.jobs import new_job_id
from tasks.records import JobRecord, Status, encode, now_iso
from tasks.requests import JobRequest
from tasks.scopes import Lists

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, status TEXT NOT NULL,"
    " record TEXT NOT NULL, expires_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS idempotency (claim TEXT PRIMARY KEY, job_id TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL, expires_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS deferred (job_id TEXT PRIMARY KEY, not_before REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at)",
)
_UNFINISHED = "('queued', 'deferred', 'running')"


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
        request: JobRequest,
        *,
        idempotency_key: str | None = None,
        fingerprint: str = "",
        now: datetime | None = None,
        client_ip: str = "",
        max_pending: int | None = None,
        lists: Lists | None = None,
    ) -> tuple[str, bool]:
        """Record a new queued job; see ``RedisJobStore.create``. Expired jobs and claims are
        deleted on the way, so the file holds no more than the result lifetime's jobs."""
        job_id = new_job_id()
        claim = ""
        with self._write() as db:
            self._purge(db)
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
            if max_pending:
                (pending,) = db.execute(
                    f"SELECT COUNT(*) FROM jobs WHERE status IN {_UNFINISHED}"  # noqa: S608 - constant
                    " AND json_extract(record, '$.owner') = ?",
                    (owner,),
                ).fetchone()
                if pending >= max_pending:
                    raise TooManyPendingJobs(pending, max_pending)
            if claim:
                db.execute(
                    "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?)",
                    (claim, job_id, fingerprint, self._expiry()),
                )
            record = JobRecord.queued(
                job_id, owner, request, now=now, client_ip=client_ip, idempotency=claim, lists=lists
            )
            db.execute(
                "INSERT INTO jobs VALUES (?, 'queued', ?, ?)",
                (job_id, json.dumps(record.to_fields()), self._expiry()),
            )
        return job_id, True

    @staticmethod
    def _purge(db: sqlite3.Connection) -> None:
        """Delete expired jobs and claims, and deferrals of jobs that are gone."""
        now = time.time()
        db.execute("DELETE FROM jobs WHERE expires_at <= ?", (now,))
        db.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
        db.execute("DELETE FROM deferred WHERE job_id NOT IN (SELECT job_id FROM jobs)")

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
        self,
        job_id: str,
        allowed: tuple[str, ...],
        status: Status,
        *,
        token: str | None = None,
        due_in: float = 0.0,
        **fields: Any,
    ) -> str | None:
        """Set ``status`` and ``fields`` if the job is in one of ``allowed`` (and held by the
        run with ``token``, if given); the old status, or ``"lost"``, as in ``RedisJobStore``.
        ``due_in`` is for the queued index this store has no need of (no lost-message sweep)."""
        with self._write() as db:
            found = self._read(db, job_id)
            if found is None:
                return None
            before, record = found
            if token is not None and record.get("run_token") != token:
                return "lost"
            if before in allowed:
                record = record | encode(fields) | {"status": status}
                if status != "running":
                    record.pop("run_token", None)
                    record.pop("lease_until", None)
                self._store(db, job_id, status, record)
            return before

    @staticmethod
    def _read(db: sqlite3.Connection, job_id: str) -> tuple[str, dict[str, str]] | None:
        row = db.execute(
            "SELECT status, record FROM jobs WHERE job_id = ? AND expires_at > ?",
            (job_id, time.time()),
        ).fetchone()
        return None if row is None else (str(row[0]), json.loads(row[1]))

    @staticmethod
    def _store(db: sqlite3.Connection, job_id: str, status: str, record: dict[str, str]) -> None:
        db.execute(
            "UPDATE jobs SET status = ?, record = ? WHERE job_id = ?",
            (status, json.dumps(record), job_id),
        )

    def start(self, job_id: str, token: str, lease: timedelta) -> str:
        """Take the job for a run; see ``RedisJobStore.start``."""
        now = time.time()
        with self._write() as db:
            found = self._read(db, job_id)
            if found is None:
                return "missing"
            status, record = found
            if status == "running" and float(record.get("lease_until", "0")) > now:
                return "leased"
            if status not in ("queued", "running"):
                return status
            record |= {
                "status": "running",
                "run_token": token,
                "lease_until": str(now + lease.total_seconds()),
                "started_at": now_iso(),
                "attempts": str(int(record.get("attempts", "0")) + 1),
            }
            self._store(db, job_id, "running", record)
        return "started"

    def renew(self, job_id: str, token: str, lease: timedelta) -> bool:
        """Extend the run's lease; see ``RedisJobStore.renew``."""
        with self._write() as db:
            found = self._read(db, job_id)
            if found is None or found[0] != "running" or found[1].get("run_token") != token:
                return False
            record = found[1] | {"lease_until": str(time.time() + lease.total_seconds())}
            self._store(db, job_id, "running", record)
        return True

    def hand_back_expired(self) -> list[str]:
        """Queue again every running job whose lease has expired (after the demo stopped with
        a job running, too); see ``RedisJobStore.hand_back_expired``."""
        handed = []
        with self._write() as db:
            rows = db.execute(
                "SELECT job_id, record FROM jobs WHERE status = 'running' AND expires_at > ?",
                (time.time(),),
            ).fetchall()
            for job_id, text in rows:
                record = json.loads(text)
                if float(record.get("lease_until", "0")) > time.time():
                    continue
                record["status"] = "queued"
                record.pop("run_token", None)
                record.pop("lease_until", None)
                self._store(db, job_id, "queued", record)
                handed.append(str(job_id))
        return handed

    def refresh_ttl(self, job_id: str) -> None:
        """Keep a finished job for the whole result lifetime, counted from now."""
        with self._write() as db:
            db.execute("UPDATE jobs SET expires_at = ? WHERE job_id = ?", (self._expiry(), job_id))

    def forget(self, job_id: str) -> bool:
        """Remove a record whose task could not be enqueued, and its idempotency claim, unless a
        run has begun; see ``RedisJobStore.forget``."""
        with self._write() as db:
            found = self._read(db, job_id)
            if found is not None and (found[0] != "queued" or "started_at" in found[1]):
                return False
            db.execute("DELETE FROM idempotency WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
        return True

    def defer(self, job_id: str, not_before: datetime, *, token: str | None = None) -> bool:
        """Park a job until ``not_before`` (scheduled first, as in ``RedisJobStore.defer``)."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO deferred VALUES (?, ?)", (job_id, not_before.timestamp())
            )
        # A queued job; or, with the run's token, one this run took over (it ran before).
        allowed = ("running",) if token else ("queued",)
        before = self.transition(
            job_id, allowed, "deferred", token=token, not_before=now_iso(not_before)
        )
        return before in allowed

    def cancel(self, job_id: str, *, between_batches: bool = False) -> str | None:
        """Cancel a job that has not started, or stop a selection between two batches; see
        ``RedisJobStore.cancel``."""
        with self._write() as db:
            found = self._read(db, job_id)
            if found is None:
                return None
            before, record = found
            if before == "running" and between_batches:
                if "cancel_requested" not in record:
                    record["cancel_requested"] = now_iso()
                    self._store(db, job_id, before, record)
                return "stopping"
            if before not in ("queued", "deferred"):
                return before
            if "started_at" in record and not between_batches:
                return "started"
            record |= {"status": "cancelled", "finished_at": now_iso()}
            self._store(db, job_id, "cancelled", record)
            db.execute("DELETE FROM deferred WHERE job_id = ?", (job_id,))
        return before

    def save_progress(self, job_id: str, token: str, **fields: Any) -> str | None:
        """Set ``fields`` of a job this run holds; see ``RedisJobStore.save_progress``."""
        with self._write() as db:
            found = self._read(db, job_id)
            if found is None:
                return None
            status, record = found
            if record.get("run_token") != token:
                return "lost"
            if status != "running":
                return status
            self._store(db, job_id, status, record | encode(fields))
            return "stopping" if "cancel_requested" in record else "running"

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
