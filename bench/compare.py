"""Compare this service with pt-archiver and Vicidial's recipe: same server, same data, one run.

Issue 6. Every tool archives and deletes the same ``--archive`` leads (a whole old list,
``list_id`` 9990002, spread over the table) out of a MyISAM ``vicidial_list`` of ``--leads``
leads, each run starting from the same freshly copied table:

- **ours**: ``leadarchive submit --delete`` (the client) -> ``leadarchive api`` -> ``leadarchive
  worker --concurrency 2`` -> MariaDB, in 500-lead jobs, the whole service end to end;
- **ours, by selection** (issue 14): one ``POST /vicidial/leads/archive/selection`` of the list
  (``{"list_ids": [9990002]}``, insert, update and delete) to the same API and worker: one job
  that walks the list in ``lead_id`` order, 500 leads a batch, checkpointing after each and
  giving itself back to the queue every ``task_time_limit / 2``. Its status is polled every
  ``--poll-s`` seconds (1 s: a client's pace) from this process; the wall time runs from the POST
  to the job's ``finished_at``, so the polling's granularity is not charged to it;
- **ours, by selection, the walk in process** (``selection-walk``, a profile): the selection's
  walk, ``tasks.selection_job.run_selection``, in this process, with the job record and its
  checkpoints in Redis through the service's own job store, but without the API, Celery, the
  lease or the continuations; each part timed (the window reads of ``next_batch``, ``run_batch``
  statement by statement, the checkpoint saves), into the JSON's ``profile``; with
  ``--walk-one-delete``, with the dialer's protection off (each batch's guarded deletes in one
  500-lead statement, as the bare SQL's, and no pause): what the engine's statements cost alone;
- **ours, engine only**: the same batches through ``tasks.archive.run_batch`` in this process,
  one after another, without the API, Celery or the client: what the service adds;
- **restore**: the list archived and deleted first by ``run_batch`` (untimed, before the probe
  starts), then restored by ``tasks.archive.restore.run_restore`` (the engine of ``POST
  /vicidial/leads/dearchive``) in this process, 500 leads a batch in ``lead_id`` order: restore's
  leads/s on the same data (leads restored / wall time). The judge then expects every lead of the
  list live again with its newest version;
- **bare verified SQL**: three 500-row statements per batch (``INSERT ... SELECT``, ``UPDATE ...
  JOIN`` where the copy differs, ``DELETE ... JOIN`` guarded by every column equal, NULL-safe and
  byte-exact), from ``bench/engine.py``; the speed a verified set-based batch can reach;
- **Vicidial's recipe**: ``INSERT IGNORE INTO vicidial_list_archive SELECT * ... WHERE <filter>``
  then ``DELETE ... WHERE <filter>``, the filter being the list and a 500-lead ``lead_id`` range;
- **pt-archiver** 3.x ``--limit 500 --commit-each`` (row mode: one INSERT and one DELETE per
  lead), ``--bulk-delete``, and ``--bulk-insert`` (LOAD DATA LOCAL INFILE, implies
  ``--bulk-delete``) once with the DSN's ``A=utf8`` and once with ``--charset utf8``.

Each tool runs once per *mode*, on a fresh copy of the data, with the dialer probe of
``bench/engine.py`` running (a separate process reading one lead by primary key and updating
another every 5 ms, on leads no tool archives):

- ``clean``: nothing else. Leads per second (leads gone from ``vicidial_list`` / wall time),
  ratio to the fastest, the probe's p99 and longest stall (its slowest read+update pair), CPU
  seconds per 10,000 leads (ours: the API and worker processes, the ``submit`` client apart;
  the others: their own process; MariaDB's whole server beside it, probe included).
- ``spread`` / ``aimed``: a writer process of 16 connections also changes leads (``user`` set to
  a unique token, ``called_count`` + 1, ``last_local_call_time`` and ``modify_date`` to the
  writer's clock), paced to ``--writer-rate`` updates per second in all, never two updates of
  one lead at once (so each lead's updates are applied in the order they were sent).
  ``spread``: random leads of the whole table. ``aimed``: random leads among the next
  ``--aim-window`` leads to be archived (progress read from the archive's row count, which
  MyISAM keeps, every 20 ms). An UPDATE that matched no row (the lead already gone) is not a
  loss, and is counted apart.

Every run, every tool (ours included) is judged the same way by ``bench/oracle.py``, which owes
nothing to the engine: before the run the rows to be archived are copied to a table of their own
(``CREATE TABLE ... SELECT``); afterwards every lead of that copy is read back from the copy,
``vicidial_list`` and the archive with ``CAST(column AS BINARY)`` and compared in Python, byte for
byte, with the versions the lead went through (the copy, then each of the writer's recorded
updates replayed on it). A lead is *lost* when it is gone from ``vicidial_list`` and the archive
holds an older version (*stale*) or nothing (*vanished*, also counted as damage when no write
touched it); a row that is no version of its lead is *corrupted*; a lead outside the list missing
from ``vicidial_list`` counts as damage too.

Then the **scaling** part: ``bench/engine.py``'s cost-ratio measurement (500-lead batches of
random leads, bare verified SQL and ``run_batch`` in turn, every batch moved back untimed) at
every size of ``--scaling``; sizes beyond ``--leads`` repeat the loaded leads under new IDs.

Everything runs in a throw-away database ``leadarchive_bench_cmp_<random>`` (utf8 /
utf8_unicode_ci) and an empty Redis database 2..15, both removed at the end, as in
``bench/api.py``. Run it from the repository root::

    .venv/bin/python bench/compare.py --leads 100000 --archive 20000 --scaling 10000,100000
    .venv/bin/python bench/compare.py --json /tmp/compare.json    # 1M / 200k, 10k..5M
    .venv/bin/python bench/compare.py --tools ours,bare --modes clean --scaling ''
    .venv/bin/python bench/compare.py --tools selection,bare,pt-row --modes clean,aimed --scaling ''
"""

# ruff: noqa: E402 - the imports below must follow the sys.path fix

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import multiprocessing
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

# Run as a script, bench/ comes first on sys.path and hides the project's ``api`` package behind
# bench/api.py; the repository root gives ``bench.*`` and the project's packages instead.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import psutil
import pymysql
import redis
from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy import URL, Engine

from bench.api import (
    CLI,
    DEFAULT_REDIS,
    claim_redis_db,
    cleanup_on_signals,
    cpu_seconds,
    find_servers,
    job_fields,
    launch_services,
    scratch_database,
    worker_processes,
)
from bench.api import machine as machine_info
from bench.client import RawHTTP, poll_job
from bench.engine import (
    ALL_ACTIONS,
    DEFAULT_URL,
    PROBE_STRIDE,
    BareVerifiedSQL,
    Bench,
    Breakdown,
    CostRow,
    Flag,
    Noise,
    NoiseStats,
    Outbox,
    Probe,
    ProbeSamples,
    ProbeStats,
    StatementTimer,
    cost_table,
    fmt,
    id_list,
    int_list,
    log,
    ms,
    pt_archiver,
)
from bench.oracle import (
    WRITER_SESSION,
    WRITER_UPDATE,
    Verdict,
    drop_copy,
    judge,
    take_copy,
    token,
    writer_time,
)
from bench.report import epoch
from tasks import selection_job
from tasks.archive import Tuning, q, run_batch
from tasks.archive.restore import run_restore
from tasks.db import make_engine
from tasks.ddl import create_vicidial_tables
from tasks.jobs import RedisJobStore
from tasks.records import FINAL
from tasks.requests import SelectionRequest
from tasks.schema import ARCHIVE_TABLE, LIVE_TABLE, TablePair, inspect_tables
from tasks.seed import insert_leads, lead_rows
from tasks.selection import next_batch
from tasks.selection_job import Ended, SelectionProgress, SelectionReport
from testkit.servers import mysql_connect

