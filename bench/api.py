"""Benchmark the job API end to end: real uvicorn and Celery processes, MariaDB and Redis.

What it measures, against the issue's three targets:

1. **Submit-to-succeeded latency** of a 500-lead job (insert + update + delete). Alternating job by
   job, on a MyISAM ``vicidial_list`` of ``--leads`` leads, each time on 500 fresh (never touched)
   lead IDs chosen at random:

   a. the *batch alone*: ``tasks.archive.run_batch`` called in this process, on a pooled
      connection, with the tuning the worker uses; and
   b. *end to end*: ``POST /vicidial/leads/archive`` to ``leadarchive api`` (uvicorn, a
      subprocess), run by ``leadarchive worker --concurrency 2`` (a subprocess), the status URL
      polled every ``--poll-ms`` until it says ``succeeded``; timed from the POST to the poll that
      sees ``succeeded``, split into POST, queue wait, worker run and noticing, from the job's
      ``submitted_at`` / ``started_at`` / ``finished_at``.

   Target: the end-to-end median at most the batch median + 100 ms.

2. **Submission load**: an open-loop, wrk2-style generator (asyncio) schedules ``--rate`` POSTs
   per second for ``--duration`` seconds onto ``--connections`` keep-alive connections; each
   request's latency is counted from its *scheduled* time, so a server that falls behind is
   charged for the queue it causes. Jobs are small (1-10 random lead IDs from 1..2x``--leads``,
   many not existing). Rate limit and office hours are off. Reported: status counts, achieved
   rate, p50/p99/max, then how long the workers take to bring every accepted job to
   ``succeeded`` (job records read straight from Redis), and any job that failed or was lost.
   Target: 300/s with p99 < 50 ms, every accepted job completing. The generator runs in this
   process and shares the machine's cores with the API, the workers, MariaDB and Redis; its CPU
   use is reported next to theirs. It uses a lean HTTP/1.1 client of its own by default (httpx
   costs about 1.1-1.6 ms of CPU per request here; ``--client httpx2`` to compare), and so does
   the polling in 1.

   ``--sweep 100,200`` adds load runs at other rates (each followed by its drain) to find the rate
   the API sustains; ``--sweep-paused 200,300`` does the same with the worker paused (SIGSTOP)
   while the load runs, to see the API on its own. ``--py-spy DIR`` profiles the API, the worker's
   main process and its first child during the target load run (folded stacks, for speedscope or
   flamegraph.pl; ``.venv/bin/pip install py-spy`` first). ``--worker-nice 10`` runs the worker
   at a lower CPU priority than the API.

3. **Memory**: RSS (psutil) of the API process and of every worker process (the main process and
   each prefork child) at idle after warm-up, the peak seen (sampled every 0.5 s) and after the
   load has drained. Targets: API < 120 MB, each worker process < 150 MB.

Everything runs in a throw-away MariaDB database ``leadarchive_bench_api_<random>`` (utf8 /
utf8_unicode_ci, MyISAM like a stock Vicidial) and in a Redis database 2..15 that was empty and is
claimed with ``SET NX`` of a claim key; the database is dropped, the Redis database flushed and
every process this command started (each in its own process group) is stopped at the end, even on
error or Ctrl-C.

Run it from the repository root::

    .venv/bin/python bench/api.py                                   # 100k leads, 20 jobs, 300/s
    .venv/bin/python bench/api.py --leads 100000 --jobs 20 --rate 300 --duration 20
    .venv/bin/python bench/api.py --leads 20000 --jobs 5 --duration 5   # a quick check
    .venv/bin/python bench/api.py --json /tmp/bench-api.json
    .venv/bin/python bench/api.py --jobs 40 --sweep 100,150,200,250 --sweep-paused 200,300,400

``--url`` (or ``LEADARCHIVE_BENCH_MYSQL_URL``) is the MariaDB server without a database, root with
no password on 127.0.0.1:3306 by default; ``--redis-url`` the Redis server (no database number).
The subprocesses' logs are kept in a temporary folder whose path is printed.
"""

