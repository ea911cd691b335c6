"""The worker's two sweeps: release deferred jobs whose window has opened, and send again the
messages of queued jobs that were lost.

Both run every few seconds in every worker (``worker.steps``) and send through
``tasks.publishing.publish``. Sending a job twice is safe: batches are idempotent, and a job that
has ended ignores a second message. The lost-message sweep reads kombu's Redis envelopes (a Lua
pattern on their JSON): the format of the kombu versions pyproject.toml pins, which
``tests/worker/test_messages.py`` covers.
"""

from __future__ import annotations

import logging
import time

from celery import Celery

from tasks.celery_config import QUEUE
from tasks.jobs import RedisJobStore
from tasks.publishing import publish
from tasks.runtime import runtime_of

log = logging.getLogger("leadarchive.worker")

# KEYS[1] the queue's list, KEYS[2] kombu's hash of unacknowledged messages. Returns the task
# ID of every message in either (the first "id" of an envelope is its headers' task ID).
_MESSAGE_IDS = """
local ids = {}
for _, message in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local id = string.match(message, ', "id": "([^"]+)"')
  if id then table.insert(ids, id) end
end
for _, message in ipairs(redis.call('HVALS', KEYS[2])) do
  local id = string.match(message, ', "id": "([^"]+)"')
  if id then table.insert(ids, id) end
end
return ids
"""
UNACKED_KEY = "unacked"  # kombu's Redis transport's default
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


def requeue_lost_jobs(app: Celery) -> list[str]:
    """Send again every job queued for long whose message is neither queued nor being worked on.

    kombu's Redis transport takes a message off the queue (BRPOP) before it records it as
    unacknowledged: a worker killed in between loses the message, and the job would stay
    `queued` forever. Sending it twice is safe: batches are idempotent (two at once on the same
    leads take turns), and a job that has ended ignores a second message.
    """
    rt = runtime_of(app)
    jobs, broker = rt.jobs, rt.broker
    if broker is None or not isinstance(jobs, RedisJobStore):
        return []
    # Long enough for a message to be taken off the queue and recorded as unacknowledged.
    cutoff = time.time() - 2 * rt.settings.visibility_timeout.total_seconds()
    stale = jobs.queued_before(cutoff)
    # One sweeper at a time, so that two workers never both send a lost job again.
    if not stale or not broker.set(SWEEP_LOCK, "1", nx=True, ex=30):
        return []
    try:
        found: list[bytes] = broker.eval(_MESSAGE_IDS, 2, QUEUE, UNACKED_KEY)  # type: ignore[assignment]
        present = {raw.decode() for raw in found}
        lost = [job_id for job_id in stale if job_id not in present]
        for job_id in lost:
            record = jobs.get(job_id)
            if record is None or record.status != "queued":
                continue
            publish(app, job_id, record.request, broker)
            jobs.requeued(job_id)
            log.warning("job message lost, sent again", extra={"job_id": job_id})
        return lost
    finally:
        broker.delete(SWEEP_LOCK)
