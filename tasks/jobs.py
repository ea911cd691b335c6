"""Job records in Redis: the service's own view of every archive job.

Celery reports any unknown task ID as PENDING, so it cannot say "no such job" or "not yours";
this record can. One Redis hash per job, expiring with the results. Status changes are atomic
compare-and-set steps (a Lua script), so a cancel and a starting worker can never both win. What a
record holds, and how it is written as the hash's fields, is ``tasks.records``' business.

    queued ──▶ running ──▶ succeeded | failed
      │  ▲        │
      │  └────────┘ (retry after an operational error)
      ├──▶ deferred ──▶ queued (the office-hours window opened)
      └──▶ cancelled (also from deferred)
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from datetime import datetime, timedelta
from typing import Any, Protocol

import redis

from tasks.errors import IdempotencyConflict
from tasks.records import JobRecord, Status, encode, now_iso
from tasks.requests import ArchiveRequest

_PREFIX = "leadarchive"
DEFERRED_KEY = f"{_PREFIX}:deferred"
# Every queued job, by when it was last (re)queued: the sweep for lost messages reads it.
QUEUED_KEY = f"{_PREFIX}:queued"

# KEYS[1] job hash, KEYS[2] the queued index; ARGV[1] JSON list of statuses allowed now; ARGV[2]
# new status; ARGV[3] the job ID; ARGV[4..] field/value pairs to set. Returns the status found (the
# change applied only if it was allowed), or false when the job does not exist.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return false end
local allowed = cjson.decode(ARGV[1])
for _, status in ipairs(allowed) do
  if status == current then
    redis.call('HSET', KEYS[1], 'status', ARGV[2])
    for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
    if ARGV[2] == 'queued' then
      redis.call('ZADD', KEYS[2], redis.call('TIME')[1], ARGV[3])
    else
      redis.call('ZREM', KEYS[2], ARGV[3])
    end
    return current
  end
end
return current
"""

# Release one deferred job if it is due: its status and both indexes change in one step, so no
# lost connection can leave it out of the deferred set while still `deferred` (released by
# nobody, ever). KEYS: the job's record, the deferred set, the queued index; ARGV: job ID, now.
_RELEASE = """
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
-- cancelled, expired, or queued again with this entry left over: only the entry goes
if redis.call('HGET', KEYS[1], 'status') ~= 'deferred' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('ZADD', KEYS[3], redis.call('TIME')[1], ARGV[1])
return 1
"""


def new_job_id() -> str:
    """An unguessable job ID (a job is visible only to its key, but IDs still must not leak)."""
    return secrets.token_urlsafe(16)


class JobStore(Protocol):
    """Where job records, idempotency keys and deferred jobs live."""

    def create(
        self,
        owner: str,
        request: ArchiveRequest,
        *,
        idempotency_key: str | None = None,
        fingerprint: str = "",
        now: datetime | None = None,
        client_ip: str = "",
    ) -> tuple[str, bool]: ...
    def get(self, job_id: str) -> JobRecord | None: ...
    def transition(
        self, job_id: str, allowed: tuple[str, ...], status: Status, **fields: Any
    ) -> str | None: ...
    def count_attempt(self, job_id: str) -> None: ...
    def refresh_ttl(self, job_id: str) -> None: ...
    def forget(self, job_id: str) -> None: ...
    def defer(self, job_id: str, not_before: datetime) -> bool: ...
    def cancel(self, job_id: str) -> str | None: ...
    def take_due(self, now: datetime) -> list[str]: ...
    def ping(self) -> None: ...