ARCHIVE_LIST = 9_990_002  # the old list every tool archives
PRISTINE = "pristine_list"  # the copy every run starts from, and the reference for corruption
BATCH = 500
TOOLS = (
    "ours",
    "selection",
    "selection-walk",
    "engine",
    "restore",
    "bare",
    "recipe",
    "pt-row",
    "pt-bulk-delete",
    "pt-bulk-insert",
    "pt-bulk-charset",
)
MODES = ("clean", "spread", "aimed")
TOOL_NAMES = {
    "ours": "ours: submit -> API -> 2 workers",
    "selection": "ours, by selection: 1 POST -> API -> worker",
    "selection-walk": "ours, by selection: the walk in process (profile)",
    "engine": "ours, engine only: run_batch in process",
    "restore": "restore: run_restore in process (after an untimed archive)",
    "bare": "bare verified SQL, 500-row statements",
    "recipe": "Vicidial recipe, 500-lead chunks",
    "pt-row": "pt-archiver --limit 500 --commit-each",
    "pt-bulk-delete": "pt-archiver ... --bulk-delete",
    "pt-bulk-insert": "pt-archiver ... --bulk-insert (A=utf8)",
    "pt-bulk-charset": "pt-archiver ... --bulk-insert --charset utf8",
}
PT_OPTIONS: dict[str, tuple[list[str], str | None]] = {
    "pt-row": (["--limit", str(BATCH), "--commit-each"], "utf8"),
    "pt-bulk-delete": (["--limit", str(BATCH), "--commit-each", "--bulk-delete"], "utf8"),
    "pt-bulk-insert": (["--limit", str(BATCH), "--commit-each", "--bulk-insert"], "utf8"),
    "pt-bulk-charset": (
        ["--limit", str(BATCH), "--commit-each", "--bulk-insert", "--charset", "utf8"],
        None,
    ),
}
ARCHIVED_SO_FAR = f"SELECT COUNT(*) FROM {q(ARCHIVE_TABLE)}"  # MyISAM keeps it: no scan
SELECTION_PATH = "/vicidial/leads/archive/selection"
SERVICE_TOOLS = ("ours", "selection")  # the tools that need the API and the worker


# --------------------------------------------------------------------------------------------
# The writer: a live dialer's agents changing leads while the archiving runs
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class WriterLog:
    """What the writer did: every update that matched its row, in order per lead."""

    applied: list[tuple[int, int, str]] = field(default_factory=list)  # (lead_id, seq, when)
    missed: int = 0  # the lead was already gone: no row matched (not a loss)
    errors: int = 0
    error: str = ""
    seconds: float = 0.0


def writer_loop(
    url: str,
    mode: str,
    leads: int,
    targets: list[int],
    window: int,
    threads: int,
    rate: float,
    seed: int,
    ready: Flag,
    stop: Flag,
    outbox: Outbox,
) -> None:
    """``threads`` connections updating leads at ``rate`` per second in all until ``stop``.

    ``spread``: any lead of 1..``leads`` but the probe's. ``aimed``: one of the ``window`` leads
    of ``targets`` (in archiving order) after the number already in the archive.
    """
    result = WriterLog()
    lock = threading.Lock()
    busy: set[int] = set()
    sequence = itertools.count(1)
    progress = [0]
    interval = threads / rate
    started = time.monotonic()

    def pick(rng: random.Random) -> int:
        while True:
            if mode == "aimed":
                low = max(0, min(progress[0], len(targets) - window))
                lead = targets[rng.randrange(low, min(len(targets), low + window))]
            else:
                lead = rng.randint(1, leads)
                if lead % PROBE_STRIDE == 0:
                    continue
            with lock:
                if lead not in busy:
                    busy.add(lead)
                    return lead
            time.sleep(0.001)

    def track() -> None:
        conn = mysql_connect(url)
        try:
            cursor = conn.cursor()
            while not stop.wait(0.02):
                cursor.execute(ARCHIVED_SO_FAR)
                progress[0] = int(cursor.fetchone()[0])
        finally:
            conn.close()

    def write(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        conn = mysql_connect(url)
        cursor = conn.cursor()
        cursor.execute(WRITER_SESSION)
        due = time.monotonic() + rng.random() * interval
        try:
            while not stop.is_set():
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                due = max(due + interval, time.monotonic())
                lead = pick(rng)
                seq = next(sequence)
                when = writer_time()
                try:
                    matched = cursor.execute(WRITER_UPDATE, (token(seq), when, when, lead))
                except pymysql.MySQLError as exc:
                    with lock:
                        result.errors += 1
                        result.error = repr(exc)
                else:
                    with lock:
                        if matched:
                            result.applied.append((lead, seq, when))
                        else:
                            result.missed += 1
                finally:
                    with lock:
                        busy.discard(lead)
        finally:
            conn.close()

    workers = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(threads)]
    if mode == "aimed":
        workers.append(threading.Thread(target=track, daemon=True))
    try:
        for thread in workers:
            thread.start()
    except Exception as exc:  # reported to the parent, which fails the run
        result.error = repr(exc)
    ready.set()
    for thread in workers:
        thread.join()
    result.seconds = time.monotonic() - started
    outbox.put(result)


