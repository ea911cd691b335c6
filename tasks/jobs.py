"""Job records in Redis: the service's own view of every archive job.

Celery reports any unknown task ID as PENDING, so it cannot say "no such job" or "not yours";
this record can. One Redis hash per job, expiring with the results. Status changes are atomic
compare-and-set steps (a Lua script), so a cancel and a starting worker can never both win. What a
record holds, and how it is written as the hash's fields, is ``tasks.records``' business.

    queued ──▶ running ──▶ succeeded | failed
      │  ▲        │
      │  └────────┘ (retry after an operational error; lease expired: handed back)
      ├──▶ deferred ──▶ queued (the office-hours window opened)
      └──▶ cancelled (also from deferred; never once a run has begun, except a selection's,
           which a cancel stops between two batches: ``cancel_requested`` while it runs)

A run holds a running job under a lease with a run token (``start``): a duplicate delivery finds
the lease live and leaves the record alone, every change a run makes carries its token and is
refused ("lost") once the lease has expired and the job was handed back (``hand_back_expired``)
and taken by another run. A job is created in one step with its idempotency claim (``_CREATE``),
after the admission checks: the key's cap on unfinished jobs, and room in Redis for the result of
every job not finished yet (``StoreFullError`` while there is still headroom, never a full Redis
under an accepted job).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from datetime import datetime, timedelta
from typing import Any, Protocol

import redis

from tasks.errors import IdempotencyConflict, StoreFullError, TooManyPendingJobs
from tasks.records import JobRecord, Status, encode, now_iso
from tasks.requests import JobRequest
from tasks.scopes import Lists

_PREFIX = "leadarchive"
DEFERRED_KEY = f"{_PREFIX}:deferred"
# Every queued job, by when it was last (re)queued in Redis's clock (TIME, epoch seconds), so
# that hosts whose clocks differ agree on it: the sweep for lost messages reads it.
QUEUED_KEY = f"{_PREFIX}:queued"
# Every job not finished yet (queued, deferred or running), by submission time: the room the
# store keeps for results is counted from it. And the same per key, for its cap.
UNFINISHED_KEY = f"{_PREFIX}:unfinished"
_PENDING_PREFIX = f"{_PREFIX}:pending:"
# Memory kept free for each unfinished job: what its result adds when it ends (a finished 500-lead
# job keeps about 7 KB, tasks.records) and its message while it waits (about 7 KB), with margin.
RESERVE_PER_JOB = 16 * 1024
# And for Redis itself (client buffers, the append-only file's rewrite): a twentieth of
# maxmemory, at least 1 MB.
RESERVE_SHARE, RESERVE_FLOOR = 20, 1024 * 1024

# Create a job in one step: the idempotency claim and the record together, so no stall between
# two writes can leave a claim that answers for a job that never existed (a claim whose record is
# missing is taken over). Before writing, the admission checks: the key's unfinished jobs under
# its cap, and room in Redis for every unfinished job's result.
# KEYS: job hash, idempotency claim (unused without one), queued index, unfinished set, the key's
# pending set. ARGV: job ID, TTL s, now (epoch s), cap (0: none), "1" with an idempotency key,
# the claim (JSON), the request's fingerprint, reserve per job, reserve share, reserve floor, then
# the record's field/value pairs. Returns {"created"|"existing"|"conflict", job ID} or
# {"too_many", pending} or {"full", used, maxmemory}.
_CREATE = """
local job_id, ttl, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[5] == '1' then
  local existing = redis.call('GET', KEYS[2])
  if existing then
    local found = cjson.decode(existing)
    if redis.call('EXISTS', 'leadarchive:job:' .. found.job_id) == 1 then
      if found.fingerprint ~= ARGV[7] then return {'conflict', found.job_id} end
      return {'existing', found.job_id}
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - ttl)
local pending = redis.call('ZCARD', KEYS[5])
local cap = tonumber(ARGV[4])
if cap > 0 and pending >= cap then return {'too_many', tostring(pending)} end
local info = redis.call('INFO', 'memory')
local maxmemory = tonumber(string.match(info, 'maxmemory:(%d+)'))
if maxmemory > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - ttl)
  local used = tonumber(string.match(info, 'used_memory:(%d+)'))
  local unfinished = redis.call('ZCARD', KEYS[4]) + 1
  local reserve = math.max(tonumber(ARGV[10]), maxmemory / tonumber(ARGV[9]))
  if used + unfinished * tonumber(ARGV[8]) + reserve > maxmemory then
    return {'full', tostring(used), tostring(maxmemory)}
  end
