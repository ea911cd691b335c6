"""The real worker process (`leadarchive worker`, prefork) killed in the middle of a job.

The job must be delivered again and end ``succeeded`` within a minute, with every lead either
live or identically archived: it runs again once its run's lease has run out
(``LEADARCHIVE_JOB_LEASE``), not a whole visibility timeout later. A read lock held by the test
(as a busy dialer would) pins the batch at its first delete, after its archive copies are
written, so the kill lands mid-batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from sqlalchemy import Connection, Engine

from tasks.celery_config import create_celery
from tasks.jobs import JobStore
from tasks.publishing import _redis_messages, publish
from tasks.requests import ArchiveRequest
from tasks.runtime import Runtime
from tasks.seed import insert_leads, lead_rows
from tasks.sweeps import UNACKED_INDEX_KEY, UNACKED_KEY
from testkit.processes import kill_group, service_env, start_worker
from tests.conftest import claim_redis_database
from tests.helpers import (
    admin_log_rows,
    archive,
    live,
    make_settings,
    private_redis,
    stored,
    wait_for,
    waits_for_a_table,
)

LEADS = 300


@pytest.fixture
def own_redis() -> Iterator[str]:
    # Not the session's database: the in-thread test worker must not take this job.
    with claim_redis_database() as url:
        yield url


def _short_lease(database_url: str, redis_url: str) -> tuple[Any, dict[str, str]]:
    """Settings and a worker's environment with a 3 s lease, a 60 s visibility timeout and a
    60 s release interval: a job that comes back must come back with the lease, long before
    kombu would deliver its message again, and whatever the other sweeps' interval."""
    timings = {"job_lease": "PT3S", "visibility_timeout": "PT60S"}
    settings = make_settings(database_url, redis_url, office_hours="", **timings)
    return settings, service_env(database_url, redis_url, release_interval="PT60S", **timings)


@pytest.mark.parametrize("victim", ["pool process", "whole worker"])
def test_a_killed_worker_job_runs_again_and_succeeds_within_a_minute(
    engine: Engine,
    vicidial: Connection,
    database_url: str,
    own_redis: str,
    tmp_path: Path,
    victim: str,
) -> None:
    insert_leads(vicidial, lead_rows(LEADS, seed=21))
    before = live(vicidial)
    settings, env = _short_lease(database_url, own_redis)
    rt = Runtime(settings)
    jobs: JobStore = rt.jobs
    request = ArchiveRequest(
        lead_ids=list(range(1, LEADS + 1)),
        insert_leads=True,
        update_leads=True,
        delete_leads=True,
        dry_run=False,
    )
    log_path = tmp_path / "worker.log"
    log = log_path.open("ab")
    workers = [start_worker(env, log)]
    try:
        with engine.connect() as dialer:
            # The "dialer" holds a read lock: the batch copies, then waits to delete.
            dialer.exec_driver_sql("LOCK TABLES vicidial_list READ")
            try:
                job_id, _ = jobs.create("alice", request)
                publish(create_celery(settings), job_id, request)
                # The worker process boots first: a minute on a loaded 2-core machine.
                wait_for(
                    lambda: (stored(jobs.get(job_id)) or {}).get("status") == "running", timeout=60
                )
                wait_for(lambda: len(archive(vicidial)) == LEADS, timeout=60)

                parent = psutil.Process(workers[0].pid)
                if victim == "pool process":
                    children = parent.children()
                    assert len(children) == 1
                    children[0].kill()
                else:
                    kill_group(workers[0])
                    workers.append(start_worker(env, log))
                killed_at = datetime.now(UTC)
            finally:
                dialer.exec_driver_sql("UNLOCK TABLES")

        # The batch's own time on a loaded machine comes on top of the minute: room for it.
        record = wait_for(
            lambda: (
                (r := stored(jobs.get(job_id))) and r["status"] in ("succeeded", "failed") and r
            ),
            timeout=150,
        )
    finally:
        for process in workers:
            kill_group(process)
        rt.close()
        log.close()

    assert record["status"] == "succeeded", log_path.read_text()[-3000:]
    assert int(record["attempts"]) >= 2
    # The promise (DESIGN.md): run again within a minute. The worker stamps each start itself,
    # so this measures the redelivery, not how long the test took to look.
    took = (datetime.fromisoformat(record["started_at"]) - killed_at).total_seconds()
    assert took < 60, f"the job started again {took:.0f}s after the kill"
    # The lease (3 s), handed back by the sweep every second, not the visibility timeout (60
    # s): with room for a new worker's boot on a loaded machine.
    assert "job lease expired, job handed back to the queue" in log_path.read_text()
    assert took < 40, f"the job started again {took:.0f}s after the kill, as if for the timeout"
    # The invariant, checked on the tables: every lead is live or identically archived.
    live_after, archive_after = live(vicidial), archive(vicidial)
    for lead_id, row in before.items():
        assert live_after.get(lead_id) == row or archive_after.get(lead_id) == row
    assert live_after == {}