# ruff: noqa: E402 - the imports below must follow the sys.path fix

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path, and ``import api`` would find this
# file (bench/api.py) instead of the project's package: take the folder off before importing it.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH]
if str(_BENCH.parent) not in sys.path:  # the repository root, for ``import bench.engine``
    sys.path.insert(0, str(_BENCH.parent))

from rich.console import Console
from sqlalchemy import Engine

from bench.client import RawHTTP, poll_job, submit
from bench.engine import DEFAULT_URL, log
from bench.loadgen import Services, job_fields, load_phase
from bench.report import (
    E2E_SLACK_MS,
    cpu_table,
    e2e_table,
    epoch,
    load_table,
    memory_table,
    summarize,
    sweep_table,
)
from bench.stack import (
    DEFAULT_REDIS,
    PeakSampler,
    claim_redis_db,
    cleanup_on_signals,
    cpu_seconds,
    find_servers,
    launch_services,
    machine,
    rss_snapshot,
    scratch_database,
    service_processes,
    worker_processes,
)
from tasks.archive import Actions, Tuning, run_batch
from tasks.db import make_engine
from tasks.ddl import create_vicidial_tables
from tasks.runtime import Runtime
from tasks.seed import insert_leads, lead_rows
from tasks.settings import Settings
from testkit.processes import CLI

# bench/compare.py imports these from here (each is defined in bench/stack.py, bench/loadgen.py or
# bench/report.py); this file is the command line of the API benchmark.
__all__ = [
    "CLI",
    "DEFAULT_REDIS",
    "claim_redis_db",
    "cleanup_on_signals",
    "cpu_seconds",
    "epoch",
    "find_servers",
    "job_fields",
    "launch_services",
    "machine",
    "main",
    "scratch_database",
    "worker_processes",
]

BATCH = 500
ALL_ACTIONS = Actions(insert=True, update=True, delete=True)


@dataclass
class E2ESample:
    total_ms: float
    post_ms: float
    to_record_ms: float
    queue_ms: float
    run_ms: float
    notice_ms: float
    polls: int
    counts: dict[str, dict[str, int]]


def check_counts(counts: dict[str, dict[str, int]]) -> bool:
    """A fresh 500-lead batch inserts and deletes every lead."""
    return counts.get("insert", {}).get("inserted") == BATCH and (
        counts.get("delete", {}).get("deleted") == BATCH
    )


def time_batch(engine: Engine, ids: list[int], tuning: Tuning) -> tuple[float, bool]:
    """Milliseconds of one ``run_batch`` on a pooled connection, and whether it did it all."""
    with engine.connect() as conn:
        started = time.perf_counter()
        report = run_batch(conn, ids, ALL_ACTIONS, tuning)
        elapsed = time.perf_counter() - started
    return elapsed * 1000, check_counts(report.counts)


def time_e2e(client: RawHTTP, ids: list[int], interval: float) -> E2ESample:
    wall = time.time()
    started = time.perf_counter()
    url = submit(client, ids)
    posted = time.perf_counter()
    body, seen, polls = poll_job(client, url, interval)
    if body["status"] != "succeeded":
        raise RuntimeError(f"job ended {body['status']}: {body.get('error')}")
    submitted, begun, finished = (
        epoch(body[k]) for k in ("submitted_at", "started_at", "finished_at")
    )
    seen_wall = wall + (seen - started)
    return E2ESample(
        total_ms=(seen - started) * 1000,
        post_ms=(posted - started) * 1000,
        to_record_ms=(submitted - wall) * 1000,
        queue_ms=(begun - submitted) * 1000,
        run_ms=(finished - begun) * 1000,
        notice_ms=(seen_wall - finished) * 1000,
        polls=polls,
        counts=body["result"]["counts"],
    )