end
for i = 11, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[3], redis.call('TIME')[1], job_id)
redis.call('ZADD', KEYS[4], now, job_id)
redis.call('ZADD', KEYS[5], now, job_id)
if ARGV[5] == '1' then redis.call('SET', KEYS[2], ARGV[6], 'EX', ttl) end
return {'created', job_id}
"""

# KEYS[1] job hash, KEYS[2] the queued index, KEYS[3] the unfinished set, KEYS[4] the leases;
# ARGV[1] JSON list of statuses allowed now; ARGV[2] new status; ARGV[3] the job ID; ARGV[4] the
# run's token ('' for none: a change that is not a run's); ARGV[5] for `queued`, in how many
# seconds its message is due (a retry's countdown); ARGV[6..] field/value pairs to set.
# Returns the status found (the change applied only if it was allowed), "lost" when the token is
# not the one holding the job (its lease expired and another run took it), or false when the job
# does not exist. A job that leaves `running` drops its lease; one that ends leaves the unfinished
# set and its key's pending set.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return false end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'run_token') ~= ARGV[4] then return 'lost' end
local allowed = cjson.decode(ARGV[1])
for _, status in ipairs(allowed) do
  if status == current then
    redis.call('HSET', KEYS[1], 'status', ARGV[2])
    for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
    if ARGV[2] ~= 'running' then
      redis.call('HDEL', KEYS[1], 'run_token', 'lease_until')
      redis.call('ZREM', KEYS[4], ARGV[3])
    end
    if ARGV[2] == 'queued' then
      redis.call('ZADD', KEYS[2], redis.call('TIME')[1] + tonumber(ARGV[5]), ARGV[3])
    else
      redis.call('ZREM', KEYS[2], ARGV[3])
    end
    if ARGV[2] == 'succeeded' or ARGV[2] == 'failed' or ARGV[2] == 'cancelled' then
      redis.call('ZREM', KEYS[3], ARGV[3])
      redis.call('ZREM', 'leadarchive:pending:' .. redis.call('HGET', KEYS[1], 'owner'), ARGV[3])
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


# Running jobs by when their lease ends: the sweep hands back the ones past it. Leases are in
# Redis's own clock (TIME, epoch seconds), so that workers whose clocks differ agree on them.
LEASES_KEY = f"{_PREFIX}:leases"
# Redis's clock in a script, in epoch seconds with microseconds.
LUA_NOW = (
    "local clock = redis.call('TIME')\nlocal now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6\n"
)

# Start a run: a queued job (or a running one whose lease has expired: its worker froze, died or
# lost Redis) becomes running under this run's token and lease. A running job with a live lease
# is another run's: this delivery is a duplicate and leaves the record alone. KEYS: job hash,
# queued index, leases. ARGV: job ID, token, lease s, now (ISO, shown as started_at). Returns
# "started", "leased", "missing", or the status that cannot start (deferred, or one that ended).
_START = (
    LUA_NOW
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
local lease = tonumber(ARGV[3])
if status == 'running' then
  if tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') > now then return 'leased' end
elseif status ~= 'queued' then
  return status
end
redis.call('HSET', KEYS[1], 'status', 'running', 'run_token', ARGV[2],
  'lease_until', tostring(now + lease), 'started_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now + lease, ARGV[1])
return 'started'
"""
)

# Renew a run's lease while its batch runs. KEYS: job hash, leases. ARGV: job ID, token, lease
# s. 1 when renewed; 0 when the run no longer holds the job.
_RENEW = (
    LUA_NOW
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'run_token') ~= ARGV[2] then return 0 end
local expires = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'lease_until', tostring(expires))
redis.call('ZADD', KEYS[2], expires, ARGV[1])
return 1
"""
)

# Hand a job back to the queue when its lease has expired. KEYS: job hash, leases, queued index.
# ARGV: job ID. 1 when handed back; the entry alone goes when the job is no longer running or its
# lease was renewed meanwhile (a later score stays).
_HAND_BACK = (
    LUA_NOW
    + """
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > now then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') > now then
  redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'lease_until'), ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('HDEL', KEYS[1], 'run_token', 'lease_until')
