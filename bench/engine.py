"""Benchmark the archive engine against the bare verified SQL and against the dialer's latency.

What it measures, on MyISAM tables in a throw-away database ``leadarchive_bench_<random>``
(utf8 / utf8_unicode_ci like a stock Vicidial install), dropped at the end even on error:

1. **Cost ratio**, for every size in ``--sizes``: ``vicidial_list`` is loaded with that many seeded
   leads, then 500-lead batches of randomly chosen lead IDs are archived and deleted, alternating
   batch by batch (ABAB...) between

   a. the *bare verified SQL*: one autocommit session in strict mode and UTC, three 500-row
      statements (``INSERT ... SELECT``; ``UPDATE ... JOIN`` of every column where the copy differs;
      ``DELETE ... JOIN`` guarded by every column equal, NULL-safe and byte-exact), and
   b. ours: ``run_batch(..., Actions(insert=True, update=True, delete=True))``.

   After every timed batch the leads are moved back (untimed), so every batch sees the same table:
   ``size`` live leads and an empty archive. The table's checksum is compared before and after.
   Reported: leads/s of each and the ratio of ours to bare time (target: at most 1.25x), and where
   the time goes, statement by statement (ours is timed by a ``StatementTimer``, the observer
   ``run_batch`` tells each statement it sends and its duration).

2. **Dialer impact**, at the largest size: a probe on its own connection reads one random lead by
   primary key and updates another (``called_count``, ``last_local_call_time``) every 5 ms, on
   leads the batches never touch (``lead_id % 10 = 0``). Phases, each ``--phase-seconds`` long:
   C the probe alone; A the bare verified SQL in 500-row statements back to back; B ours back to
   back (one phase per chunk time with ``--sweep``); P ``pt-archiver --limit 1`` with
   ``--pt-archiver``. With ``--rounds N`` the whole sequence runs N times in turn, so that drift
   and other load on a shared machine spread evenly over the phases. Reported: leads/s, ours/bare
   speed (target: at least 0.75x), the probe's p50/p99/max latency of the read+update pair
   (target p99: at most 20 ms), the *stall* (its longest single pair), each statement's own
   p99, and each *hold* of ``vicidial_list`` (a stretch in which the dialer's writes must wait:
   one statement on the table, or a ``LOCK TABLES`` span). The pair's latency runs from the time
   its 5 ms slot was due (``Schedule``), and no slot is skipped: a pair that a hold keeps waiting
   for 100 ms delays the 20 slots due meanwhile, which the probe then serves back to back, each
   charged from its own due time. (Before issue 11 the probe skipped the slots it missed and
   timed each pair from its start: a lower bound, now the ``service_p99_ms`` of the JSON.)

Every figure carries the *noise* it was taken in: CPU used meanwhile by processes other than the
benchmark and MariaDB, and statements of other clients running on the server.

The probe runs in a separate process by default, so that the benchmark's own Python work (the GIL)
never shows up as dialer latency; ``--probe-thread`` runs it as a thread of this process instead.

Run it from the repository root::

    .venv/bin/python bench/engine.py                                  # 10k, 100k, 1M leads
    .venv/bin/python bench/engine.py --sizes 10000 --phase-seconds 5  # a quick check
    .venv/bin/python bench/engine.py --sweep --pt-archiver --json /tmp/bench.json
    .venv/bin/python bench/engine.py --sizes 1000000 --cron-user      # ours on the locked path

``--cron-user`` runs ours as a new user with the grants of Vicidial's stock ``cron`` (no CREATE
TEMPORARY TABLES), so that ``run_batch`` takes MyISAM's locked path; the user is dropped at the end.

``LEADARCHIVE_BENCH_MYSQL_URL`` (or ``--url``) points it at another server; the default is root
with no password on 127.0.0.1:3306. Loading a million leads takes about two minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import platform
import queue
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pymysql
from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy import URL, Connection, Engine, make_url

from tasks import archive
from tasks.archive import SNAPSHOT, SQL_MODE, Actions, Tuning, q, run_batch
from tasks.archive.sql import Statements
from tasks.db import make_engine
from tasks.ddl import create_vicidial_tables, drop_vicidial_tables
from tasks.schema import ARCHIVE_TABLE, LIVE_TABLE, TablePair, inspect_tables
from tasks.seed import insert_leads, lead_rows
from testkit.servers import CRON_GRANTS, mysql_connect, mysql_user

DEFAULT_URL = os.environ.get("LEADARCHIVE_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
# The probe owns every lead whose ID is a multiple of this; the batches take all the others.
PROBE_STRIDE = 10
SWEEP_DEFAULT = "2,5,10,20"
ALL_ACTIONS = Actions(insert=True, update=True, delete=True)

PROBE_READ = f"SELECT * FROM {q(LIVE_TABLE)} WHERE lead_id = %s"
# What the dialer does after a call; wraps instead of overflowing the SMALLINT UNSIGNED.
PROBE_UPDATE = (
    f"UPDATE {q(LIVE_TABLE)} SET called_count = IF(called_count < 65535, called_count + 1, 0),"
    " last_local_call_time = NOW() WHERE lead_id = %s"
)

err = Console(stderr=True)


def log(message: str) -> None:
    err.log(message)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def id_list(ids: Sequence[int]) -> str:
    return ",".join(str(int(i)) for i in ids)


# --------------------------------------------------------------------------------------------
# What each side runs
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Breakdown:
    """Time per kind of statement, and how long each table lock was held."""

    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    holds: list[float] = field(default_factory=list)
    chunk_leads: list[int] = field(default_factory=list)
    batches: int = 0
    wall: float = 0.0

    def add(self, kind: str, seconds: float) -> None:
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def per_batch_ms(self) -> dict[str, float]:
        """Mean milliseconds per batch for each kind, the rest of the wall time as ``python``."""
        if not self.batches:
            return {}
        result = {k: ms(v / self.batches) for k, v in self.seconds.items()}
        result["python"] = ms((self.wall - sum(self.seconds.values())) / self.batches)
        return result


class BareVerifiedSQL:
    """The orientation baseline: three statements per batch, no lock, no state read first."""

    def __init__(self, pair: TablePair) -> None:
        columns = pair.columns
        names = ", ".join(q(c.name) for c in columns)
        # The engine's own comparison (tasks.archive.sql.same for every column, NULL-safe and
        # byte-exact), so both sides verify exactly the same thing.
        equal = Statements(pair).identical
        assignments = ", ".join(
            f"a.{q(c.name)} = l.{q(c.name)}" for c in columns if c.name != "lead_id"
        )
        live, arch = q(LIVE_TABLE), q(ARCHIVE_TABLE)
        self.insert = (
            f"INSERT INTO {arch} ({names}) SELECT {names} FROM {live} WHERE lead_id IN ({{ids}})"
        )
        self.update = (
            f"UPDATE {arch} AS a JOIN {live} AS l ON l.lead_id = a.lead_id SET {assignments}"
            f" WHERE a.lead_id IN ({{ids}}) AND NOT {equal}"
        )
        self.delete = (
            f"DELETE l FROM {live} AS l JOIN {arch} AS a ON a.lead_id = l.lead_id"
            f" WHERE l.lead_id IN ({{ids}}) AND {equal}"
        )

    @staticmethod
    def open_session(dbapi_cursor: Any) -> None:
        dbapi_cursor.execute(f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00'")

    def run(
        self, cursor: Any, ids: Sequence[int], breakdown: Breakdown, *, strict: bool = True
    ) -> int:
        """Archive and delete ``ids``; how many were deleted.

        ``strict``: every lead must be inserted and deleted (nobody else writes meanwhile).
        Otherwise a lead that changed after its copy stays live, as the guard wants.
        """
        deleted = 0
        started = time.perf_counter()
        listed = id_list(ids)
        for kind, template in (
            ("insert", self.insert),
            ("update", self.update),
            ("delete", self.delete),
        ):
            t0 = time.perf_counter()
            cursor.execute(template.format(ids=listed))
            spent = time.perf_counter() - t0
            breakdown.add(kind, spent)
            breakdown.holds.append(spent)
            if kind == "delete":
                breakdown.chunk_leads.append(len(ids))
            if cursor.warning_count:
                raise RuntimeError(f"bare {kind} warned ({cursor.warning_count} warnings)")
            if strict and kind != "update" and cursor.rowcount != len(ids):
                raise RuntimeError(f"bare {kind} touched {cursor.rowcount} of {len(ids)} leads")
            if kind == "delete":
                deleted = int(cursor.rowcount)
        breakdown.batches += 1
        breakdown.wall += time.perf_counter() - started
        return deleted


LIVE_REF = q(LIVE_TABLE)  # `vicidial_list`; the archive is `vicidial_list_archive`
SNAPSHOT_REF = SNAPSHOT
ID_LIST = re.compile(r"lead_id IN \(([\d,]+)\)")


def statement_kind(sql: str) -> str:
    """Name a statement of ``run_batch`` for the breakdown."""
    if sql.startswith("LOCK TABLES"):
        return "lock" if LIVE_REF in sql else "lock archive"
    if sql.startswith("UNLOCK TABLES"):
        return "unlock"
    if sql.startswith("SHOW CREATE TABLE"):
        return "inspect"
    if "GET_LOCK(" in sql or "RELEASE_LOCK(" in sql:
        return "named lock"
    if sql.startswith("INSERT INTO " + SNAPSHOT_REF):
        return "snapshot read"
    if "TEMPORARY TABLE" in sql or sql.startswith("DELETE FROM " + SNAPSHOT_REF):
        return "setup"
    for prefix, kind in (
        ("SELECT", "read state"),
        ("INSERT", "insert"),
        ("UPDATE", "update"),
        ("DELETE", "delete"),
        ("SET ", "session"),
        ("PRAGMA", "session"),
    ):
        if sql.startswith(prefix):
            return kind
    return "other sql"


class StatementTimer:
    """Times every statement ``run_batch`` sends (its ``observer``), into a ``Breakdown``.

    A *hold* is a stretch during which the batch keeps ``vicidial_list`` locked, so that the
    dialer's writes wait: from ``LOCK TABLES`` naming it to ``UNLOCK TABLES``, or else one
    statement that reads or writes it (MyISAM locks the table for the whole statement).
    """

    def __init__(self, breakdown: Breakdown) -> None:
        self.breakdown = breakdown
        self.locked_at: float | None = None

    def statement(self, sql: str, seconds: float) -> None:
        now = time.perf_counter()
        breakdown = self.breakdown
        kind = statement_kind(sql)
        breakdown.add(kind, seconds)
        if kind == "lock":
            self.locked_at = now
        elif kind == "unlock":
            if self.locked_at is not None:
                breakdown.holds.append(now - self.locked_at)
            self.locked_at = None
        elif self.locked_at is None and LIVE_REF in sql:
            breakdown.holds.append(seconds)
        if kind == "delete" and sql.startswith("DELETE l "):
            found = ID_LIST.search(sql)
            if found:
                breakdown.chunk_leads.append(found.group(1).count(",") + 1)


def run_ours(conn: Connection, ids: Sequence[int], tuning: Tuning, breakdown: Breakdown) -> None:
    """Archive and delete ``ids`` with the engine, each statement timed; every lead must go."""
    started = time.perf_counter()
    report = run_batch(conn, ids, ALL_ACTIONS, tuning, observer=StatementTimer(breakdown))
    breakdown.wall += time.perf_counter() - started
    breakdown.batches += 1
    deleted = report.counts["delete"]["deleted"]
    if deleted != len(ids):
        raise RuntimeError(f"run_batch deleted {deleted} of {len(ids)} leads: {report.counts}")


# --------------------------------------------------------------------------------------------
# pt-archiver (optional reference)
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class PtArchiverRun:
    leads: int
    wall: float
    internal: float
    returncode: int = 0
    error: str = ""
    cpu_seconds: float = 0.0  # pt-archiver's own CPU (user + system)
    output: str = ""


# One row at a time, as pt-archiver does by default: copy, then delete, one lead at a time.
PT_ROW_BY_ROW = ("--limit", "1", "--commit-each")


def pt_archiver(
    url: URL,
    where: str,
    *,
    run_time: float | None = None,
    options: Sequence[str] = PT_ROW_BY_ROW,
    dsn_charset: str | None = "utf8",
    check: bool = True,
) -> PtArchiverRun:
    """Run pt-archiver from ``vicidial_list`` to the archive on the leads matching ``where``.

    ``dsn_charset`` goes into the source DSN (``A=``); ``options`` are added as given. With
    ``check`` a non-zero exit raises, otherwise the run reports it.
    """
    dsn = f"h={url.host or '127.0.0.1'},P={url.port or 3306},u={url.username or 'root'}"
    if url.password:
        dsn += f",p={url.password}"
    dsn += f",D={url.database}"
    if dsn_charset:
        dsn += f",A={dsn_charset}"
    command = [
        "pt-archiver",
        "--source",
        f"{dsn},t={LIVE_TABLE}",
        "--dest",
        f"t={ARCHIVE_TABLE}",
        "--where",
        where,
        *options,
        "--no-safe-auto-increment",
        "--statistics",
    ]
    if run_time is not None:
        command += ["--run-time", f"{max(1, round(run_time))}s"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    error = (done.stderr.strip() or done.stdout.strip()) if done.returncode else ""
    if done.returncode != 0 and check:
        raise RuntimeError(f"pt-archiver failed: {error}")
    deleted = re.search(r"^DELETE (\d+)$", done.stdout, re.MULTILINE)
    actions = re.findall(r"^\w+\s+\d+\s+(-?[\d.]+)\s+-?[\d.]+$", done.stdout, re.MULTILINE)
    return PtArchiverRun(
        leads=int(deleted.group(1)) if deleted else 0,
        wall=wall,
        internal=sum(float(a) for a in actions) or wall,
        returncode=done.returncode,
        error=error,
        cpu_seconds=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        output=done.stdout + done.stderr,
    )


# --------------------------------------------------------------------------------------------
# The probe: the dialer's view
# --------------------------------------------------------------------------------------------


class Flag(Protocol):
    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class Outbox(Protocol):
    def put(self, obj: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class Schedule:
    """An open-loop schedule: slot ``k`` is due at ``start + k * period``, whatever happened before.

    A slot's latency runs from the time it was due, not from when it could start, so an answer
    that comes late is charged for every slot it delayed (no coordinated omission). Used by the
    dialer probe below and by ``bench/api.py``'s submission load (wrk2-style).
    """

    start: float
    period: float

    def due(self, k: int) -> float:
        return self.start + k * self.period

    def latency(self, k: int, done: float) -> float:
        return done - self.due(k)


class Until(Protocol):
    value: float


@dataclass(slots=True)
class Deadline:
    """``Until`` for a probe thread (a probe process gets a ``multiprocessing.Value``)."""

    value: float = math.inf


@dataclass(slots=True)
class ProbeSamples:
    """What the probe saw, per slot of its schedule (time.monotonic(), shared by processes)."""

    due: list[float] = field(default_factory=list)  # when each slot was due
    late: list[float] = field(default_factory=list)  # its pair's end - due: stalls counted
    pair: list[float] = field(default_factory=list)  # the pair's own time (service), no wait
    read: list[float] = field(default_factory=list)
    update: list[float] = field(default_factory=list)
    errors: int = 0
    error: str = ""
    unserved: int = 0  # slots due before the stop that the probe gave up on (late: a floor)

    def window(self, start: float, end: float) -> ProbeSamples:
        """The slots due from ``start`` to ``end``."""
        keep = [i for i, due in enumerate(self.due) if start <= due <= end]
        return ProbeSamples(
            due=[self.due[i] for i in keep],
            late=[self.late[i] for i in keep],
            pair=[self.pair[i] for i in keep if not math.isnan(self.pair[i])],
            read=[self.read[i] for i in keep if not math.isnan(self.read[i])],
            update=[self.update[i] for i in keep if not math.isnan(self.update[i])],
            errors=self.errors,
            error=self.error,
            unserved=self.unserved,
        )

    @classmethod
    def merged(cls, parts: Sequence[ProbeSamples]) -> ProbeSamples:
        return cls(
            due=[x for p in parts for x in p.due],
            late=[x for p in parts for x in p.late],
            pair=[x for p in parts for x in p.pair],
            read=[x for p in parts for x in p.read],
            update=[x for p in parts for x in p.update],
            errors=sum(p.errors for p in parts),
            error=next((p.error for p in parts if p.error), ""),
            unserved=sum(p.unserved for p in parts),
        )


CATCH_UP_SECONDS = 30.0  # after the stop, how long the probe serves the slots already due


def probe_loop(
    url: str,
    size: int,
    interval: float,
    seed: int,
    ready: Flag,
    until: Until,
    outbox: Outbox,
) -> None:
    """Read one probe lead and update another for every slot of a ``Schedule`` of ``interval``,
    until the slots due by ``until.value`` (``time.monotonic()``) are served.

    A slot starts when it is due, or as soon as the previous pair ends if that is later (one
    connection, like one dialer process): after a stall the probe catches up with the slots it
    owes instead of skipping them, and each slot's latency runs from when it was due.
    """
    samples = ProbeSamples()
    try:
        conn = mysql_connect(url)
    except Exception as exc:  # reported to the parent, which fails the run
        samples.error = repr(exc)
        ready.set()
        outbox.put(samples)
        return
    rng = random.Random(seed)
    top = size // PROBE_STRIDE
    cursor = conn.cursor()
    schedule = Schedule(time.monotonic(), interval)
    ready.set()
    k = 0
    try:
        while (due := schedule.due(k)) <= until.value:
            now = time.monotonic()
            if due > now:
                time.sleep(min(due - now, 0.05))
                continue  # sleep in short steps, so that a stop is seen at once
            if now > until.value + CATCH_UP_SECONDS:
                # Give up on the rest, charging each at least the time it waited so far.
                while (due := schedule.due(k)) <= until.value:
                    samples.due.append(due)
                    samples.late.append(now - due)
                    for values in (samples.pair, samples.read, samples.update):
                        values.append(math.nan)
                    samples.unserved += 1
                    k += 1
                break
            read_id = rng.randint(1, top) * PROBE_STRIDE
            update_id = rng.randint(1, top) * PROBE_STRIDE
            t0 = time.monotonic()
            try:
                cursor.execute(PROBE_READ, (read_id,))
                cursor.fetchall()
                t1 = time.monotonic()
                cursor.execute(PROBE_UPDATE, (update_id,))
                t2 = time.monotonic()
            except pymysql.MySQLError as exc:
                samples.errors += 1
                samples.error = repr(exc)
                t2 = time.monotonic()
                samples.read.append(math.nan)
                samples.update.append(math.nan)
                samples.pair.append(math.nan)
            else:
                samples.read.append(t1 - t0)
                samples.update.append(t2 - t1)
                samples.pair.append(t2 - t0)
            samples.due.append(due)
            samples.late.append(schedule.latency(k, t2))
            k += 1
    finally:
        conn.close()
        outbox.put(samples)


class Probe:
    """Runs ``probe_loop`` in a child process (default) or a thread, for one phase.

    ``record(True)`` and ``record(False)`` mark the measured window; ``finish`` stops the probe
    once it has served every slot due in the window, and returns those slots.
    """

    def __init__(self, url: str, size: int, interval: float, seed: int, *, thread: bool) -> None:
        args: tuple[Any, ...]
        self.samples: ProbeSamples | None = None
        self.window = (math.inf, math.inf)
        if thread:
            self.ready: Flag = threading.Event()
            self.until: Until = Deadline()
            self.outbox: Any = queue.Queue()
            args = (url, size, interval, seed, self.ready, self.until)
            self.worker: Any = threading.Thread(
                target=probe_loop, args=(*args, self.outbox), daemon=True
            )
        else:
            ctx = multiprocessing.get_context("spawn")
            self.ready = ctx.Event()
            self.until = ctx.Value("d", math.inf, lock=False)
            self.outbox = ctx.Queue()
            args = (url, size, interval, seed, self.ready, self.until)
            self.worker = ctx.Process(target=probe_loop, args=(*args, self.outbox), daemon=True)

    def __enter__(self) -> Probe:
        self.worker.start()
        if not self.ready.wait(60):
            raise RuntimeError("the probe did not start")
        time.sleep(0.5)  # let it settle into its schedule
        return self

    def __exit__(self, *exc: object) -> None:
        self.until.value = min(self.until.value, time.monotonic())
        if self.samples is None:
            self.samples = self.outbox.get(timeout=CATCH_UP_SECONDS + 30)
        self.worker.join(30)
        if self.worker.is_alive() and isinstance(self.worker, multiprocessing.process.BaseProcess):
            self.worker.terminate()

    def record(self, on: bool) -> None:
        """Start (``True``) or end the measured window: the slots due meanwhile."""
        now = time.monotonic()
        self.window = (now, math.inf) if on else (self.window[0], now)

    def finish(self) -> ProbeSamples:
        """Stop the probe once every slot due in the window is served; those slots."""
        start, end = self.window
        if math.isinf(end):
            end = time.monotonic()
        self.until.value = end
        self.samples = self.outbox.get(timeout=CATCH_UP_SECONDS + 30)
        if self.samples.error and not any(not math.isnan(x) for x in self.samples.pair):
            raise RuntimeError(f"the probe failed: {self.samples.error}")
        return self.samples.window(start, end)


@dataclass(slots=True)
class ProbeStats:
    """The probe's figures. ``pair_*`` run from each slot's due time (stalls counted: a slot the
    probe could not start because an earlier pair was blocked waits too); ``stall`` is the
    longest single pair, ``service_p99`` the p99 of the pairs' own times (the probe's p99 before
    issue 11, which left out the slots a stall delayed), ``read_*`` / ``update_*`` each
    statement's own time."""

    ops: int  # slots due in the window, every one counted
    errors: int
    pair_p50_ms: float
    pair_p99_ms: float
    pair_max_ms: float
    stall_ms: float
    service_p99_ms: float
    read_p50_ms: float
    read_p99_ms: float
    read_max_ms: float
    update_p50_ms: float
    update_p99_ms: float
    update_max_ms: float
    unserved: int = 0

    @classmethod
    def of(cls, s: ProbeSamples) -> ProbeStats:
        return cls(
            ops=len(s.late),
            errors=s.errors,
            pair_p50_ms=ms(percentile(s.late, 50)),
            pair_p99_ms=ms(percentile(s.late, 99)),
            pair_max_ms=ms(max(s.late, default=math.nan)),
            stall_ms=ms(max(s.pair, default=math.nan)),
            service_p99_ms=ms(percentile(s.pair, 99)),
            read_p50_ms=ms(percentile(s.read, 50)),
            read_p99_ms=ms(percentile(s.read, 99)),
            read_max_ms=ms(max(s.read, default=math.nan)),
            update_p50_ms=ms(percentile(s.update, 50)),
            update_p99_ms=ms(percentile(s.update, 99)),
            update_max_ms=ms(max(s.update, default=math.nan)),
            unserved=s.unserved,
        )


