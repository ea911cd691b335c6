"""A whole LeadArchive deployment for the fault scenarios, and the checks made on its tables.

``Stack``: a fresh MyISAM Vicidial database on a MariaDB server, a Redis database, `leadarchive
api` and `leadarchive worker` as real processes, and an HTTP client that counts every request
and every 5xx. ``Dialer``: many connections updating leads, each write recorded. ``lost_leads``:
the invariant, read back from the two tables byte for byte, never from a job report.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx2
import psutil
import pymysql
import redis
from pymysql.constants import CLIENT
from sqlalchemy import Connection, Engine, make_url

from tasks.archive import SQL_MODE
from tasks.db import make_engine
from tasks.ddl import create_vicidial_tables
from tasks.jobs import RedisJobStore
from tasks.records import FINAL
from tasks.seed import LEAD_COLUMNS, insert_leads, lead_rows
from tests.faults.servers import free_port
from tests.helpers import ALICE, archive, column, live, make_settings, stored
from tests.processes import kill_group, service_env, start_api, start_worker

Row = tuple[bytes | None, ...]


@dataclass
class Figures:
    """What one scenario saw: the columns of docs/RELIABILITY.md, and any problem found."""

    scenario: str
    runs: int = 0
    leads_checked: int = 0
    leads_lost: int = 0
    requests: int = 0
    five_xx: int = 0
    # Leads gone from vicidial_list whose archive row is their newest data, byte for byte.
    archived: int = 0
    # Leads still live at the end, by the reason their job reported (or "job failed: ...").
    left_live: dict[str, int] = field(default_factory=dict)
    # Jobs that ended `failed`, by error (type and detail).
    failed_jobs: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, other: Figures) -> None:
        """Fold another run of the same scenario into this one."""
        self.runs += other.runs
        self.leads_checked += other.leads_checked
        self.leads_lost += other.leads_lost
        self.requests += other.requests
        self.five_xx += other.five_xx
        self.archived += other.archived
        for reason, count in other.left_live.items():
            self.left_live[reason] = self.left_live.get(reason, 0) + count
        for reason, count in other.failed_jobs.items():
            self.failed_jobs[reason] = self.failed_jobs.get(reason, 0) + count
        self.problems += other.problems
        for name, value in other.notes.items():
            mine = self.notes.get(name)
            if isinstance(value, int | float) and isinstance(mine, int | float):
                self.notes[name] = mine + value
            elif isinstance(value, int | float) and mine is None:
                self.notes[name] = value
            else:
                self.notes[name] = value

    def summary(self) -> str:
        """The judged numbers in one line: what every run prints, and the total."""
        return (
            f"times run={self.runs} leads checked={self.leads_checked:,}"
            f" leads lost={self.leads_lost} archived={self.archived:,}"
            f" left live={by_reason(self.left_live)}"
            f" failed jobs={by_reason(self.failed_jobs)}"
            f" requests tried={self.requests:,} unexpected 5xx={self.five_xx}"
            f" problems={len(self.problems)}"
        )

    def __str__(self) -> str:
        return f"{self.scenario}: {self.summary()} | notes: {self.notes}" + "".join(
            f"\n  PROBLEM: {p[:2000]}" for p in self.problems
        )


def by_reason(counts: dict[str, int]) -> str:
    """``3 (mismatch: 2; not_archived: 1)``; ``0`` when empty."""
    if not counts:
        return "0"
    total = sum(counts.values())
    return f"{total} (" + "; ".join(f"{r}: {n}" for r, n in sorted(counts.items())) + ")"


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
            until(
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
            until(lambda: len(_alive_children(process)) >= concurrency, 60, "the worker's pool")
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
        deadline = time.monotonic() + timeout
        while True:
            try:
                statuses = self.statuses(job_ids)
            except redis.exceptions.RedisError:
                statuses = dict.fromkeys(job_ids, "")
            running = sum(s == "running" for s in statuses.values())
            self.most_running = max(self.most_running, running)
            if all(s in FINAL for s in statuses.values()) or time.monotonic() > deadline:
                return statuses
            time.sleep(0.02)

    def final_reports(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Each job's status as the API shows it (one GET per job)."""
        assert self.http is not None
        return {j: self.http.request("GET", f"/vicidial/leads/archive/{j}").body for j in job_ids}

    # -- the batch lock: where a batch is right now -----------------------------------------

    def monitor(self) -> pymysql.Connection[Any]:
        """A root connection of its own (for finding and killing the batch's connection)."""
        url = make_url(self.server_url)
        return pymysql.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "root",
            password=url.password or "",
            autocommit=True,
            connect_timeout=5,
        )

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
            for child in _alive_children(worker):
                with contextlib.suppress(psutil.Error):
                    if any(c.laddr and c.laddr.port == port for c in child.net_connections("tcp")):
                        return child
        return None

    def pool_processes(self) -> list[psutil.Process]:
        return [c for w in self.workers for c in _alive_children(w)]

    def worker_of(self, process: psutil.Process) -> psutil.Process | None:
        for worker in self.workers:
            if any(c.pid == process.pid for c in _alive_children(worker)):
                return worker
        return None