# ---------------------------------------------------------------------------------------------
# Main


def rate_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--leads", type=int, default=100_000, help="leads in vicidial_list")
    parser.add_argument("--jobs", type=int, default=20, help="500-lead jobs per side (target 1)")
    parser.add_argument("--rate", type=float, default=300.0, help="submissions per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="status polling interval")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--drain-timeout", type=float, default=900.0, help="seconds")
    parser.add_argument(
        "--connections", type=int, default=64, help="load generator's keep-alive connections"
    )
    parser.add_argument(
        "--client",
        choices=("raw", "httpx2"),
        default="raw",
        help="load generator's HTTP client (raw: a lean asyncio HTTP/1.1 client)",
    )
    parser.add_argument(
        "--sweep",
        type=rate_list,
        default=[],
        help="after the target run, more load runs at these rates (e.g. 100,150,200)",
    )
    parser.add_argument(
        "--sweep-paused",
        type=rate_list,
        default=[],
        help="the same with the workers paused (SIGSTOP) during the load: the API alone",
    )
    parser.add_argument("--sweep-duration", type=float, default=10.0, help="seconds per sweep run")
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=0,
        help="run the worker at this nice level (e.g. 10: the API goes first for the CPU)",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="profile the API and the worker with py-spy during the target load run",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-load", action="store_true", help="only targets 1 and 3")
    parser.add_argument("--url", default=DEFAULT_URL, help="MariaDB server URL, no database")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="Redis server URL, no database")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.leads < (2 * args.jobs + 2) * BATCH:
        parser.error(
            f"--leads must be at least {(2 * args.jobs + 2) * BATCH} for --jobs {args.jobs}"
        )
    if not CLI.exists():
        parser.error(f"{CLI} not found: run with the project's virtualenv python")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Console(width=None if sys.stdout.isatty() else 140)
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    with contextlib.ExitStack() as stack:
        stack.enter_context(cleanup_on_signals())
        redis_db, rclient = claim_redis_db(args.redis_url)
        stack.callback(rclient.close)
        stack.callback(rclient.flushdb)
        stack.callback(log, f"flushed Redis database {redis_db}")
        server = make_engine(args.url)
        stack.callback(server.dispose)
        results["machine"] = machine(server, rclient)
        url = scratch_database(stack, server, args.url, "leadarchive_bench_api")
        db_url = url.render_as_string(hide_password=False)
        redis_url = f"{args.redis_url.rstrip('/')}/{redis_db}"
        log(f"database {url.database}, Redis database {redis_db}")

        engine = make_engine(db_url)
        stack.callback(engine.dispose)
        started = time.perf_counter()
        with engine.connect() as conn:
            create_vicidial_tables(conn, "MyISAM")
            insert_leads(conn, lead_rows(args.leads, first_lead_id=1, seed=1))
        results["load_seconds"] = round(time.perf_counter() - started, 1)
        log(f"loaded {args.leads:,} leads in {results['load_seconds']} s")

        settings = Settings(
            database_url=db_url, broker_url=redis_url, result_backend=redis_url, _env_file=None
        )
        tuning = Runtime(settings).tuning
        services = launch_services(
            stack,
            db_url,
            redis_url,
            concurrency=args.concurrency,
            worker_nice=args.worker_nice,
            unused_lead_id=args.leads + 1,
        )
        results["logs"] = str(services.logs)
        api, worker, client = services.api, services.worker, services.client
        rng = random.Random(args.seed)
        fresh = rng.sample(range(1, args.leads + 1), (2 * args.jobs + 2) * BATCH)
        groups = [fresh[i : i + BATCH] for i in range(0, len(fresh), BATCH)]
        time_batch(engine, groups.pop(), tuning)
        time_e2e(client, groups.pop(), args.poll_ms / 1000)
        time.sleep(1)
        results["idle"] = rss_snapshot(service_processes(api, worker))
        sampler = PeakSampler(api, worker)
        sampler.start()
        stack.callback(sampler.stop)

        # Target 1, alternating so both sides see the same table.
        log(f"target 1: {args.jobs} jobs of {BATCH} fresh leads each way, alternating")
        batch_ms: list[float] = []
        samples: list[E2ESample] = []
        bad: list[str] = []
        for n in range(args.jobs):
            elapsed, complete = time_batch(engine, groups.pop(), tuning)
            batch_ms.append(elapsed)
            if not complete:
                bad.append(f"batch {n} did not insert+delete all {BATCH}")
            sample = time_e2e(client, groups.pop(), args.poll_ms / 1000)
            samples.append(sample)
            if not check_counts(sample.counts):
                bad.append(f"job {n} counts {sample.counts}")
        batch_stats = summarize(batch_ms)
        e2e_stats = summarize([s.total_ms for s in samples])
        results["target1"] = {
            "batch_ms": batch_stats,
            "e2e_ms": e2e_stats,
            "difference_p50_ms": round(e2e_stats["p50"] - batch_stats["p50"], 2),
            "difference_p90_ms": round(e2e_stats["p90"] - batch_stats["p90"], 2),
            "parts_ms": {
                key: summarize([getattr(s, key) for s in samples])
                for key in ("post_ms", "to_record_ms", "queue_ms", "run_ms", "notice_ms")
            },
            "polls_p50": statistics.median(s.polls for s in samples),
            "poll_ms": args.poll_ms,
            "anomalies": bad,
            "met": e2e_stats["p50"] <= batch_stats["p50"] + E2E_SLACK_MS,
            "samples": [asdict(s) | {"counts": None} for s in samples],
            "batch_samples_ms": [round(x, 2) for x in batch_ms],
        }
        out.print(e2e_table(results["target1"]))

        # Target 2.
        running = Services(api, worker, services.port, services.headers, client, rclient)
        if not args.skip_load:
            log(f"target 2: {args.rate:.0f}/s for {args.duration:.0f} s")
            results["target2"] = load_phase(
                running,
                args,
                args.rate,
                args.duration,
                seed=args.seed,
                spy_folder=args.py_spy,
            )
            out.print(load_table(results["target2"]))
            out.print(cpu_table(results["target2"]))
            if results["target2"]["load"]["first_errors"]:
                out.print("first refusals/errors:", *results["target2"]["load"]["first_errors"])
            if args.py_spy:
                out.print(f"py-spy folded stacks (API, worker main, worker child) in {args.py_spy}")
        sweep: list[dict[str, Any]] = []
        for n, (rate, paused) in enumerate(
            [(r, False) for r in args.sweep] + [(r, True) for r in args.sweep_paused]
        ):
            log(f"sweep: {rate:.0f}/s for {args.sweep_duration:.0f} s, workers paused: {paused}")
            phase = load_phase(
                running,
                args,
                rate,
                args.sweep_duration,
                seed=args.seed + 1 + n,
                pause_workers=paused,
            )
            sweep.append(phase)
        if sweep:
            results["sweep"] = sweep
            out.print(sweep_table(sweep))

        time.sleep(1)
        sampler.stop()
        results["target3"] = {
            "idle": results.pop("idle"),
            "after": rss_snapshot(service_processes(api, worker)),
            "peak": sampler.peak,
        }
        out.print(memory_table(results["target3"]))
        info = results["machine"]
        out.print(
            f"{info['date']}  {info['cores']} cores ({info['cpu']}), {info['memory_gb']} GB,"
            f" Python {info['python']}, MariaDB {info['mariadb']}, Redis {info['redis']};"
            f" vicidial_list {args.leads:,} leads (MyISAM);"
            f" worker --concurrency {args.concurrency}"
            f"{f' at nice {args.worker_nice}' if args.worker_nice else ''};"
            f" load average at start {info['load_average_at_start']}; code {info['commit']}"
        )
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
            log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