# --------------------------------------------------------------------------------------------
# Noise: what else the shared machine and server were doing meanwhile
# --------------------------------------------------------------------------------------------


def _cpu_ticks(pid: int | str, children: bool = False) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # After the command: state is fields[0]; utime, stime, cutime, cstime are fields 11..14.
    return sum(int(f) for f in fields[11 : 15 if children else 13])


def _busy_ticks() -> int:
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(v) for v in first[:8]]
    return sum(values) - values[3] - values[4]  # all but idle and iowait


def _server_pids() -> list[str]:
    return [
        p.name
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _read(p / "comm") in ("mariadbd", "mysqld")
    ]


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@dataclass(slots=True)
class NoiseStats:
    other_cpu_pct: float
    foreign_queries: float
    foreign_databases: list[str]


class Noise:
    """Measures CPU used by neither this benchmark nor the server, and other clients' queries.

    The machine and the MariaDB server may be shared (other test suites, installs); a figure
    taken while they are busy is not comparable, so every result carries this.
    """

    def __init__(self, engine: Engine, database: str) -> None:
        self.engine = engine
        self.database = database
        self.stop = threading.Event()
        self.samples: list[int] = []
        self.databases: set[str] = set()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.stats = NoiseStats(math.nan, math.nan, [])

    def _snapshot(self) -> tuple[float, int, int, int]:
        server = sum(_cpu_ticks(pid) for pid in self.server_pids)
        return time.monotonic(), _busy_ticks(), _cpu_ticks("self", children=True), server

    def _sample(self) -> None:
        query = (
            "SELECT DB FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()"
            " AND COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump')"
            " AND (DB IS NULL OR DB <> %s)"
        )
        with self.engine.connect() as conn:
            while not self.stop.wait(0.25):
                rows = conn.exec_driver_sql(query, (self.database,)).all()
                self.samples.append(len(rows))
                self.databases.update(str(r[0]) for r in rows if r[0])

    def __enter__(self) -> Noise:
        self.server_pids = _server_pids()
        self.start = self._snapshot()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        end = self._snapshot()
        elapsed, busy, own, server = (b - a for a, b in zip(self.start, end, strict=True))
        capacity = elapsed * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
        other = max(0.0, busy - own - server) / capacity * 100 if capacity else math.nan
        self.stats = NoiseStats(
            other_cpu_pct=round(other, 1),
            foreign_queries=round(statistics.mean(self.samples), 2) if self.samples else 0.0,
            foreign_databases=sorted(self.databases)[:5],
        )


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class PhaseRun:
    """One run of one dialer phase."""

    leads: int
    seconds: float
    breakdown: Breakdown
    samples: ProbeSamples
    noise: NoiseStats


