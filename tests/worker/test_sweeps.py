"""The lost-message sweep on a backlog sends again exactly the jobs whose message is neither
waiting nor taken by a worker within the lease (what it costs Redis per pass: bench/jobstore.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from celery import Celery

from tasks.celery_config import QUEUE, create_celery
from tasks.jobs import QUEUED_KEY
from tasks.publishing import publish
from tasks.requests import ArchiveRequest
from tasks.runtime import Runtime
from tasks.sweeps import UNACKED_INDEX_KEY, UNACKED_KEY, requeue_lost_jobs
from tests.conftest import claim_redis_database
from tests.helpers import make_settings

BACKLOG = 300
REQUEST = ArchiveRequest(lead_ids=[1], insert_leads=True)


@contextmanager
def _sweeper(database_url: str, **settings: Any) -> Iterator[tuple[Runtime, Celery, redis.Redis]]:
    """A runtime, its Celery app and a client on a Redis database of their own."""
    with claim_redis_database() as url:
        rt = Runtime(make_settings(database_url, url, office_hours="", **settings))
        client = redis.Redis.from_url(url)
        try:
            yield rt, create_celery(rt.settings, rt), client
        finally:
            client.close()
            rt.close()


def _taken(client: redis.Redis, tag: str, message: bytes | None, at: float) -> None:
    """What kombu records for a message a worker took at ``at`` (its clock): [message,
    exchange, routing key] under the delivery tag, and when."""
    assert message is not None
    client.hset(UNACKED_KEY, tag, json.dumps([json.loads(message), "", QUEUE]))
    client.zadd(UNACKED_INDEX_KEY, {tag: at})


def _sent_job(rt: Runtime, app: Celery) -> str:
    job_id, _ = rt.jobs.create("alice", REQUEST)
    publish(app, job_id, REQUEST, rt.broker)
    return job_id


def test_the_sweep_sends_again_only_the_lost_jobs_of_a_backlog(database_url: str) -> None:
    with _sweeper(database_url) as (rt, app, client):
        ids = [_sent_job(rt, app) for _ in range(BACKLOG)]
        # Queued an hour ago, in order: a backlog that has waited for long.
        hour_ago = time.time() - 3600
        client.zadd(QUEUED_KEY, {j: hour_ago + n / 1000 for n, j in enumerate(ids)})
        # The three next messages taken by workers: one died before kombu recorded it (lost);
        # one recorded as unacknowledged just now (held, not lost); one recorded longer than a
        # lease ago by a worker that began no run of it (its worker died).
        client.rpop(QUEUE)
        lease = rt.settings.lease.total_seconds()
        _taken(client, "tag-1", client.rpop(QUEUE), time.time())
        _taken(client, "tag-2", client.rpop(QUEUE), time.time() - lease - 1)
        fresh, _ = rt.jobs.create("alice", REQUEST)  # queued just now, message lost too

        sent = requeue_lost_jobs(app)
        again = requeue_lost_jobs(app)
        waiting = client.llen(QUEUE)

    assert sent == [ids[0], ids[2]]
    assert again == []  # sent just now: no longer before the cutoff
    assert waiting == BACKLOG - 3 + 2
    assert fresh not in sent


def test_a_sweep_on_a_host_a_minute_ahead_sends_no_job_queued_just_now(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep's cutoff (one lease back) is in Redis's clock, as the queued index is: a
    worker whose clock runs a minute ahead does not take a job queued just now for lost; once
    the job has been queued for a lease, it does."""
    with _sweeper(database_url) as (rt, app, client):
        job_id, _ = rt.jobs.create("alice", REQUEST)
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 60)
        ahead = requeue_lost_jobs(app)
        monkeypatch.setattr(time, "time", real)
        lease = rt.settings.lease.total_seconds()
        client.zadd(QUEUED_KEY, {job_id: rt.jobs.clock() - lease - 1})
        later = requeue_lost_jobs(app)
        waiting = client.llen(QUEUE)

    assert ahead == []
    assert later == [job_id]
    assert waiting == 1


def test_a_retry_waiting_for_its_countdown_is_not_sent_again_until_it_is_overdue(
    database_url: str,
) -> None:
    """A worker holds a retry's message until its countdown ends (up to a third of the
    visibility timeout: 20 s here, longer than the 10 s lease). The job counts as queued from
    when it is due, so the sweep leaves it alone meanwhile; a lease after that, with no run
    begun, its worker is taken for dead and the job is sent again."""
    with _sweeper(database_url, visibility_timeout="PT60S") as (rt, app, client):
        job_id = _sent_job(rt, app)
        message = client.rpop(QUEUE)  # a worker takes it; its run meets a lock wait
        assert rt.jobs.start(job_id, "run", rt.settings.lease) == "started"
        assert rt.jobs.transition(job_id, ("running",), "queued", token="run", due_in=20)
        # The retry's message, held by that worker since, and time moved on a lease and a
        # second: the countdown still runs.
        lease = rt.settings.lease.total_seconds()
        client.zincrby(QUEUED_KEY, -(lease + 1), job_id)
        _taken(client, "tag-retry", message, time.time() - lease - 1)
        counting_down = requeue_lost_jobs(app)
        client.zincrby(QUEUED_KEY, -20, job_id)  # and the 20 s went by, with no run
        overdue = requeue_lost_jobs(app)

    assert counting_down == []
    assert overdue == [job_id]


def test_a_job_with_a_freshly_taken_copy_of_its_message_is_held_whatever_else_is_left(
    database_url: str,
) -> None:
    """A job can have two unacknowledged messages: one a reconnected worker left behind, long
    ago, and the one a worker took just now. The fresh one says a live worker has the job,
    whichever the sweep reads last."""
    with _sweeper(database_url) as (rt, app, client):
        job_id = _sent_job(rt, app)
        message = client.rpop(QUEUE)
        lease = rt.settings.lease.total_seconds()
        client.zadd(QUEUED_KEY, {job_id: rt.jobs.clock() - 3 * lease})
        for tag in ("a", "b"):
            _taken(client, tag, message, time.time())
        # The copy the sweep reads first is the fresh one, the one it reads last the stale.
        fresh, stale = (raw.decode() for raw in client.hkeys(UNACKED_KEY))
        client.zadd(UNACKED_INDEX_KEY, {stale: time.time() - 2 * lease})
        both = requeue_lost_jobs(app)
        client.hdel(UNACKED_KEY, fresh)
        stale_only = requeue_lost_jobs(app)

    assert both == []
    assert stale_only == [job_id]
