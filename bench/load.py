"""Hostile load: submissions as fast as the API takes them, every accepted job to its end, and
Redis memory back near its baseline once the job records expire.

The real thing, as ``bench/api.py`` runs it (and with its helpers): ``leadarchive api`` (uvicorn)
and ``leadarchive worker`` as subprocesses, a MyISAM ``vicidial_list`` in a throw-away MariaDB
database, an empty Redis database of its own, the documented default rate limit (100/second per
key) unless ``--rate-limit`` says otherwise, and a short result lifetime (``--ttl``) so that the
records expire while the command waits.

What it checks, and prints:

1. Every one of ``--count`` POSTs is answered ``202`` or with a documented refusal (``429``,
   ``503``); no 5xx other than a documented ``503``, no transport error.
2. Every accepted job ends ``succeeded`` (none ``failed``, none still waiting, none lost).
3. No lead is lost: each lead that was in ``vicidial_list`` before is still there, or its
   identical copy (every column, byte for byte) is in ``vicidial_list_archive``.
4. Once the records expired, the Redis database holds as many keys as before the load, and
   about as many bytes (``MEMORY USAGE`` of every key, summed; ``--slack-kb``). The server's
   ``used_memory`` is printed too, but not judged: other databases of a shared Redis move it.

Run it from the repository root (the full version of the CI test
``tests/hostile/test_load.py``)::

    .venv/bin/python bench/load.py                      # 5,000 submissions, 20,000 leads
    .venv/bin/python bench/load.py --count 600 --ttl 8s
    .venv/bin/python bench/load.py --rate-limit '' --json /tmp/load.json   # no 429s

The exit status is 0 only when all four checks hold.
"""

# ruff: noqa: E402 - the imports below must follow the sys.path fix

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path (see bench/api.py); the repository
# root is what ``import bench.api`` needs.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH]
if str(_BENCH.parent) not in sys.path:
    sys.path.insert(0, str(_BENCH.parent))

import redis
from sqlalchemy import Engine

from api.auth import hash_key, new_key
from bench.api import (
    CLI,
    DEFAULT_REDIS,
    RawHTTP,
    claim_redis_db,
    cleanup_on_signals,
    free_port,
    job_fields,
    run_load_sync,
    scratch_database,
    start_process,
    stop_process,
    summarize,
    tail,
    wait_until,
)
from bench.engine import DEFAULT_URL
from tasks.db import make_engine
from tasks.ddl import create_vicidial_tables
from tasks.records import FINAL
from tasks.seed import LEAD_COLUMNS, insert_leads, lead_rows
from tasks.settings import Settings

DOCUMENTED_REFUSALS = frozenset({"429", "503"})
SNAPSHOT_TABLE = "leadarchive_load_snapshot"


@dataclass
class Live:
    """A running ``leadarchive api`` (and ``leadarchive worker``), and how to reach them."""

    port: int
    key: str
    redis_url: str
    database_url: str
    logs: Path
    env: dict[str, str]
    concurrency: int
    worker_metrics_port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Key={self.key}"}

    def client(self, headers: dict[str, str] | None = None) -> RawHTTP:
        return RawHTTP("127.0.0.1", self.port, self.headers if headers is None else headers)

    def start_worker(self) -> subprocess.Popen[bytes]:
        """Start ``leadarchive worker`` (stopped with the API when the context ends)."""
        argv = [str(CLI), "worker", "--concurrency", str(self.concurrency)]
        argv += ["--metrics-port", str(self.worker_metrics_port)]
        self.processes["worker"] = start_process("worker", argv, self.env, self.logs)
        return self.processes["worker"]

    def log_text(self) -> str:
        """Everything the API and the worker have logged so far."""
        return "\n".join(
            path.read_text(errors="replace")
            for name in self.processes
            if (path := self.logs / f"{name}.log").exists()
        )