Workload = Callable[[float], tuple[int, float, Breakdown | None]]


@dataclass(slots=True)
class CostRow:
    size: int
    load_seconds: float
    batches: int
    batch_size: int
    bare_leads_per_s: float
    ours_leads_per_s: float
    ratio_ours_to_bare_time: float
    bare_median_ms: float
    ours_median_ms: float
    ours_holds_per_batch: float
    ours_lock_hold_p99_ms: float
    bare_statement_p99_ms: float
    data_intact: bool
    noise: NoiseStats
    bare_breakdown_ms: dict[str, float]
    ours_breakdown_ms: dict[str, float]
    pt_archiver_leads_per_s: float | None = None
    pt_archiver_wall_leads_per_s: float | None = None


@dataclass(slots=True)
class PhaseRow:
    phase: str
    workload: str
    chunk_time_ms: float | None
    seconds: float
    leads: int
    leads_per_s: float
    vs_bare: float | None
    probe: ProbeStats
    lock_hold_p99_ms: float | None
    lock_hold_max_ms: float | None
    holds_per_batch: float | None
    mean_chunk_leads: float | None
    noise: NoiseStats


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Bench:
    args: argparse.Namespace
    url: URL
    database: str
    engine: Engine
    rng: random.Random
    pair: TablePair | None = None
    size: int = 0
    # Ours' connections (``--cron-user``: a user without CREATE TEMPORARY TABLES); the engine's
    # own when None.
    ours_engine: Engine | None = None

    @property
    def ours(self) -> Engine:
        return self.ours_engine or self.engine

    # ---- data ------------------------------------------------------------------------------

    def load(self, size: int) -> float:
        started = time.perf_counter()
        with self.engine.connect() as conn:
            drop_vicidial_tables(conn)
            create_vicidial_tables(conn, "MyISAM")
            insert_leads(conn, lead_rows(size, first_lead_id=1, seed=1))
            self.load_dialer(conn, size)
            self.pair = inspect_tables(conn)
        self.size = size
        return time.perf_counter() - started

    def load_dialer(self, conn: Connection, size: int) -> None:
        """The dialer's other tables as a busy call center fills them (``--agents``,
        ``--callbacks``): agents in calls, previewing or waiting, and scheduled callbacks, some
        done. Every lead they name is the probe's (never a batch's), so the in-use checks run on
        every lead of every batch and hold none of them: what they cost, not what they keep."""
        rng = random.Random(self.args.seed)
        probe_leads = range(PROBE_STRIDE, size + 1, PROBE_STRIDE)
        agents = [
            (f"agent{n:04d}", "10.0.0.5", status, lead, preview, "BENCH")
            for n in range(self.args.agents)
            for status, lead, preview in [
                rng.choice(
                    [
                        ("INCALL", rng.choice(probe_leads), 0),
                        ("PAUSED", 0, rng.choice(probe_leads)),  # previewing before dialing
                        ("READY", 0, 0),
                    ]
                )
            ]
        ]
        callbacks = [
            (
                rng.choice(probe_leads),
                1,
                "BENCH",
                rng.choice(("ACTIVE", "ACTIVE", "LIVE", "INACTIVE", "INACTIVE")),
                "2026-11-30 10:00:00",
                "2026-12-02 10:00:00",
                "6666",
                "USERONLY",
            )
            for _ in range(self.args.callbacks)
        ]
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None  # noqa: S101 - a live Connection always has one
        cursor = dbapi.cursor()
        cursor.executemany(
            "INSERT INTO vicidial_live_agents"
            " (user, server_ip, status, lead_id, preview_lead_id, campaign_id)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            agents,
        )
        cursor.executemany(
            "INSERT INTO vicidial_callbacks (lead_id, list_id, campaign_id, status, entry_time,"
            " callback_time, user, recipient) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            callbacks,
        )

    @property
    def tables(self) -> TablePair:
        if self.pair is None:
            raise RuntimeError("no tables loaded yet")
        return self.pair

    def batch_pool(self) -> list[int]:
        return [i for i in range(1, self.size + 1) if i % PROBE_STRIDE]

    def admin(self, sql: str) -> tuple[int, list[tuple[Any, ...]]]:
        with self.engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None  # noqa: S101 - a live Connection always has one
            cursor = dbapi.cursor()
            cursor.execute(f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00'")
            cursor.execute(sql)
            if cursor.warning_count:
                raise RuntimeError(f"warning on {sql[:60]}")
            return int(cursor.rowcount), list(cursor.fetchall())

    def restore(self, ids: Sequence[int] | None = None) -> None:
        """Move archived leads back to the live table (all of them when ``ids`` is None)."""
        names = ", ".join(q(c.name) for c in self.tables.columns)
        where = f" WHERE lead_id IN ({id_list(ids)})" if ids is not None else ""
        moved, _ = self.admin(
            f"INSERT INTO {q(LIVE_TABLE)} ({names}) SELECT {names} FROM {q(ARCHIVE_TABLE)}{where}"
        )
        removed, _ = self.admin(f"DELETE FROM {q(ARCHIVE_TABLE)}{where}")
        if moved != removed or (ids is not None and moved != len(ids)):
            raise RuntimeError(f"restore moved {moved} and removed {removed} leads")

    def checksum(self) -> tuple[int, int, int]:
        _, rows = self.admin(f"CHECKSUM TABLE {q(LIVE_TABLE)}")
        _, live = self.admin(f"SELECT COUNT(*) FROM {q(LIVE_TABLE)}")
        _, arch = self.admin(f"SELECT COUNT(*) FROM {q(ARCHIVE_TABLE)}")
        return int(rows[0][1]), int(live[0][0]), int(arch[0][0])

    def tuning(self, chunk_time_ms: float) -> Tuning:
        return Tuning(chunk_time=timedelta(milliseconds=chunk_time_ms))

    # ---- 1. cost ratio ---------------------------------------------------------------------

    def cost_ratio(self, load_seconds: float) -> CostRow:
        args = self.args
        pool = self.batch_pool()
        before = self.checksum()
        bare_bd, ours_bd = Breakdown(), Breakdown()
        bare_times: list[float] = []
        ours_times: list[float] = []
        pt_runs: list[PtArchiverRun] = []
        tuning = self.tuning(args.chunk_time_ms)
        noise = Noise(self.engine, self.database)
        with (
            noise,
            self.engine.connect() as bare_conn,
            self.ours.connect() as ours_conn,
        ):
            bare_dbapi = bare_conn.connection.dbapi_connection
            assert bare_dbapi is not None  # noqa: S101 - a live Connection always has one
            bare_cursor = bare_dbapi.cursor()
            BareVerifiedSQL.open_session(bare_cursor)
            bare = BareVerifiedSQL(self.tables)
            # One untimed pair first: table handles opened, key cache and statements warm.
            for index in range(1 + args.batches):
                warm = index == 0
                bd_bare = Breakdown() if warm else bare_bd
                bd_ours = Breakdown() if warm else ours_bd
                ids = sorted(self.rng.sample(pool, args.batch_size))
                t0 = time.perf_counter()
                bare.run(bare_cursor, ids, bd_bare)
                spent_bare = time.perf_counter() - t0
                self.restore(ids)
                ids = sorted(self.rng.sample(pool, args.batch_size))
                t0 = time.perf_counter()
                run_ours(ours_conn, ids, tuning, bd_ours)
                spent_ours = time.perf_counter() - t0
                self.restore(ids)
                if args.pt_archiver:
                    ids = sorted(self.rng.sample(pool, args.batch_size))
                    run = pt_archiver(self.url, f"lead_id IN ({id_list(ids)})")
                    if run.leads != len(ids):
                        raise RuntimeError(f"pt-archiver archived {run.leads} of {len(ids)}")
                    self.restore(ids)
                    if not warm:
                        pt_runs.append(run)
                if not warm:
                    bare_times.append(spent_bare)
                    ours_times.append(spent_ours)
        after = self.checksum()
        leads = args.batch_size * args.batches
        pt_internal = sum(r.internal for r in pt_runs)
        pt_wall = sum(r.wall for r in pt_runs)
        return CostRow(
            size=self.size,
            load_seconds=round(load_seconds, 1),
            batches=args.batches,
            batch_size=args.batch_size,
            bare_leads_per_s=round(leads / sum(bare_times)),
            ours_leads_per_s=round(leads / sum(ours_times)),
            ratio_ours_to_bare_time=round(sum(ours_times) / sum(bare_times), 3),
            bare_median_ms=ms(statistics.median(bare_times)),
            ours_median_ms=ms(statistics.median(ours_times)),
            ours_holds_per_batch=round(len(ours_bd.holds) / ours_bd.batches, 1),
            ours_lock_hold_p99_ms=ms(percentile(ours_bd.holds, 99)),
            bare_statement_p99_ms=ms(percentile(bare_bd.holds, 99)),
            data_intact=before == after and after[1] == self.size and after[2] == 0,
            noise=noise.stats,
            bare_breakdown_ms=bare_bd.per_batch_ms(),
            ours_breakdown_ms=ours_bd.per_batch_ms(),
            pt_archiver_leads_per_s=round(leads / pt_internal) if pt_runs else None,
            pt_archiver_wall_leads_per_s=round(leads / pt_wall) if pt_runs else None,
        )

    # ---- 2. dialer impact ------------------------------------------------------------------

    def back_to_back(
        self, step: Callable[[list[int]], object], seconds: float
    ) -> tuple[int, float, int]:
        """Run ``step`` on fresh 500-lead batches until ``seconds`` pass or the pool runs out."""
        pool = self.batch_pool()
        self.rng.shuffle(pool)
        size = self.args.batch_size
        done = batches = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds and done + size <= len(pool):
            step(sorted(pool[done : done + size]))
            done += size
            batches += 1
        return done, time.perf_counter() - started, batches

    def phase(self, label: str, workload: str, run: Workload | None) -> PhaseRun:
        """One phase: the probe running, and ``run`` back to back (or nothing) meanwhile."""
        seconds = self.args.phase_seconds
        log(f"[{self.size:,} leads] phase {label}: {workload}, {seconds:g} s")
        probe = Probe(
            self.url.render_as_string(hide_password=False),
            self.size,
            self.args.probe_interval_ms / 1000,
            seed=self.rng.randrange(2**31),
            thread=self.args.probe_thread,
        )
        noise = Noise(self.engine, self.database)
        with noise, probe:
            probe.record(True)
            if run is None:
                time.sleep(seconds)
                leads, elapsed, breakdown = 0, float(seconds), None
            else:
                leads, elapsed, breakdown = run(seconds)
            probe.record(False)
            samples = probe.finish()
        if run is not None:
            self.restore()
        return PhaseRun(leads, elapsed, breakdown or Breakdown(), samples, noise.stats)

    def run_bare(self, seconds: float) -> tuple[int, float, Breakdown]:
        breakdown = Breakdown()
        with self.engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None  # noqa: S101 - a live Connection always has one
            cursor = dbapi.cursor()
            BareVerifiedSQL.open_session(cursor)
            bare = BareVerifiedSQL(self.tables)
            leads, elapsed, _ = self.back_to_back(
                lambda ids: bare.run(cursor, ids, breakdown), seconds
            )
        return leads, elapsed, breakdown

    def run_ours(self, chunk_time_ms: float) -> Callable[[float], tuple[int, float, Breakdown]]:
        def run(seconds: float) -> tuple[int, float, Breakdown]:
            breakdown = Breakdown()
            tuning = self.tuning(chunk_time_ms)
            with self.ours.connect() as conn:
                leads, elapsed, _ = self.back_to_back(
                    lambda ids: run_ours(conn, ids, tuning, breakdown), seconds
                )
            return leads, elapsed, breakdown

        return run

    def run_pt_archiver(self, seconds: float) -> tuple[int, float, None]:
        run = pt_archiver(self.url, f"lead_id % {PROBE_STRIDE} <> 0", run_time=seconds)
        return run.leads, run.wall, None

    def dialer(self) -> list[PhaseRow]:
        """Every phase once per round, rounds in turn, so drift and noise spread evenly."""
        args = self.args
        chunk_times = [args.chunk_time_ms]
        chunk_times += [c for c in args.sweep if c != args.chunk_time_ms]
        specs: list[tuple[str, str, Workload | None, float | None]] = [
            ("C", "probe alone (baseline)", None, None),
            ("A", "bare verified SQL, 500-row stmts", self.run_bare, None),
        ]
        specs += [("B", f"ours, chunk time {c:g} ms", self.run_ours(c), c) for c in chunk_times]
        if args.pt_archiver:
            specs.append(("P", "pt-archiver --limit 1, unverified", self.run_pt_archiver, None))
        runs: list[list[PhaseRun]] = [[] for _ in specs]
        for round_ in range(args.rounds):
            if args.rounds > 1:
                log(f"round {round_ + 1} of {args.rounds}")
            for spec, done in zip(specs, runs, strict=True):
                done.append(self.phase(spec[0], spec[1], spec[2]))
        rows = [
            phase_row(label, workload, chunk_ms, done)
            for (label, workload, _, chunk_ms), done in zip(specs, runs, strict=True)
        ]
        bare = rows[1].leads_per_s
        for row in rows[2:]:
            row.vs_bare = round(row.leads_per_s / bare, 3) if bare else None
        return rows


def phase_row(
    label: str, workload: str, chunk_time_ms: float | None, runs: list[PhaseRun]
) -> PhaseRow:
    """One table row from every round of a phase: totals, and percentiles over all samples."""
    leads = sum(r.leads for r in runs)
    elapsed = sum(r.seconds for r in runs)
    samples = ProbeSamples.merged([r.samples for r in runs])
    holds = [h for r in runs for h in r.breakdown.holds]
    chunk_leads = [n for r in runs for n in r.breakdown.chunk_leads]
    batches = sum(r.breakdown.batches for r in runs)
    return PhaseRow(
        phase=label,
        workload=workload,
        chunk_time_ms=chunk_time_ms,
        seconds=round(elapsed, 1),
        leads=leads,
        leads_per_s=round(leads / elapsed) if elapsed else 0,
        vs_bare=None,
        probe=ProbeStats.of(samples),
        lock_hold_p99_ms=ms(percentile(holds, 99)) if holds else None,
        lock_hold_max_ms=ms(max(holds)) if holds else None,
        holds_per_batch=round(len(holds) / batches, 1) if holds and batches else None,
        mean_chunk_leads=round(statistics.mean(chunk_leads), 1) if chunk_leads else None,
        noise=NoiseStats(
            other_cpu_pct=round(statistics.mean(r.noise.other_cpu_pct for r in runs), 1),
            foreign_queries=round(statistics.mean(r.noise.foreign_queries for r in runs), 2),
            foreign_databases=sorted({d for r in runs for d in r.noise.foreign_databases})[:5],
        ),
    )


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


NOISE_CAPTION = (
    "noise: CPU used by processes other than this benchmark and MariaDB (% of all cores) /"
    " other clients' statements running on the server (mean of 4 samples a second)"
)


def noise_cell(noise: NoiseStats) -> str:
    """Other processes' CPU (% of all cores) / other clients' queries running, on average."""
    return f"{fmt(noise.other_cpu_pct, 0)}% / {fmt(noise.foreign_queries, 1)}"


def cost_table(rows: list[CostRow], args: argparse.Namespace) -> Table:
    table = Table(
        title=f"1. Cost ratio: {args.batch_size}-lead archive+delete batches, ABAB,"
        f" {args.batches} each per size, chunk time {args.chunk_time_ms:g} ms",
        box=box.SIMPLE_HEAVY,
        caption=NOISE_CAPTION,
    )
    for name in (
        "leads",
        "bare leads/s",
        "ours leads/s",
        "ours/bare time",
        "bare ms/batch",
        "ours ms/batch",
        "holds/batch",
        "hold p99 ms",
        "intact",
        "noise",
    ):
        table.add_column(name, justify="right")
    if args.pt_archiver:
        table.add_column("pt-archiver leads/s", justify="right")
    for r in rows:
        cells = [
            f"{r.size:,}",
            f"{r.bare_leads_per_s:,.0f}",
            f"{r.ours_leads_per_s:,.0f}",
            f"{r.ratio_ours_to_bare_time:.2f}x",
            fmt(r.bare_median_ms),
            fmt(r.ours_median_ms),
            fmt(r.ours_holds_per_batch),
            fmt(r.ours_lock_hold_p99_ms),
            "yes" if r.data_intact else "NO",
            noise_cell(r.noise),
        ]
        if args.pt_archiver:
            cells.append(
                f"{fmt(r.pt_archiver_leads_per_s, 0)} ({fmt(r.pt_archiver_wall_leads_per_s, 0)})"
            )
        table.add_row(*cells)
    return table


BREAKDOWN_KINDS = (
    "session",
    "inspect",
    "named lock",
    "setup",
    "snapshot read",
    "lock",
    "lock archive",
    "read state",
    "insert",
    "update",
    "delete",
    "unlock",
    "other sql",
    "python",
)


def breakdown_table(rows: list[CostRow]) -> Table:
    table = Table(
        title="Where the time goes: mean ms per batch (statement round trips as seen by the"
        " client; python = the rest)",
        box=box.SIMPLE_HEAVY,
    )
    table.add_column("leads", justify="right")
    table.add_column("side")
    present = {k for r in rows for k in (*r.bare_breakdown_ms, *r.ours_breakdown_ms)}
    kinds = [k for k in BREAKDOWN_KINDS if k in present]
    kinds += sorted(present.difference(kinds))
    for kind in kinds:
        table.add_column(kind, justify="right")
    table.add_column("total", justify="right")
    for r in rows:
        for side, parts in (("bare", r.bare_breakdown_ms), ("ours", r.ours_breakdown_ms)):
            table.add_row(
                f"{r.size:,}",
                side,
                *(fmt(parts.get(kind)) for kind in kinds),
                fmt(sum(parts.values())),
            )
    return table


def dialer_table(rows: list[PhaseRow], size: int, args: argparse.Namespace) -> Table:
    table = Table(
        title=f"2. Dialer impact at {size:,} leads: probe (PK read + update of other leads) every"
        f" {args.probe_interval_ms:g} ms; each phase {args.phase_seconds:g} s x {args.rounds}"
        " round(s), phases in turn",
        box=box.SIMPLE_HEAVY,
        caption="pair p50/p99/max: ms from each 5 ms slot's due time, every slot counted (those a"
        " stall delayed too); stall: the longest single pair; svc p99: the pairs' own times (the"
        " p99 before issue 11); read/update p99: each statement's own time\n" + NOISE_CAPTION,
    )
    for name, justify in (
        ("phase", "left"),
        ("workload", "left"),
        ("leads/s", "right"),
        ("vs bare", "right"),
        ("probe ops", "right"),
        ("pair p50", "right"),
        ("pair p99", "right"),
        ("pair max", "right"),
        ("stall", "right"),
        ("svc p99", "right"),
        ("read p99", "right"),
        ("update p99", "right"),
        ("hold p99/max", "right"),
        ("leads/chunk", "right"),
        ("noise", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        p = r.probe
        table.add_row(
            r.phase,
            r.workload,
            f"{r.leads_per_s:,}" if r.leads else "-",
            f"{r.vs_bare:.2f}x" if r.vs_bare is not None else "-",
            f"{p.ops:,}" + (f" ({p.errors} err)" if p.errors else ""),
            fmt(p.pair_p50_ms),
            fmt(p.pair_p99_ms),
            fmt(p.pair_max_ms),
            fmt(p.stall_ms),
            fmt(p.service_p99_ms),
            fmt(p.read_p99_ms),
            fmt(p.update_p99_ms),
            f"{fmt(r.lock_hold_p99_ms)} / {fmt(r.lock_hold_max_ms)}"
            if r.lock_hold_max_ms is not None
            else "-",
            fmt(r.mean_chunk_leads),
            noise_cell(r.noise),
        )
    return table


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def float_list(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int_list, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batches", type=int, default=15, help="timed batches per side and size")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--chunk-time-ms",
        type=float,
        default=Tuning().chunk_time.total_seconds() * 1000,
        help="ours: Tuning.chunk_time (default: the engine's)",
    )
    parser.add_argument(
        "--sweep",
        type=float_list,
        nargs="?",
        const=float_list(SWEEP_DEFAULT),
        default=[],
        help=f"also run the dialer phase of ours at these chunk times (default {SWEEP_DEFAULT})",
    )
    parser.add_argument("--phase-seconds", type=float, default=30.0)
    parser.add_argument(
        "--agents", type=int, default=500, help="rows in vicidial_live_agents (0: none)"
    )
    parser.add_argument(
        "--callbacks", type=int, default=20_000, help="rows in vicidial_callbacks (0: none)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the dialer phases this many times, in turn"
    )
    parser.add_argument("--probe-interval-ms", type=float, default=5.0)
    parser.add_argument(
        "--probe-thread", action="store_true", help="probe in a thread, not a process"
    )
    parser.add_argument("--no-dialer", action="store_true", help="skip the dialer-impact phases")
    parser.add_argument("--pt-archiver", action="store_true", help="add pt-archiver --limit 1")
    parser.add_argument(
        "--cron-user",
        action="store_true",
        help="ours as a user without CREATE TEMPORARY TABLES (Vicidial's cron): the locked path",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the batches' lead choice")
    parser.add_argument("--url", default=DEFAULT_URL, help="server URL, without a database")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if not args.sizes or min(args.sizes) < PROBE_STRIDE * args.batch_size:
        parser.error(f"every size must be at least {PROBE_STRIDE * args.batch_size}")
    if args.pt_archiver and not shutil.which("pt-archiver"):
        parser.error("pt-archiver is not installed (apt-get install percona-toolkit)")
    return args


def engine_code() -> str:
    """Which engine was measured: the commit, and a hash of tasks/archive/ as imported."""
    package = Path(archive.__file__).parent
    digest = hashlib.sha256()
    for source in sorted(package.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    git = ["git", "-C", str(package)]
    head = subprocess.run(  # noqa: S603
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(  # noqa: S603
        [*git, "diff", "--quiet", "HEAD", "--", "."], check=False
    ).returncode
    changes = " + uncommitted changes" if dirty else ""
    return f"{head or '?'}{changes}, archive/ {digest.hexdigest()[:12]}"


def machine(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        version, key_buffer, concurrent = conn.exec_driver_sql(
            "SELECT VERSION(), @@key_buffer_size, @@concurrent_insert"
        ).one()
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = found.group(1) if found else ""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "engine_code": engine_code(),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "server": version,
        "key_buffer_size": int(key_buffer),
        "concurrent_insert": concurrent,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = make_engine(args.url)
    name = f"leadarchive_bench_{uuid.uuid4().hex[:10]}"
    url = make_url(args.url).set(database=name, query={"charset": "utf8mb4"})
    info = machine(server)
    out = Console(width=None if sys.stdout.isatty() else 200)
    cost_rows: list[CostRow] = []
    phase_rows: list[PhaseRow] = []
    with server.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8 COLLATE utf8_unicode_ci")
    log(f"database {name}; {info['server']}, {info['cores']} cores")
    engine = make_engine(url.render_as_string(hide_password=False), pool_size=4)
    try:
        with contextlib.ExitStack() as stack:
            ours_engine = None
            if args.cron_user:
                ours_engine = stack.enter_context(
                    mysql_user(
                        stack.enter_context(server.connect()),
                        url.render_as_string(hide_password=False),
                        CRON_GRANTS,
                        pool_size=4,
                    )
                )
            bench = Bench(
                args=args,
                url=url,
                database=name,
                engine=engine,
                rng=random.Random(args.seed),
                ours_engine=ours_engine,
            )
            for size in sorted(args.sizes):
                log(f"loading {size:,} leads")
                load_seconds = bench.load(size)
                log(f"loaded in {load_seconds:.1f} s; cost ratio, {args.batches} batches per side")
                cost_rows.append(bench.cost_ratio(load_seconds))
                log(f"ours/bare time {cost_rows[-1].ratio_ours_to_bare_time:.2f}x")
            if not args.no_dialer:
                phase_rows = bench.dialer()
    finally:
        engine.dispose()
        with server.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        server.dispose()
        log(f"dropped {name}")
    out.print(cost_table(cost_rows, args))
    out.print(breakdown_table(cost_rows))
    if phase_rows:
        out.print(dialer_table(phase_rows, max(args.sizes), args))
    out.print(
        f"{info['date']}  {info['cores']} cores ({info['cpu']}), MariaDB {info['server']},"
        f" key_buffer_size {info['key_buffer_size'] // 2**20} MiB; engine {info['engine_code']};"
        " probe in a"
        f" {'thread' if args.probe_thread else 'separate process'}"
        + (
            "; ours as a user without CREATE TEMPORARY TABLES (locked path)"
            if args.cron_user
            else ""
        )
    )
    if args.json:
        payload = {
            "machine": info,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "cost_ratio": [asdict(r) for r in cost_rows],
            "dialer": [asdict(r) for r in phase_rows],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