redis.call('ZADD', KEYS[3], clock[1], ARGV[1])
return 1
"""
)

# Cancel a job that has not started: queued or deferred, and never run (a job queued again after
# a transient error has run chunks already). A job that stops between batches (ARGV[3] '1': a
# selection) is cancelled whenever it waits, run or not; while it runs, it is asked to stop after
# its current batch ('cancel_requested', and "stopping" is returned). KEYS: job hash, queued
# index, deferred set, unfinished set. ARGV: job ID, now (ISO), '1' for a job that stops between
# batches. Returns the status found, "started" when it has run, "stopping", or false when the
# job does not exist.
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
local between_batches = ARGV[3] == '1'
if status == 'running' and between_batches then
  if redis.call('HEXISTS', KEYS[1], 'cancel_requested') == 0 then
    redis.call('HSET', KEYS[1], 'cancel_requested', ARGV[2])
  end
  return 'stopping'
end
if status ~= 'queued' and status ~= 'deferred' then return status end
if not between_batches and redis.call('HEXISTS', KEYS[1], 'started_at') == 1 then
  return 'started'
end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', 'leadarchive:pending:' .. redis.call('HGET', KEYS[1], 'owner'), ARGV[1])
return status
"""

# Remove a job whose message could not be sent, with its idempotency claim and its entries, if
# no run has begun. KEYS: job hash, queued index, unfinished set. ARGV: job ID. 1 when removed
# (or already gone), 0 when a run has begun.
_FORGET = """
local status = redis.call('HGET', KEYS[1], 'status')
if status and (status ~= 'queued' or redis.call('HEXISTS', KEYS[1], 'started_at') == 1) then
  return 0
end
local claim = redis.call('HGET', KEYS[1], 'idempotency')
if claim and claim ~= '' then redis.call('DEL', claim) end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then redis.call('ZREM', 'leadarchive:pending:' .. owner, ARGV[1]) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# Save a running job's progress (a selection's, after a batch): the fields are set only while
# this run holds the job. KEYS: job hash. ARGV: the run's token, then field/value pairs. Returns
# "running", "stopping" (a cancel asked it to stop after this batch), "lost" (another run holds
# the job), the status of a job no longer running, or false when the job does not exist.
_SAVE_PROGRESS = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if redis.call('HGET', KEYS[1], 'run_token') ~= ARGV[1] then return 'lost' end
if status ~= 'running' then return status end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if redis.call('HEXISTS', KEYS[1], 'cancel_requested') == 1 then return 'stopping' end
return 'running'
"""


def new_job_id() -> str:
    """An unguessable job ID (a job is visible only to its key, but IDs still must not leak)."""
    return secrets.token_urlsafe(16)


class JobStore(Protocol):
    """Where job records, idempotency keys and deferred jobs live."""

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
    ) -> tuple[str, bool]: ...
    def get(self, job_id: str) -> JobRecord | None: ...
    def transition(
        self,
        job_id: str,
        allowed: tuple[str, ...],
        status: Status,
        *,
        token: str | None = None,
        due_in: float = 0.0,
        **fields: Any,
    ) -> str | None: ...
    def start(self, job_id: str, token: str, lease: timedelta) -> str: ...
    def renew(self, job_id: str, token: str, lease: timedelta) -> bool: ...
    def hand_back_expired(self) -> list[str]: ...
    def refresh_ttl(self, job_id: str) -> None: ...
    def forget(self, job_id: str) -> bool: ...
    def defer(self, job_id: str, not_before: datetime, *, token: str | None = None) -> bool: ...
    def cancel(self, job_id: str, *, between_batches: bool = False) -> str | None: ...
    def save_progress(self, job_id: str, token: str, **fields: Any) -> str | None: ...
    def take_due(self, now: datetime) -> list[str]: ...
    def ping(self) -> None: ...