class Writer:
    """Runs ``writer_loop`` in a child process for one run."""

    def __init__(self, url: str, mode: str, leads: int, targets: list[int], args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.ready, self.stop = ctx.Event(), ctx.Event()
        self.outbox: Any = ctx.Queue()
        self.process = ctx.Process(
            target=writer_loop,
            args=(
                url,
                mode,
                leads,
                targets,
                args.aim_window,
                args.writer_threads,
                args.writer_rate,
                args.seed,
                self.ready,
                self.stop,
                self.outbox,
            ),
            daemon=True,
        )

    def __enter__(self) -> Writer:
        self.process.start()
        if not self.ready.wait(60):
            raise RuntimeError("the writer did not start")
        return self

    def finish(self) -> WriterLog:
        self.stop.set()
        result: WriterLog = self.outbox.get(timeout=120)
        self.process.join(30)
        return result

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()


# --------------------------------------------------------------------------------------------
# The data
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Dataset:
    """The throw-away database: ``vicidial_list``, its archive and the pristine copy."""

    url: URL
    engine: Engine
    leads: int
    archive_ids: list[int]
    pair: TablePair

    @property
    def url_text(self) -> str:
        return self.url.render_as_string(hide_password=False)

    def sql(self, statement: str, args: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(statement, tuple(args or ())).all()]

    def run(self, statement: str) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql(statement)

    def reset(self) -> float:
        """Live table = the pristine copy, archive empty; seconds it took."""
        started = time.perf_counter()
        self.run(f"TRUNCATE TABLE {q(ARCHIVE_TABLE)}")
        self.run(f"TRUNCATE TABLE {q(LIVE_TABLE)}")
        # Into an empty MyISAM table, INSERT ... SELECT builds the secondary indexes by sorting.
        self.run(f"INSERT INTO {q(LIVE_TABLE)} SELECT * FROM {PRISTINE}")
        return time.perf_counter() - started

    def fill(self, size: int) -> float:
        """Live table = leads 1..``size`` (the pristine ones, then copies under new IDs)."""
        started = time.perf_counter()
        self.run(f"TRUNCATE TABLE {q(ARCHIVE_TABLE)}")
        self.run(f"TRUNCATE TABLE {q(LIVE_TABLE)}")
        copies = math.ceil(size / self.leads)
        names = [q(c.name) for c in self.pair.columns]
        select = ", ".join(
            f"p.lead_id + k.n * {self.leads}" if n == "`lead_id`" else f"p.{n}" for n in names
        )
        numbers = " UNION ALL ".join(f"SELECT {n} AS n" for n in range(copies))
        self.run(
            f"INSERT INTO {q(LIVE_TABLE)} ({', '.join(names)}) SELECT {select}"
            f" FROM {PRISTINE} AS p JOIN ({numbers}) AS k"
            f" WHERE p.lead_id + k.n * {self.leads} <= {size}"
        )
        return time.perf_counter() - started


def load(url: URL, engine: Engine, leads: int, archive: int, seed: int) -> Dataset:
    """Seeded leads 1..``leads``; ``archive`` of them (never the probe's) moved to the old list;
    all of it copied to the pristine table."""
    with engine.connect() as conn:
        create_vicidial_tables(conn, "MyISAM")
        insert_leads(conn, lead_rows(leads, first_lead_id=1, seed=1))
        pair = inspect_tables(conn)
    candidates = [i for i in range(1, leads + 1) if i % PROBE_STRIDE]
    chosen = sorted(random.Random(seed).sample(candidates, archive))
    data = Dataset(url=url, engine=engine, leads=leads, archive_ids=chosen, pair=pair)
    for offset in range(0, len(chosen), 10_000):
        data.run(
            f"UPDATE {q(LIVE_TABLE)} SET list_id = {ARCHIVE_LIST}"
            f" WHERE lead_id IN ({id_list(chosen[offset : offset + 10_000])})"
        )
    data.run(f"CREATE TABLE {PRISTINE} LIKE {q(LIVE_TABLE)}")
    data.run(f"INSERT INTO {PRISTINE} SELECT * FROM {q(LIVE_TABLE)}")
    return data


# --------------------------------------------------------------------------------------------
# The tools
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ToolOutcome:
    """One tool's run as the tool saw it."""

    wall: float
    tool_cpu: float  # CPU seconds of the tool's own processes
    client_cpu: float = 0.0  # ours: the submit client
    failed: str = ""
    note: str = ""
    profile: dict[str, Any] = field(default_factory=dict)  # selection-walk: where time went


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(slots=True)
class Ours:
    """The service end to end: ``leadarchive submit`` against the API and its workers."""

    port: int
    key: str
    env: dict[str, str]
    api: psutil.Process
    worker: psutil.Process
    folder: Path
    redis: redis.Redis

    def processes(self) -> dict[str, psutil.Process]:
        return {"api": self.api, **dict(worker_processes(self.worker))}

    def __call__(self, data: Dataset) -> ToolOutcome:
        ids_file = self.folder / "lead_ids.txt"
        ids_file.write_text("\n".join(map(str, data.archive_ids)) + "\n")
        argv = [str(CLI), "submit", "--url", f"http://127.0.0.1:{self.port}", "--key", self.key]
        argv += ["--file", str(ids_file), "--delete", "--batch-size", str(BATCH), "--json"]
        argv += ["--run-id", uuid.uuid4().hex]  # new jobs each run, not the last run's
        procs = self.processes()
        before, client_before = cpu_seconds(procs), children_cpu()
        started = time.perf_counter()
        done = subprocess.run(  # noqa: S603 - our own console script, fixed arguments
            argv, env=self.env, capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - started
        after, client_after = cpu_seconds(procs), children_cpu()
        service = sum(after[k] - before[k] for k in after if k in before)
        failed = note = ""
        try:
            summary = json.loads(done.stdout)
            counts = summary["counts"].get("delete", {})
            note = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "deleted" and v)
            if summary["failed"]:
                failed = f"{len(summary['failed'])} jobs failed: {summary['failed'][0]}"
            note = "; ".join(x for x in (note, self.job_times(summary["jobs"])) if x)
        except (ValueError, KeyError):
            failed = f"submit exited {done.returncode}: {done.stderr.strip()[-300:]}"
        return ToolOutcome(wall, service, client_after - client_before, failed, note)

    def job_times(self, jobs: list[dict[str, Any]]) -> str:
        """Where a job's time went, from the job records: queue wait, worker run, overlap."""
        rows = job_fields(
            self.redis, [j["job_id"] for j in jobs], ["submitted_at", "started_at", "finished_at"]
        )
        times = [
            tuple(epoch(v.decode()) for v in row) for row in rows if all(v is not None for v in row)
        ]
        if not times:
            return ""
        runs = [(f - s) * 1000 for _, s, f in times]
        waits = [(s - q) * 1000 for q, s, _ in times]
        span = max(f for *_, f in times) - min(s for _, s, _ in times)
        busy = sum(runs) / 1000
        return (
            f"job run p50 {statistics.median(runs):.0f} ms, queue wait p50"
            f" {statistics.median(waits):.0f} ms, {busy:.1f} s of runs in {span:.1f} s"
            f" ({busy / span:.2f} jobs at once)"
        )


def selection_body(list_id: int) -> bytes:
    """The selection every run archives: one list, insert, update and delete."""
    body = {"list_ids": [list_id], "insert_leads": True, "update_leads": True}
    return json.dumps({**body, "delete_leads": True}).encode()


def post_selection(client: RawHTTP, list_id: int) -> str:
    """POST the selection of ``list_id``; its status URL."""
    answer = client.request("POST", SELECTION_PATH, selection_body(list_id))
    if answer.status != 202:
        raise RuntimeError(f"POST answered {answer.status}: {answer.body[:300]!r}")
    return answer.headers["location"]


@dataclass(slots=True)
class Followed:
    """What polling a selection's status saw: its final body, and ``done`` at every poll."""

    final: dict[str, Any]
    samples: list[tuple[float, int]]  # (seconds since the first poll was due, progress.done)
    polls: int
    seen: float  # time.perf_counter() of the poll that saw the job end


def follow(
    client: RawHTTP,
    url: str,
    interval: float,
    timeout: float,
    each: Callable[[float, dict[str, Any]], None] | None = None,
) -> Followed:
    """Poll ``url`` every ``interval`` s (on a fixed schedule) until the job ends; ``each`` is
    called with the seconds since the start and the body of every poll that did not see the end."""
    samples: list[tuple[float, int]] = []

    def seen_one(since: float, body: dict[str, Any]) -> None:
        samples.append((round(since, 3), int((body.get("progress") or {}).get("done", 0))))
        if each is not None and body["status"] not in FINAL:
            each(since, body)

    final, seen, polls = poll_job(client, url, interval, timeout, seen_one)
    return Followed(final, samples, polls, seen)


def selection_note(final: dict[str, Any], posted: float, followed: Followed) -> str:
    """The job's own account: its counts, runs, queue wait, and how late polling saw the end."""
    result = final.get("result") or {}
    parts = [
        f"selected {result.get('selected', 0):,}" if result else "no result",
        f"done {result.get('done', 0):,}",
        f"left live {result.get('left_live_total', 0):,}",
        f"runs {final.get('attempts')}",
    ]
    if final.get("started_at"):  # a selection's started_at is its last run's start
        parts.append(f"last run began at +{epoch(final['started_at']) - posted:.1f} s")
    parts.append(f"{followed.polls} polls")
    return ", ".join(parts)


@dataclass(slots=True)
class BySelection:
    """The service end to end by selection: one POST of the list, then its status polled at a
    client's pace until the job ends."""

    port: int
    key: str
    api: psutil.Process
    worker: psutil.Process
    poll_s: float = 1.0
    timeout: float = 4 * 3600.0
    last: Followed | None = None  # the last run's polls, for the JSON

    def processes(self) -> dict[str, psutil.Process]:
        return {"api": self.api, **dict(worker_processes(self.worker))}

    def __call__(self, data: Dataset) -> ToolOutcome:
        client = RawHTTP("127.0.0.1", self.port, {"Authorization": f"Key={self.key}"})
        procs = self.processes()
        before = cpu_seconds(procs)
        posted, started = time.time(), time.perf_counter()
        try:
            url = post_selection(client, ARCHIVE_LIST)
            followed = follow(client, url, self.poll_s, self.timeout)
        except (RuntimeError, TimeoutError, OSError, EOFError) as exc:
            return ToolOutcome(time.perf_counter() - started, 0.0, failed=repr(exc)[:300])
        finally:
            client.close()
        after = cpu_seconds(procs)
        self.last = followed
        final = followed.final
        # From the POST to the job's end as the worker recorded it; polling's lag comes after.
        ended = final.get("finished_at")
        wall = epoch(ended) - posted if ended else followed.seen - started
        failed = ""
        if final["status"] != "succeeded":
            failed = f"{final['status']}: {json.dumps(final.get('error'))[:200]}"
        note = selection_note(final, posted, followed)
        service = sum(after[k] - before[k] for k in after if k in before)
        return ToolOutcome(wall, service, failed=failed, note=note)


class WalkSteward:
    """The walk's steward in this process: saves each checkpoint through the service's job
    store (``RedisJobStore.save_progress``, as a worker's run does), timed; never interrupts."""

    def __init__(self, jobs: RedisJobStore, job_id: str, token: str) -> None:
        self.jobs, self.job_id, self.token = jobs, job_id, token
        self.seconds, self.saves = 0.0, 0

    def save(self, report: SelectionReport, progress: SelectionProgress) -> str | None:
        started = time.perf_counter()
        answer = self.jobs.save_progress(
            self.job_id,
            self.token,
            progress=progress.model_dump(exclude_none=True),
            checkpoint=report.model_dump(exclude_none=True),
        )
        self.seconds += time.perf_counter() - started
        self.saves += 1
        return answer

    def interruption(self, batches: int = 0) -> tuple[Ended, datetime | None] | None:
        return None

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(slots=True)
class SelectionWalk:
    """``run_selection`` in this process on the list, every part timed (a profile)."""

    redis: redis.Redis
    batch_size: int = BATCH  # the service's is LEADARCHIVE_MAX_LEAD_IDS (500)
    tuning: Tuning = field(default_factory=Tuning)  # the service's default

    def __call__(self, data: Dataset) -> ToolOutcome:
        request = SelectionRequest.model_validate(json.loads(selection_body(ARCHIVE_LIST)))
        jobs = RedisJobStore(self.redis, timedelta(hours=1))
        job_id, _ = jobs.create("bench", request)
        token = uuid.uuid4().hex
        if jobs.start(job_id, token, timedelta(hours=1)) != "started":
            return ToolOutcome(0.0, 0.0, failed="the job store did not start the job")
        steward = WalkSteward(jobs, job_id, token)
        first_save: list[float] = []  # when the walk saved its first checkpoint (after count)
        save = steward.save

        def first(report: SelectionReport, progress: SelectionProgress) -> str | None:
            if not first_save:
                first_save.append(time.perf_counter())
            return save(report, progress)

        steward.save = first  # type: ignore[method-assign]
        statements = Breakdown()
        windows: list[float] = []  # seconds of each next_batch call
        batches = {"seconds": 0.0, "calls": 0}

        def timed_next_batch(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return next_batch(*args, **kwargs)
            finally:
                windows.append(time.perf_counter() - started)

        def timed_run_batch(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return run_batch(*args, observer=StatementTimer(statements), **kwargs)
            finally:
                batches["seconds"] += time.perf_counter() - started
                batches["calls"] += 1

        with (
            data.engine.connect() as conn,
            mock.patch.object(selection_job, "next_batch", timed_next_batch),
            mock.patch.object(selection_job, "run_batch", timed_run_batch),
        ):
            cpu = time.thread_time()
            started = time.perf_counter()
            ending = selection_job.run_selection(
                conn,
                request,
                steward,
                zone=ZoneInfo("UTC"),
                batch_size=self.batch_size,
                tuning=self.tuning,
            )
            wall = time.perf_counter() - started
            cpu = time.thread_time() - cpu
        n = max(1, int(batches["calls"]))
        statements.batches, statements.wall = n, float(batches["seconds"])
        holds = sorted(statements.holds) or [0.0]
        window_seconds = sum(windows)
        profile = {
            "wall_s": round(wall, 2),
            "batch_size": self.batch_size,
            "one_delete": self.tuning == ONE_DELETE,
            "batches": n,
            "selected_counted_s": round(first_save[0] - started, 3) if first_save else None,
            "window_reads_ms_per_batch": ms(window_seconds / n),
            "window_read_max_ms": ms(max(windows, default=0.0)),
            "window_calls": len(windows),
            "run_batch_ms_per_batch": ms(batches["seconds"] / n),
            "run_batch_hold_p50_ms": ms(holds[len(holds) // 2]),
            "run_batch_hold_p99_ms": ms(holds[min(len(holds) - 1, int(len(holds) * 0.99))]),
            "run_batch_hold_max_ms": ms(holds[-1]),
            "checkpoint_ms_per_save": ms(steward.seconds / max(1, steward.saves)),
            "checkpoint_saves": steward.saves,
            "rest_ms_per_batch": ms(
                (wall - window_seconds - batches["seconds"] - steward.seconds) / n
            ),
            "run_batch_statements_ms_per_batch": statements.per_batch_ms(),
            "run_batch_statements_per_batch": {
                k: round(v / n, 1) for k, v in statements.counts.items()
            },
            "leads_per_delete_chunk": round(statistics.mean(statements.chunk_leads), 1)
            if statements.chunk_leads
            else None,
        }
        note = (
            f"count {profile['selected_counted_s']} s; per batch: windows"
            f" {profile['window_reads_ms_per_batch']} ms, run_batch"
            f" {profile['run_batch_ms_per_batch']} ms, checkpoint"
            f" {profile['checkpoint_ms_per_save']} ms, rest {profile['rest_ms_per_batch']} ms"
        )
        failed = "" if ending.status == "succeeded" else f"ended {ending.status}"
        return ToolOutcome(wall, cpu, failed=failed, note=note, profile=profile)


# The walk with the dialer's protection off: each batch's guarded deletes in one 500-lead
# statement and no pause after it, whoever waits (``--walk-one-delete``). What the engine's own
# statements cost when they hold vicidial_list as long as the bare SQL does.
ONE_DELETE = Tuning(first_chunk=BATCH, min_chunk=BATCH, max_chunk=BATCH, yield_time=timedelta(0))


def in_chunks(ids: Sequence[int]) -> list[list[int]]:
    return [list(ids[i : i + BATCH]) for i in range(0, len(ids), BATCH)]


def run_engine(data: Dataset) -> ToolOutcome:
    """The engine without the service: ``run_batch`` here, one 500-lead batch after another."""
    tuning = Tuning()
    with data.engine.connect() as conn:
        cpu = time.thread_time()
        started = time.perf_counter()
        for chunk in in_chunks(data.archive_ids):
            run_batch(conn, chunk, ALL_ACTIONS, tuning)
        return ToolOutcome(time.perf_counter() - started, time.thread_time() - cpu)


class Restore:
    """Restore the list after archiving it untimed: ``prepare`` archives, the call restores."""

    def prepare(self, data: Dataset) -> None:
        run_engine(data)

    def __call__(self, data: Dataset) -> ToolOutcome:
        tuning = Tuning()
        restored = 0
        with data.engine.connect() as conn:
            cpu = time.thread_time()
            started = time.perf_counter()
            for chunk in in_chunks(data.archive_ids):
                report = run_restore(conn, chunk, False, tuning)
                restored += report.counts["restore"]["restored"]
            wall = time.perf_counter() - started
            cpu = time.thread_time() - cpu
        failed = "" if restored == len(data.archive_ids) else f"restored {restored:,}"
        return ToolOutcome(wall, cpu, failed=failed, profile={"restored": restored})


def run_bare(data: Dataset) -> ToolOutcome:
    """The bare verified SQL of ``bench/engine.py``, 500 leads a batch, in ``lead_id`` order."""
    conn = mysql_connect(data.url_text)
    try:
        cursor = conn.cursor()
        BareVerifiedSQL.open_session(cursor)
        bare = BareVerifiedSQL(data.pair)
        cpu = time.thread_time()
        started = time.perf_counter()
        for chunk in in_chunks(data.archive_ids):
            bare.run(cursor, chunk, Breakdown(), strict=False)
        return ToolOutcome(time.perf_counter() - started, time.thread_time() - cpu)
    finally:
        conn.close()


def run_recipe(data: Dataset) -> ToolOutcome:
    """Vicidial's recipe, as its docs give it, 500 leads of the list at a time (default session)."""
    conn = mysql_connect(data.url_text)
    live, arch = q(LIVE_TABLE), q(ARCHIVE_TABLE)
    try:
        cursor = conn.cursor()
        cpu = time.thread_time()
        started = time.perf_counter()
        for chunk in in_chunks(data.archive_ids):
            where = f"list_id = {ARCHIVE_LIST} AND lead_id BETWEEN {chunk[0]} AND {chunk[-1]}"
            cursor.execute(f"INSERT IGNORE INTO {arch} SELECT * FROM {live} WHERE {where}")
            cursor.execute(f"DELETE FROM {live} WHERE {where}")
        return ToolOutcome(time.perf_counter() - started, time.thread_time() - cpu)
    finally:
        conn.close()


def pt_tool(name: str) -> Callable[[Dataset], ToolOutcome]:
    options, dsn_charset = PT_OPTIONS[name]

    def run(data: Dataset) -> ToolOutcome:
        done = pt_archiver(
            data.url,
            f"list_id = {ARCHIVE_LIST}",
            options=options,
            dsn_charset=dsn_charset,
            check=False,
        )
        failed = (
            f"exit {done.returncode}: {done.error.splitlines()[0][:200]}" if done.returncode else ""
        )
        return ToolOutcome(done.wall, done.cpu_seconds, failed=failed)

    return run


# --------------------------------------------------------------------------------------------
# One run: a tool on fresh data, the probe (and the writer) meanwhile
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    tool: str
    mode: str
    archived: int
    seconds: float
    leads_per_s: float
    probe: ProbeStats
    tool_cpu_per_10k: float | None
    mariadb_cpu_per_10k: float | None
    client_cpu_per_10k: float | None
    corrupted: int  # rows that are no version of their lead (bench/oracle.py)
    corrupted_examples: list[int]
    vanished: int  # leads of the list in neither table
    left_live: int
    others_gone: int = 0  # leads outside the list missing from vicidial_list
    writer_applied: int = 0
    writer_missed: int = 0
    writer_errors: int = 0
    writer_rate: float = 0.0
    lost: int | None = None
    lost_stale: int = 0
    lost_vanished: int = 0
    lost_examples: list[int] = field(default_factory=list)
    failed: str = ""
    note: str = ""
    reset_seconds: float = 0.0
    load_average: list[float] = field(default_factory=list)
    noise: NoiseStats | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    # (second of the run, slots due in it, the latest of them in ms, slots > 10 ms late): the
    # seconds in which some slot was more than 20 ms late, the first LATE_SECONDS of them
    late_by_second: list[tuple[int, int, float, int]] = field(default_factory=list)


LATE_SECONDS = 120


def late_by_second(samples: ProbeSamples, start: float) -> list[tuple[int, int, float, int]]:
    """Where in the run the probe fell behind: per second since ``start``, the slots due, the
    latest one (ms) and how many were over 10 ms late; only seconds with one over 20 ms."""
    seconds: dict[int, list[float]] = {}
    for due, late in zip(samples.due, samples.late, strict=False):
        if due >= start:
            seconds.setdefault(int(due - start), []).append(late)
    found = [
        (second, len(lates), ms(max(lates)), sum(1 for x in lates if x > 0.010))
        for second, lates in sorted(seconds.items())
        if max(lates) > 0.020
    ]
    return found[:LATE_SECONDS]


def per_10k(seconds: float, leads: int) -> float | None:
    return round(seconds / leads * 10_000, 3) if leads else None


def graded(
    tool: str,
    mode: str,
    outcome: ToolOutcome,
    verdict: Verdict,
    writes: WriterLog,
    probe: ProbeStats,
) -> Run:
    """A run's figures from the tool's own account and the oracle's verdict."""
    archived = verdict.checked - verdict.live
    if "restored" in outcome.profile:  # restore: every lead live again is the figure
        archived = min(int(outcome.profile["restored"]), verdict.live)
    written = {lead for lead, _, _ in writes.applied}
    result = Run(
        tool=tool,
        mode=mode,
        archived=archived,
        seconds=round(outcome.wall, 2),
        leads_per_s=round(archived / outcome.wall) if outcome.wall else 0,
        probe=probe,
        tool_cpu_per_10k=per_10k(outcome.tool_cpu, archived),
        mariadb_cpu_per_10k=None,
        client_cpu_per_10k=per_10k(outcome.client_cpu, archived) if tool == "ours" else None,
        corrupted=len(verdict.corrupted),
        corrupted_examples=verdict.corrupted[:10],
        vanished=len(verdict.vanished),
        left_live=verdict.live,
        others_gone=verdict.others_gone,
        failed=outcome.failed,
        note=outcome.note,
        profile=outcome.profile,
    )
    if mode != "clean":
        gone = [lead for lead in verdict.vanished if lead in written]
        result.writer_applied = len(writes.applied)
        result.writer_missed = writes.missed
        result.writer_errors = writes.errors
        result.writer_rate = round(len(writes.applied) / writes.seconds, 1) if writes.seconds else 0
        result.lost = len(verdict.stale) + len(gone)
        result.lost_stale, result.lost_vanished = len(verdict.stale), len(gone)
        result.lost_examples = sorted(verdict.stale + gone)[:10]
    return result


def one_run(
    data: Dataset,
    server: Engine,
    database: str,
    tool: str,
    run: Callable[[Dataset], ToolOutcome],
    mode: str,
    args: argparse.Namespace,
    seed: int,
) -> Run:
    reset_seconds = data.reset()
    # The judge's reference: the rows to be archived, as they are before the run (bench/oracle.py).
    copy = take_copy(data.engine, f"list_id = {ARCHIVE_LIST}")
    log(f"{mode}: {TOOL_NAMES[tool]} (table copied in {reset_seconds:.1f} s)")
    prepare = getattr(run, "prepare", None)
    if prepare is not None:  # untimed, before the probe starts (restore: archive the list)
        prepare(data)
    port = data.url.port or 3306
    servers = {k: v for k, v in find_servers(port).items() if k.startswith("mariadb")}
    probe = Probe(data.url_text, data.leads, args.probe_interval_ms / 1000, seed, thread=False)
    writer = (
        Writer(data.url_text, mode, data.leads, data.archive_ids, args) if mode != "clean" else None
    )
    noise = Noise(server, database)
    writes = WriterLog()
    with noise, probe, writer or contextlib.nullcontext():
        probe.record(True)
        db_before = cpu_seconds(servers)
        run_started = time.monotonic()
        outcome = run(data)
        db_after = cpu_seconds(servers)
        probe.record(False)
        samples = probe.finish()
        if writer is not None:
            writes = writer.finish()
    judged = time.perf_counter()
    verdict = judge(data.engine, copy, writes.applied)
    drop_copy(data.engine)
    judged = time.perf_counter() - judged
    result = graded(tool, mode, outcome, verdict, writes, ProbeStats.of(samples))
    result.mariadb_cpu_per_10k = per_10k(
        sum(db_after.values()) - sum(db_before.values()), result.archived
    )
    result.reset_seconds = round(reset_seconds, 1)
    result.load_average = [round(x, 2) for x in os.getloadavg()]
    result.noise = noise.stats
    result.late_by_second = late_by_second(samples, run_started)
    if writer is not None and writes.error and not writes.applied:
        raise RuntimeError(f"the writer failed: {writes.error}")
    archived = result.archived
    log(
        f"  {archived:,} leads in {outcome.wall:.1f} s = {result.leads_per_s:,.0f}/s,"
        f" probe p99 {fmt(result.probe.pair_p99_ms)} ms from the due time, longest stall"
        f" {fmt(result.probe.stall_ms)} ms,"
        f" corrupted {result.corrupted}, vanished {result.vanished}, others gone"
        f" {result.others_gone}, lost {result.lost if result.lost is not None else '-'}"
        f" (judged in {judged:.1f} s)" + (f"; FAILED {outcome.failed}" if outcome.failed else "")
    )
    return result


# --------------------------------------------------------------------------------------------
# Scaling: bench/engine.py's cost ratio at each size
# --------------------------------------------------------------------------------------------


def scaling(data: Dataset, database: str, args: argparse.Namespace) -> list[CostRow]:
    options = argparse.Namespace(
        batches=args.scaling_batches,
        batch_size=BATCH,
        chunk_time_ms=args.chunk_time_ms,
        pt_archiver=False,
    )
    bench = Bench(
        args=options,
        url=data.url,
        database=database,
        engine=data.engine,
        rng=random.Random(args.seed),
    )
    rows = []
    for size in sorted(args.scaling):
        log(f"scaling: {size:,} leads")
        seconds = data.fill(size)
        bench.size, bench.pair = size, data.pair
        rows.append(bench.cost_ratio(seconds))
        row = rows[-1]
        log(f"  bare {row.bare_median_ms} ms, ours {row.ours_median_ms} ms per batch (median)")
    return rows


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def summary_rows(runs: list[Run], tools: Sequence[str]) -> list[dict[str, Any]]:
    """One row per tool: speed and dialer impact from its clean run, losses from the others."""
    by = {(r.tool, r.mode): r for r in runs}
    clean = [by[(t, "clean")] for t in tools if (t, "clean") in by]
    fastest = max((r.leads_per_s for r in clean if not r.failed), default=0)

    def ratio(run: Run | None) -> float | None:
        if run is None or run.failed or not fastest:
            return None
        return round(run.leads_per_s / fastest, 2)

    rows = []
    for tool in tools:
        c, s, a = by.get((tool, "clean")), by.get((tool, "spread")), by.get((tool, "aimed"))
        base = c or s or a
        if base is None:
            continue
        rows.append(
            {
                "tool": tool,
                "name": TOOL_NAMES[tool],
                "leads_per_s": c.leads_per_s if c else None,
                "ratio_to_fastest": ratio(c),
                "p99_ms": c.probe.pair_p99_ms if c else None,
                "svc_p99_ms": c.probe.service_p99_ms if c else None,
                "stall_ms": c.probe.stall_ms if c else None,
                "lost_spread": s.lost if s else None,
                "lost_aimed": a.lost if a else None,
                "corrupted": max(r.corrupted + r.vanished + r.others_gone for r in (c, s, a) if r),
                "tool_cpu_per_10k": c.tool_cpu_per_10k if c else None,
                "mariadb_cpu_per_10k": c.mariadb_cpu_per_10k if c else None,
                "failed": "; ".join(sorted({r.failed for r in (c, s, a) if r and r.failed})),
            }
        )
    return rows


def cell(value: float | None, digits: int = 0, unit: str = "") -> str:
    return "-" if value is None else f"{fmt(value, digits)}{unit}"


def main_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> Table:
    table = Table(
        title=f"Archive and delete {args.archive:,} of {args.leads:,} leads (MyISAM), 500 per"
        f" batch; dialer probe every {args.probe_interval_ms:g} ms; writer {args.writer_threads}"
        f" connections at {args.writer_rate:g} updates/s",
        box=box.SIMPLE_HEAVY,
    )
    for name, justify in (
        ("tool", "left"),
        ("leads/s", "right"),
        ("vs fastest", "right"),
        ("dialer p99 ms", "right"),
        ("longest stall ms", "right"),
        ("lost, spread", "right"),
        ("lost, aimed", "right"),
        ("corrupted", "right"),
        ("CPU s/10k: tool", "right"),
        ("MariaDB", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        failed = r["failed"]
        speed = cell(r["leads_per_s"])
        if failed and not r["leads_per_s"]:
            speed = "failed"
        table.add_row(
            r["name"],
            speed,
            f"{r['ratio_to_fastest']:.2f}x" if r["ratio_to_fastest"] is not None else "-",
            cell(r["p99_ms"], 1),
            cell(r["stall_ms"], 1),
            cell(r["lost_spread"]),
            cell(r["lost_aimed"]),
            cell(r["corrupted"]),
            cell(r["tool_cpu_per_10k"], 2),
            cell(r["mariadb_cpu_per_10k"], 2),
        )
    table.caption = (
        "leads/s, p99, stall and CPU from the run without the writer; lost: leads deleted from"
        " vicidial_list whose newest version the archive lacks; corrupted: rows that are no"
        " version of their lead byte for byte, plus leads in neither table and leads of other"
        " lists gone (worst run; bench/oracle.py). CPU:"
        " ours = API + worker processes (the submit client apart); MariaDB = the whole server,"
        " probe and writer included."
    )
    return table


def runs_table(runs: list[Run]) -> Table:
    table = Table(title="Every run", box=box.SIMPLE_HEAVY)
    for name in (
        "tool",
        "mode",
        "archived",
        "s",
        "leads/s",
        "p50",
        "p99",
        "max",
        "stall",
        "svc p99",
        "writes/s",
        "0-row",
        "lost stale/gone",
        "left live",
        "corrupt",
        "noise",
        "load avg",
        "note",
    ):
        table.add_column(name, justify="left" if name in ("tool", "mode", "note") else "right")
    for r in runs:
        table.add_row(
            r.tool,
            r.mode,
            f"{r.archived:,}",
            fmt(r.seconds, 1),
            f"{r.leads_per_s:,.0f}",
            fmt(r.probe.pair_p50_ms),
            fmt(r.probe.pair_p99_ms),
            fmt(r.probe.pair_max_ms),
            fmt(r.probe.stall_ms),
            fmt(r.probe.service_p99_ms),
            fmt(r.writer_rate, 0) if r.mode != "clean" else "-",
            str(r.writer_missed) if r.mode != "clean" else "-",
            f"{r.lost_stale}/{r.lost_vanished}" if r.lost is not None else "-",
            f"{r.left_live:,}",
            str(r.corrupted + r.vanished + r.others_gone),
            f"{fmt(r.noise.other_cpu_pct, 0)}%" if r.noise else "-",
            f"{r.load_average[0]:.1f}" if r.load_average else "-",
            (r.failed or r.note)[:110],
        )
    table.caption = (
        "probe p50/p99/max: ms from each read+update pair's due time (every 5 ms slot counted,"
        " those a stall delayed too); stall: the longest single pair; svc p99: the pairs' own"
        " times, without the slots a stall delayed (the p99 before issue 11); 0-row: writes"
        " that found the lead gone (not losses); noise: CPU of other processes, % of all cores;"
        " load avg at the run's end"
    )
    return table


def scaling_table(rows: list[CostRow]) -> Table:
    table = Table(title="Scaling: ms per 500-lead batch (median)", box=box.SIMPLE_HEAVY)
    for name in ("leads", "bare ms", "ours ms", "bare growth", "ours growth", "ours/bare"):
        table.add_column(name, justify="right")
    if not rows:
        return table
    first = rows[0]
    for r in rows:
        table.add_row(
            f"{r.size:,}",
            fmt(r.bare_median_ms),
            fmt(r.ours_median_ms),
            f"{r.bare_median_ms / first.bare_median_ms:.2f}x",
            f"{r.ours_median_ms / first.ours_median_ms:.2f}x",
            f"{r.ours_median_ms / r.bare_median_ms:.2f}x",
        )
    table.caption = "growth: against the smallest size; ours = run_batch in process (the engine)"
    return table


def verdicts(rows: list[dict[str, Any]], runs: list[Run], scale: list[CostRow]) -> list[str]:
    """The issue's targets, each met or missed, with the figures."""
    by = {r["tool"]: r for r in rows}
    ours, bare, pt = by.get("ours"), by.get("bare"), by.get("pt-row")
    lines = []

    def say(ok: bool, text: str) -> None:
        lines.append(f"{'met   ' if ok else 'MISSED'}  {text}")

    if ours and ours["leads_per_s"]:
        if pt and pt["leads_per_s"]:
            ratio = ours["leads_per_s"] / pt["leads_per_s"]
            say(ratio >= 1.8, f"ours / pt-archiver row mode = {ratio:.2f}x (target >= 1.8x)")
        if bare and bare["leads_per_s"]:
            ratio = ours["leads_per_s"] / bare["leads_per_s"]
            say(ratio >= 0.75, f"ours / bare verified SQL = {ratio:.2f}x (target >= 0.75x)")
        say(ours["p99_ms"] <= 20, f"ours dialer p99 {ours['p99_ms']:.1f} ms (target <= 20 ms)")
    mine = [r for r in runs if r.tool == "ours"]
    if mine:
        lost = sum(r.lost or 0 for r in mine)
        bad = sum(r.corrupted + r.vanished + r.others_gone for r in mine)
        modes = "/".join(r.mode for r in mine)
        say(lost == 0 and bad == 0, f"ours lost {lost}, corrupted {bad} ({modes})")
    lines += selection_verdicts(by, runs)
    if len(scale) >= 2:
        first, last = scale[0], scale[-1]
        bare_growth = last.bare_median_ms / first.bare_median_ms
        ours_growth = last.ours_median_ms / first.ours_median_ms
        say(
            ours_growth <= bare_growth,
            f"batch time growth {first.size:,} -> {last.size:,}: ours {ours_growth:.2f}x,"
            f" bare {bare_growth:.2f}x (target: no worse than bare)",
        )
    return lines


def selection_verdicts(by: dict[str, dict[str, Any]], runs: list[Run]) -> list[str]:
    """Issue 14's targets for the selection, each met or missed, with the figures."""
    sel, bare, pt = by.get("selection"), by.get("bare"), by.get("pt-row")
    lines = []

    def say(ok: bool, text: str) -> None:
        lines.append(f"{'met   ' if ok else 'MISSED'}  {text}")

    if sel and sel["leads_per_s"]:
        if pt and pt["leads_per_s"]:
            ratio = sel["leads_per_s"] / pt["leads_per_s"]
            say(ratio >= 2.5, f"selection / pt-archiver row mode = {ratio:.2f}x (target >= 2.5x)")
        if bare and bare["leads_per_s"]:
            ratio = sel["leads_per_s"] / bare["leads_per_s"]
            say(ratio >= 0.9, f"selection / bare verified SQL = {ratio:.2f}x (target >= 0.9x)")
        say(
            sel["p99_ms"] <= 10,
            f"selection dialer p99 {sel['p99_ms']:.1f} ms from the due time, svc p99"
            f" {fmt(sel['svc_p99_ms'])} ms (target <= 10 ms)",
        )
    mine = [r for r in runs if r.tool == "selection"]
    if mine:
        lost = sum(r.lost or 0 for r in mine)
        bad = sum(r.corrupted + r.vanished + r.others_gone for r in mine)
        modes = "/".join(r.mode for r in mine)
        say(lost == 0 and bad == 0, f"selection lost {lost}, corrupted {bad} ({modes})")
    return lines


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def name_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = set(names) - set(choices)
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(sorted(unknown))}")
        return names

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--leads", type=int, default=1_000_000, help="leads in vicidial_list")
    parser.add_argument("--archive", type=int, default=200_000, help="leads archived per run")
    parser.add_argument("--tools", type=name_list(TOOLS), default=list(TOOLS))
    parser.add_argument("--modes", type=name_list(MODES), default=list(MODES))
    parser.add_argument(
        "--scaling",
        type=int_list,
        default=[10_000, 100_000, 1_000_000, 5_000_000],
        help="sizes for the batch-time part ('' to skip)",
    )
    parser.add_argument("--scaling-batches", type=int, default=20, help="per side and size")
    parser.add_argument("--chunk-time-ms", type=float, default=5.0, help="scaling: ours' tuning")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (ours)")
    parser.add_argument("--writer-threads", type=int, default=16)
    parser.add_argument("--writer-rate", type=float, default=200.0, help="updates/s in all")
    parser.add_argument("--aim-window", type=int, default=2 * BATCH, help="aimed: leads ahead")
    parser.add_argument("--probe-interval-ms", type=float, default=5.0)
    parser.add_argument(
        "--poll-s", type=float, default=1.0, help="selection: seconds between status polls"
    )
    parser.add_argument(
        "--walk-batch", type=int, default=BATCH, help="selection-walk: leads per batch"
    )
    parser.add_argument(
        "--walk-one-delete",
        action="store_true",
        help="selection-walk: each batch's deletes in one statement, no pause (no dialer care)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", default=DEFAULT_URL, help="MariaDB server URL, no database")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="Redis server URL, no database")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    if not 0 < args.archive <= args.leads * 0.9 - BATCH:
        parser.error("--archive must be positive and leave 10 % of --leads to the probe")
    if any(t.startswith("pt-") for t in args.tools) and not shutil.which("pt-archiver"):
        parser.error("pt-archiver is not installed (apt-get install percona-toolkit)")
    if set(SERVICE_TOOLS) & set(args.tools) and not CLI.exists():
        parser.error(f"{CLI} not found: run with the project's virtualenv python")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Console(width=None if sys.stdout.isatty() else 200)
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    runs: list[Run] = []
    scale: list[CostRow] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(cleanup_on_signals())
        redis_db, rclient = claim_redis_db(args.redis_url)
        stack.callback(rclient.close)
        stack.callback(rclient.flushdb)
        stack.callback(log, f"flushed Redis database {redis_db}")
        server = make_engine(args.url)
        stack.callback(server.dispose)
        info = machine_info(server, rclient)
        results["machine"] = info
        url = scratch_database(stack, server, args.url, "leadarchive_bench_cmp")
        name = str(url.database)
        db_url = url.render_as_string(hide_password=False)
        engine = make_engine(db_url, pool_size=4)
        stack.callback(engine.dispose)
        log(f"database {name}, Redis database {redis_db}; loading {args.leads:,} leads")
        started = time.perf_counter()
        data = load(url, engine, args.leads, args.archive, args.seed)
        results["load_seconds"] = round(time.perf_counter() - started, 1)
        log(f"loaded in {results['load_seconds']} s")

        tools: dict[str, Callable[[Dataset], ToolOutcome]] = {
            "selection-walk": SelectionWalk(
                rclient, args.walk_batch, ONE_DELETE if args.walk_one_delete else Tuning()
            ),
            "engine": run_engine,
            "restore": Restore(),
            "bare": run_bare,
            "recipe": run_recipe,
            **{t: pt_tool(t) for t in PT_OPTIONS},
        }
        if set(SERVICE_TOOLS) & set(args.tools):
            redis_url = f"{args.redis_url.rstrip('/')}/{redis_db}"
            services = launch_services(
                stack,
                db_url,
                redis_url,
                concurrency=args.concurrency,
                unused_lead_id=args.leads * 10,
            )
            results["logs"] = str(services.logs)
            tools["ours"] = Ours(
                port=services.port,
                key=services.key,
                env=services.env,
                api=services.api,
                worker=services.worker,
                folder=Path(tempfile.mkdtemp(prefix="leadarchive-bench-cmp-")),
                redis=rclient,
            )
            tools["selection"] = BySelection(
                port=services.port,
                key=services.key,
                api=services.api,
                worker=services.worker,
                poll_s=args.poll_s,
            )
        seeds = itertools.count(args.seed * 7919)
        progress: dict[str, list[tuple[float, int]]] = {}
        for mode in args.modes:
            for tool in args.tools:
                runs.append(one_run(data, server, name, tool, tools[tool], mode, args, next(seeds)))
                watched = tools[tool]
                if isinstance(watched, BySelection) and watched.last is not None:
                    progress[mode] = watched.last.samples
        results["selection_progress"] = progress
        if args.scaling:
            scale = scaling(data, name, args)
        results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    rows = summary_rows(runs, args.tools)
    out.print(main_table(rows, args))
    out.print(runs_table(runs))
    if scale:
        out.print(scaling_table(scale))
        out.print(
            cost_table(
                scale,
                argparse.Namespace(
                    batch_size=BATCH,
                    batches=args.scaling_batches,
                    chunk_time_ms=args.chunk_time_ms,
                    pt_archiver=False,
                ),
            )
        )
    lines = verdicts(rows, runs, scale)
    for line in lines:
        out.print(line, highlight=False)
    out.print(
        f"{info['date']}  {info['cores']} cores ({info['cpu']}), {info['memory_gb']} GB,"
        f" Python {info['python']}, MariaDB {info['mariadb']}, Redis {info['redis']};"
        f" code {info['commit']}; load average at start {info['load_average_at_start']},"
        f" at end {results['load_average_at_end']}",
        highlight=False,
    )
    if args.json:
        results.update(
            summary=rows,
            runs=[asdict(r) for r in runs],
            scaling=[asdict(r) for r in scale],
            verdicts=lines,
        )
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
