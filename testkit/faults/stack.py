"""A whole LeadArchive deployment for the fault scenarios.

``Stack``: a fresh MyISAM Vicidial database on a MariaDB server, a Redis database, `leadarchive
api` and `leadarchive worker` as real processes, and an HTTP client that counts every request
and every 5xx. What is judged after a run is in ``testkit.faults.judgement``; the dialer that
writes meanwhile is ``testkit.dialer.Dialer``; the invariant is read back from the two tables
byte for byte (``testkit.checksum``), never from a job report.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import httpx2
import psutil
import pymysql
import redis
from sqlalchemy import Connection, Engine, make_url

from tasks.db import make_engine
from tasks.ddl import create_vicidial_tables
from tasks.jobs import RedisJobStore
from tasks.records import FINAL
from tasks.seed import insert_leads, lead_rows
from testkit.checksum import Row, live
from testkit.polling import WaitTimeout, wait_until
from testkit.processes import (
    alive_children,
    free_port,
    kill_group,
    service_env,
    start_api,
    start_worker,
)
from testkit.servers import mysql_connect
from testkit.settings import ALICE, make_settings


@dataclass
class ServiceSettings:
    """The service settings a scenario runs with (shortened timeouts keep CI quick)."""

    visibility_timeout: float = 30
    task_time_limit: float = 20
    lock_wait_timeout: float = 10

    def env(self) -> dict[str, Any]:
        return {
            "visibility_timeout": f"{self.visibility_timeout}s",
            "task_time_limit": f"{self.task_time_limit}s",
            "lock_wait_timeout": f"{self.lock_wait_timeout}s",
            "rate_limit": "",
        }


CI_SETTINGS = ServiceSettings(visibility_timeout=10, task_time_limit=6, lock_wait_timeout=4)
PRODUCTION_SETTINGS = ServiceSettings()


@dataclass
class Answer:
    """One HTTP request as the client saw it."""

    method: str
    status: int | None  # None: no answer (connection refused, timeout)
    started: float
    ended: float
    body: Any = None


class Http:
    """An HTTP client for the API that records every request it makes."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx2.Client(base_url=base_url, headers=ALICE, timeout=15)
        self.answers: list[Answer] = []
        self._lock = threading.Lock()

    def request(self, method: str, path: str, body: Any = None) -> Answer:
        started = time.monotonic()
        try:
            response = self.client.request(method, path, json=body)
        except httpx2.HTTPError:
            answer = Answer(method, None, started, time.monotonic())
        else:
            try:
                payload = response.json()
            except ValueError:
                payload = response.text
            answer = Answer(method, response.status_code, started, time.monotonic(), payload)
        with self._lock:
            self.answers.append(answer)
        return answer

    @property
    def five_xx(self) -> list[Answer]:
        return [a for a in self.answers if a.status is not None and a.status >= 500]

    def close(self) -> None:
        self.client.close()