class RedisJobStore:
    """Job records and idempotency keys in one Redis database."""

    def __init__(self, client: redis.Redis, ttl: timedelta) -> None:
        self.redis = client
        self.ttl = ttl
        self._create = client.register_script(_CREATE)
        self._transition = client.register_script(_TRANSITION)
        self._start = client.register_script(_START)
        self._renew = client.register_script(_RENEW)
        self._hand_back = client.register_script(_HAND_BACK)
        self._cancel = client.register_script(_CANCEL)
        self._save_progress = client.register_script(_SAVE_PROGRESS)
        self._release = client.register_script(_RELEASE)
        self._forget = client.register_script(_FORGET)

    @staticmethod
    def _key(job_id: str) -> str:
        return f"{_PREFIX}:job:{job_id}"

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
        """Record a new queued job; returns ``(job_id, created)``. One atomic step (``_CREATE``).

        With an idempotency key seen before for this owner, returns that job instead
        (``created`` False), or raises ``IdempotencyConflict`` when the request differs.
        ``client_ip`` is the submitter's address, for Vicidial's admin log (never shown);
        ``lists`` the lists a scoped key may touch, which the worker reads from the record.
        Raises ``TooManyPendingJobs`` when the owner has ``max_pending`` jobs unfinished, and
        ``StoreFullError`` when Redis has not room for every unfinished job's result.
        """
        job_id = new_job_id()
        ttl = int(self.ttl.total_seconds())
        idem_key = ""
        if idempotency_key is not None:
            digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
            idem_key = f"{_PREFIX}:idem:{owner}:{digest}"
        record = JobRecord.queued(
            job_id, owner, request, now=now, client_ip=client_ip, idempotency=idem_key, lists=lists
        )
        args: list[str | int | float] = [
            job_id,
            ttl,
            time.time(),
            max_pending or 0,
            "1" if idem_key else "0",
            json.dumps({"job_id": job_id, "fingerprint": fingerprint}),
            fingerprint,
            RESERVE_PER_JOB,
            RESERVE_SHARE,
            RESERVE_FLOOR,
        ]
        for name, value in record.to_fields().items():
            args += [name, value]
        keys = [
            self._key(job_id),
            idem_key or f"{_PREFIX}:idem:-",
            QUEUED_KEY,
            UNFINISHED_KEY,
            _PENDING_PREFIX + owner,
        ]
        outcome, *details = (part.decode() for part in self._create(keys=keys, args=args))
        if outcome == "conflict":
            raise IdempotencyConflict(idempotency_key)
        if outcome == "too_many":
            raise TooManyPendingJobs(int(details[0]), max_pending or 0)
        if outcome == "full":
            used, maxmemory = (int(value) for value in details)
            raise StoreFullError(
                f"the job store is full: Redis uses {used:,} of its {maxmemory:,} bytes"
                " (maxmemory) and keeps the rest for the results of jobs not finished yet"
            )
        return details[0], outcome == "created"

    def refresh_ttl(self, job_id: str) -> None:
        """Keep a finished job for the whole result lifetime, counted from now."""
        self.redis.expire(self._key(job_id), int(self.ttl.total_seconds()))

    def ping(self) -> None:
        """Raise when Redis cannot be reached."""
        self.redis.ping()

    def forget(self, job_id: str) -> bool:
        """Remove a record whose task could not be enqueued, and its idempotency claim; False,
        and nothing removed, when a run has begun: the lost-message sweep sent the job meanwhile
        (the API's send can take longer than a lease when Redis is failing), so it exists."""
        keys = [self._key(job_id), QUEUED_KEY, UNFINISHED_KEY]
        return bool(self._forget(keys=keys, args=[job_id]))

    def get(self, job_id: str) -> JobRecord | None:
        """The record, or None when it does not exist or has expired."""
        stored: dict[bytes, bytes] = self.redis.hgetall(self._key(job_id))  # type: ignore[assignment]
        if not stored:
            return None
        return JobRecord.from_fields({k.decode(): v.decode() for k, v in stored.items()})

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
        """Set ``status`` (and ``fields``) if the job is in one of ``allowed`` and, with a
        ``token``, still held by that run.

        ``due_in``: for ``queued``, in how many seconds its message is due (a retry's countdown,
        which a worker holds meanwhile): the lost-message sweep counts the job's time in the queue
        from then, so that it never takes the waiting retry for a lost message.

        ``fields`` are typed as ``JobRecord``'s (``records.encode`` stores them). Returns the
        status the job had (the change was made only if it is in ``allowed``), ``"lost"`` when
        another run holds the job, or None when the job does not exist.
        """
        args = [json.dumps(list(allowed)), status, job_id, token or "", str(due_in)]
        for name, value in encode(fields).items():
            args += [name, value]
        keys = [self._key(job_id), QUEUED_KEY, UNFINISHED_KEY, LEASES_KEY]
        found = self._transition(keys=keys, args=args)
        return found.decode() if isinstance(found, bytes) else None

    def defer(self, job_id: str, not_before: datetime, *, token: str | None = None) -> bool:
        """Park a job until ``not_before``: no message waits in a worker meanwhile."""
        # Scheduled first: a crash between the two steps leaves a harmless entry (take_due
        # skips a job that is not deferred), never a deferred job that nothing will release.
        self.redis.zadd(DEFERRED_KEY, {job_id: not_before.timestamp()})
        # A queued job; or, with the run's token, one this run took over (it ran before).
        allowed = ("running",) if token else ("queued",)
        before = self.transition(
            job_id, allowed, "deferred", token=token, not_before=now_iso(not_before)
        )
        return before in allowed

    def cancel(self, job_id: str, *, between_batches: bool = False) -> str | None:
        """Cancel a job that has not started; returns the status it had, ``"started"`` for a
        queued or deferred job that has run before (None: no such job).

        A job that stops ``between_batches`` (a selection) is cancelled whenever it is not
        running; a running one is asked to stop after its current batch (``"stopping"``).
        """
        keys = [self._key(job_id), QUEUED_KEY, DEFERRED_KEY, UNFINISHED_KEY]
        args = [job_id, now_iso(), "1" if between_batches else "0"]
        found = self._cancel(keys=keys, args=args)
        return found.decode() if isinstance(found, bytes) else None

    def save_progress(self, job_id: str, token: str, **fields: Any) -> str | None:
        """Set ``fields`` of a job this run holds (``_SAVE_PROGRESS``): ``"running"``,
        ``"stopping"`` when a cancel asked it to stop, ``"lost"``, or the status it is in."""
        args: list[str] = [token]
        for name, value in encode(fields).items():
            args += [name, value]
        found = self._save_progress(keys=[self._key(job_id)], args=args)
        return found.decode() if isinstance(found, bytes) else None

    def start(self, job_id: str, token: str, lease: timedelta) -> str:
        """Take the job for a run (``_START``): ``"started"``, ``"leased"`` (another run holds
        it), ``"missing"``, or the status it is in."""
        keys = [self._key(job_id), QUEUED_KEY, LEASES_KEY]
        args: list[str | float] = [job_id, token, lease.total_seconds(), now_iso()]
        found: bytes = self._start(keys=keys, args=args)
        return found.decode()

    def renew(self, job_id: str, token: str, lease: timedelta) -> bool:
        """Extend the run's lease; False when the run no longer holds the job."""
        args: list[str | float] = [job_id, token, lease.total_seconds()]
        return bool(self._renew(keys=[self._key(job_id), LEASES_KEY], args=args))

    def hand_back_expired(self) -> list[str]:
        """Queue again every running job whose lease has expired (at most 100 a call); their
        IDs, each to one caller. Leases are in Redis's clock, whatever clock the service reads
        and whatever this host's clock says."""
        due: list[bytes] = self.redis.zrangebyscore(  # type: ignore[assignment]
            LEASES_KEY, "-inf", self.clock(), start=0, num=100
        )
        handed = []
        for raw in due:
            job_id = raw.decode()
            keys = [self._key(job_id), LEASES_KEY, QUEUED_KEY]
            if self._hand_back(keys=keys, args=[job_id]):
                handed.append(job_id)
        return handed

    def clock(self) -> float:
        """Redis's clock (epoch seconds): the one leases and the queued index are kept in."""
        seconds, microseconds = self.redis.time()  # type: ignore[misc]
        return float(seconds + microseconds / 1e6)

    def any_queued_before(self, cutoff: float) -> bool:
        """Whether any job was queued (or queued again) before ``cutoff`` (epoch seconds)."""
        return bool(self.redis.zrangebyscore(QUEUED_KEY, "-inf", f"({cutoff}", start=0, num=1))

    def queued_scores(self, job_ids: list[str]) -> list[float | None]:
        """When each job was last queued (epoch seconds), None for one not queued."""
        if not job_ids:
            return []
        found: list[float | None] = self.redis.zmscore(QUEUED_KEY, job_ids)  # type: ignore[assignment]
        return found

    def queued_before(self, cutoff: float, limit: int | None = None) -> list[str]:
        """Jobs queued (or queued again) before ``cutoff`` (epoch seconds, excluded) and still
        queued, oldest first, at most ``limit``.

        Entries whose record has expired are dropped from the index on the way.
        """
        found: list[bytes] = self.redis.zrangebyscore(  # type: ignore[assignment]
            QUEUED_KEY, "-inf", f"({cutoff}", start=0 if limit else None, num=limit
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
        self.redis.zadd(QUEUED_KEY, {job_id: self.clock()}, xx=True)

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