@pytest.mark.parametrize("recorded", [False, True], ids=["lost", "unacknowledged"])
def test_a_job_whose_message_a_dying_worker_took_runs_about_one_lease_later(
    vicidial: Connection, database_url: str, own_redis: str, tmp_path: Path, recorded: bool
) -> None:
    """kombu takes a message off the queue before it records it as unacknowledged. A worker
    killed in between leaves a queued job whose message is nowhere (lost); one killed after
    that, before a run began, leaves it unacknowledged, which kombu delivers again only after
    the visibility timeout. Either way the sweep sends the job again once it has been queued,
    and its message taken, for a job lease."""
    insert_leads(vicidial, lead_rows(LEADS, seed=23))
    before = live(vicidial)
    settings, env = _short_lease(database_url, own_redis)
    rt = Runtime(settings)
    jobs: JobStore = rt.jobs
    celery_app = create_celery(settings)
    log_path = tmp_path / "worker.log"
    worker = start_worker(env, log_path)
    try:
        # A job sent as usual first: the worker is up and waiting on the queue.
        warm_up = ArchiveRequest(lead_ids=[1], insert_leads=True, dry_run=False)
        warm_id, _ = jobs.create("alice", warm_up)
        publish(celery_app, warm_id, warm_up)
        wait_for(lambda: (stored(jobs.get(warm_id)) or {}).get("status") == "succeeded", 90)

        request = ArchiveRequest(
            lead_ids=list(range(2, LEADS + 1)),
            insert_leads=True,
            update_leads=True,
            delete_leads=True,
            dry_run=False,
        )
        job_id, _ = jobs.create("alice", request)  # its message went with a worker
        if recorded:
            # What kombu keeps for the message the dead worker took: [message, exchange, key]
            # under its delivery tag, and when it was taken.
            message, _ = _redis_messages(celery_app, request.task_name, job_id, {})
            client = redis.Redis.from_url(own_redis)
            with contextlib.closing(client):
                client.hset(UNACKED_KEY, "tag-dead", json.dumps([json.loads(message), "", "x"]))
                client.zadd(UNACKED_INDEX_KEY, {"tag-dead": time.time()})
        queued_at = datetime.now(UTC)
        record = wait_for(
            lambda: (
                (r := stored(jobs.get(job_id))) and r["status"] in ("succeeded", "failed") and r
            ),
            timeout=90,
        )
    finally:
        kill_group(worker)
        rt.close()

    assert record["status"] == "succeeded", _text(log_path)[-3000:]
    assert int(record["attempts"]) == 1
    why = "held by a worker for a lease without a run" if recorded else "job message lost"
    assert f"{why}, sent again" in _text(log_path)
    took = (datetime.fromisoformat(record["started_at"]) - queued_at).total_seconds()
    # Not before it had been queued for most of a lease (3 s; the queued index is in Redis's
    # clock in whole seconds), and about then: the sweep runs every third of a lease. Before:
    # two visibility timeouts (120 s) when lost, one (60 s) when unacknowledged.
    assert 1.5 < took < 20, f"the job started {took:.1f}s after it was queued"
    live_after, archive_after = live(vicidial), archive(vicidial)
    assert set(live_after) == {1}
    for lead_id in range(2, LEADS + 1):
        assert archive_after[lead_id] == before[lead_id]


def _pinned_job(
    engine: Engine, jobs: JobStore, settings: Any, request: ArchiveRequest, dialer: Connection
) -> str:
    """A job whose batch has written its archive copies and waits to delete: the "dialer"
    (``dialer``) holds a read lock on vicidial_list."""
    dialer.exec_driver_sql("LOCK TABLES vicidial_list READ")
    job_id, _ = jobs.create("alice", request)
    publish(create_celery(settings), job_id, request)
    wait_for(lambda: (stored(jobs.get(job_id)) or {}).get("status") == "running", timeout=60)
    return job_id


