"""The worker's sweeps: release deferred jobs whose window has opened, hand back jobs whose run's
lease expired, and send again the messages of queued jobs that were lost.

They run in every worker (``worker.steps``), the last two every third of the job lease, and send
through ``tasks.publishing.publish``. Sending a job twice is safe: batches are idempotent, a job
that has ended ignores a second message, and one that is running keeps its lease. The
lost-message sweep reads kombu's Redis envelopes (a Lua pattern on their JSON) and its index of
when each unacknowledged message was taken: the format of the kombu versions pyproject.toml
pins, which ``tests/worker/test_messages.py`` covers.

The lost-message sweep costs O(stale jobs), not O(queue): it never reads the whole queue. The
queue is first in, first out, and a job's score in the queued index is when its message was
last sent, so a queued job whose score is below that of every message still waiting cannot have
one waiting. Only the few messages at the consuming end are read (those kombu put back there
after a worker died included), and only the jobs queued before the oldest of them, and before
the cutoff, are candidates; of those, the ones whose message a worker took within the lease
(kombu's unacknowledged messages: one per busy worker process, plus retries waiting for their
countdown) are not lost.
"""

from __future__ import annotations

import contextlib
import logging
import time

from celery import Celery
from redis.exceptions import LockError

from tasks.celery_config import QUEUE
from tasks.jobs import LUA_NOW, RedisJobStore
from tasks.publishing import publish
from tasks.runtime import runtime_of

log = logging.getLogger("leadarchive.worker")

# KEYS[1] the queue's list, KEYS[2] kombu's hash of unacknowledged messages; ARGV[1] how many
# messages to read at the queue's consuming end (kombu pops the list's right end), besides as
# many as are unacknowledged (what a dead worker's restore may have put there). Returns the
# queue's length, then the task IDs of those messages (an envelope's first "id" is its task ID).
_WAITING_NEXT = """
local ids = {redis.call('LLEN', KEYS[1])}
local count = tonumber(ARGV[1]) + redis.call('HLEN', KEYS[2])
for _, message in ipairs(redis.call('LRANGE', KEYS[1], -count, -1)) do
  local id = string.match(message, ', "id": "([^"]+)"')
  if id then table.insert(ids, id) end
end
return ids
"""
# KEYS[1] kombu's hash of unacknowledged messages (delivery tag -> message), KEYS[2] its index
# (delivery tag -> when a worker took it, in that worker's clock); ARGV[1] the job lease (s).
# Returns task ID, flag pairs: '1' for a message taken within the last lease (or of unknown
# age), '0' for one a worker took longer ago (in Redis's clock).
_UNACKED_IDS = (
    LUA_NOW
    + """
local taken = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local id = string.match(all[i + 1], ', "id": "([^"]+)"')
  if id then
    local at = redis.call('ZSCORE', KEYS[2], all[i])
    table.insert(taken, id)
    table.insert(taken, (not at or tonumber(at) > now - tonumber(ARGV[1])) and '1' or '0')
  end
end
return taken
"""
)
NEXT_MESSAGES = 64
# At most this many lost jobs are sent again per pass.
SWEEP_BATCH = 200
UNACKED_KEY, UNACKED_INDEX_KEY = "unacked", "unacked_index"  # kombu's Redis transport's
SWEEP_LOCK = "leadarchive:sweep"


def release_due_jobs(app: Celery) -> list[str]:
    """Send again every deferred job whose office-hours window has opened."""
    rt = runtime_of(app)
    released = []
    for job_id in rt.jobs.take_due(rt.clock()):
        record = rt.jobs.get(job_id)
        if record is None:
            continue
        publish(app, job_id, record.request, rt.broker)
        released.append(job_id)
    return released


