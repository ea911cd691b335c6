"""Both job stores (Redis for production, SQLite for the embedded default) keep one contract."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from tasks.errors import IdempotencyConflict, StoreFullError, TooManyPendingJobs
from tasks.jobs import DEFERRED_KEY, RESERVE_PER_JOB, JobStore, RedisJobStore
from tasks.lifecycle import _Lease
from tasks.records import JobRecord
from tasks.requests import ArchiveRequest, SelectionRequest
from tasks.sql_jobs import SqliteJobStore
from testkit.servers import private_redis
from tests.conftest import claim_redis_database
from tests.helpers import stored, wait_for

REQUEST = ArchiveRequest(
    lead_ids=[3, 1, 2], insert_leads=True, update_leads=True, delete_leads=False, dry_run=False
)
LATER = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def own_redis() -> Iterator[redis.Redis]:
    """A Redis database of this test's own: the in-thread API test worker's lost-message sweep
    would send the queued records made here again, as jobs, on another test's tables."""
    with claim_redis_database() as url:
        client = redis.Redis.from_url(url)
        yield client
        client.close()


@pytest.fixture(params=["redis", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "redis":
        yield RedisJobStore(request.getfixturevalue("own_redis"), timedelta(days=7))
    else:
        yield SqliteJobStore(tmp_path / "jobs.db", timedelta(days=7))


def test_a_new_job_is_queued_with_its_request(store: JobStore) -> None:
    job_id, created = store.create("alice", REQUEST)

    record = stored(store.get(job_id))

    assert created
    assert record is not None
    assert record["status"] == "queued"
    assert record["owner"] == "alice"
    assert JobRecord.from_fields(record).lead_ids == [3, 1, 2]
    assert store.get("no-such-job") is None


def test_the_clients_address_is_kept_for_the_admin_log_and_never_shown(store: JobStore) -> None:
    job_id, _ = store.create("alice", REQUEST, client_ip="203.0.113.7")
    store.transition(job_id, ("queued",), "running")
    # The worker notes the admin-log row it wrote; the status keeps it for itself too.
    store.transition(job_id, ("running",), "running", admin_logged="t")

    record = stored(store.get(job_id))

    assert record is not None
    assert (record["client_ip"], record["admin_logged"]) == ("203.0.113.7", "t")
    assert record["status"] == "running"
    shown = json.dumps(JobRecord.from_fields(record).view())
    assert "203.0.113.7" not in shown
    assert "admin_logged" not in shown


def test_idempotency_key_returns_the_job_or_refuses_another_request(store: JobStore) -> None:
    first, _ = store.create("alice", REQUEST, idempotency_key="k1", fingerprint="A")

    again, created = store.create("alice", REQUEST, idempotency_key="k1", fingerprint="A")
    other_owner, _ = store.create("bob", REQUEST, idempotency_key="k1", fingerprint="A")

    assert (again, created) == (first, False)
    assert other_owner != first
    with pytest.raises(IdempotencyConflict):
        store.create("alice", REQUEST, idempotency_key="k1", fingerprint="B")


def test_transitions_happen_only_from_allowed_states(store: JobStore) -> None:
    job_id, _ = store.create("alice", REQUEST)

    assert store.transition(job_id, ("queued",), "running", started_at="t1") == "queued"
    assert store.transition(job_id, ("queued",), "cancelled") == "running"
    assert store.cancel(job_id) == "running"
    assert store.transition("no-such-job", ("queued",), "running") is None
    record = stored(store.get(job_id))
    assert record is not None
    assert (record["status"], record["started_at"]) == ("running", "t1")


def test_deferred_jobs_are_released_once_when_due(store: JobStore) -> None:
    job_id, _ = store.create("alice", REQUEST)

    assert store.defer(job_id, LATER)
    early = store.take_due(LATER - timedelta(seconds=1))
    due = store.take_due(LATER)
    twice = store.take_due(LATER + timedelta(days=1))

    assert (early, due, twice) == ([], [job_id], [])
    record = stored(store.get(job_id))
    assert record is not None
    assert record["status"] == "queued"


def test_a_cancelled_deferred_job_is_never_released(store: JobStore) -> None:
    job_id, _ = store.create("alice", REQUEST)
    store.defer(job_id, LATER)

    assert store.cancel(job_id) == "deferred"
    assert store.take_due(LATER + timedelta(days=1)) == []
    record = stored(store.get(job_id))
    assert record is not None
    assert record["status"] == "cancelled"


def test_forget_removes_the_job_and_its_idempotency_claim(store: JobStore) -> None:
    job_id, _ = store.create("alice", REQUEST, idempotency_key="k2", fingerprint="A")

    forgotten = store.forget(job_id)
    fresh, created = store.create("alice", REQUEST, idempotency_key="k2", fingerprint="A")

    assert forgotten
    assert store.get(job_id) is None
    assert created and fresh != job_id


def test_forget_leaves_a_job_a_run_has_begun(store: JobStore) -> None:
    """The API forgets a job whose send failed, unless the lost-message sweep sent it and a run
    began meanwhile: then the job, its claim and its entries stay."""
    job_id, _ = store.create("alice", REQUEST, idempotency_key="k3", fingerprint="A")
    store.start(job_id, "run", timedelta(seconds=30))
    running = store.forget(job_id)
    store.transition(job_id, ("running",), "queued", token="run")  # a retry: queued, has run
    requeued = store.forget(job_id)
    same, created = store.create("alice", REQUEST, idempotency_key="k3", fingerprint="A")

    assert (running, requeued) == (False, False)
    record = store.get(job_id)
    assert record is not None and record.status == "queued"
    assert (same, created) == (job_id, False)


def test_attempts_are_counted(store: JobStore) -> None:
    """Every start of a run counts one, a run after a transient error's retry included."""
    job_id, _ = store.create("alice", REQUEST)

    store.start(job_id, "first", timedelta(seconds=30))
    store.transition(job_id, ("running",), "queued", token="first")
    store.start(job_id, "second", timedelta(seconds=30))

    record = stored(store.get(job_id))
    assert record is not None
    assert record["attempts"] == "2"


def test_records_expire_after_the_result_lifetime(own_redis: redis.Redis, tmp_path: Path) -> None:
    stores: list[JobStore] = [
        RedisJobStore(own_redis, timedelta(seconds=3)),
        SqliteJobStore(tmp_path / "jobs.db", timedelta(seconds=3)),
    ]
    ids = [s.create("alice", REQUEST)[0] for s in stores]
    found = [s.get(i) for s, i in zip(stores, ids, strict=True)]

    assert all(record is not None for record in found)
    wait_for(lambda: [s.get(i) for s, i in zip(stores, ids, strict=True)] == [None, None], 20)


def test_a_released_job_is_queued_and_indexed_in_one_step_and_taken_once(
    own_redis: redis.Redis,
) -> None:
    """take_due changes the status, the deferred set and the queued index in one Redis script
    (issue 13): of four workers releasing at once each job goes to one, and every released job
    is in the queued index, where the lost-message sweep finds it if its message is never sent."""
    store = RedisJobStore(own_redis, timedelta(days=7))
    jobs = [store.create("alice", REQUEST)[0] for _ in range(40)]
    for job_id in jobs:
        assert store.defer(job_id, LATER)
    results: list[list[str]] = []

    def release() -> None:
        results.append(RedisJobStore(own_redis, timedelta(days=7)).take_due(LATER))

    threads = [threading.Thread(target=release) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()

    taken = [job_id for result in results for job_id in result]
    assert sorted(taken) == sorted(jobs)
    assert own_redis.zcard(DEFERRED_KEY) == 0
    assert set(store.queued_before(time.time() + 60)) == set(jobs)
    assert {stored(store.get(j))["status"] for j in jobs} == {"queued"}  # type: ignore[index]


def test_a_leftover_deferred_entry_is_dropped_and_a_job_deferred_again_stays(
    own_redis: redis.Redis,
) -> None:
    store = RedisJobStore(own_redis, timedelta(days=7))
    queued, _ = store.create("alice", REQUEST)
    again, _ = store.create("alice", REQUEST)
    # An entry left over for a job that is queued (defer() writes the entry first).
    own_redis.zadd(DEFERRED_KEY, {queued: LATER.timestamp()})
    # A job deferred again to a later window is not due at LATER.
    store.defer(again, LATER + timedelta(days=1))

    assert store.take_due(LATER) == []
    assert own_redis.zscore(DEFERRED_KEY, queued) is None
    assert own_redis.zscore(DEFERRED_KEY, again) == (LATER + timedelta(days=1)).timestamp()
    assert stored(store.get(again))["status"] == "deferred"  # type: ignore[index]
    assert stored(store.get(queued))["status"] == "queued"  # type: ignore[index]


def test_a_key_may_have_only_so_many_unfinished_jobs(store: JobStore) -> None:
    first, _ = store.create("alice", REQUEST, max_pending=2)
    second, _ = store.create("alice", REQUEST, max_pending=2)

    with pytest.raises(TooManyPendingJobs) as refused:
        store.create("alice", REQUEST, max_pending=2)

    assert (refused.value.pending, refused.value.limit) == (2, 2)
    assert refused.value.retry_after > 0
    # Another key has its own count; a deferred or running job still counts.
    store.create("bob", REQUEST, max_pending=2)
    store.defer(first, LATER)
    store.transition(second, ("queued",), "running")
    with pytest.raises(TooManyPendingJobs):
        store.create("alice", REQUEST, max_pending=2)
    # A job that ends makes room.
    store.transition(second, ("running",), "succeeded")
    third, created = store.create("alice", REQUEST, max_pending=2)
    assert created and third not in (first, second)
    # A replayed idempotent submission is the same job, never refused.
    store.cancel(first)
    kept, _ = store.create("alice", REQUEST, idempotency_key="k", max_pending=2)
    again, created = store.create("alice", REQUEST, idempotency_key="k", max_pending=2)
    assert (again, created) == (kept, False)


def test_an_idempotency_claim_whose_record_is_gone_is_taken_over(own_redis: redis.Redis) -> None:
    store = RedisJobStore(own_redis, timedelta(days=7))
    lost, _ = store.create("alice", REQUEST, idempotency_key="k")
    # What a stall between two writes used to leave: a claim, and no record.
    own_redis.delete(f"leadarchive:job:{lost}")

    job_id, created = store.create("alice", REQUEST, idempotency_key="k")

    assert created and job_id != lost
    assert store.get(job_id) is not None
    assert store.create("alice", REQUEST, idempotency_key="k") == (job_id, False)


def test_a_nearly_full_redis_refuses_new_jobs_and_keeps_room_for_the_accepted(
    tmp_path: Path,
) -> None:
    with private_redis(tmp_path) as server:
        client = redis.Redis(port=server.port)
        client.config_set("maxmemory", 8 * 1024 * 1024)
        store = RedisJobStore(client, timedelta(days=7))
        accepted: list[str] = []
        with pytest.raises(StoreFullError, match="job store is full"):
            for _ in range(2000):
                accepted.append(store.create("alice", REQUEST)[0])
        keys = client.dbsize()
        used = int(client.info("memory")["used_memory"])

        # Refused before anything was written, with room left for every accepted job.
        with pytest.raises(StoreFullError):
            store.create("bob", REQUEST)
        assert client.dbsize() == keys
        assert 100 < len(accepted) < 2000
        assert used + len(accepted) * RESERVE_PER_JOB < 8 * 1024 * 1024
        # Jobs that end make room again.
        for job_id in accepted[:50]:
            store.transition(job_id, ("queued",), "cancelled")
        assert store.create("bob", REQUEST)[1]


def test_a_run_holds_its_job_under_a_lease_and_a_duplicate_leaves_it_alone(
    store: JobStore,
) -> None:
    job_id, _ = store.create("alice", REQUEST)

    assert store.start(job_id, "run-1", timedelta(seconds=30)) == "started"
    assert store.start(job_id, "run-2", timedelta(seconds=30)) == "leased"
    assert store.renew(job_id, "run-1", timedelta(seconds=30))
    assert not store.renew(job_id, "run-2", timedelta(seconds=30))
    # Only the holder's token changes the record.
    assert store.transition(job_id, ("running",), "succeeded", token="run-2") == "lost"
    assert store.transition(job_id, ("running",), "succeeded", token="run-1") == "running"
    record = store.get(job_id)
    assert record is not None
    assert (record.status, record.attempts, record.run_token) == ("succeeded", 1, None)
    assert store.start(job_id, "run-3", timedelta(seconds=30)) == "succeeded"


def test_an_expired_lease_hands_the_job_back_and_the_old_run_changes_nothing(
    store: JobStore,
) -> None:
    job_id, _ = store.create("alice", REQUEST)
    other, _ = store.create("alice", REQUEST)
    assert store.start(job_id, "frozen", timedelta(seconds=1)) == "started"
    assert store.start(other, "alive", timedelta(seconds=60)) == "started"

    handed = wait_for(store.hand_back_expired, timeout=10, interval=0.2)

    assert handed == [job_id]  # the live lease stays
    record = store.get(job_id)
    assert record is not None and (record.status, record.run_token) == ("queued", None)
    assert store.start(job_id, "second", timedelta(seconds=60)) == "started"
    # The frozen run wakes up: its renewal and every change it tries are refused.
    assert not store.renew(job_id, "frozen", timedelta(seconds=60))
    assert store.transition(job_id, ("running",), "failed", token="frozen") == "lost"
    assert store.transition(job_id, ("running",), "succeeded", token="second") == "running"
    record = store.get(job_id)
    assert record is not None and (record.status, record.attempts) == ("succeeded", 2)


def test_a_lease_found_expired_is_taken_over_by_the_next_delivery(store: JobStore) -> None:
    job_id, _ = store.create("alice", REQUEST)
    assert store.start(job_id, "dead", timedelta(seconds=1)) == "started"

    wait_for(lambda: store.start(job_id, "next", timedelta(seconds=60)) == "started", 10, 0.2)

    assert store.transition(job_id, ("running",), "succeeded", token="dead") == "lost"


def test_a_job_that_has_started_can_no_longer_be_cancelled(store: JobStore) -> None:
    started, _ = store.create("alice", REQUEST)
    store.start(started, "run", timedelta(seconds=30))
    # A transient error: queued again to be retried, some chunks already done.
    assert store.transition(started, ("running",), "queued", token="run") == "running"
    waiting, _ = store.create("alice", REQUEST)

    assert store.cancel(started) == "started"
    assert store.cancel(waiting) == "queued"
    assert [store.get(j).status for j in (started, waiting)] == ["queued", "cancelled"]  # type: ignore[union-attr]


SELECTION = SelectionRequest(list_ids=[1001], delete_leads=True)


def test_a_selection_saves_its_progress_only_while_its_run_holds_it(store: JobStore) -> None:
    job_id, _ = store.create("alice", SELECTION)
    assert store.save_progress(job_id, "run", progress={"selected": 9, "done": 0}) == "lost"
    store.start(job_id, "run", timedelta(seconds=30))
    checkpoint = {"selected": 9, "done": 4, "last_lead_id": 17, "counts": {}, "left_live": []}

    assert store.save_progress(job_id, "run", progress={"selected": 9, "done": 4}) == "running"
    assert store.save_progress(job_id, "run", checkpoint=checkpoint) == "running"
    assert store.save_progress(job_id, "other run", checkpoint={}) == "lost"
    assert store.save_progress("no-such-job", "run", checkpoint={}) is None

    record = store.get(job_id)
    assert record is not None and record.request == SELECTION and record.lead_ids == []
    assert (record.progress, record.checkpoint) == ({"selected": 9, "done": 4}, checkpoint)
    assert record.view()["progress"] == {"selected": 9, "done": 4}
    assert "checkpoint" not in record.view() and "result" not in record.view()


def test_a_running_selection_is_asked_to_stop_and_a_waiting_one_is_cancelled(
    store: JobStore,
) -> None:
    running, _ = store.create("alice", SELECTION)
    store.start(running, "run", timedelta(seconds=30))
    checkpoint = {"selected": 9, "done": 4, "last_lead_id": 17, "counts": {}, "left_live": []}
    assert store.save_progress(running, "run", checkpoint=checkpoint) == "running"

    # Asked to stop: it goes on running until its current batch ends, and learns it then.
    assert store.cancel(running, between_batches=True) == "stopping"
    assert store.cancel(running, between_batches=True) == "stopping"
    record = store.get(running)
    assert record is not None and record.status == "running"
    asked = record.cancel_requested
    assert asked is not None and record.view()["cancel_requested"] == asked
    assert store.save_progress(running, "run", checkpoint=checkpoint) == "stopping"
    # Without between_batches (any other kind of job), a running job is not cancellable.
    assert store.cancel(running) == "running"

    # Given back between batches (its share of the time limit used): cancelled at once,
    # though it has run, and its status shows what it did.
    assert store.transition(running, ("running",), "queued", token="run") == "running"
    assert store.cancel(running, between_batches=True) == "queued"
    record = store.get(running)
    assert record is not None and record.status == "cancelled"
    assert record.view()["result"] == checkpoint
    assert store.start(running, "late", timedelta(seconds=30)) == "cancelled"


def test_the_sqlite_store_deletes_expired_jobs_and_claims(tmp_path: Path) -> None:
    """The embedded demo's file holds no more than the result lifetime's jobs."""
    store = SqliteJobStore(tmp_path / "jobs.db", timedelta(seconds=1))
    old, _ = store.create("alice", REQUEST, idempotency_key="k")
    store.defer(old, LATER)
    time.sleep(1.2)

    new, _ = store.create("alice", REQUEST)

    with sqlite3.connect(tmp_path / "jobs.db") as db:
        jobs = [row[0] for row in db.execute("SELECT job_id FROM jobs")]
        claims = db.execute("SELECT COUNT(*) FROM idempotency").fetchone()[0]
        deferred = db.execute("SELECT COUNT(*) FROM deferred").fetchone()[0]
    assert (jobs, claims, deferred) == ([new], 0, 0)


def test_leases_follow_redis_clock_not_the_workers(
    own_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers on hosts whose clocks differ agree on leases: a sweep on a host a minute ahead
    hands back no live lease, and a run on a host a minute behind takes one that lasts."""
    store = RedisJobStore(own_redis, timedelta(days=7))
    live, _ = store.create("alice", REQUEST)
    assert store.start(live, "run-1", timedelta(seconds=30)) == "started"
    real = time.time

    monkeypatch.setattr(time, "time", lambda: real() + 60)
    assert store.hand_back_expired() == []
    monkeypatch.setattr(time, "time", lambda: real() - 60)
    late, _ = store.create("alice", REQUEST)
    assert store.start(late, "run-2", timedelta(seconds=30)) == "started"
    assert store.renew(live, "run-1", timedelta(seconds=30))
    monkeypatch.setattr(time, "time", real)

    assert store.hand_back_expired() == []
    for job_id in (live, late):
        record = store.get(job_id)
        assert record is not None and record.status == "running"
        assert record.lease_until is not None
        assert abs(float(record.lease_until) - (real() + 30)) < 5


def test_the_queued_index_follows_redis_clock_not_the_hosts(
    own_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs queued and sent again by hosts a minute behind are not a minute old to the
    lost-message sweep, whose cutoff (one lease back) is in Redis's clock too."""
    store = RedisJobStore(own_redis, timedelta(days=7))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 60)
    queued, _ = store.create("alice", REQUEST)
    sent_again, _ = store.create("alice", REQUEST)
    store.requeued(sent_again)
    monkeypatch.setattr(time, "time", real)

    cutoff = store.clock() - 10
    assert abs(store.clock() - real()) < 5
    assert not store.any_queued_before(cutoff)
    assert store.queued_before(cutoff) == []
    assert set(store.queued_before(store.clock() + 2)) == {queued, sent_again}


def test_a_renewal_that_failed_is_tried_again_before_the_lease_runs_out(
    tmp_path: Path,
) -> None:
    """Redis stops answering long enough for one renewal to time out: the run tries again as
    soon as it answers, not a third of the lease later, and keeps its job."""
    with private_redis(tmp_path) as server:
        client = redis.Redis.from_url(server.url, socket_timeout=4)
        admin = redis.Redis.from_url(server.url)
        store = RedisJobStore(client, timedelta(days=7))
        job_id, _ = store.create("alice", REQUEST)
        lease = _Lease(store, job_id, "run-1", timedelta(seconds=9))  # renewed every 3 s
        assert store.start(job_id, lease.token, lease.length) == "started"
        started = time.monotonic()
        with lease.kept():
            time.sleep(1.5)
            # Every client waits from 1.5 s to 7.5 s: the renewal due at 3 s times out at 7 s,
            # and the next one, due at 10 s without a retry, would come after the lease's end
            # at 9 s.
            admin.execute_command("CLIENT", "PAUSE", 6000, "ALL")
            time.sleep(max(0.0, 9.5 - (time.monotonic() - started)))
            handed = store.hand_back_expired()
            record = store.get(job_id)
        client.close()
        admin.close()

    assert handed == [] and not lease.lost
    assert record is not None and (record.status, record.run_token) == ("running", "run-1")
