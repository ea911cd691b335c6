"""The benchmarks' infrastructure: a throw-away MariaDB database, a claimed Redis database, the
service's processes started and warmed up, and what they cost (RSS, CPU, the machine).

Every resource is registered on the caller's ``contextlib.ExitStack``, so the database is
dropped, the Redis database flushed and every process stopped (each in its own process group)
at the end, even on error, SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import redis
from sqlalchemy import URL, Engine

from bench.client import RawHTTP, poll_job, submit
from bench.engine import log
from bench.report import mb
from testkit import servers
from testkit.polling import wait_until
from testkit.processes import REPO
from testkit.services import live_services

DEFAULT_REDIS = os.environ.get("LEADARCHIVE_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
CLAIM_KEY = "leadarchive-bench-api:claim"


def scratch_database(
    stack: contextlib.ExitStack, server: Engine, server_url: str, prefix: str
) -> URL:
    """A new database ``<prefix>_<random>`` in Vicidial's utf8 / utf8_unicode_ci on ``server``
    (the server at ``server_url``), dropped when ``stack`` closes; its URL."""
    url = stack.enter_context(servers.scratch_database(server, prefix))
    stack.callback(log, f"dropping {url.database}")
    return url


def claim_redis_db(base_url: str) -> tuple[int, redis.Redis]:
    """The first Redis database 2..15 that is empty, claimed with SET NX of a claim key."""
    claimed = servers.claim_redis_db(
        base_url, CLAIM_KEY, f"bench/api.py pid {os.getpid()}", range(2, 16)
    )
    if claimed is None:
        raise SystemExit("no empty Redis database among 2..15")
    return claimed


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


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def cleanup_on_signals() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    logs = Path(tempfile.mkdtemp(prefix="leadarchive-bench-api-"))
    log(f"process logs in {logs}")
    stack.callback(log, "stopped the API and the worker")
    live = stack.enter_context(
        live_services(
            db_url,
            redis_url,
            logs,
            concurrency=concurrency,
            owner="bench",
            worker_nice=worker_nice,
            metrics=False,
            rate_limit="",
        )
    )
    client = live.client()
    stack.callback(client.close)

    # Warm up: every worker child builds its engine and reads the schema on its first job.
    def warm() -> bool:
        urls = [submit(client, [unused_lead_id + n]) for n in range(2 * concurrency)]
        return all(poll_job(client, u, 0.05, 30)[0]["status"] == "succeeded" for u in urls)

    worker_proc = live.processes["worker"]
    wait_until(
        warm,
        60,
        "worker",
        interval=0.1,
        process=worker_proc,
        log=logs / "worker.log",
        ignore=(Exception,),
    )
    warm()
    api_proc = live.processes["api"]
    return Launched(
        api_proc=api_proc,
        worker_proc=worker_proc,
        api=psutil.Process(api_proc.pid),
        worker=psutil.Process(worker_proc.pid),
        key=live.key,
        port=live.port,
        headers=live.headers,
        client=client,
        env=live.env,
        logs=logs,
    )
