"""The submission load: an open-loop, wrk2-style generator (asyncio) of small archive jobs, the wait
for every accepted job to end (job records read straight from Redis), and one load phase of
``bench/api.py`` with its CPU accounting and the API's own latency histogram.

A request's latency runs from its *scheduled* time (``bench.engine.Schedule``), so a server that
falls behind is charged for the queue it causes (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import psutil
import redis

from bench.client import ARCHIVE_PATH, AsyncRawHTTP, RawHTTP, archive_body
from bench.engine import Schedule, log
from bench.report import TARGET_P99_MS, epoch, summarize
from bench.stack import cpu_processes, cpu_seconds, cpu_share, worker_processes
from tasks.celery_config import QUEUE
from tasks.records import FINAL
from testkit.processes import CLI

JOB_KEY = "leadarchive:job:{}"


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
    follow_jobs(
        client,
        job_ids,
        timeout,
        lambda message: progress(f"{message}; queue {client.llen(QUEUE)}"),
        interval=0.25,
    )
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
class Followed:
    seconds: float
    final: dict[str, int]
    not_final: int
    lost: int
    failed_examples: list[str]


def follow_jobs(
    client: redis.Redis,
    job_ids: list[str],
    timeout: float,
    progress: Callable[[str], None],
    interval: float = 0.1,
) -> Followed:
    """Poll every job's record until each is final, noting each final status when first seen.

    This works with a result lifetime shorter than the wait: a finished job may expire before
    the last job ends. A record that disappears before it was seen final is a lost job
    (``drain`` waits with it, then tallies what the records say at the end).
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
            time.sleep(interval)
    counts = Counter(v.split(" ", 1)[0] for v in final.values())
    return Followed(
        seconds=time.perf_counter() - started,
        final=dict(counts),
        not_final=len(waiting),
        lost=len(lost),
        failed_examples=[f"{j}: {v}" for j, v in final.items() if v != "succeeded"][:5],
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