def service_env(database_url: str, redis_url: str, key: str, **settings: str) -> dict[str, str]:
    """The environment of the subprocesses: this machine's, without any LEADARCHIVE_ variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADARCHIVE_")}
    env.update(
        LEADARCHIVE_DATABASE_URL=database_url,
        LEADARCHIVE_BROKER_URL=redis_url,
        LEADARCHIVE_RESULT_BACKEND=redis_url,
        LEADARCHIVE_API_KEYS=f"load:{hash_key(key)}",
        LEADARCHIVE_OFFICE_HOURS="",
    )
    env.update({f"LEADARCHIVE_{name.upper()}": value for name, value in settings.items()})
    return env


@contextlib.contextmanager
def live_services(
    database_url: str,
    redis_url: str,
    logs: Path,
    *,
    concurrency: int = 2,
    worker: bool = True,
    **settings: str,
) -> Iterator[Live]:
    """``leadarchive api`` (and ``leadarchive worker`` unless ``worker`` is false) on these
    services, each in its own process group, all stopped on exit.

    ``settings`` become ``LEADARCHIVE_<NAME>`` variables (e.g. ``result_ttl="10s"``).
    """
    key = new_key()
    logs.mkdir(parents=True, exist_ok=True)
    live = Live(
        port=free_port(),
        key=key,
        redis_url=redis_url,
        database_url=database_url,
        logs=logs,
        env=service_env(database_url, redis_url, key, **settings),
        concurrency=concurrency,
        worker_metrics_port=free_port(),
    )
    try:
        argv = [str(CLI), "api", "--port", str(live.port)]
        live.processes["api"] = start_process("api", argv, live.env, logs)
        if worker:
            live.start_worker()
        probe = live.client()
        try:
            wait_until(
                lambda: probe.request("GET", "/healthz").status == 200,
                60,
                "API",
                live.processes["api"],
                logs / "api.log",
            )
        finally:
            probe.close()
        yield live
    finally:
        for proc in reversed(list(live.processes.values())):
            stop_process(proc)


def wait_for_job(live: Live, url: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll a status URL until the job ends; its final body."""
    client = live.client()
    deadline = time.monotonic() + timeout
    try:
        while True:
            answer = client.request("GET", url)
            body: dict[str, Any] = answer.json()
            if body.get("status") in ("succeeded", "failed", "cancelled"):
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} still {body.get('status')} after {timeout} s")
            time.sleep(0.05)
    finally:
        client.close()


def warm_up(live: Live, lead_id: int, timeout: float = 90.0) -> None:
    """One job through the worker, so that it is consuming before anything is measured."""
    client = live.client()
    try:
        body = json.dumps({"lead_ids": [lead_id], "dry_run": True}).encode()
        answer = client.request("POST", "/vicidial/leads/archive", body)
        if answer.status != 202:
            raise RuntimeError(f"warm-up POST answered {answer.status}: {answer.body[:300]!r}")
        final = wait_for_job(live, answer.headers["location"], timeout)
    finally:
        client.close()
    if final["status"] != "succeeded":
        raise RuntimeError(
            f"warm-up job {final['status']}: {final.get('error')}: {tail(live.logs / 'worker.log')}"
        )


# ---------------------------------------------------------------------------------------------
# Leads: a snapshot before, and the invariant after