class Stack:
    """A fresh database and Redis database, the API and workers, for one scenario run."""

    def __init__(
        self,
        server_url: str,
        redis_url: str,
        workdir: Path,
        settings: ServiceSettings = CI_SETTINGS,
    ) -> None:
        self.server_url = server_url
        self.redis_url = redis_url
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.database = f"leadarchive_faults_{uuid.uuid4().hex[:12]}"
        url = make_url(server_url).set(database=self.database, query={"charset": "utf8mb4"})
        self.database_url = url.render_as_string(hide_password=False)
        self.lock_name = "leadarchive." + re.sub(r"\W", "_", self.database)[:50]
        self.settings = settings
        self.env = service_env(self.database_url, redis_url, **settings.env())
        self.env["LEADARCHIVE_API_KEYS"] = make_settings(self.database_url, redis_url).api_keys
        self.workers: list[psutil.Process] = []
        self.processes: list[Any] = []
        self.api_port = 0
        self.most_running = 0
        self.http: Http | None = None
        self._logs: list[IO[bytes]] = []
        self._engine: Engine | None = None
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
        self.jobs = RedisJobStore(self.redis, timedelta(days=1))

    # -- set up and tear down --------------------------------------------------------------

    def __enter__(self) -> Stack:
        self.redis.flushdb()
        server = make_engine(self.server_url)
        with server.connect() as conn:
            conn.exec_driver_sql(
                f"CREATE DATABASE `{self.database}` CHARACTER SET utf8 COLLATE utf8_unicode_ci"
            )
        server.dispose()
        with self.connect() as conn:
            create_vicidial_tables(conn, "MyISAM")
        return self

    def __exit__(self, *_: object) -> None:
        for process in self.processes:
            kill_group(process)
        if self.http is not None:
            self.http.close()
        for log in self._logs:
            log.close()
        if self._engine is not None:
            self._engine.dispose()
        with contextlib.suppress(Exception):
            server = make_engine(self.server_url)
            with server.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{self.database}`")
            server.dispose()
        with contextlib.suppress(redis.exceptions.RedisError):
            self.redis.flushdb()
        self.redis.close()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.database_url, pool_size=4)
        return self._engine

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def seed(self, count: int, first_lead_id: int = 1, seed: int = 0) -> dict[int, Row]:
        """Load ``count`` awkward leads into vicidial_list; their rows, byte for byte."""
        with self.connect() as conn:
            insert_leads(conn, lead_rows(count, first_lead_id=first_lead_id, seed=seed))
            rows = live(conn)
        return {i: r for i, r in rows.items() if first_lead_id <= i < first_lead_id + count}

    def _log(self, name: str) -> IO[bytes]:
        log = (self.workdir / name).open("ab")
        self._logs.append(log)
        return log

    def start_api(self) -> Http:
        """`leadarchive api` on a free port; returns the counting client once it answers."""
        self.api_port = free_port()
        self.processes.append(start_api(self.env, self._log("api.log"), self.api_port))
        self.http = Http(f"http://127.0.0.1:{self.api_port}")
        probe = httpx2.Client(timeout=2)
        try:
            wait_until(
                lambda: _answers(probe, f"http://127.0.0.1:{self.api_port}/healthz"),
                60,
                "the API to answer",
            )
        finally:
            probe.close()
        return self.http

    def start_worker(self, concurrency: int = 1, *, wait: bool = True) -> psutil.Process:
        """A `leadarchive worker` with ``concurrency`` pool processes (``wait``: once they run)."""
        popen = start_worker(self.env, self._log("workers.log"), concurrency)
        self.processes.append(popen)
        process = psutil.Process(popen.pid)
        self.workers.append(process)
        if wait:
            wait_until(lambda: len(alive_children(process)) >= concurrency, 60, "the worker's pool")
        return process

    def kill_worker(self, process: psutil.Process) -> None:
        """SIGKILL a whole worker: the main process and its pool, at once."""
        for popen in self.processes:
            if popen.pid == process.pid:
                kill_group(popen)
        self.workers.remove(process)

    def log_tail(self, chars: int = 3000) -> str:
        path = self.workdir / "workers.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # -- jobs ------------------------------------------------------------------------------

    def submit(self, lead_ids: list[int], **actions: bool) -> Answer:
        """POST one archive job (insert, update and delete unless ``actions`` say otherwise)."""
        assert self.http is not None, "start_api() first"
        body = {"insert_leads": True, "update_leads": True, "delete_leads": True, **actions}
        return self.http.request("POST", "/vicidial/leads/archive", {**body, "lead_ids": lead_ids})

    def submit_ok(self, lead_ids: list[int], **actions: bool) -> str:
        answer = self.submit(lead_ids, **actions)
        assert answer.status == 202, f"submit answered {answer.status}: {answer.body}"
        return str(answer.body["job_id"])

    def statuses(self, job_ids: list[str]) -> dict[str, str]:
        """Each job's status, from its record in Redis ('' when it has none)."""
        pipe = self.redis.pipeline()
        for job_id in job_ids:
            pipe.hget(f"leadarchive:job:{job_id}", "status")
        return {j: (s.decode() if s else "") for j, s in zip(job_ids, pipe.execute(), strict=True)}

    def wait_final(self, job_ids: list[str], timeout: float) -> dict[str, str]:
        """Wait until every job has ended (or ``timeout``); each job's status at the end."""
        statuses: dict[str, str] = {}

        def ended() -> bool:
            nonlocal statuses
            try:
                statuses = self.statuses(job_ids)
            except redis.exceptions.RedisError:
                statuses = dict.fromkeys(job_ids, "")
            running = sum(s == "running" for s in statuses.values())
            self.most_running = max(self.most_running, running)
            return all(s in FINAL for s in statuses.values())

        with contextlib.suppress(WaitTimeout):
            wait_until(ended, timeout, "every job to end", interval=0.02)
        return statuses

    def final_reports(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Each job's status as the API shows it (one GET per job)."""
        assert self.http is not None
        return {j: self.http.request("GET", f"/vicidial/leads/archive/{j}").body for j in job_ids}

    # -- the batch lock: where a batch is right now -----------------------------------------

    def monitor(self) -> pymysql.Connection[Any]:
        """A root connection of its own (for finding and killing the batch's connection)."""
        return mysql_connect(self.server_url, connect_timeout=5)

    def lock_holder(self, monitor: pymysql.Connection[Any]) -> int | None:
        """The connection ID of the batch inside its window (holding the batch lock), if any."""
        with monitor.cursor() as cursor:
            cursor.execute("SELECT IS_USED_LOCK(%s)", (self.lock_name,))
            (holder,) = cursor.fetchone()
        return int(holder) if holder is not None else None

    def lock_holder_now(self) -> int | None:
        """``lock_holder`` on a connection of its own."""
        monitor = self.monitor()
        try:
            return self.lock_holder(monitor)
        finally:
            monitor.close()

    def connection_ids(self, monitor: pymysql.Connection[Any]) -> list[int]:
        """Every connection the service has open to this scenario's database."""
        with monitor.cursor() as cursor:
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST"
                " WHERE DB = %s AND ID <> CONNECTION_ID()",
                (self.database,),
            )
            return [int(r[0]) for r in cursor.fetchall()]

    def process_of(
        self, monitor: pymysql.Connection[Any], connection_id: int
    ) -> psutil.Process | None:
        """The worker pool process whose socket is the database connection ``connection_id``."""
        with monitor.cursor() as cursor:
            cursor.execute(
                "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = %s", (connection_id,)
            )
            row = cursor.fetchone()
        if not row or ":" not in str(row[0]):
            return None
        port = int(str(row[0]).rsplit(":", 1)[1])
        for worker in self.workers:
            for child in alive_children(worker):
                with contextlib.suppress(psutil.Error):
                    if any(c.laddr and c.laddr.port == port for c in child.net_connections("tcp")):
                        return child
        return None

    def pool_processes(self) -> list[psutil.Process]:
        return [c for w in self.workers for c in alive_children(w)]

    def worker_of(self, process: psutil.Process) -> psutil.Process | None:
        for worker in self.workers:
            if any(c.pid == process.pid for c in alive_children(worker)):
                return worker
        return None


def _answers(client: httpx2.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx2.HTTPError:
        return False