def test_a_duplicate_delivery_of_a_running_job_leaves_its_record_alone(
    engine: Engine, vicidial: Connection, database_url: str, own_redis: str, tmp_path: Path
) -> None:
    """A second message for a job that is running (kombu re-queues in-flight messages after a
    reconnect; a retry's countdown can outlast the visibility timeout) meets the run's live
    lease: it is acknowledged and changes nothing, and the job ends once."""
    insert_leads(vicidial, lead_rows(LEADS, seed=22))
    settings = make_settings(database_url, own_redis, office_hours="", lock_wait_timeout="PT5S")
    env = service_env(database_url, own_redis, lock_wait_timeout="PT5S")
    rt = Runtime(settings)
    request = ArchiveRequest(lead_ids=list(range(1, LEADS + 1)), delete_leads=True)
    log_path = tmp_path / "worker.log"
    worker = start_worker(env, log_path, concurrency=2)
    try:
        with engine.connect() as dialer:
            try:
                job_id = _pinned_job(engine, rt.jobs, settings, request, dialer)
                publish(create_celery(settings), job_id, request)  # the duplicate
                wait_for(lambda: "left alone" in log_path.read_text(errors="replace"), 60)
                during = rt.jobs.get(job_id)
            finally:
                dialer.exec_driver_sql("UNLOCK TABLES")
        record = wait_for(
            lambda: (r := rt.jobs.get(job_id)) and r.status in ("succeeded", "failed") and r,
            timeout=120,
        )
    finally:
        kill_group(worker)
        rt.close()

    assert during is not None and (during.status, during.attempts) == ("running", 1)
    assert (record.status, record.attempts) == ("succeeded", 1), log_path.read_text()[-3000:]
    assert live(vicidial) == {}


def _text(log: Path) -> str:
    return log.read_text("utf-8", "replace")


def test_a_run_keeps_its_lease_while_its_admin_log_row_waits_for_the_table(
    vicidial: Connection, engine: Engine, database_url: str, own_redis: str, tmp_path: Path
) -> None:
    """After its batch, the run writes the job's row in vicidial_admin_log, which may wait for
    the table (Vicidial's own writes lock it) longer than the job lease: the lease is renewed
    meanwhile, so the job is not handed to another run, runs once and logs one row."""
    insert_leads(vicidial, lead_rows(LEADS, seed=25))
    timings = {"job_lease": "PT3S", "lock_wait_timeout": "PT20S", "task_time_limit": "PT40S"}
    timings["visibility_timeout"] = "PT60S"
    settings = make_settings(database_url, own_redis, office_hours="", **timings)
    env = service_env(database_url, own_redis, **timings)
    rt = Runtime(settings)
    request = ArchiveRequest(lead_ids=list(range(1, LEADS + 1)), delete_leads=True)
    log_path = tmp_path / "worker.log"
    worker = start_worker(env, log_path)
    try:
        with engine.connect() as holder:
            holder.exec_driver_sql("LOCK TABLES vicidial_admin_log WRITE")
            try:
                job_id, _ = rt.jobs.create("alice", request)
                publish(create_celery(settings), job_id, request)
                wait_for(
                    lambda: waits_for_a_table(holder, "%INSERT INTO vicidial_admin_log%"),
                    timeout=90,
                )
                time.sleep(3 * settings.lease.total_seconds())  # three leases, held
            finally:
                holder.exec_driver_sql("UNLOCK TABLES")
        record = wait_for(
            lambda: (r := rt.jobs.get(job_id)) and r.status in ("succeeded", "failed") and r,
            timeout=60,
        )
        time.sleep(2 * settings.lease.total_seconds())  # a second run would have begun by now
        after = rt.jobs.get(job_id)
    finally:
        kill_group(worker)
        rt.close()

    assert (record.status, record.attempts) == ("succeeded", 1), _text(log_path)[-3000:]
    assert after == record
    assert "job lease lost to another run" not in _text(log_path)
    assert "job lease expired during the run" not in _text(log_path)
    assert [row["record_id"] for row in admin_log_rows(vicidial)] == [job_id]
    assert live(vicidial) == {}


