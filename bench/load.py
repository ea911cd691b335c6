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
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path (see bench/api.py); the repository
# root is what ``import bench.stack`` and ``import testkit`` need.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH]
if str(_BENCH.parent) not in sys.path:
    sys.path.insert(0, str(_BENCH.parent))

import redis
from sqlalchemy import Engine

from bench.engine import DEFAULT_URL
from bench.loadgen import follow_jobs, run_load_sync
from bench.report import summarize
from bench.stack import DEFAULT_REDIS, claim_redis_db, cleanup_on_signals, scratch_database
from tasks.db import make_engine
from tasks.ddl import create_vicidial_tables
from tasks.seed import insert_leads, lead_rows
from tasks.settings import Settings
from testkit.checksum import lost_leads, snapshot_leads
from testkit.polling import WaitTimeout, tail, wait_until
from testkit.services import Live, live_services, wait_for_job

# tests/hostile/test_load.py (this command at CI size) imports from here; the live service harness
# itself is testkit.services.
__all__ = ["Live", "live_services", "load_and_expire", "main", "wait_for_job", "warm_up"]

DOCUMENTED_REFUSALS = frozenset({"429", "503"})


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
        # Past the wait, the check below reports what is left.
        with contextlib.suppress(WaitTimeout):
            wait_until(
                lambda: job_keys_left(rclient, load.accepted) == 0,
                ttl.total_seconds() * 2 + 60,
                interval=0.25,
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