class RedisJobStore:
    """Job records and idempotency keys in one Redis database."""

    def __init__(self, client: redis.Redis, ttl: timedelta) -> None:
        self.redis = client
        self.ttl = ttl
        self._transition = client.register_script(_TRANSITION)
        self._release = client.register_script(_RELEASE)

    @staticmethod
    def _key(job_id: str) -> str:
        return f"{_PREFIX}:job:{job_id}"

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
        """Record a new queued job; returns ``(job_id, created)``.

        With an idempotency key seen before for this owner, returns that job instead
        (``created`` False), or raises ``IdempotencyConflict`` when the request differs.
        ``client_ip`` is the submitter's address, for Vicidial's admin log (never shown).
        """
        job_id = new_job_id()
        ttl = int(self.ttl.total_seconds())
        idem_key = ""
        if idempotency_key is not None:
            digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
            idem_key = f"{_PREFIX}:idem:{owner}:{digest}"
            claim = json.dumps({"job_id": job_id, "fingerprint": fingerprint})
            if not self.redis.set(idem_key, claim, nx=True, ex=ttl):
                existing: bytes | None = self.redis.get(idem_key)  # type: ignore[assignment]
                if existing is not None:
                    found = json.loads(existing)
                    if found["fingerprint"] != fingerprint:
                        raise IdempotencyConflict(idempotency_key)
                    return str(found["job_id"]), False
                # The earlier claim expired between the two calls: claim it now.
                self.redis.set(idem_key, claim, ex=ttl)
        key = self._key(job_id)
        record = JobRecord.queued(
            job_id, owner, request, now=now, client_ip=client_ip, idempotency=idem_key
        )
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping=record.to_fields())
        pipe.expire(key, ttl)
        pipe.zadd(QUEUED_KEY, {job_id: time.time()})
        pipe.execute()
        return job_id, True

    def count_attempt(self, job_id: str) -> None:
        """Count one more start of the batch (retries and redeliveries show up here)."""
        self.redis.hincrby(self._key(job_id), "attempts", 1)

    def refresh_ttl(self, job_id: str) -> None:
        """Keep a finished job for the whole result lifetime, counted from now."""
        self.redis.expire(self._key(job_id), int(self.ttl.total_seconds()))

    def ping(self) -> None:
        """Raise when Redis cannot be reached."""
        self.redis.ping()

    def forget(self, job_id: str) -> None:
        """Remove a record whose task could not be enqueued, and its idempotency claim."""
        idem_key = self.redis.hget(self._key(job_id), "idempotency")
        if idem_key:
            self.redis.delete(idem_key)  # type: ignore[arg-type]
        self.redis.delete(self._key(job_id))
        self.redis.zrem(QUEUED_KEY, job_id)

    def get(self, job_id: str) -> JobRecord | None:
        """The record, or None when it does not exist or has expired."""
        stored: dict[bytes, bytes] = self.redis.hgetall(self._key(job_id))  # type: ignore[assignment]
        if not stored:
            return None
        return JobRecord.from_fields({k.decode(): v.decode() for k, v in stored.items()})

    def transition(
        self, job_id: str, allowed: tuple[str, ...], status: Status, **fields: Any
    ) -> str | None:
        """Set ``status`` (and ``fields``) if the job is in one of ``allowed``.

        ``fields`` are typed as ``JobRecord``'s (``records.encode`` stores them). Returns the
        status the job had (the change was made only if it is in ``allowed``), or
        None when the job does not exist.
        """
        args: list[str] = [json.dumps(list(allowed)), status, job_id]
        for name, value in encode(fields).items():
            args += [name, value]
        found = self._transition(keys=[self._key(job_id), QUEUED_KEY], args=args)
        return found.decode() if isinstance(found, bytes) else None

    def defer(self, job_id: str, not_before: datetime) -> bool:
        """Park a job until ``not_before``: no message waits in a worker meanwhile."""
        # Scheduled first: a crash between the two steps leaves a harmless entry (take_due
        # skips a job that is not deferred), never a deferred job that nothing will release.
        self.redis.zadd(DEFERRED_KEY, {job_id: not_before.timestamp()})
        before = self.transition(
            job_id, ("queued", "running"), "deferred", not_before=now_iso(not_before)
        )
        return before in ("queued", "running")

    def cancel(self, job_id: str) -> str | None:
        """Cancel a job that has not started; returns the status it had (None: no such job)."""
        before = self.transition(job_id, ("queued", "deferred"), "cancelled", finished_at=now_iso())
        if before in ("queued", "deferred"):
            self.redis.zrem(DEFERRED_KEY, job_id)
        return before

    def queued_before(self, cutoff: float) -> list[str]:
        """Jobs queued (or queued again) before ``cutoff`` (epoch seconds) and still queued.

        Entries whose record has expired are dropped from the index on the way.
        """
        found: list[bytes] = self.redis.zrangebyscore(  # type: ignore[assignment]
            QUEUED_KEY, "-inf", cutoff
        )
        ids = [raw.decode() for raw in found]
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self._key(job_id), "status")
        queued = []
        for job_id, status in zip(ids, pipe.execute(), strict=True):
            if status == b"queued":
                queued.append(job_id)
            else:  # started, ended or expired since: the transition's ZREM raced this read
                self.redis.zrem(QUEUED_KEY, job_id)
        return queued

    def requeued(self, job_id: str) -> None:
        """Note that a queued job's message was sent again now."""
        self.redis.zadd(QUEUED_KEY, {job_id: time.time()}, xx=True)

    def take_due(self, now: datetime) -> list[str]:
        """Remove and return the deferred jobs whose window has opened (each to one caller)."""
        due: list[bytes] = self.redis.zrangebyscore(  # type: ignore[assignment]
            DEFERRED_KEY, "-inf", now.timestamp()
        )
        taken = []
        for raw in due:
            job_id = raw.decode()
            # Atomic, so of several workers releasing at once one wins each job, and a job
            # deferred again meanwhile (a later score) stays where it is.
            keys = [self._key(job_id), DEFERRED_KEY, QUEUED_KEY]
            if self._release(keys=keys, args=[job_id, now.timestamp()]):
                taken.append(job_id)
        return taken
