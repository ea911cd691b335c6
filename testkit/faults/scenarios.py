"""The fault scenarios of issue 5, shared by the CI tests (small sizes) and soak/faults.py (full).

Each scenario builds a fresh ``Stack`` (database, Redis database, API, workers), archives leads
through the HTTP API while it injures the service, waits for every job to end, and then reads
both tables back: every lead's newest data must be its live row, or, once it is no longer live,
its archive row, byte for byte in every column. Then it judges the outcomes (``judge_outcomes``):
no job may fail unless the scenario means it to (and then only with the error it names), and
every lead must be archived or still live for a reason its job reported. It returns ``Figures``;
``problems`` is empty when everything held. The fault schedule (when and where each fault lands)
is drawn from ``seed`` alone, before the run (``*_schedule``), so a seed reproduces it.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tasks.records import FINAL
from testkit.checksum import Row, live
from testkit.dialer import Dialer
from testkit.faults.judgement import (
    JOB_FAILED,
    NOT_REQUESTED,
    Figures,
    Outcomes,
    check_invariant,
    check_jobs,
    count_http,
    judge_outcomes,
)
from testkit.faults.stack import CI_SETTINGS, Answer, ServiceSettings, Stack
from testkit.polling import wait_until
from testkit.servers import PrivateMariaDB, PrivateRedis

# How long every job may take to end after the last fault (the "within a minute").
AFTER_LAST_FAULT = 60.0

# The one failure a scenario may cause on purpose: a MariaDB crash leaves MyISAM tables marked as
# crashed, and a job that meets one fails with that error (not retried: an operator repairs it).
# What most scenarios allow: no failed job, every lead archived.
ALL_ARCHIVED = Outcomes()

CRASHED_TABLE = (
    r"^OperationalError: (\(pymysql\.err\.OperationalError\) )?"
    r"\(119[45], .Table '[^']+' is marked as crashed"
)


@dataclass
class Servers:
    """Where a scenario runs: a MariaDB and a Redis that it may stop and start."""

    mariadb: PrivateMariaDB
    redis: PrivateRedis
    workdir: Path
    settings: ServiceSettings = field(default_factory=lambda: CI_SETTINGS)

    def stack(self, name: str) -> Stack:
        folder = self.workdir / f"{name}-{time.strftime('%H%M%S')}-{os.urandom(2).hex()}"
        return Stack(self.mariadb.url, self.redis.url, folder, self.settings)


def _jobs_for(lead_ids: list[int], size: int) -> list[list[int]]:
    return [lead_ids[i : i + size] for i in range(0, len(lead_ids), size)]


def schedule_digest(plan: object) -> str:
    """A short fingerprint of a fault schedule, printed with every run (same seed, same digest)."""
    return hashlib.sha256(repr(plan).encode()).hexdigest()[:12]


def _finish(
    stack: Stack,
    figures: Figures,
    jobs: dict[str, list[int]],
    expected: dict[int, Row],
    timeout: float,
    *,
    outcomes: Outcomes = ALL_ARCHIVED,
    expected_503: Callable[[Answer], bool] | None = None,
) -> dict[int, str]:
    """Wait for every job, then judge the jobs, the tables and the HTTP answers."""
    started = time.monotonic()
    statuses = stack.wait_final(list(jobs), timeout)
    figures.notes["seconds to end after the last fault"] = max(
        figures.notes.get("seconds to end after the last fault", 0.0),
        round(time.monotonic() - started, 1),
    )
    return _judge(stack, figures, jobs, statuses, expected, outcomes, expected_503)


def _judge(
    stack: Stack,
    figures: Figures,
    jobs: dict[str, list[int]],
    statuses: dict[str, str],
    expected: dict[int, Row],
    outcomes: Outcomes,
    expected_503: Callable[[Answer], bool] | None = None,
) -> dict[int, str]:
    check_jobs(stack, list(jobs), statuses, figures)
    views = stack.final_reports(list(jobs))
    table = check_invariant(stack, expected, figures)
    reasons = judge_outcomes(jobs, views, table, outcomes, figures)
    count_http(stack, figures, expected_503)
    if figures.problems:
        figures.problems.append(f"worker log tail: {stack.log_tail(1500)}")
    return reasons


def _wait_for_batch(stack: Stack) -> int:
    """Wait until a batch is inside its window (holds the batch lock); its connection ID."""
    monitor = stack.monitor()
    try:
        holder: int = wait_until(
            lambda: stack.lock_holder(monitor), 120, "a batch to hold its lock"
        )
    finally:
        monitor.close()
    return holder


class Feeder:
    """Submits jobs as workers take them, keeping ``backlog`` jobs waiting or running.

    Fresh leads first, so the faults land on batches with work to do; then the same leads
    again (idempotent re-runs) should the faults outlast them.
    """

    def __init__(self, stack: Stack, chunks: list[list[int]], backlog: int) -> None:
        self.stack = stack
        self.chunks = chunks
        self.backlog = backlog
        self.jobs: dict[str, list[int]] = {}
        self.pending: list[str] = []
        self.submitted = 0

    def top_up(self) -> None:
        if self.pending:
            statuses = self.stack.statuses(self.pending)
            self.pending = [j for j, s in statuses.items() if s not in FINAL]
        while len(self.pending) < self.backlog:
            chunk = self.chunks[self.submitted % len(self.chunks)]
            job_id = self.stack.submit_ok(chunk)
            self.jobs[job_id] = chunk
            self.pending.append(job_id)
            self.submitted += 1

    def wait_for_batch(self, monitor: Any) -> int:
        """Keep the backlog topped up until a batch holds the batch lock; its connection ID."""

        def holder() -> int | None:
            self.top_up()
            return self.stack.lock_holder(monitor)

        found: int = wait_until(holder, 120, "a batch to hold its lock", interval=0.005)
        return found

    @property
    def reruns(self) -> int:
        return max(0, self.submitted - len(self.chunks))


# -- 1. SIGKILL ------------------------------------------------------------------------------


def sigkill_schedule(seed: int, kills: int) -> list[tuple[float, float]]:
    """Per kill: the pause after a batch took its lock (s), and a pick among candidates."""
    rng = random.Random(seed)
    return [(rng.uniform(0, 0.1), rng.random()) for _ in range(kills)]


def _pick(items: list[Any], pick: float) -> Any:
    return items[min(len(items) - 1, int(pick * len(items)))]


def sigkill_workers(
    servers: Servers, *, kills: int = 20, leads: int = 12_000, job_size: int = 500, seed: int = 1
) -> Figures:
    """Workers killed with SIGKILL inside batches: two times in three the pool process whose
    database connection holds the batch lock, else the whole worker with its pool (restarted)."""
    plan = sigkill_schedule(seed, kills)
    figures = Figures("sigkill", runs=1, notes={"seed": seed, "schedule": schedule_digest(plan)})
    with servers.stack("sigkill") as stack:
        original = stack.seed(leads, seed=seed)
        stack.start_api()
        for _ in range(2):
            stack.start_worker(concurrency=2)
        feeder = Feeder(stack, _jobs_for(sorted(original), job_size), backlog=4)
        monitor = stack.monitor()
        inside = pool_kills = worker_kills = 0
        while pool_kills + worker_kills < kills:
            pause, pick = plan[pool_kills + worker_kills]
            holder = feeder.wait_for_batch(monitor)
            time.sleep(pause)
            victim = stack.process_of(monitor, holder)
            if victim is None:  # the batch ended meanwhile: any pool process will do
                pool = stack.pool_processes()
                if not pool:
                    continue
                victim = _pick(pool, pick)
            inside += stack.lock_holder(monitor) == holder
            if (pool_kills + worker_kills) % 3 != 1:
                victim.send_signal(signal.SIGKILL)
                pool_kills += 1
            else:
                owner = stack.worker_of(victim) or _pick(stack.workers, pick)
                stack.kill_worker(owner)
                # Not waiting for its pool: the other worker goes on meanwhile.
                stack.start_worker(concurrency=2, wait=False)
                worker_kills += 1
        jobs = feeder.jobs
        monitor.close()
        figures.notes.update(
            {
                "kills": pool_kills + worker_kills,
                "pool process kills": pool_kills,
                "whole worker kills": worker_kills,
                "kills while the batch held its lock": inside,
                "re-run jobs": feeder.reruns,
            }
        )
        _finish(stack, figures, jobs, original, AFTER_LAST_FAULT)
        took = figures.notes["seconds to end after the last fault"]
        if took >= AFTER_LAST_FAULT:
            figures.problems.append(f"jobs still running {took:.0f}s after the last kill")
    return figures


# -- 2. KILL CONNECTION ------------------------------------------------------------------------


def kill_connection_schedule(seed: int, kills: int) -> list[tuple[float, float]]:
    """Per kill: the pause after a batch took its lock (s), and a pick among connections."""
    rng = random.Random(seed)
    return [(rng.uniform(0, 0.15), rng.random()) for _ in range(kills)]


def kill_connection(
    servers: Servers, *, kills: int = 10, leads: int = 6_000, job_size: int = 500, seed: int = 2
) -> Figures:
    """The batch's database connection killed from another session (KILL CONNECTION), found
    through the batch lock's holder; every third time another of the service's connections."""
    plan = kill_connection_schedule(seed, kills)
    figures = Figures(
        "kill-connection", runs=1, notes={"seed": seed, "schedule": schedule_digest(plan)}
    )
    with servers.stack("kill-connection") as stack:
        original = stack.seed(leads, seed=seed)
        stack.start_api()
        stack.start_worker(concurrency=2)
        feeder = Feeder(stack, _jobs_for(sorted(original), job_size), backlog=3)
        monitor = stack.monitor()
        done = inside = 0
        while done < kills:
            pause, pick = plan[done]
            holder = feeder.wait_for_batch(monitor)
            time.sleep(pause)
            target = holder
            if done % 3 == 2:
                others = sorted(c for c in stack.connection_ids(monitor) if c != holder)
                target = _pick(others, pick) if others else holder
            inside += stack.lock_holder(monitor) == holder
            with monitor.cursor() as cursor:
                try:
                    cursor.execute(f"KILL CONNECTION {int(target)}")
                except Exception as exc:  # the connection ended meanwhile: count a miss
                    figures.notes.setdefault("missed", []).append(str(exc)[:60])
                    continue
            done += 1
        jobs = feeder.jobs
        monitor.close()
        figures.notes.update(
            {
                "kills": done,
                "kills while the batch held its lock": inside,
                "re-run jobs": feeder.reruns,
            }
        )
        # Every kill is an operational error: retried, so no job fails and every lead goes.
        _finish(stack, figures, jobs, original, AFTER_LAST_FAULT)
    return figures


# -- 3. MariaDB stopped and started -----------------------------------------------------------


def mariadb_restart_schedule(
    seed: int, outages: int, down: tuple[float, float]
) -> list[tuple[float, float]]:
    """Per outage: the pause after a batch took its lock, and how long MariaDB stays down (s)."""
    rng = random.Random(seed)
    return [(rng.uniform(0, 0.3), rng.uniform(*down)) for _ in range(outages)]


def mariadb_restart(
    servers: Servers,
    *,
    outages: int = 2,
    leads: int = 6_000,
    job_size: int = 500,
    down: tuple[float, float] = (1.0, 5.0),
    seed: int = 3,
) -> Figures:
    """MariaDB stopped (SIGTERM, a clean shutdown; every second outage SIGKILL, a crash) while
    jobs are queued and one runs, and started again after a random pause."""
    plan = mariadb_restart_schedule(seed, outages, down)
    figures = Figures(
        "mariadb-restart", runs=1, notes={"seed": seed, "schedule": schedule_digest(plan)}
    )
    with servers.stack("mariadb-restart") as stack:
        original = stack.seed(leads, seed=seed)
        stack.start_api()
        stack.start_worker(concurrency=2)
        ids = sorted(original)
        per_outage = max(1, len(ids) // job_size // outages)
        chunks = _jobs_for(ids, job_size)
        jobs: dict[str, list[int]] = {}
        for n in range(outages):
            for chunk in chunks[n * per_outage : (n + 1) * per_outage]:
                jobs[stack.submit_ok(chunk)] = chunk
            before, pause = plan[n]
            _wait_for_batch(stack)
            time.sleep(before)
            crash = n % 2 == 1
            servers.mariadb.kill() if crash else servers.mariadb.stop()
            time.sleep(pause)
            servers.mariadb.start()
            if crash:
                # A crash leaves MyISAM tables marked as crashed; the jobs that meet them fail
                # (an error, not a retry). The operator repairs them, as here.
                with stack.connect() as conn:
                    conn.exec_driver_sql("REPAIR TABLE vicidial_list, vicidial_list_archive")
            figures.notes.setdefault("outages (s)", []).append(
                f"{'crash' if crash else 'stop'} {pause:.1f}"
            )
        for chunk in chunks[outages * per_outage :]:
            jobs[stack.submit_ok(chunk)] = chunk
        # A stopped server is an operational error, retried: no job fails for it. After a crash
        # the jobs that met a table marked as crashed may fail with that error, and no other;
        # their leads stay live (the invariant checks they are whole).
        crashes = outages // 2
        outcomes = (
            Outcomes(failure=CRASHED_TABLE, left_live=frozenset({JOB_FAILED}))
            if crashes
            else ALL_ARCHIVED
        )
        _finish(stack, figures, jobs, original, AFTER_LAST_FAULT + 60, outcomes=outcomes)
    return figures


# -- 4. Redis stopped and started -------------------------------------------------------------


@dataclass
class _Outage:
    stopped: float
    answering: float = float("inf")


def redis_restart_schedule(
    seed: int, outages: int, down: tuple[float, float], up: tuple[float, float]
) -> list[tuple[float, float]]:
    """Per outage: how long Redis is up before it (s) and down; last, the time up after them."""
    rng = random.Random(seed)
    return [(rng.uniform(*up), rng.uniform(*down)) for _ in range(outages)] + [
        (rng.uniform(*up), 0.0)
    ]


def redis_restart(
    servers: Servers,
    *,
    outages: int = 2,
    leads: int = 6_000,
    job_size: int = 50,
    clients: int = 3,
    interval: float = 0.3,
    down: tuple[float, float] = (2.0, 4.0),
    up: tuple[float, float] = (3.0, 5.0),
    seed: int = 4,
) -> Figures:
    """Redis stopped (SIGTERM; its append-only file keeps every key, as deployed) and started
    while clients submit and poll jobs and workers run them. The API must answer 503 while Redis
    is down and 202 again once it is back; no accepted job may be lost; nobody restarts the
    workers."""
    plan = redis_restart_schedule(seed, outages, down, up)
    figures = Figures(
        "redis-restart", runs=1, notes={"seed": seed, "schedule": schedule_digest(plan)}
    )
    with servers.stack("redis-restart") as stack:
        original = stack.seed(leads, seed=seed)
        http = stack.start_api()
        workers = [stack.start_worker(concurrency=2) for _ in range(2)]
        pids = {w.pid for w in workers}
        ids = sorted(original)
        chunks = _jobs_for(ids, job_size)
        accepted: dict[str, list[int]] = {}
        refused: list[list[int]] = []
        lock = threading.Lock()
        stop = threading.Event()
        outages_seen: list[_Outage] = []
        # Fresh leads first, then the same again: clients keep submitting through every outage.
        queue = iter(chunks * 20)

        def client(k: int) -> None:
            # The clients' own choices: never drawn from the fault schedule's generator.
            rng = random.Random(seed * 1000 + k)
            while not stop.is_set():
                with lock:
                    chunk = next(queue, None)
                if chunk is None:
                    return
                answer = stack.submit(chunk)
                with lock:
                    if answer.status == 202:
                        accepted[answer.body["job_id"]] = chunk
                        job_id = answer.body["job_id"]
                    else:
                        refused.append(chunk)
                        job_id = rng.choice(list(accepted)) if accepted else None
                if job_id is not None:
                    http.request("GET", f"/vicidial/leads/archive/{job_id}")
                time.sleep(interval)

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
        for thread in threads:
            thread.start()
        for before, pause in plan[:-1]:
            time.sleep(before)
            outage = _Outage(time.monotonic())
            outages_seen.append(outage)
            servers.redis.stop()
            time.sleep(pause)
            servers.redis.start()
            outage.answering = time.monotonic()
        time.sleep(plan[-1][0])
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        if any(thread.is_alive() for thread in threads):
            figures.problems.append("a client thread did not stop within 60 s")

        def during_outage(answer: Answer) -> bool:
            return any(
                answer.ended >= o.stopped and answer.started <= o.answering for o in outages_seen
            )

        refused_503 = [a for a in http.answers if a.method == "POST" and a.status == 503]
        if outages and not refused_503:
            figures.problems.append("no request was answered 503 while Redis was down")
        late = (
            [
                a
                for a in http.answers
                if a.method == "POST" and a.status == 202 and a.started > outages_seen[-1].answering
            ]
            if outages
            else []
        )
        if outages and not late:
            figures.problems.append("no job was accepted after Redis came back")
        # The leads of refused requests: submitted again now, as a client would retry.
        retried = {stack.submit_ok(chunk): chunk for chunk in refused}
        accepted_during = len(accepted)
        accepted.update(retried)
        figures.notes.update(
            {
                "outages": outages,
                "POST answered 503 while Redis was down": len(refused_503),
                "accepted": accepted_during,
                "accepted after the last outage": len(late),
            }
        )
        _finish(
            stack, figures, accepted, original, AFTER_LAST_FAULT + 30, expected_503=during_outage
        )
        restarted = {w.pid for w in stack.workers} != pids or not all(
            w.is_running() for w in workers
        )
        if restarted:
            figures.problems.append("a worker exited (workers must recover by themselves)")
    return figures


# -- 4b. Redis full ------------------------------------------------------------------------------


def _store_full(answer: Answer) -> bool:
    body = answer.body if isinstance(answer.body, dict) else {}
    return answer.status == 503 and str(body.get("type", "")).endswith(":store-full")


def redis_full(
    servers: Servers,
    *,
    submissions: int = 600,
    maxmemory_mb: int = 4,
    leads: int = 6_000,
    job_size: int = 500,
    clients: int = 4,
    seed: int = 6,
) -> Figures:
    """A Redis with a small ``maxmemory`` and ``noeviction`` (as deploy/ sets it, only smaller)
    filled by real submissions, sent back to back by ``clients`` clients: every answer must be
    202, 429 or the store-full 503, every accepted job must end (its result needs room too), and
    no lead may be lost. Jobs of ``job_size`` leads cycle over the seeded leads, so most find
    their leads archived already and end fast, as a night's backlog of resubmissions would."""
    figures = Figures("redis-full", runs=1, notes={"seed": seed, "maxmemory": f"{maxmemory_mb} MB"})
    admin = redis.Redis.from_url(servers.redis.url)
    admin.config_set("maxmemory", maxmemory_mb * 1024 * 1024)
    try:
        with servers.stack("redis-full") as stack:
            original = stack.seed(leads, seed=seed)
            stack.start_api()
            stack.start_worker(concurrency=2)
            chunks = _jobs_for(sorted(original), job_size)
            rng = random.Random(seed)
            plan = [rng.choice(chunks) for _ in range(submissions)]
            accepted: dict[str, list[int]] = {}
            answers: Counter[str] = Counter()
            lock = threading.Lock()
            work = iter(plan)

            def client() -> None:
                while True:
                    with lock:
                        chunk = next(work, None)
                    if chunk is None:
                        return
                    answer = stack.submit(chunk)
                    kind = "store-full" if _store_full(answer) else str(answer.status)
                    with lock:
                        answers[kind] += 1
                        if answer.status == 202:
                            accepted[answer.body["job_id"]] = chunk

            threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=600)
            memory: dict[str, Any] = admin.info("memory")  # type: ignore[assignment]
            used = int(memory["used_memory"])
            figures.notes.update(
                {
                    "submissions": submissions,
                    "answers": dict(sorted(answers.items())),
                    "accepted": len(accepted),
                    "Redis used at the end of the submissions (MB)": round(used / 2**20, 2),
                }
            )
            if set(answers) - {"202", "429", "store-full"}:
                figures.problems.append(f"answers other than 202, 429, store-full: {answers}")
            if not answers["store-full"]:
                figures.problems.append("Redis never filled: no submission answered store-full")
            _finish(
                stack,
                figures,
                accepted,
                original,
                AFTER_LAST_FAULT + 120,
                expected_503=_store_full,
            )
    finally:
        admin.config_set("maxmemory", 0)
        admin.close()
    return figures


