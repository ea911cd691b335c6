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
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

# Run as a script, this file's folder comes first on sys.path, and ``import api`` would find this
# file (bench/api.py) instead of the project's package: take the folder off before importing it.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH]
if str(_BENCH.parent) not in sys.path:  # the repository root, for ``import bench.engine``
    sys.path.insert(0, str(_BENCH.parent))

import httpx2
import psutil
import redis
from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy import URL, Engine, make_url

from api.auth import hash_key, new_key
from bench.engine import DEFAULT_URL, Schedule, log, percentile
from tasks.archive import Actions, Tuning, run_batch
from tasks.celery_config import QUEUE
from tasks.db import make_engine
from tasks.ddl import create_vicidial_tables
from tasks.records import FINAL
from tasks.runtime import Runtime
from tasks.seed import insert_leads, lead_rows
from tasks.settings import Settings

DEFAULT_REDIS = os.environ.get("LEADARCHIVE_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
REPO = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "leadarchive"
ARCHIVE_PATH = "/vicidial/leads/archive"
JOB_KEY = "leadarchive:job:{}"
CLAIM_KEY = "leadarchive-bench-api:claim"
BATCH = 500
ALL_ACTIONS = Actions(insert=True, update=True, delete=True)
API_RSS_LIMIT_MB = 120.0
WORKER_RSS_LIMIT_MB = 150.0
E2E_SLACK_MS = 100.0
TARGET_P99_MS = 50.0


def summarize(values_ms: Sequence[float]) -> dict[str, float]:
    """n, min, p50, p90, p99, max and mean of a list of milliseconds."""
    if not values_ms:
        return {"n": 0}
    return {
        "n": len(values_ms),
        "min": round(min(values_ms), 2),
        "p50": round(percentile(values_ms, 50), 2),
        "p90": round(percentile(values_ms, 90), 2),
        "p99": round(percentile(values_ms, 99), 2),
        "max": round(max(values_ms), 2),
        "mean": round(statistics.fmean(values_ms), 2),
    }


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def mb(nbytes: float) -> float:
    return round(nbytes / 2**20, 1)


# ---------------------------------------------------------------------------------------------
# Resources: the Redis database, the processes


def scratch_database(
    stack: contextlib.ExitStack, server: Engine, server_url: str, prefix: str
) -> URL:
    """A new database ``<prefix>_<random>`` in Vicidial's utf8 / utf8_unicode_ci, dropped when
    ``stack`` closes; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with server.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8 COLLATE utf8_unicode_ci")

    def drop() -> None:
        with server.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        log(f"dropped {name}")

    stack.callback(drop)
    return make_url(server_url).set(database=name, query={"charset": "utf8mb4"})


def claim_redis_db(base_url: str) -> tuple[int, redis.Redis]:
    """The first Redis database 2..15 that is empty, claimed with SET NX of a claim key."""
    for number in range(2, 16):
        client = redis.Redis.from_url(f"{base_url.rstrip('/')}/{number}")
        claimed = False
        try:
            if client.dbsize() == 0:
                claimed = bool(client.set(CLAIM_KEY, f"bench/api.py pid {os.getpid()}", nx=True))
                if claimed and client.dbsize() != 1:  # someone else started writing meanwhile
                    client.delete(CLAIM_KEY)
                    claimed = False
        finally:
            if not claimed:
                client.close()
        if claimed:
            return number, client
    raise SystemExit("no empty Redis database among 2..15")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_process(
    name: str, argv: list[str], env: dict[str, str], logs: Path
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group (so its children can be stopped with it)."""
    with (logs / f"{name}.log").open("wb") as out:
        return subprocess.Popen(  # noqa: S603 - our own console script, fixed arguments
            argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)  # in case it was paused
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # Prefork children may outlive their parent for a moment: the group goes in any case.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def worker_processes(worker: psutil.Process) -> list[tuple[str, psutil.Process]]:
    """The worker's main process and each prefork child, labelled."""
    found = [("worker main", worker)]
    with contextlib.suppress(psutil.Error):
        children = sorted(worker.children(recursive=True), key=lambda p: p.pid)
        found += [(f"worker child {n}", p) for n, p in enumerate(children, 1)]
    return found


def service_processes(
    api: psutil.Process, worker: psutil.Process
) -> list[tuple[str, psutil.Process]]:
    return [("api", api), *worker_processes(worker)]


def rss_snapshot(procs: list[tuple[str, psutil.Process]]) -> dict[str, dict[str, float]]:
    """RSS and USS (MB) of each process; USS leaves out pages shared with the prefork parent."""
    snapshot: dict[str, dict[str, float]] = {}
    for label, proc in procs:
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            snapshot[label] = {"rss": mb(info.rss), "uss": mb(info.uss), "pid": proc.pid}
    return snapshot


class PeakSampler(threading.Thread):
    """Keeps the highest RSS of each service process, sampled every ``interval`` seconds."""

    def __init__(self, api: psutil.Process, worker: psutil.Process, interval: float = 0.5) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.api, self.worker, self.interval = api, worker, interval
        self.peak: dict[str, float] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            for label, proc in service_processes(self.api, self.worker):
                with contextlib.suppress(psutil.Error):
                    rss = mb(proc.memory_info().rss)
                    self.peak[label] = max(self.peak.get(label, 0.0), rss)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def find_servers(mysql_port: int = 3306, redis_port: int = 6379) -> dict[str, psutil.Process]:
    """MariaDB and Redis, for CPU accounting only (read, never signalled).

    Other sessions may run private servers of their own on other ports: the one listening on
    the given port is the one measured, whichever comes first by name when none is found.
    """
    found: dict[str, psutil.Process] = {}
    listening: dict[str, bool] = {}
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        if name in ("mariadbd", "mysqld"):
            label, port = "mariadb (whole server)", mysql_port
        elif name.startswith("redis-server"):
            label, port = "redis (whole server)", redis_port
        else:
            continue
        with contextlib.suppress(psutil.Error):
            ours = any(
                c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                for c in proc.net_connections(kind="tcp")
            )
            if ours or label not in found:
                if not listening.get(label):
                    found[label] = proc
                listening[label] = listening.get(label, False) or ours
    return found


def cpu_seconds(procs: dict[str, psutil.Process]) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for label, proc in procs.items():
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            seconds[label] = times.user + times.system
    return seconds


def cpu_processes(api: psutil.Process, worker: psutil.Process) -> dict[str, psutil.Process]:
    procs = dict(service_processes(api, worker))
    procs["bench (load generator)"] = psutil.Process()
    procs.update(find_servers())
    return procs


def cpu_share(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    """Percent of one core used by each process between two ``cpu_seconds`` readings."""
    return {
        label: round(100 * (after[label] - before[label]) / seconds, 1)
        for label in after
        if label in before and seconds > 0
    }


# ---------------------------------------------------------------------------------------------
# A lean HTTP/1.1 client. httpx costs this machine about 1.1-1.6 ms of CPU per request, taken
# from the same two cores as the API; these cost a fraction of that, so the API gets the CPU.


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _request_bytes(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes | None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ", 2)[1]), headers


class RawHTTP:
    """A blocking keep-alive HTTP/1.1 client for one server (enough for this API's answers)."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port, self.headers = host, port, headers
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._buffer = None, bytearray()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=60)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._sock

    def _fill(self, sock: socket.socket) -> None:
        data = sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self._buffer += data

    def _until(self, sock: socket.socket, separator: bytes) -> bytes:
        while (end := self._buffer.find(separator)) < 0:
            self._fill(sock)
        data = bytes(self._buffer[: end + len(separator)])
        del self._buffer[: end + len(separator)]
        return data

    def _exactly(self, sock: socket.socket, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill(sock)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def request(self, method: str, path: str, body: bytes | None = None) -> Answer:
        for attempt in (1, 2):
            sock = self._connect()
            try:
                sock.sendall(_request_bytes(method, path, self.host, self.headers, body))
                status, headers = _parse_head(self._until(sock, b"\r\n\r\n"))
            except (EOFError, ConnectionError):
                # A keep-alive connection the server closed while idle: once more, afresh.
                self.close()
                if attempt == 2:
                    raise
                continue
            if headers.get("transfer-encoding", "").lower() == "chunked":
                payload = bytearray()
                while size := int(self._until(sock, b"\r\n").strip(), 16):
                    payload += self._exactly(sock, size + 2)[:-2]
                self._until(sock, b"\r\n")
                data = bytes(payload)
            else:
                data = self._exactly(sock, int(headers.get("content-length", "0")))
            if headers.get("connection", "").lower() == "close":
                self.close()
            return Answer(status, headers, data)
        raise AssertionError("unreachable")  # pragma: no cover


class AsyncRawHTTP:
    """The asyncio twin of ``RawHTTP``: one keep-alive connection, one request at a time."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port, self.headers = host, port, headers
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is None:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._streams = reader, writer
        return self._streams

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
        self._streams = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> Answer:
        reader, writer = await self.connect()
        try:
            writer.write(_request_bytes(method, path, self.host, self.headers, body))
            status, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
            if headers.get("transfer-encoding", "").lower() == "chunked":
                payload = bytearray()
                while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                    payload += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
                data = bytes(payload)
            else:
                data = await reader.readexactly(int(headers.get("content-length", "0")))
        except BaseException:
            self.close()  # the next request opens a fresh connection
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Answer(status, headers, data)


# ---------------------------------------------------------------------------------------------
# Target 1: batch alone vs end to end


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


def archive_body(ids: list[int]) -> dict[str, Any]:
    return {"insert_leads": True, "update_leads": True, "delete_leads": True, "lead_ids": ids}


def poll_job(
    client: RawHTTP, url: str, interval: float, timeout: float = 60.0
) -> tuple[dict[str, Any], float, int]:
    """Poll ``url`` every ``interval`` s until the job ends: its body, the perf_counter, polls."""
    deadline = time.perf_counter() + timeout
    tick = time.perf_counter()
    polls = 0
    while True:
        tick += interval
        delay = tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        answer = client.request("GET", url)
        seen = time.perf_counter()
        polls += 1
        if answer.status != 200:
            raise RuntimeError(f"GET {url} answered {answer.status}: {answer.body[:300]!r}")
        body: dict[str, Any] = answer.json()
        if body["status"] in FINAL:
            return body, seen, polls
        if seen > deadline:
            raise TimeoutError(f"job {url} still {body['status']} after {timeout} s")


def submit(client: RawHTTP, ids: list[int]) -> str:
    """POST a job; its status URL."""
    answer = client.request("POST", ARCHIVE_PATH, json.dumps(archive_body(ids)).encode())
    if answer.status != 202:
        raise RuntimeError(f"POST answered {answer.status}: {answer.body[:300]!r}")
    return answer.headers["location"]


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
# Target 2: open-loop submission load


@dataclass
class LoadResult:
    client: str
    connections: int
    offered_rate: float
    duration: float
    sent: int
    statuses: dict[str, int]
    latencies_ms: list[float]
    accepted: list[str]
    send_seconds: float
    last_response_seconds: float
    max_dispatch_lag_ms: float
    first_errors: list[str] = field(default_factory=list)


# One POST on a connection of its own: (status code or "error ...", Location or "").
Send = Callable[[bytes], Awaitable[tuple[str, str]]]


@contextlib.asynccontextmanager
async def raw_senders(
    host: str, port: int, headers: dict[str, str], count: int
) -> AsyncIterator[list[Send]]:
    clients = [AsyncRawHTTP(host, port, headers) for _ in range(count)]
    await asyncio.gather(*(c.connect() for c in clients))

    def sender(client: AsyncRawHTTP) -> Send:
        async def send(body: bytes) -> tuple[str, str]:
            answer = await client.request("POST", ARCHIVE_PATH, body)
            return str(answer.status), answer.headers.get("location", "")

        return send

    try:
        yield [sender(c) for c in clients]
    finally:
        for c in clients:
            c.close()


@contextlib.asynccontextmanager
async def httpx_senders(
    host: str, port: int, headers: dict[str, str], count: int
) -> AsyncIterator[list[Send]]:
    limits = httpx2.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx2.AsyncClient(
        base_url=f"http://{host}:{port}",
        headers={**headers, "Content-Type": "application/json"},
        limits=limits,
        timeout=60.0,
    ) as client:
        await asyncio.gather(*(client.get("/healthz") for _ in range(count)))

        async def send(body: bytes) -> tuple[str, str]:
            answer = await client.post(ARCHIVE_PATH, content=body)
            return str(answer.status_code), answer.headers.get("location", "")

        yield [send] * count


async def run_load(
    kind: str,
    port: int,
    headers: dict[str, str],
    connections: int,
    rate: float,
    duration: float,
    id_space: int,
    seed: int,
) -> LoadResult:
    """wrk2-style: ``connections`` keep-alive connections take requests from one queue that a
    scheduler fills at ``rate``; a request's latency runs from its scheduled time, so time spent
    waiting for a free connection (the server being slow) is counted."""
    rng = random.Random(seed)
    count = int(rate * duration)
    bodies = [
        json.dumps(
            archive_body([rng.randint(1, id_space) for _ in range(rng.randint(1, 10))])
        ).encode()
        for _ in range(count)
    ]
    latencies: list[float] = [math.nan] * count
    statuses: list[str] = [""] * count
    job_ids: list[str] = []
    errors: list[str] = []
    finished_at = 0.0
    lag = 0.0
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    senders = raw_senders if kind == "raw" else httpx_senders

    async def connection(send: Send) -> None:
        nonlocal finished_at
        while (item := await queue.get()) is not None:
            i, scheduled = item
            try:
                status, location = await send(bodies[i])
            except (OSError, EOFError, ValueError, asyncio.IncompleteReadError) as exc:
                status, location = f"error {type(exc).__name__}", ""
            except httpx2.HTTPError as exc:
                status, location = f"error {type(exc).__name__}", ""
            done = time.perf_counter()
            statuses[i] = status
            latencies[i] = (done - scheduled) * 1000  # from schedule.due(i)
            finished_at = max(finished_at, done)
            if status == "202":
                job_ids.append(location.rsplit("/", 1)[1])
            elif len(errors) < 5:
                errors.append(status)

    async with senders("127.0.0.1", port, headers, connections) as sends:
        workers = [asyncio.create_task(connection(send)) for send in sends]
        schedule = Schedule(time.perf_counter() + 0.05, 1 / rate)
        start = schedule.start
        for i in range(count):
            scheduled = schedule.due(i)
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lag = max(lag, time.perf_counter() - scheduled)
            queue.put_nowait((i, scheduled))
        sent_by = time.perf_counter()
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
    return LoadResult(
        client=kind,
        connections=connections,
        offered_rate=rate,
        duration=duration,
        sent=count,
        statuses=dict(Counter(statuses)),
        latencies_ms=[x for x in latencies if not math.isnan(x)],
        accepted=job_ids,
        send_seconds=sent_by - start,
        last_response_seconds=finished_at - start,
        max_dispatch_lag_ms=lag * 1000,
        first_errors=errors,
    )


def run_load_sync(*args: Any) -> LoadResult:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(run_load(*args))
    return uvloop.run(run_load(*args))


@dataclass
class DrainResult:
    seconds: float
    final: dict[str, int]
    not_final: int
    lost: int
    failed_examples: list[str]
    queue_ms: dict[str, float]
    worker_rate: float
    broker_left: int


def job_fields(
    client: redis.Redis, job_ids: Sequence[str], names: Sequence[str]
) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for offset in range(0, len(job_ids), 1000):
        pipe = client.pipeline(transaction=False)
        for job_id in job_ids[offset : offset + 1000]:
            pipe.hmget(JOB_KEY.format(job_id), list(names))
        rows += pipe.execute()
    return rows


def drain(
    client: redis.Redis, job_ids: list[str], timeout: float, progress: Callable[[str], None]
) -> DrainResult:
    """Wait until every job's record is final (or ``timeout``); what they ended as."""
    started = time.perf_counter()
    waiting = list(job_ids)
    last_report = started
    while waiting and time.perf_counter() - started < timeout:
        statuses = [r[0] for r in job_fields(client, waiting, ["status"])]
        waiting = [
            j
            for j, s in zip(waiting, statuses, strict=True)
            if s is not None and s.decode() not in FINAL
        ]
        if time.perf_counter() - last_report > 10:
            progress(f"{len(waiting)} jobs not final yet; queue {client.llen(QUEUE)}")
            last_report = time.perf_counter()
        if waiting:
            time.sleep(0.25)
    seconds = time.perf_counter() - started
    rows = job_fields(
        client, job_ids, ["status", "submitted_at", "started_at", "finished_at", "error"]
    )
    final: Counter[str] = Counter()
    lost = not_final = 0
    failed: list[str] = []
    queue_ms: list[float] = []
    finishes: list[float] = []
    for job_id, (status, submitted, begun, finished, error) in zip(job_ids, rows, strict=True):
        if status is None:
            lost += 1
            continue
        state = status.decode()
        final[state] += 1
        if state not in FINAL:
            not_final += 1
        elif state != "succeeded" and len(failed) < 5:
            failed.append(f"{job_id}: {state} {error.decode() if error else ''}")
        if submitted and begun:
            queue_ms.append((epoch(begun.decode()) - epoch(submitted.decode())) * 1000)
        if finished:
            finishes.append(epoch(finished.decode()))
    span = max(finishes) - min(finishes) if len(finishes) > 1 else math.nan
    return DrainResult(
        seconds=seconds,
        final=dict(final),
        not_final=not_final,
        lost=lost,
        failed_examples=failed,
        queue_ms=summarize(queue_ms),
        worker_rate=len(finishes) / span if span and not math.isnan(span) else math.nan,
        broker_left=int(client.llen(QUEUE)),  # type: ignore[arg-type]
    )


@dataclass
class Services:
    """The running API and worker, and how to reach them."""

    api: psutil.Process
    worker: psutil.Process
    port: int
    headers: dict[str, str]
    client: RawHTTP
    redis: redis.Redis


def start_spies(services: Services, seconds: float, folder: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy on the API, the worker's main process and its first child, for ``seconds``."""
    spy = shutil.which("py-spy") or str(CLI.parent / "py-spy")
    targets = [("api", services.api), *worker_processes(services.worker)[:2]]
    folder.mkdir(parents=True, exist_ok=True)
    spies = []
    for label, proc in targets:
        name = label.replace(" ", "-")
        argv = [spy, "record", "--pid", str(proc.pid), "--duration", str(math.ceil(seconds))]
        argv += ["--rate", "200", "--nonblocking", "--format", "raw"]
        argv += ["-o", str(folder / f"{name}.folded")]
        with (folder / f"{name}.log").open("wb") as out:
            spies.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))  # noqa: S603
    return spies


def load_phase(
    services: Services,
    args: argparse.Namespace,
    rate: float,
    duration: float,
    *,
    seed: int,
    pause_workers: bool = False,
    spy_folder: Path | None = None,
) -> dict[str, Any]:
    """One open-loop load at ``rate`` for ``duration`` s, then the wait for its jobs to end."""
    cpu_procs = cpu_processes(services.api, services.worker)
    metrics_before = server_histogram(services.client.request("GET", "/metrics").body.decode())
    spies = start_spies(services, duration, spy_folder) if spy_folder else []
    if pause_workers:
        os.killpg(services.worker.pid, signal.SIGSTOP)
    try:
        before = cpu_seconds(cpu_procs)
        load = run_load_sync(
            args.client,
            services.port,
            services.headers,
            args.connections,
            rate,
            duration,
            2 * args.leads,
            seed,
        )
        after_load = cpu_seconds(cpu_procs)
    finally:
        if pause_workers:
            os.killpg(services.worker.pid, signal.SIGCONT)
    for spy in spies:
        spy.wait()
    metrics_after = server_histogram(services.client.request("GET", "/metrics").body.decode())
    log(f"load done: {load.statuses}; waiting for {len(load.accepted)} jobs to finish")
    drained = drain(services.redis, load.accepted, args.drain_timeout, log)
    after_drain = cpu_seconds(cpu_procs)
    lat = summarize(load.latencies_ms)
    accepted = len(load.accepted)
    failed = sum(v for k, v in drained.final.items() if k != "succeeded" and k in FINAL)
    achieved = accepted / load.last_response_seconds if load.last_response_seconds else 0.0
    under = metrics_after[0] - metrics_before[0]
    total = metrics_after[1] - metrics_before[1]
    return {
        "load": {k: v for k, v in asdict(load).items() if k not in ("latencies_ms", "accepted")},
        "workers_paused_during_load": pause_workers,
        "latency_ms": lat,
        "achieved_rate": round(achieved, 1),
        "server_side_under_50ms": f"{under} of {total} ({100 * under / max(total, 1):.1f} %)",
        "drain": asdict(drained),
        "failed": failed,
        "cpu_load": cpu_share(before, after_load, load.last_response_seconds),
        "cpu_drain": cpu_share(after_load, after_drain, drained.seconds),
        "rate_met": accepted == load.sent and achieved >= 0.98 * rate,
        "p99_met": lat.get("p99", math.inf) < TARGET_P99_MS,
        "completion_met": drained.final.get("succeeded", 0) == accepted and drained.lost == 0,
    }


# ---------------------------------------------------------------------------------------------
# Reporting


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "[green]met[/green]" if ok else "[red]missed[/red]"


def machine(engine: Engine, client: redis.Redis) -> dict[str, Any]:
    with engine.connect() as conn:
        (version,) = conn.exec_driver_sql("SELECT VERSION()").one()
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = found.group(1) if found else ""
    info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run(  # noqa: S603 - fixed arguments
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    changed = subprocess.run(  # noqa: S603 - fixed arguments
        [*git, "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "mariadb": version,
        "redis": info.get("redis_version", "?"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "commit": commit + (f" + {len(changed)} changed files" if changed else ""),
    }


def e2e_table(result: dict[str, Any]) -> Table:
    batch, e2e = result["batch_ms"], result["e2e_ms"]
    table = Table(
        title=f"1. 500-lead job (insert+update+delete): {batch['n']} batches, {e2e['n']} jobs",
        box=box.SIMPLE_HEAVY,
    )
    for name in ("", "median ms", "p90 ms", "min ms", "max ms"):
        table.add_column(name, justify="left" if not name else "right")
    for label, stats in (
        ("run_batch alone (in process)", batch),
        ("end to end: POST -> succeeded seen", e2e),
    ):
        table.add_row(
            label, fmt(stats["p50"]), fmt(stats["p90"]), fmt(stats["min"]), fmt(stats["max"])
        )
    table.add_row(
        "difference (end to end - batch)",
        fmt(e2e["p50"] - batch["p50"]),
        fmt(e2e["p90"] - batch["p90"]),
        "",
        "",
    )
    for label, key in (
        ("  POST round trip", "post_ms"),
        ("  queue wait (submitted_at -> started_at)", "queue_ms"),
        ("  worker run (started_at -> finished_at)", "run_ms"),
        ("  noticed by polling (finished_at -> seen)", "notice_ms"),
    ):
        stats = result["parts_ms"][key]
        table.add_row(
            label, fmt(stats["p50"]), fmt(stats["p90"]), fmt(stats["min"]), fmt(stats["max"])
        )
    ok = result["met"]
    table.caption = (
        f"target: median end to end <= median batch + {E2E_SLACK_MS:.0f} ms"
        f" = {fmt(batch['p50'] + E2E_SLACK_MS)} ms: {verdict(ok)};"
        f" polled every {result['poll_ms']:.0f} ms,"
        f" {fmt(result['polls_p50'], 0)} polls per job (median)"
    )
    return table


def load_table(result: dict[str, Any]) -> Table:
    load, lat, dr = result["load"], result["latency_ms"], result["drain"]
    table = Table(title="2. Submission load (open loop)", box=box.SIMPLE_HEAVY, show_header=False)
    table.add_column("", justify="left")
    table.add_column("", justify="right")
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(load["statuses"].items()))
    rows = [
        (
            "offered",
            f"{load['offered_rate']:.0f}/s for {load['duration']:.0f} s = {load['sent']} requests",
        ),
        ("client", f"{load['client']}, {load['connections']} keep-alive connections"),
        (
            "sent within",
            f"{load['send_seconds']:.2f} s"
            f" (generator lag max {load['max_dispatch_lag_ms']:.1f} ms)",
        ),
        ("achieved (202 / time to last answer)", f"{result['achieved_rate']:.1f}/s"),
        ("status codes", statuses),
        (
            "latency from scheduled time p50 / p99 / max",
            f"{fmt(lat['p50'])} / {fmt(lat['p99'])} / {fmt(lat['max'])} ms",
        ),
        ("API's own histogram: POSTs under 50 ms", result["server_side_under_50ms"]),
        ("backlog drained after the last answer", f"{dr['seconds']:.1f} s"),
        ("worker throughput while draining", f"{fmt(dr['worker_rate'])} jobs/s"),
        (
            "queue wait p50 / p99 / max",
            " / ".join(fmt(dr["queue_ms"].get(k), 0) for k in ("p50", "p99", "max")) + " ms",
        ),
        (
            "accepted jobs' final status",
            ", ".join(f"{k}: {v}" for k, v in sorted(dr["final"].items())),
        ),
        ("failed / not final / lost", f"{result['failed']} / {dr['not_final']} / {dr['lost']}"),
        ("left in the broker queue", str(dr["broker_left"])),
    ]
    for label, value in rows:
        table.add_row(label, value)
    table.caption = (
        f"target: {load['offered_rate']:.0f}/s with p99 < {TARGET_P99_MS:.0f} ms,"
        f" every accepted job completing: rate {verdict(result['rate_met'])},"
        f" p99 {verdict(result['p99_met'])},"
        f" completion {verdict(result['completion_met'])}. The generator runs on the same"
        f" {os.cpu_count()} cores as the API, the workers, MariaDB and Redis."
    )
    return table


def cpu_table(result: dict[str, Any]) -> Table:
    table = Table(title="CPU, % of one core", box=box.SIMPLE_HEAVY)
    table.add_column("process")
    table.add_column("during the load", justify="right")
    table.add_column("while draining", justify="right")
    load, drained = result["cpu_load"], result["cpu_drain"]
    for label in sorted(set(load) | set(drained)):
        table.add_row(label, fmt(load.get(label)), fmt(drained.get(label)))
    table.caption = "MariaDB and Redis are whole servers: anything else on the machine counts too."
    return table


def sweep_table(phases: list[dict[str, Any]]) -> Table:
    table = Table(title="2b. Load sweep", box=box.SIMPLE_HEAVY)
    names = ["offered/s", "workers", "achieved/s", "p50 ms", "p99 ms", "max ms", "codes"]
    names += ["API CPU %", "API <= 50 ms", "drain s", "succeeded"]
    for name in names:
        table.add_column(name, justify="right")
    for phase in phases:
        load, lat = phase["load"], phase["latency_ms"]
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(load["statuses"].items()))
        table.add_row(
            f"{load['offered_rate']:.0f}",
            "paused" if phase["workers_paused_during_load"] else "running",
            fmt(phase["achieved_rate"]),
            fmt(lat.get("p50")),
            fmt(lat.get("p99")),
            fmt(lat.get("max")),
            codes,
            fmt(phase["cpu_load"].get("api")),
            phase["server_side_under_50ms"],
            fmt(phase["drain"]["seconds"]),
            f"{phase['drain']['final'].get('succeeded', 0)} of {len_accepted(phase)}",
        )
    table.caption = (
        "Each run is followed by a wait until its jobs end. Paused: the worker is stopped"
        " (SIGSTOP) while the load runs, so the API has the machine to itself."
    )
    return table


def len_accepted(phase: dict[str, Any]) -> int:
    return int(phase["load"]["statuses"].get("202", 0))


def memory_table(result: dict[str, Any]) -> Table:
    table = Table(title="3. Memory (MB)", box=box.SIMPLE_HEAVY)
    for name in (
        "process",
        "idle RSS",
        "peak RSS",
        "after load RSS",
        "after load USS",
        "limit",
        "",
    ):
        table.add_column(name, justify="left" if name == "process" else "right")
    idle, after, peak = result["idle"], result["after"], result["peak"]
    for label in sorted(set(idle) | set(after), key=lambda s: (s != "api", s)):
        limit = API_RSS_LIMIT_MB if label == "api" else WORKER_RSS_LIMIT_MB
        worst = max(
            idle.get(label, {}).get("rss", 0.0),
            after.get(label, {}).get("rss", 0.0),
            peak.get(label, 0.0),
        )
        table.add_row(
            label,
            fmt(idle.get(label, {}).get("rss")),
            fmt(peak.get(label)),
            fmt(after.get(label, {}).get("rss")),
            fmt(after.get(label, {}).get("uss")),
            f"< {limit:.0f}",
            verdict(worst < limit),
        )
    table.caption = "RSS counts pages a prefork child shares with its parent; USS leaves them out."
    return table


def server_histogram(text: str, threshold: str = "0.05") -> tuple[int, int]:
    """From /metrics: (POSTs the API itself timed at or under ``threshold`` s, all POSTs)."""
    route = f'route="{ARCHIVE_PATH}"'
    under = total = 0
    for line in text.splitlines():
        if not line.startswith("leadarchive_http_request_duration_seconds_") or route not in line:
            continue
        if 'method="POST"' not in line:
            continue
        if (
            line.startswith("leadarchive_http_request_duration_seconds_bucket")
            and f'le="{threshold}"' in line
        ):
            under = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("leadarchive_http_request_duration_seconds_count"):
            total = int(float(line.rsplit(" ", 1)[1]))
    return under, total


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


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def cleanup_on_signals() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes],
    log_file: Path,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({proc.returncode}):\n{tail(log_file)}")
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not ready after {timeout} s:\n{tail(log_file)}")


@dataclass
class Launched:
    """``leadarchive api`` and ``leadarchive worker`` running, warmed up, and how to reach them."""

    api_proc: subprocess.Popen[bytes]
    worker_proc: subprocess.Popen[bytes]
    api: psutil.Process
    worker: psutil.Process
    key: str
    port: int
    headers: dict[str, str]
    client: RawHTTP
    env: dict[str, str]
    logs: Path


def launch_services(
    stack: contextlib.ExitStack,
    db_url: str,
    redis_url: str,
    *,
    concurrency: int,
    worker_nice: int = 0,
    unused_lead_id: int,
) -> Launched:
    """Start the API and the worker (each stopped by ``stack``) and warm every worker child up.

    Rate limit and office hours are off; one fresh API key. The warm-up jobs name lead IDs from
    ``unused_lead_id`` on, which must not exist (they only report ``not_found``).
    """
    key = new_key()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADARCHIVE_")}
    env.update(
        LEADARCHIVE_DATABASE_URL=db_url,
        LEADARCHIVE_BROKER_URL=redis_url,
        LEADARCHIVE_RESULT_BACKEND=redis_url,
        LEADARCHIVE_API_KEYS=f"bench:{hash_key(key)}",
        LEADARCHIVE_RATE_LIMIT="",
        LEADARCHIVE_OFFICE_HOURS="",
    )
    logs = Path(tempfile.mkdtemp(prefix="leadarchive-bench-api-"))
    log(f"process logs in {logs}")
    port = free_port()
    api_proc = start_process("api", [str(CLI), "api", "--port", str(port)], env, logs)
    stack.callback(stop_process, api_proc)
    worker_argv = [str(CLI), "worker", "--concurrency", str(concurrency)]
    if worker_nice:
        worker_argv = ["nice", "-n", str(worker_nice), *worker_argv]
    worker_proc = start_process("worker", worker_argv, env, logs)
    stack.callback(stop_process, worker_proc)
    stack.callback(log, "stopping the API and the worker")
    headers = {"Authorization": f"Key={key}"}
    client = RawHTTP("127.0.0.1", port, headers)
    stack.callback(client.close)
    wait_until(
        lambda: client.request("GET", "/healthz").status == 200,
        30,
        "API",
        api_proc,
        logs / "api.log",
    )

    # Warm up: every worker child builds its engine and reads the schema on its first job.
    def warm() -> bool:
        urls = [submit(client, [unused_lead_id + n]) for n in range(2 * concurrency)]
        return all(poll_job(client, u, 0.05, 30)[0]["status"] == "succeeded" for u in urls)

    wait_until(warm, 60, "worker", worker_proc, logs / "worker.log")
    warm()
    return Launched(
        api_proc=api_proc,
        worker_proc=worker_proc,
        api=psutil.Process(api_proc.pid),
        worker=psutil.Process(worker_proc.pid),
        key=key,
        port=port,
        headers=headers,
        client=client,
        env=env,
        logs=logs,
    )


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