def hand_back_expired_runs(app: Celery) -> list[str]:
    """Send again every job whose run's lease expired: its worker froze, died or lost Redis
    (``JobStore.start``). A run that wakes up later finds its token refused and changes nothing."""
    rt = runtime_of(app)
    handed = []
    for job_id in rt.jobs.hand_back_expired():
        record = rt.jobs.get(job_id)
        if record is None:
            continue
        publish(app, job_id, record.request, rt.broker)
        log.warning("job lease expired, job handed back to the queue", extra={"job_id": job_id})
        handed.append(job_id)
    return handed


def requeue_lost_jobs(app: Celery) -> list[str]:
    """Send again every job queued for long whose message is neither queued nor being worked on.

    kombu's Redis transport takes a message off the queue (BRPOP) before it records it as
    unacknowledged: a worker killed in between loses the message, and the job would stay
    `queued` forever. A worker killed after that, before a run began, leaves the message
    unacknowledged until the visibility timeout (30 s). Sending a job twice is safe: batches
    are idempotent (two at once on the same leads take turns), a job that has ended ignores a
    second message, and one that is running keeps its lease. So a job counts as lost once it
    has been queued for a job lease (10 s by default) with its message neither waiting nor
    taken by a worker within the lease: a killed worker's job comes back about a lease after the
    kill, whatever it was doing. A live worker holds a message longer only while a retry's
    countdown runs (the job's time in the queue counts from when it is due: ``due_in``) or while
    all its processes are busy (then another worker may run the job first, and the held copy
    finds it leased or ended). The returned jobs are those sent again.
    """
    rt = runtime_of(app)
    jobs, broker = rt.jobs, rt.broker
    if broker is None or not isinstance(jobs, RedisJobStore):
        return []
    # Far longer than a message takes from the queue to kombu's unacknowledged hash (a few
    # milliseconds) or, usually, from a job's record to its message. An API whose send is slower
    # (Redis failing) finds the job sent by the sweep, and answers with it (``JobStore.forget``).
    lease = rt.settings.lease.total_seconds()
    cutoff = jobs.clock() - lease
    if not jobs.any_queued_before(cutoff):
        return []
    # One sweeper at a time, so that two workers never both send a lost job again; a sweeper
    # that dies holds the lock for a lease at most.
    lock = broker.lock(SWEEP_LOCK, timeout=lease)
    if not lock.acquire(blocking=False):
        return []
    # Sends stop at half the lock's life: an expired lock would let a second sweeper send the
    # same jobs again.
    deadline = time.monotonic() + lease / 2
    try:
        found: list[bytes] = broker.eval(  # type: ignore[assignment]
            _WAITING_NEXT, 2, QUEUE, UNACKED_KEY, str(NEXT_MESSAGES)
        )
        length, next_ids = int(found[0]), [raw.decode() for raw in found[1:]]
        scores = [s for s in jobs.queued_scores(next_ids) if s is not None]
        if length and not scores:
            return []  # no waiting message to compare with: judge nothing this pass
        limit = min([cutoff, *scores])
        stale = jobs.queued_before(limit, SWEEP_BATCH)
        if not stale:
            return []
        taken: list[bytes] = broker.eval(  # type: ignore[assignment]
            _UNACKED_IDS, 2, UNACKED_KEY, UNACKED_INDEX_KEY, str(lease)
        )
        held: dict[str, bool] = {}  # a job's messages, taken within the lease by a worker?
        for raw, flag in zip(taken[::2], taken[1::2], strict=True):
            held[raw.decode()] = held.get(raw.decode(), False) or flag == b"1"
        sent = []
        for job_id in stale:
            if time.monotonic() > deadline:
                break  # the rest on the next pass
            if held.get(job_id):
                continue  # a worker took a message of it within the lease
            record = jobs.get(job_id)
            if record is None or record.status != "queued":
                continue
            publish(app, job_id, record.request, broker)
            jobs.requeued(job_id)
            if job_id in held:
                why = "job message held by a worker for a lease without a run, sent again"
            else:
                why = "job message lost, sent again"
            log.warning(why, extra={"job_id": job_id})
            sent.append(job_id)
        return sent
    finally:
        with contextlib.suppress(LockError):  # it expired: another sweeper may hold it now
            lock.release()