def snapshot_leads(engine: Engine) -> int:
    """Copy ``vicidial_list`` aside; the number of leads in it."""
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{SNAPSHOT_TABLE}`")
        conn.exec_driver_sql(f"CREATE TABLE `{SNAPSHOT_TABLE}` LIKE vicidial_list")
        conn.exec_driver_sql(f"INSERT INTO `{SNAPSHOT_TABLE}` SELECT * FROM vicidial_list")
        return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM `{SNAPSHOT_TABLE}`").scalar_one())


def lost_leads(engine: Engine) -> list[int]:
    """Leads of the snapshot that are neither live nor identically archived (the invariant)."""

    def same(alias: str) -> str:
        return " AND ".join(
            f"CAST({alias}.`{c}` AS BINARY) <=> CAST(s.`{c}` AS BINARY)" for c in LEAD_COLUMNS
        )

    sql = (
        f"SELECT s.lead_id FROM `{SNAPSHOT_TABLE}` s"
        " LEFT JOIN vicidial_list l ON l.lead_id = s.lead_id"
        " LEFT JOIN vicidial_list_archive a ON a.lead_id = s.lead_id"
        f" WHERE NOT (l.lead_id IS NOT NULL AND {same('l')})"
        f" AND NOT (a.lead_id IS NOT NULL AND {same('a')})"
    )
    with engine.connect() as conn:
        conn.exec_driver_sql("SET SESSION time_zone = '+00:00'")
        return [int(x) for x in conn.exec_driver_sql(sql).scalars()]


# ---------------------------------------------------------------------------------------------
# The load


@dataclass
class RedisMemory:
    """This database's keys and the bytes they hold (``MEMORY USAGE`` summed), and the whole
    server's ``used_memory``, which other databases on a shared Redis move too."""

    keys: int
    database_bytes: int
    used_memory: int

    @classmethod
    def read(cls, client: redis.Redis) -> RedisMemory:
        names = list(client.scan_iter(count=1000))
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.memory_usage(name, samples=0)
        sizes = pipe.execute()
        info: dict[str, Any] = client.info("memory")  # type: ignore[assignment]
        return cls(
            keys=len(names),
            database_bytes=sum(int(n or 0) for n in sizes),
            used_memory=int(info["used_memory"]),
        )


@dataclass
class LoadReport:
    sent: int
    statuses: dict[str, int]
    undocumented: dict[str, int]
    accepted: int
    final: dict[str, int]
    not_final: int
    lost_jobs: int
    failed_examples: list[str]
    leads_checked: int
    leads_lost: list[int]
    latency_ms: dict[str, float]
    load_seconds: float
    drain_seconds: float
    expiry_seconds: float
    memory_baseline: RedisMemory
    memory_peak: RedisMemory
    memory_after_expiry: RedisMemory
    slack_bytes: int
    records_left: int
    notes: list[str] = field(default_factory=list)

    @property
    def memory_back_near_baseline(self) -> bool:
        """This database is back to its keys and bytes (the server-wide figure is reported,
        not judged: on a shared Redis other databases move it)."""
        return (
            self.memory_after_expiry.database_bytes
            <= self.memory_baseline.database_bytes + self.slack_bytes
            and self.memory_after_expiry.keys <= self.memory_baseline.keys
        )

    @property
    def ok(self) -> bool:
        return (
            not self.undocumented
            and self.final.get("succeeded", 0) == self.accepted
            and self.not_final == 0
            and self.lost_jobs == 0
            and not self.leads_lost
            and self.records_left == 0
            and self.memory_back_near_baseline
        )


def job_keys_left(client: redis.Redis, job_ids: Sequence[str]) -> int:
    left = 0
    for offset in range(0, len(job_ids), 1000):
        chunk = [f"leadarchive:job:{j}" for j in job_ids[offset : offset + 1000]]
        left += int(client.exists(*chunk)) if chunk else 0  # type: ignore[arg-type]
    return left


def load_and_expire(
    live: Live,
    engine: Engine,
    *,
    count: int,
    ttl: timedelta,
    id_space: int,
    connections: int = 32,
    seed: int = 1,
    drain_timeout: float = 900.0,
    slack_bytes: int = 16 * 1024,
    progress: Any = None,
) -> LoadReport:
    """``count`` POSTs as fast as the API answers, the wait for every job and for the expiry."""
    say = progress or (lambda _message: None)
    rclient = redis.Redis.from_url(live.redis_url)
    try:
        leads_checked = snapshot_leads(engine)
        # With the warm-up's record: it expires with the others, so "after" can only be lower.
        baseline = RedisMemory.read(rclient)
        say(f"baseline: {baseline}")
        # Scheduled all within a millisecond: the connections take them as fast as the API
        # answers (closed loop), and the latency counts the wait for a free connection.
        started = time.perf_counter()
        load = run_load_sync(
            "raw", live.port, live.headers, connections, count * 1000.0, 0.001, id_space, seed
        )
        load_seconds = time.perf_counter() - started
        after_load = RedisMemory.read(rclient)
        say(f"load done in {load_seconds:.1f} s: {load.statuses}; Redis {after_load}")
        drained = follow_jobs(rclient, load.accepted, drain_timeout, say)
        drained_memory = RedisMemory.read(rclient)
        say(f"drained in {drained.seconds:.1f} s: {drained.final}; Redis {drained_memory}")
        peak = max(after_load, drained_memory, key=lambda m: m.database_bytes)
        expiry_started = time.perf_counter()
        wait_quietly(
            lambda: job_keys_left(rclient, load.accepted) == 0, ttl.total_seconds() * 2 + 60
        )
        # Let the rate limiter's windows expire too (two windows of one second).
        time.sleep(3)
        after = RedisMemory.read(rclient)
        expiry_seconds = time.perf_counter() - expiry_started
        say(f"after expiry ({expiry_seconds:.1f} s): {after}")
        return LoadReport(
            sent=load.sent,
            statuses=load.statuses,
            undocumented={
                status: n
                for status, n in load.statuses.items()
                if status != "202" and status not in DOCUMENTED_REFUSALS
            },
            accepted=len(load.accepted),
            final=drained.final,
            not_final=drained.not_final,
            lost_jobs=drained.lost,
            failed_examples=drained.failed_examples,
            leads_checked=leads_checked,
            leads_lost=lost_leads(engine),
            latency_ms=summarize(load.latencies_ms),
            load_seconds=round(load_seconds, 2),
            drain_seconds=round(drained.seconds, 2),
            expiry_seconds=round(expiry_seconds, 2),
            memory_baseline=baseline,
            memory_peak=peak,
            memory_after_expiry=after,
            slack_bytes=slack_bytes,
            records_left=job_keys_left(rclient, load.accepted),
        )
    finally:
        rclient.close()


@dataclass
class Followed:
    seconds: float
    final: dict[str, int]
    not_final: int
    lost: int
    failed_examples: list[str]


def follow_jobs(client: redis.Redis, job_ids: list[str], timeout: float, progress: Any) -> Followed:
    """Poll every job's record until each is final, noting each final status when first seen.

    Unlike ``bench.api.drain`` (which tallies at the end), this works with a result lifetime
    shorter than the drain: a finished job may expire before the last job ends. A record that
    disappears before it was seen final is a lost job.
    """
    started = time.perf_counter()
    final: dict[str, str] = {}
    lost: set[str] = set()
    waiting = list(job_ids)
    last_report = started
    while waiting and time.perf_counter() - started < timeout:
        rows = job_fields(client, waiting, ["status", "error"])
        still = []
        for job_id, (status, error) in zip(waiting, rows, strict=True):
            if status is None:
                lost.add(job_id)
            elif status.decode() in FINAL:
                final[job_id] = status.decode() + (f" {error.decode()}" if error else "")
            else:
                still.append(job_id)
        waiting = still
        if time.perf_counter() - last_report > 10:
            progress(f"{len(waiting)} jobs not final yet")
            last_report = time.perf_counter()
        if waiting:
            time.sleep(0.1)
    counts = Counter(v.split(" ", 1)[0] for v in final.values())
    return Followed(
        seconds=time.perf_counter() - started,
        final=dict(counts),
        not_final=len(waiting),
        lost=len(lost),
        failed_examples=[f"{j}: {v}" for j, v in final.items() if v != "succeeded"][:5],
    )


def wait_quietly(predicate: Any, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# ---------------------------------------------------------------------------------------------
# The command


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--count", type=int, default=5000, help="submissions")
    parser.add_argument("--leads", type=int, default=20_000, help="leads in vicidial_list")
    parser.add_argument("--ttl", default="15s", help="LEADARCHIVE_RESULT_TTL for this run")
    parser.add_argument(
        "--rate-limit", default="100/second", help="LEADARCHIVE_RATE_LIMIT ('' for none)"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument(
        "--slack-kb", type=float, default=16.0, help="allowed growth of this Redis database"
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="MariaDB server URL, no database")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="Redis server URL, no database")
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ttl = Settings(result_ttl=args.ttl, database_url="sqlite://", _env_file=None).result_ttl
    with contextlib.ExitStack() as stack:
        stack.enter_context(cleanup_on_signals())
        number, rclient = claim_redis_db(args.redis_url)
        stack.callback(rclient.close)
        stack.callback(rclient.flushdb)
        server = make_engine(args.url)
        stack.callback(server.dispose)
        url = scratch_database(stack, server, args.url, "leadarchive_load")
        db_url = url.render_as_string(hide_password=False)
        engine = make_engine(db_url)
        stack.callback(engine.dispose)
        with engine.connect() as conn:
            create_vicidial_tables(conn, "MyISAM")
            insert_leads(conn, lead_rows(args.leads, first_lead_id=1, seed=1))
        logs = Path(tempfile.mkdtemp(prefix="leadarchive-load-"))
        print(f"database {url.database}, Redis database {number}, logs in {logs}", file=sys.stderr)
        redis_url = f"{args.redis_url.rstrip('/')}/{number}"
        live = stack.enter_context(
            live_services(
                db_url,
                redis_url,
                logs,
                concurrency=args.concurrency,
                result_ttl=args.ttl,
                rate_limit=args.rate_limit,
            )
        )
        warm_up(live, 10 * args.leads)
        report = load_and_expire(
            live,
            engine,
            count=args.count,
            ttl=ttl,
            id_space=2 * args.leads,
            connections=args.connections,
            slack_bytes=int(args.slack_kb * 1024),
            progress=lambda m: print(m, file=sys.stderr),
        )
    result = asdict(report) | {
        "ok": report.ok,
        "memory_back_near_baseline": report.memory_back_near_baseline,
    }
    result["leads_lost"] = len(report.leads_lost)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
