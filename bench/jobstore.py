"""What the job queue costs Redis: bytes kept per finished job, and Redis time per lost-job sweep.

The real thing, as ``bench/api.py`` runs it: ``leadarchive api`` (and ``leadarchive worker``) as
subprocesses, a MyISAM ``vicidial_list`` in a throw-away MariaDB database, an empty Redis
database of its own, no rate limit.

1. **Bytes per finished job.** ``--jobs`` jobs of ``--leads-per-job`` leads each (insert, update
   and delete), submitted and run to their end; then every key of the Redis database is measured
   with ``MEMORY USAGE ... SAMPLES 0`` (exact), the keys there before the first submission are
   subtracted, and the rest is divided by the number of jobs, in total and by kind of key. This
   is what a finished job keeps for ``LEADARCHIVE_RESULT_TTL`` (7 days by default); what it
   means for a Redis of a given ``maxmemory`` is in deploy/README.md ("Sizing Redis").
2. **Sweep time at a backlog.** With no worker running, ``--queued`` jobs are submitted, so that
   they wait in the queue, and aged past the sweep's cutoff (their entries in the queued index
   are moved an hour back: a backlog that has waited for long). Then the lost-message sweep runs
   ``--passes`` times in this process, as a worker runs it every third of ``LEADARCHIVE_JOB_LEASE``;
   for each pass the Redis server's own time (``INFO commandstats``: the microseconds of every
   command, summed) and the pass's wall time are taken. Nothing is lost, so a pass sends nothing.

Run it from the repository root::

    .venv/bin/python bench/jobstore.py                               # 20 jobs, 10,000 queued
    .venv/bin/python bench/jobstore.py --jobs 5 --queued 1000 --json /tmp/queue.json
"""

# ruff: noqa: E402 - the imports below must follow the sys.path fix

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path (see bench/api.py).
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH]
if str(_BENCH.parent) not in sys.path:
    sys.path.insert(0, str(_BENCH.parent))

import redis
from rich.console import Console
from rich.table import Table

from bench.client import submit
from bench.engine import DEFAULT_URL
from bench.stack import CLAIM_KEY, DEFAULT_REDIS, claim_redis_db, scratch_database
from tasks.celery_config import create_celery
from tasks.db import make_engine
from tasks.ddl import create_vicidial_tables
from tasks.jobs import QUEUED_KEY
from tasks.runtime import Runtime
from tasks.seed import insert_leads, lead_rows
from tasks.settings import Settings
from tasks.sweeps import requeue_lost_jobs
from testkit.services import live_services, wait_for_job

console = Console(stderr=True)


def key_kind(key: bytes) -> str:
    """A key's kind: its name with the job or task ID left out."""
    name = key.decode(errors="replace")
    if name.startswith("leadarchive:job:"):
        return "job record"
    if name.startswith("leadarchive:idem:"):
        return "idempotency claim"
    if name.startswith("celery-task-meta-"):
        return "Celery result"
    return name


def memory_by_kind(client: redis.Redis) -> Counter[str]:
    """Bytes of every key in the database (exact: every element sampled), by kind."""
    found: Counter[str] = Counter()
    for key in client.scan_iter(count=1000):
        usage: int | None = client.memory_usage(key, samples=0)  # type: ignore[assignment]
        found[key_kind(key)] += usage or 0
    return found


def server_usec(client: redis.Redis) -> int:
    """Microseconds the Redis server has spent in commands since it started (all databases)."""
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    return sum(int(entry["usec"]) for entry in stats.values())


def bytes_per_job(args: argparse.Namespace, database_url: str, folder: Path) -> dict[str, Any]:
    number, client = claim_redis_db(args.redis)
    redis_url = f"{args.redis.rstrip('/')}/{number}"
    try:
        with live_services(database_url, redis_url, folder / "bytes", rate_limit="") as live:
            before = memory_by_kind(client)
            engine = make_engine(database_url)
            with engine.connect() as conn:
                ids = [
                    int(row[0])
                    for row in conn.exec_driver_sql("SELECT lead_id FROM vicidial_list ORDER BY 1")
                ]
            engine.dispose()
            size = args.leads_per_job
            with closing(live.client()) as http:
                urls = [submit(http, ids[i * size : (i + 1) * size]) for i in range(args.jobs)]
            finals = [wait_for_job(live, url, timeout=300) for url in urls]
            statuses = Counter(str(final["status"]) for final in finals)
            after = memory_by_kind(client)
    finally:
        client.flushdb()
        client.close()
    # Keys of kombu's bindings and the database claim are there once, whatever the number of jobs.
    kept = {
        kind: after[kind] - before.get(kind, 0)
        for kind in after
        if not kind.startswith("_kombu.") and kind != CLAIM_KEY
    }
    total = sum(kept.values())
    return {
        "jobs": args.jobs,
        "leads_per_job": args.leads_per_job,
        "statuses": dict(statuses),
        "bytes_per_job": round(total / args.jobs),
        "by_kind": {kind: round(value / args.jobs) for kind, value in sorted(kept.items())},
        "jobs_in_256mb": int(256 * 1024 * 1024 / (total / args.jobs)),
    }