# -- 5. Workers running overlapping jobs -------------------------------------------------------


def _stale_archive(stack: Stack, lead_ids: list[int], rng: random.Random) -> list[int]:
    """Archive some leads, then make the copies differ: the dialer changed the live row since,
    or an admin edited the archive row (Vicidial's admin pages can). The leads with a copy."""
    copied = rng.sample(lead_ids, len(lead_ids) // 3)
    with stack.connect() as conn:
        conn.exec_driver_sql(
            "INSERT INTO vicidial_list_archive SELECT * FROM vicidial_list WHERE lead_id IN ("
            + ",".join(map(str, copied))
            + ")"
        )
        half = copied[: len(copied) // 2]
        for lead_id in half:
            table = "vicidial_list" if lead_id % 2 else "vicidial_list_archive"
            conn.exec_driver_sql(
                f"UPDATE {table} SET first_name = 'BOB', modify_date = modify_date"
                f" WHERE lead_id = {int(lead_id)}"
            )
    return copied


ACTION_MIXES: tuple[dict[str, bool], ...] = (
    {},
    {},
    {"delete_leads": False},
    {"insert_leads": False, "update_leads": False},
    {"insert_leads": False},
)


def overlapping_workers(
    servers: Servers,
    *,
    worker_counts: tuple[int, ...] = (2, 4),
    leads: int = 2_000,
    job_size: int = 250,
    coverage: int = 3,
    seed: int = 5,
) -> Figures:
    """Two, then four workers at once on jobs whose lead IDs overlap (each lead in about
    ``coverage`` jobs), with mixed actions and archive copies that differ from the live rows."""
    rng = random.Random(seed)
    figures = Figures("overlapping-workers", runs=1, notes={"seed": seed})
    with servers.stack("overlapping") as stack:
        stack.start_api()
        first = 1
        for count in worker_counts:
            original = stack.seed(leads, first_lead_id=first, seed=seed + count)
            ids = sorted(original)
            copied = set(_stale_archive(stack, ids, rng))
            with stack.connect() as conn:
                expected = {i: r for i, r in live(conn).items() if i in original}
            bodies = []
            for _ in range(coverage * leads // job_size):
                start = rng.randrange(0, max(1, leads - job_size))
                bodies.append((ids[start : start + job_size], rng.choice(ACTION_MIXES)))
            for _ in range(count):
                stack.start_worker(concurrency=1)
            stack.most_running = 0
            jobs = {stack.submit_ok(chunk, **actions): chunk for chunk, actions in bodies}
            # No dialer runs: a job that copies, refreshes and deletes archives every lead it
            # names, and so does one that refreshes and deletes, on a lead with a copy from the
            # start. Other leads may stay live only as their jobs said: a stale copy (mismatch),
            # none yet (not_archived), or no job asked to delete them.
            must = {
                i
                for chunk, actions in bodies
                if actions.get("delete_leads", True) and actions.get("update_leads", True)
                for i in chunk
                if actions.get("insert_leads", True) or i in copied
            }
            outcomes = Outcomes(
                left_live=frozenset({"mismatch", "not_archived", NOT_REQUESTED}),
                must_archive=frozenset(must),
            )
            figures.notes["leads that had to be archived"] = figures.notes.get(
                "leads that had to be archived", 0
            ) + len(must)
            _finish(stack, figures, jobs, expected, 240, outcomes=outcomes)
            for worker in list(stack.workers):
                stack.kill_worker(worker)
            figures.notes[f"most jobs running at once with {count} workers"] = stack.most_running
            figures.notes[f"jobs with {count} workers"] = len(jobs)
            first += leads
    return figures


# -- 6. A busy dialer ------------------------------------------------------------------------


def busy_dialer(
    servers: Servers,
    *,
    leads: int = 5_000,
    job_size: int = 500,
    rate: float = 250,
    threads: int = 16,
    seed: int = 6,
    min_rate: float = 0,
) -> Figures:
    """A dialer updating random live leads at ``rate`` per second on ``threads`` connections
    while every lead is archived in ``job_size``-lead jobs. Every write is recorded; at the end
    each lead's newest write must be in vicidial_list or, once deleted, in the archive."""
    figures = Figures("busy-dialer", runs=1, notes={"seed": seed})
    with servers.stack("busy-dialer") as stack:
        original = stack.seed(leads, seed=seed)
        stack.start_api()
        stack.start_worker(concurrency=2)
        ids = sorted(original)
        with Dialer(stack.database_url, ids, threads=threads, rate=rate, seed=seed) as dialer:
            time.sleep(1)
            started = time.monotonic()
            jobs = {stack.submit_ok(chunk): chunk for chunk in _jobs_for(ids, job_size)}
            statuses = stack.wait_final(list(jobs), 60 + leads / 50)
            ended = time.monotonic()
        if dialer.errors:
            figures.problems.append(f"the dialer failed: {dialer.errors[0]!r}")
        if dialer.alive:
            figures.problems.append("a dialer thread did not stop within 30 s")
        achieved = dialer.rate_while(started, ended)
        expected = dialer.expected(original)
        written = {w.lead_id for ws in dialer.writes for w in ws}
        figures.notes.update(
            {
                "dialer writes": dialer.applied,
                "dialer writes/s while jobs ran": round(achieved, 1),
                "archive seconds": round(ended - started, 1),
                "leads written by the dialer": len(written),
            }
        )
        if achieved < min_rate:
            figures.problems.append(f"the dialer wrote {achieved:.0f}/s, below {min_rate:.0f}/s")
        # Every recorded write is in the live row or the archive copy (the invariant, with each
        # lead's last write as its newest data); a lead may stay live only as a mismatch its job
        # reported, so every other lead is archived.
        reasons = _judge(
            stack,
            figures,
            jobs,
            statuses,
            expected,
            Outcomes(left_live=frozenset({"mismatch"})),
        )
        # A mismatch is the dialer's doing: a lead it never wrote was refused for nothing.
        unwritten = sorted(i for i, r in reasons.items() if r == "mismatch" and i not in written)
        if unwritten:
            figures.problems.append(
                f"{len(unwritten)} leads the dialer never wrote left live as mismatch: "
                f"{unwritten[:10]}"
            )
        if figures.archived < leads // 2:
            figures.problems.append(f"only {figures.archived} of {leads} leads archived")
    return figures


SCENARIOS: dict[str, Callable[..., Figures]] = {
    "sigkill": sigkill_workers,
    "kill-connection": kill_connection,
    "mariadb-restart": mariadb_restart,
    "redis-restart": redis_restart,
    "redis-full": redis_full,
    "overlapping-workers": overlapping_workers,
    "busy-dialer": busy_dialer,
}

# The sizes of the CI tests (tests/faults/test_scenarios.py): small, about 2.5 minutes in all.
CI_SIZES: dict[str, dict[str, Any]] = {
    "sigkill": {"kills": 20, "leads": 12_000},
    "kill-connection": {"kills": 10, "leads": 6_000},
    "mariadb-restart": {"outages": 2, "leads": 6_000, "down": (1.0, 5.0)},
    "redis-restart": {"outages": 2, "leads": 6_000, "down": (2.0, 4.0)},
    "redis-full": {"submissions": 600, "maxmemory_mb": 4, "leads": 6_000},
    "overlapping-workers": {"leads": 2_000, "job_size": 250},
    "busy-dialer": {"leads": 5_000, "rate": 250, "threads": 16},
}

# The sizes of the long runs (soak/faults.py).
FULL_SIZES: dict[str, dict[str, Any]] = {
    "sigkill": {"kills": 24, "leads": 20_000},
    "kill-connection": {"kills": 30, "leads": 20_000},
    "mariadb-restart": {"outages": 6, "leads": 15_000, "down": (1.0, 15.0)},
    "redis-restart": {"outages": 6, "leads": 15_000, "down": (1.0, 10.0)},
    "redis-full": {"submissions": 10_000, "maxmemory_mb": 24, "leads": 20_000},
    "overlapping-workers": {"leads": 10_000, "job_size": 500},
    "busy-dialer": {"leads": 50_000, "rate": 600, "threads": 48, "min_rate": 200},
}