def test_a_frozen_worker_past_its_lease_is_replaced_and_changes_nothing_when_it_wakes(
    engine: Engine, vicidial: Connection, database_url: str, own_redis: str, tmp_path: Path
) -> None:
    """A worker stopped (SIGSTOP) in the middle of a batch for longer than its lease: another
    worker takes the job over and finishes it; the frozen one, woken, finds its run token
    refused and leaves the record as the other run wrote it. Every lead stays live or
    identically archived."""
    insert_leads(vicidial, lead_rows(LEADS, seed=23))
    before = live(vicidial)
    short = {"visibility_timeout": "PT6S", "task_time_limit": "PT4S", "lock_wait_timeout": "PT2S"}
    settings = make_settings(database_url, own_redis, office_hours="", **short)
    env = service_env(database_url, own_redis, release_interval="PT1S", **short)
    rt = Runtime(settings)
    request = ArchiveRequest(lead_ids=list(range(1, LEADS + 1)), delete_leads=True)
    frozen_log, other_log = tmp_path / "frozen.log", tmp_path / "other.log"
    frozen = start_worker(env, frozen_log)
    workers = [frozen]
    try:
        with engine.connect() as dialer:
            try:
                job_id = _pinned_job(engine, rt.jobs, settings, request, dialer)
                os.killpg(frozen.pid, signal.SIGSTOP)
                held = rt.jobs.get(job_id)
            finally:
                dialer.exec_driver_sql("UNLOCK TABLES")
        workers.append(start_worker(env, other_log))
        record = wait_for(
            lambda: (r := rt.jobs.get(job_id)) and r.status in ("succeeded", "failed") and r,
            timeout=120,
        )
        # Its pool process wakes first (its parent, still stopped, cannot end it for the time
        # limit it outlived): the batch goes on, and its ending is refused for the run token.
        for child in psutil.Process(frozen.pid).children():
            child.resume()
        wait_for(lambda: "lease expired during the run" in _text(frozen_log), 60)
        after = rt.jobs.get(job_id)
    finally:
        for process in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)
            kill_group(process)
        rt.close()

    assert held is not None and held.run_token is not None
    assert record.status == "succeeded", other_log.read_text()[-3000:]
    assert record.attempts is not None and record.attempts >= 2
    assert after == record
    live_after, archive_after = live(vicidial), archive(vicidial)
    for lead_id, row in before.items():
        assert live_after.get(lead_id) == row or archive_after.get(lead_id) == row
    assert live_after == {}


def test_a_job_store_that_answers_readonly_hands_the_job_back_and_it_runs_later(
    vicidial: Connection, database_url: str, own_redis: str, tmp_path: Path
) -> None:
    """Redis answers READONLY (a replica after a failover) as an error reply, not a lost
    connection: the worker neither acknowledges the job nor leaves it `running`; it hands the
    message back, and the job runs once the store takes writes again."""
    insert_leads(vicidial, lead_rows(5, seed=24))
    request = ArchiveRequest(lead_ids=[1, 2, 3, 4, 5], delete_leads=True)
    log_path = tmp_path / "worker.log"
    with private_redis(tmp_path) as store:
        settings = make_settings(database_url, own_redis, result_backend=store.url, office_hours="")
        env = service_env(database_url, own_redis, result_backend=store.url)
        rt = Runtime(settings)
        admin = redis.Redis.from_url(store.url)
        worker = start_worker(env, log_path)
        try:
            job_id, _ = rt.jobs.create("alice", request)
            admin.execute_command("REPLICAOF", "127.0.0.1", "1")
            publish(create_celery(settings), job_id, request)
            wait_for(lambda: "job store cannot serve" in log_path.read_text(errors="replace"), 60)
            during = rt.jobs.get(job_id)
            admin.execute_command("REPLICAOF", "NO", "ONE")
            record = wait_for(
                lambda: (r := rt.jobs.get(job_id)) and r.status in ("succeeded", "failed") and r,
                timeout=120,
            )
        finally:
            kill_group(worker)
            admin.close()
            rt.close()

    assert during is not None and (during.status, during.run_token) == ("queued", None)
    assert record.status == "succeeded", log_path.read_text()[-3000:]
    assert live(vicidial) == {} and set(archive(vicidial)) == {1, 2, 3, 4, 5}