def sweep_time(args: argparse.Namespace, database_url: str, folder: Path) -> dict[str, Any]:
    number, client = claim_redis_db(args.redis)
    redis_url = f"{args.redis.rstrip('/')}/{number}"
    try:
        with (
            live_services(
                database_url,
                redis_url,
                folder / "sweep",
                worker=False,
                rate_limit="",
                max_pending_jobs=str(args.queued + 1),
            ) as live,
            closing(live.client()) as http,
        ):
            for i in range(args.queued):
                submit(http, [1_000_000 + i * args.leads_per_job + n for n in range(3)])
                if i and i % 2000 == 0:
                    console.print(f"  {i} queued")
        # Waited for long: every entry of the queued index an hour back.
        old = time.time() - 3600
        queued: list[bytes] = client.zrange(QUEUED_KEY, 0, -1)  # type: ignore[assignment]
        client.zadd(QUEUED_KEY, dict.fromkeys(queued, old), xx=True)
        settings = Settings(
            _env_file=None,
            database_url=database_url,
            broker_url=redis_url,
            result_backend=redis_url,
            office_hours="",
        )
        app = create_celery(settings, Runtime(settings))
        server_times, wall_times, sent = [], [], []
        for _ in range(args.passes):
            start_usec, start = server_usec(client), time.perf_counter()
            sent.append(len(requeue_lost_jobs(app)))
            wall_times.append((time.perf_counter() - start) * 1000)
            # This process's INFO call itself is a few microseconds; left in.
            server_times.append((server_usec(client) - start_usec) / 1000)
    finally:
        client.flushdb()
        client.close()
    return {
        "queued": args.queued,
        "passes": args.passes,
        "resent": sent,
        "redis_ms_median": round(statistics.median(server_times), 2),
        "redis_ms_max": round(max(server_times), 2),
        "wall_ms_median": round(statistics.median(wall_times), 2),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("LEADARCHIVE_BENCH_MYSQL_URL", DEFAULT_URL))
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis server URL, no database")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--leads-per-job", type=int, default=500)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = make_engine(args.url)
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        url = scratch_database(stack, server, args.url, "leadarchive_bench_queue")
        database_url = url.render_as_string(hide_password=False)
        engine = make_engine(database_url)
        with engine.begin() as conn:
            create_vicidial_tables(conn, "MyISAM")
            insert_leads(conn, lead_rows(args.jobs * args.leads_per_job, seed=5))
        engine.dispose()
        console.print(f"bytes per job: {args.jobs} jobs of {args.leads_per_job} leads")
        kept = bytes_per_job(args, database_url, Path(tmp))
        console.print(f"sweep: {args.queued} queued jobs")
        sweep = sweep_time(args, database_url, Path(tmp))
    server.dispose()
    table = Table(title="Job queue in Redis")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("bytes per finished job", f"{kept['bytes_per_job']:,}")
    for kind, value in kept["by_kind"].items():
        table.add_row(f"  {kind}", f"{value:,}")
    table.add_row("finished jobs in 256 MB", f"{kept['jobs_in_256mb']:,}")
    table.add_row(
        f"sweep at {sweep['queued']:,} queued: Redis ms/pass", str(sweep["redis_ms_median"])
    )
    table.add_row("  wall ms/pass", str(sweep["wall_ms_median"]))
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"bytes": kept, "sweep": sweep}, indent=2) + "\n")
    return 0 if kept["statuses"] == {"succeeded": args.jobs} else 1


if __name__ == "__main__":
    sys.exit(main())
