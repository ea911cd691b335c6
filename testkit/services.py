"""A live service: `leadarchive api` and `leadarchive worker` as real processes on a database
and a Redis database of the caller's, for the hostile-input tests and the benchmarks.

Each process runs in a group of its own and is stopped with its group when the context ends,
however it ends; one fresh API key is configured, office hours are off, and ``settings`` become
``LEADARCHIVE_*`` variables. Nothing is started until ``/healthz`` answers.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.auth import hash_key, new_key
from testkit.http import RawHTTP
from testkit.polling import wait_until
from testkit.processes import free_port, service_env, start_api, start_worker, stop_group

FINAL_STATUSES = ("succeeded", "failed", "cancelled")


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
    worker_metrics_port: int | None
    worker_nice: int = 0
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
        self.processes["worker"] = start_worker(
            self.env,
            self.logs / "worker.log",
            self.concurrency,
            metrics_port=self.worker_metrics_port,
            nice=self.worker_nice,
        )
        return self.processes["worker"]

    def log_text(self) -> str:
        """Everything the API and the worker have logged so far."""
        return "\n".join(
            path.read_text(errors="replace")
            for name in self.processes
            if (path := self.logs / f"{name}.log").exists()
        )


@contextlib.contextmanager
def live_services(
    database_url: str,
    redis_url: str,
    logs: Path,
    *,
    concurrency: int = 2,
    worker: bool = True,
    owner: str = "load",
    worker_nice: int = 0,
    metrics: bool = True,
    **settings: str,
) -> Iterator[Live]:
    """``leadarchive api`` (and ``leadarchive worker`` unless ``worker`` is false) on these
    services, each in its own process group, all stopped on exit.

    The API key belongs to ``owner``; ``worker_nice`` lowers the worker's CPU priority;
    ``metrics=False`` leaves the worker's metrics server at its default port instead of a free
    one. ``settings`` become ``LEADARCHIVE_<NAME>`` variables (e.g. ``result_ttl="10s"``).
    """
    key = new_key()
    logs.mkdir(parents=True, exist_ok=True)
    live = Live(
        port=free_port(),
        key=key,
        redis_url=redis_url,
        database_url=database_url,
        logs=logs,
        env=service_env(database_url, redis_url, api_keys=f"{owner}:{hash_key(key)}", **settings),
        concurrency=concurrency,
        worker_metrics_port=free_port() if metrics else None,
        worker_nice=worker_nice,
    )
    try:
        live.processes["api"] = start_api(live.env, logs / "api.log", live.port)
        if worker:
            live.start_worker()
        probe = live.client()
        try:
            wait_until(
                lambda: probe.request("GET", "/healthz").status == 200,
                60,
                "API",
                interval=0.1,
                process=live.processes["api"],
                log=logs / "api.log",
                ignore=(OSError, EOFError, ValueError),
            )
        finally:
            probe.close()
        yield live
    finally:
        for proc in reversed(list(live.processes.values())):
            stop_group(proc)


def wait_for_job(live: Live, url: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll a status URL until the job ends; its final body."""
    client = live.client()

    def final() -> dict[str, Any] | None:
        body: dict[str, Any] = client.request("GET", url).json()
        return body if body.get("status") in FINAL_STATUSES else None

    try:
        return wait_until(final, timeout, f"{url} to end")
    finally:
        client.close()