def _alive_children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [c for c in process.children() if c.status() != psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


def _answers(client: httpx2.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx2.HTTPError:
        return False


def until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until truthy; its value. Raises TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- the invariant, read from the tables -----------------------------------------------------


@dataclass
class TableCheck:
    """The invariant for every lead, and where each lead is."""

    checked: int
    lost: list[int]
    live: set[int]
    archived: set[int]


def check_tables(conn: Connection, expected: dict[int, Row]) -> TableCheck:
    """For every lead: its newest data (``expected``) is its live row, or, if it is no longer
    live, its archive row, byte for byte in every column."""
    live_rows, archive_rows = live(conn), archive(conn)
    lost = [
        lead_id
        for lead_id, row in expected.items()
        if (live_rows[lead_id] if lead_id in live_rows else archive_rows.get(lead_id)) != row
    ]
    return TableCheck(len(expected), lost, set(live_rows), set(archive_rows))


def describe_loss(conn: Connection, expected: dict[int, Row], lost: list[int]) -> str:
    """The first lost leads, column by column, for the failure message."""
    live_rows, archive_rows = live(conn), archive(conn)
    lines = []
    for lead_id in lost[:5]:
        where, found = ("live", live_rows.get(lead_id))
        if found is None:
            where, found = ("archive", archive_rows.get(lead_id))
        differ = (
            "missing from both tables"
            if found is None
            else ", ".join(
                f"{name}: {found[i]!r} != {expected[lead_id][i]!r}"
                for i, name in enumerate(LEAD_COLUMNS)
                if found[i] != expected[lead_id][i]
            )
        )
        lines.append(f"lead {lead_id} ({where}): {differ}")
    return "; ".join(lines)


def check_jobs(
    stack: Stack, job_ids: list[str], statuses: dict[str, str], figures: Figures
) -> None:
    """Every job ended, and a failed one with an error that says what went wrong (whether it
    may fail at all is ``judge_outcomes``' question)."""
    stuck = [j for j, s in statuses.items() if s not in FINAL]
    if stuck:
        figures.problems.append(f"broker state: {broker_state(stack, stuck)}")
        figures.problems.append(
            f"{len(stuck)} jobs never ended, e.g. {stuck[:3]} {statuses[stuck[0]]!r}"
        )
    failed = [j for j, s in statuses.items() if s == "failed"]
    for job_id in failed:
        error = json.loads((stored(stack.jobs.get(job_id)) or {}).get("error", "{}"))
        if not (error.get("type") and error.get("detail")):
            figures.problems.append(f"job {job_id} failed without a clear error: {error!r}")
    figures.notes["jobs"] = figures.notes.get("jobs", 0) + len(job_ids)


def broker_state(stack: Stack, stuck: list[str]) -> dict[str, Any]:
    """Where the stuck jobs' messages are in Redis (kombu's queue, unacked hash and mutex)."""
    r = stack.redis
    unacked = {k.decode(): v.decode() for k, v in r.hgetall("unacked").items()}  # type: ignore[union-attr]
    queued = [m.decode() for m in r.lrange("leadarchive", 0, -1)]  # type: ignore[union-attr]
    in_queue = [j for j in stuck if any(j in m for m in queued)]
    in_unacked = [j for j in stuck if any(j in body for body in unacked.values())]
    return {
        "now": time.time(),
        # A job in neither place has lost its message; the service's sweep re-sends only jobs
        # whose record is `queued`, so one left `running` by a killed batch stays so (issue 13).
        "lost (in neither the queue nor unacked)": {
            j: (stored(stack.jobs.get(j)) or {}).get("status")
            for j in stuck
            if j not in in_queue and j not in in_unacked
        },
        "queue length": len(queued),
        "stuck in queue": in_queue,
        "stuck unacked": {
            tag: r.zscore("unacked_index", tag)
            for tag, body in unacked.items()
            if any(j in body for j in stuck)
        },
        "unacked": len(unacked),
        "unacked_mutex ttl": r.ttl("unacked_mutex"),
        "records": {j: stored(stack.jobs.get(j)) for j in stuck[:2]},
    }


def check_invariant(stack: Stack, expected: dict[int, Row], figures: Figures) -> TableCheck:
    """Read both tables back and count every lead whose newest data is in neither."""
    with stack.connect() as conn:
        result = check_tables(conn, expected)
        if result.lost:
            figures.problems.append(
                f"{len(result.lost)} leads lost: {describe_loss(conn, expected, result.lost)}"
            )
    figures.leads_checked += result.checked
    figures.leads_lost += len(result.lost)
    return result


# Why a job may report a lead it was asked to delete as still live (tasks.archive.DELETE_OUTCOMES).
LEFT_LIVE_REASONS = frozenset({"mismatch", "in_use", "not_archived", "id_reused"})
NOT_REQUESTED = "delete not requested"
JOB_FAILED = "its job failed"


@dataclass(frozen=True)
class Outcomes:
    """What a scenario allows beyond "every job succeeded and every lead was archived".

    ``failure``: the error (``"type: detail"``) a failed job may end with, matched as a regular
    expression; any other failure is a problem. ``left_live``: the reasons for which a lead may
    still be live at the end (a job's delete outcome, ``NOT_REQUESTED``, or ``JOB_FAILED`` for the
    leads of a job that failed as allowed). ``must_archive``: leads that must be archived whatever
    their jobs reported.
    """

    failure: str | None = None
    left_live: frozenset[str] = frozenset()
    must_archive: frozenset[int] = frozenset()


def judge_outcomes(
    jobs: dict[str, list[int]],
    views: dict[str, Any],
    table: TableCheck,
    outcomes: Outcomes,
    figures: Figures,
) -> dict[int, str]:
    """Judge every job and every lead by what the jobs reported and what the tables hold.

    ``views`` are the jobs as the API shows them (``GET /vicidial/leads/archive/{id}``); ``table``
    is the independent read-back (``check_invariant``), never the engine's own comparison. Every
    failed job counts by its error, and is a problem unless ``outcomes.failure`` allows it. Every
    lead of every job is either archived (gone from vicidial_list, its archive row its newest data
    byte for byte: the invariant) or still live with its newest data and a reason its jobs
    reported; a job that reported a lead deleted or not found while it is live, or left live while
    it is gone (and no other job deleted it), is a problem. Returns the live leads' reasons.
    """
    problems: dict[str, list[str]] = {}

    def problem(kind: str, example: str) -> None:
        problems.setdefault(kind, []).append(example)

    allowed_failure = re.compile(outcomes.failure) if outcomes.failure else None
    # lead -> (finished_at, job, its entry, whether the job asked for the delete)
    reports: dict[int, list[tuple[str, str, dict[str, Any], bool]]] = {}
    failed_leads: set[int] = set()
    for job_id, lead_ids in jobs.items():
        view = views.get(job_id)
        status = view.get("status") if isinstance(view, dict) else None
        if not isinstance(view, dict):
            problem("jobs the API could not show", f"{job_id}: {view!r}"[:200])
        elif status == "failed":
            error = view.get("error") or {}
            reason = f"{error.get('type')}: {error.get('detail')}"
            figures.failed_jobs[reason[:200]] = figures.failed_jobs.get(reason[:200], 0) + 1
            if allowed_failure is None or not allowed_failure.search(reason):
                problem("jobs failed", f"{job_id}: {reason[:200]}")
            failed_leads.update(lead_ids)
        elif status == "succeeded":
            leads = {int(e["lead_id"]): e for e in (view.get("result") or {}).get("leads", [])}
            if set(leads) != set(lead_ids):
                problem("reports that leave out leads or add others", job_id)
            delete = bool(view["request"]["delete_leads"])
            for lead_id, entry in leads.items():
                finished = str(view.get("finished_at") or "")
                reports.setdefault(lead_id, []).append((finished, job_id, entry, delete))
        elif status in FINAL:
            problem(f"jobs that ended {status}", job_id)
        # A job that never ended is check_jobs' problem.
    reasons: dict[int, str] = {}
    lost = set(table.lost)
    named = sorted({i for ids in jobs.values() for i in ids})
    figures.notes["leads in jobs"] = figures.notes.get("leads in jobs", 0) + len(named)
    for lead_id in named:
        entries = reports.get(lead_id, [])
        if lead_id not in table.live:
            if lead_id in table.archived and lead_id not in lost:
                figures.archived += 1
            said_live = [job for _, job, entry, _ in entries if entry.get("live")]
            deleted = any(entry.get("delete") == "deleted" for _, _, entry, _ in entries)
            if said_live and not deleted:
                problem("leads reported left live that are gone", f"{lead_id} by {said_live[0]}")
            continue
        for _, job_id, entry, _ in entries:
            if not entry.get("live"):
                problem(
                    "live leads a job reported gone",
                    f"{lead_id}: {job_id} says delete={entry.get('delete')} live=false",
                )
        deleting = sorted((f, str(e.get("delete"))) for f, _, e, d in entries if d)
        if deleting:
            reason = deleting[-1][1]  # what the job that ended last said
        elif entries:
            reason = NOT_REQUESTED
        elif lead_id in failed_leads:
            reason = JOB_FAILED
        else:
            reason = "no report (its job never ended)"
        reasons[lead_id] = reason
        figures.left_live[reason] = figures.left_live.get(reason, 0) + 1
        if reason in LEFT_LIVE_REASONS | {NOT_REQUESTED, JOB_FAILED}:
            if reason not in outcomes.left_live:
                problem(f"leads left live as {reason!r}", str(lead_id))
        else:
            problem("leads left live without a reason", f"{lead_id} ({reason})")
        if lead_id in outcomes.must_archive:
            problem("leads that had to be archived left live", f"{lead_id} ({reason})")
    for kind, examples in problems.items():
        figures.problems.append(f"{len(examples)} {kind}, e.g. {examples[:5]}")
    return reasons


def count_http(
    stack: Stack, figures: Figures, expected_503: Callable[[Answer], bool] | None = None
) -> None:
    """Fold the client's requests into the figures; 5xx are counted unless ``expected_503``."""
    if stack.http is None:
        return
    figures.requests += len(stack.http.answers)
    unexpected = [
        a for a in stack.http.five_xx if not (a.status == 503 and expected_503 and expected_503(a))
    ]
    figures.five_xx += len(unexpected)
    for answer in unexpected[:3]:
        figures.problems.append(
            f"{answer.method} answered {answer.status}: {str(answer.body)[:200]}"
        )
    unanswered = [a for a in stack.http.answers if a.status is None]
    if unanswered:
        figures.problems.append(f"{len(unanswered)} requests got no answer at all")


# -- a simulated dialer ----------------------------------------------------------------------

DIALER_NAMES = ("bob", "Bob", "BOB", "bob ")
_TIMESTAMP_BASE = datetime(2030, 1, 1)


@dataclass
class Write:
    """One dialer UPDATE that found its row: the values it stored, and when."""

    lead_id: int
    first_name: str
    comments: str
    modify_date: str
    at: float


class Dialer:
    """Threads, one connection each, updating random leads of their own at a combined ``rate``.

    Like Vicidial's dialer, it writes live leads all the time: first_name (often only its case or
    a trailing space, bytes the collation calls equal), comments, and modify_date. Each thread
    owns every ``threads``-th lead, so the order of writes to one lead is the order one thread
    made them, and the last write that found its row is the lead's newest data. A lead whose
    UPDATE finds no row has been archived; the thread stops picking it.
    """

    def __init__(
        self,
        stack: Stack,
        lead_ids: list[int],
        *,
        threads: int = 16,
        rate: float = 250,
        seed: int = 0,
    ) -> None:
        self.stack = stack
        self.threads = threads
        self.rate = rate
        self.seed = seed
        self.owned = [lead_ids[k::threads] for k in range(threads)]
        self.writes: list[list[Write]] = [[] for _ in range(threads)]
        self.missed = [0] * threads
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = self.stopped = 0.0

    def __enter__(self) -> Dialer:
        self.started = time.monotonic()
        for k in range(self.threads):
            thread = threading.Thread(target=self._run, args=(k,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.stopped = time.monotonic()

    @property
    def alive(self) -> bool:
        """Whether a thread is still running (after ``__exit__``: it did not stop in time)."""
        return any(thread.is_alive() for thread in self._threads)

    def _connect(self) -> pymysql.Connection[Any]:
        url = make_url(self.stack.database_url)
        conn = pymysql.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "root",
            password=url.password or "",
            database=url.database,
            charset="utf8mb4",
            autocommit=True,
            # rowcount = rows found, not rows changed: a write of the same values still counts.
            client_flag=CLIENT.FOUND_ROWS,
        )
        with conn.cursor() as cursor:
            cursor.execute(f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00'")
        return conn

    def _run(self, k: int) -> None:
        rng = random.Random(self.seed * 1000 + k)
        leads = list(self.owned[k])
        period = self.threads / self.rate
        next_at = time.monotonic()
        seq = 0
        try:
            conn = self._connect()
            with conn.cursor() as cursor:
                while leads and not self._stop.is_set():
                    next_at += period
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    elif delay < -1:
                        next_at = time.monotonic()  # fell behind: no burst to catch up
                    seq += 1
                    lead_id = rng.choice(leads)
                    name = rng.choice(DIALER_NAMES)
                    comments = f"dialer {k}-{seq}"
                    stamp = _TIMESTAMP_BASE + timedelta(seconds=k * 1_000_000 + seq)
                    modify_date = stamp.strftime("%Y-%m-%d %H:%M:%S")
                    found = cursor.execute(
                        "UPDATE vicidial_list SET first_name = %s, comments = %s, modify_date = %s"
                        " WHERE lead_id = %s",
                        (name, comments, modify_date, lead_id),
                    )
                    if found:
                        self.writes[k].append(
                            Write(lead_id, name, comments, modify_date, time.monotonic())
                        )
                    else:
                        self.missed[k] += 1
                        leads.remove(lead_id)
            conn.close()
        except BaseException as exc:  # reported by the scenario
            self.errors.append(exc)

    @property
    def applied(self) -> int:
        return sum(len(w) for w in self.writes)

    def rate_while(self, start: float, end: float) -> float:
        """Writes per second that found their row between ``start`` and ``end``."""
        count = sum(1 for ws in self.writes for w in ws if start <= w.at <= end)
        return count / max(end - start, 1e-9)

    def expected(self, original: dict[int, Row]) -> dict[int, Row]:
        """Every lead's newest data: its original row with its last write applied."""
        newest: dict[int, Write] = {}
        for writes in self.writes:
            for write in writes:
                newest[write.lead_id] = write
        name, comments, modified = column("first_name"), column("comments"), column("modify_date")
        expected = dict(original)
        for lead_id, write in newest.items():
            row = list(original[lead_id])
            row[name] = write.first_name.encode()
            row[comments] = write.comments.encode()
            row[modified] = write.modify_date.encode()
            expected[lead_id] = tuple(row)
        return expected
