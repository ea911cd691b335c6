"""The lost-message sweep on a backlog sends again exactly the jobs whose message is neither
waiting nor taken by a worker within the lease (what it costs Redis per pass: bench/jobstore.py)."""

from __future__ import annotations

import json
import time

import pytest
import redis

from tasks.celery_config import QUEUE, create_celery
from tasks.jobs import QUEUED_KEY
from tasks.publishing import publish
from tasks.requests import ArchiveRequest
from tasks.runtime import Runtime
from tasks.sweeps import UNACKED_INDEX_KEY, UNACKED_KEY, requeue_lost_jobs
from tests.conftest import claim_redis_database
from tests.helpers import make_settings

BACKLOG = 300


def test_the_sweep_sends_again_only_the_lost_jobs_of_a_backlog(database_url: str) -> None:
    with claim_redis_database() as url:
        rt = Runtime(make_settings(database_url, url, office_hours=""))
        app = create_celery(rt.settings, rt)
        client = redis.Redis.from_url(url)
        try:
            request = ArchiveRequest(lead_ids=[1], insert_leads=True)
            ids = []
            for _ in range(BACKLOG):
                job_id, _ = rt.jobs.create("alice", request)
                publish(app, job_id, request, rt.broker)
                ids.append(job_id)
            # Queued an hour ago, in order: a backlog that has waited for long.
            hour_ago = time.time() - 3600
            client.zadd(QUEUED_KEY, {j: hour_ago + n / 1000 for n, j in enumerate(ids)})
            # The three next messages taken by workers: one died before kombu recorded it
            # (lost); one recorded as unacknowledged just now (held, not lost); one recorded
            # longer than a lease ago by a worker that began no run of it (its worker died).
            client.rpop(QUEUE)
            lease = rt.settings.lease.total_seconds()
            for tag, taken_at in (("tag-1", time.time()), ("tag-2", time.time() - lease - 1)):
                held = client.rpop(QUEUE)
                client.hset(UNACKED_KEY, tag, json.dumps([json.loads(held), "", QUEUE]))
                client.zadd(UNACKED_INDEX_KEY, {tag: taken_at})
            fresh, _ = rt.jobs.create("alice", request)  # queued just now, message lost too

            sent = requeue_lost_jobs(app)
            again = requeue_lost_jobs(app)
            waiting = client.llen(QUEUE)
        finally:
            client.close()
            rt.close()

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
    with claim_redis_database() as url:
        rt = Runtime(make_settings(database_url, url, office_hours=""))
        app = create_celery(rt.settings, rt)
        client = redis.Redis.from_url(url)
        try:
            job_id, _ = rt.jobs.create("alice", ArchiveRequest(lead_ids=[1], insert_leads=True))
            real = time.time
            monkeypatch.setattr(time, "time", lambda: real() + 60)
            ahead = requeue_lost_jobs(app)
            monkeypatch.setattr(time, "time", real)
            lease = rt.settings.lease.total_seconds()
            client.zadd(QUEUED_KEY, {job_id: rt.jobs.clock() - lease - 1})
            later = requeue_lost_jobs(app)
            waiting = client.llen(QUEUE)
        finally:
            client.close()
            rt.close()

    assert ahead == []
    assert later == [job_id]
    assert waiting == 1
