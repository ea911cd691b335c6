"""The jobs' lifecycle, one Celery task per kind: run, retry, defer, fail, and its admin-log row.

Thin wrappers: the batches are ``tasks.archive.run_batch`` (``archive_leads``),
``tasks.archive.restore.run_restore`` (``restore_leads``) and the walk of a selection,
``tasks.selection_job.run_selection`` (``archive_selection``); the requests are
``tasks.requests``, the record ``tasks.records``. This module only moves the job record along its
states (``tasks.jobs``) around one run of the batch, the same for every kind (a ``JobKind``: the
request model and the batch that runs it). A selection's run may end without the job ending: it
gives the job back between two batches (deferred for office hours, or queued again with a new
message when its share of the time limit is used). Invariants, for every kind:

- the job record is the truth: the batch runs the request the record holds, and a message whose
  request differs from it is refused (logged, acknowledged, the record left alone);
- a run holds the job under a lease with a run token (``JobStore.start``; its length is
  ``Settings.lease``), renewed while the batch runs; every later change checks the token, so a
  run whose lease expired (its worker died, froze or lost Redis, and the sweep handed the job
  to another run) changes nothing; a duplicate delivery that finds a live lease leaves the
  record alone;
- a job that has ended, or is deferred, is never run again by a late or duplicate message;
- inside office hours a job is deferred (parked in the job store), never run;
- a job store that cannot serve (unreachable, OOM, READONLY, ...) hands the message back to the
  queue (the record would otherwise stay ``running`` forever); a transient database error is
  retried with backoff, anything else fails the job once;
- the admin log's row is written at most once per job, and a failure to write it never fails the
  job.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import kombu.exceptions
from celery import Task
from celery.exceptions import Reject
from celery.utils.time import get_exponential_backoff_interval
from pydantic import ValidationError
from sqlalchemy import Connection

from tasks import admin_log, metrics
from tasks.admin_log import JobOutcome
from tasks.archive import run_batch
from tasks.archive.restore import run_restore
from tasks.errors import (
    MYSQL_ACCESS_DENIED,
    LeadArchiveError,
    is_transient,
    mysql_error_code,
    redis_unavailable,
)
from tasks.jobs import JobStore
from tasks.publishing import publish
from tasks.records import FINAL, JobRecord, Status, now_iso
from tasks.requests import ArchiveRequest, JobRequest, RestoreRequest, SelectionRequest
from tasks.runtime import Runtime, runtime_of
from tasks.selection_job import Ended, SelectionProgress, SelectionReport, run_selection

# Stable names: in-flight messages and Flower refer to tasks by these, not by module paths.
ARCHIVE_TASK = ArchiveRequest.task_name
RESTORE_TASK = RestoreRequest.task_name
SELECTION_TASK = SelectionRequest.task_name
# A selection's run gives its job back (queued again, with a new message) once it has run this
# share of the task time limit: it never meets the limit, whatever the selection's size.
RUN_SHARE = 0.5
# Retries after a lost connection, deadlock or lock wait, with full-jitter backoff capped at a
# third of the visibility timeout (10 s): about 100 s in all on average, so a job outlives a
# MariaDB restart (8 retries, about 30 s, failed jobs in docs/RELIABILITY.md's restart runs).
MAX_RETRIES = 24
# After a renewal of a run's lease failed, the next is tried this soon: a lease of 10 s renewed
# every 3.3 s must not wait another 3.3 s after a renewal that took the job store's whole socket
# timeout (5 s) to fail.
RENEW_RETRY = timedelta(milliseconds=500)
# How long the end of a run waits for its renewal thread: longer than one renewal can take.
RENEW_JOIN = timedelta(seconds=10)

log = logging.getLogger("leadarchive.worker")


def _store_cannot_serve(exc: BaseException) -> bool:
    """Redis (the job store, or the broker a retry is sent through) cannot be reached or cannot
    serve now (OOM, READONLY, MISCONF, BUSY, LOADING: ``tasks.errors.redis_unavailable``)."""
    return redis_unavailable(exc) or isinstance(exc, kombu.exceptions.OperationalError)


class Report(Protocol):
    """What a batch reports: counts per action and outcome, and the job's result."""

    @property
    def counts(self) -> dict[str, dict[str, int]]: ...

    def as_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one run of a job ended: its report, and the job's status after it (a selection's run
    may also give the job back: ``deferred`` until ``not_before``, or ``continued``)."""

    report: Report
    status: Ended = "succeeded"
    not_before: datetime | None = None
    # Leads the job went through, for the admin log (None: the request's lead IDs).
    lead_count: int | None = None


@dataclass(frozen=True, slots=True)
class Held:
    """The run that holds a job: what its batch may use."""

    rt: Runtime
    record: JobRecord
    lease: _Lease
    # When the run began (time.monotonic()).
    began: float


@dataclass(frozen=True, slots=True)
class JobKind:
    """One kind of job: the request its messages carry, and the batch that runs it."""

    model: type[ArchiveRequest] | type[RestoreRequest] | type[SelectionRequest]
    # The batch: the connection, the request, and the run that holds the job (its record
    # carries the lists the key is limited to).
    run: Callable[[Connection, Any, Held], Outcome]
    # The admin log row's event_code (tasks.admin_log).
    event_code: str = admin_log.EVENT_CODE


def _run_archive(conn: Connection, request: ArchiveRequest, held: Held) -> Outcome:
    tuning, lists = held.rt.tuning, held.record.lists
    return Outcome(run_batch(conn, request.lead_ids, request.actions(), tuning, lists=lists))


def _run_restore(conn: Connection, request: RestoreRequest, held: Held) -> Outcome:
    tuning, lists = held.rt.tuning, held.record.lists
    return Outcome(run_restore(conn, request.lead_ids, request.dry_run, tuning, lists=lists))


class _Steward:
    """A selection's walk, as its run sees it (``tasks.selection_job.Steward``)."""

    def __init__(self, held: Held) -> None:
        self.held = held
        limit = held.rt.settings.task_time_limit.total_seconds()
        self.run_ends = held.began + limit * RUN_SHARE

    def save(self, report: SelectionReport, progress: SelectionProgress) -> str | None:
        held = self.held
        return held.rt.jobs.save_progress(
            held.record.job_id,
            held.lease.token,
            progress=progress.model_dump(exclude_none=True),
            checkpoint=report.model_dump(exclude_none=True),
        )

    def interruption(self, steps: int) -> tuple[Ended, datetime | None] | None:
        rt = self.held.rt
        if self.held.lease.lost:
            return "lost", None
        opens_at = rt.office_hours.window_opens_at(rt.clock())
        if opens_at is not None:
            return "deferred", opens_at
        if steps and time.monotonic() >= self.run_ends:
            return "continued", None
        return None

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _run_selection(conn: Connection, request: SelectionRequest, held: Held) -> Outcome:
    rt = held.rt
    ending = run_selection(
        conn,
        request,
        _Steward(held),
        zone=rt.office_hours.zone,
        batch_size=rt.settings.max_lead_ids,
        tuning=rt.tuning,
        throttles=rt.throttles,
        lists=held.record.lists,
        checkpoint=held.record.checkpoint,
    )
    return Outcome(ending, ending.status, ending.not_before, ending.report.done)


ARCHIVE = JobKind(ArchiveRequest, _run_archive)
RESTORE = JobKind(RestoreRequest, _run_restore, admin_log.RESTORE_EVENT_CODE)
SELECTION = JobKind(SelectionRequest, _run_selection)


def archive_leads(task: Task, job_id: str, **payload: Any) -> dict[str, Any]:
    """Run one archive job: defer it inside office hours, else run the batch and record it.

    ``payload`` is ``ArchiveRequest.payload()``: the message's keyword arguments, checked
    against the job record's request.
    """
    return _job_task(task, job_id, payload, ARCHIVE)


def restore_leads(task: Task, job_id: str, **payload: Any) -> dict[str, Any]:
    """Run one restore job, exactly as ``archive_leads`` runs an archive job.

    ``payload`` is ``RestoreRequest.payload()``, checked against the job record's request.
    """
    return _job_task(task, job_id, payload, RESTORE)


def archive_selection(task: Task, job_id: str, **payload: Any) -> dict[str, Any]:
    """Run one selection job, batch by batch from its checkpoint, as ``archive_leads`` runs an
    archive job; a run may give the job back between two batches (see the module docstring).

    ``payload`` is ``SelectionRequest.payload()``, checked against the job record's request.
    """
    return _job_task(task, job_id, payload, SELECTION)


def _job_task(task: Task, job_id: str, payload: dict[str, Any], kind: JobKind) -> dict[str, Any]:
    """Any kind's task: run the job, handing its message back when the job store cannot serve."""
    try:
        return _run_job(task, runtime_of(task.app), job_id, payload, kind)
    except Exception as exc:
        if not _store_cannot_serve(exc):
            raise
        # The job's record could not be read or written. Acknowledged, the message would be
        # gone and the record left `running` forever: hand it back to the queue instead (or,
        # while Redis is still down, leave it unacknowledged for the visibility timeout). The
        # batch is idempotent, so running it again is safe; a lease taken meanwhile expires and
        # the sweep hands the job back too.
        log.warning(
            "job store cannot serve, job requeued",
            extra={"job_id": job_id, "error": type(exc).__name__},
        )
        raise Reject(exc, requeue=True) from exc


class _Lease:
    """The run's hold on its job: renewed every third of its length by a thread while the run
    works (``kept``: the batch, then the admin log's row), and again every ``RENEW_RETRY`` after
    a renewal that failed (Redis away for a moment), so that one slow answer does not let the
    lease run out. ``lost`` turns true when the store says another run holds the job."""

    def __init__(self, jobs: JobStore, job_id: str, token: str, length: timedelta) -> None:
        self.jobs, self.job_id, self.token, self.length = jobs, job_id, token, length
        self.lost = False

    @contextmanager
    def kept(self) -> Iterator[None]:
        stop = threading.Event()
        thread = threading.Thread(
            target=self._renew, args=(stop,), name=f"lease {self.job_id}", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            stop.set()
            # Longer than one renewal can take (the job store's socket timeout).
            thread.join(timeout=RENEW_JOIN.total_seconds())

    def _renew(self, stop: threading.Event) -> None:
        every = self.length.total_seconds() / 3
        wait = every
        while not stop.wait(wait):
            try:
                renewed = self.jobs.renew(self.job_id, self.token, self.length)
            except Exception as exc:  # Redis away for a moment: try again soon
                log.warning(
                    "job lease not renewed",
                    extra={"job_id": self.job_id, "error": type(exc).__name__},
                )
                wait = min(every, RENEW_RETRY.total_seconds())
                continue
            if not renewed:
                if not stop.is_set():  # not a late answer after the run had ended
                    self.lost = True
                    log.warning("job lease lost to another run", extra={"job_id": self.job_id})
                return
            wait = every


def _run_job(
    task: Task, rt: Runtime, job_id: str, payload: dict[str, Any], kind: JobKind
) -> dict[str, Any]:
    jobs = rt.jobs
    record = jobs.get(job_id)
    if record is None:
        return {"job_id": job_id, "status": "expired"}
    if record.status in FINAL or record.status == "deferred":
        # Delivered again after it ended, or a duplicate of a parked job: nothing to do.
        return {"job_id": job_id, "status": record.status}
    fields = {"job_id": job_id, "key_name": record.owner}
    request = record.request
    if _message_request(payload, kind) != request:
        # Whatever wrote this message (Flower's task API, anything that can write to the
        # broker) did not take it from the record: the record is the truth, nothing runs.
        log.error("job message differs from its job record: refused", extra=fields)
        return {"job_id": job_id, "status": "refused"}
    opens_at = rt.office_hours.window_opens_at(rt.clock())
    if opens_at is not None and record.status == "queued":
        jobs.defer(job_id, opens_at)
        log.info("job deferred", extra={**fields, "not_before": now_iso(opens_at)})
        return {"job_id": job_id, "status": "deferred", "not_before": now_iso(opens_at)}
    lease = _Lease(jobs, job_id, secrets.token_urlsafe(12), rt.settings.lease)
    taken = jobs.start(job_id, lease.token, lease.length)
    if taken == "leased":
        log.info("job delivered again while another run holds it: left alone", extra=fields)
        return {"job_id": job_id, "status": "running"}
    if taken != "started":
        return {"job_id": job_id, "status": "expired" if taken == "missing" else taken}
    try:
        return _run(task, rt, record, lease, opens_at, fields, kind)
    except Exception as exc:
        if _store_cannot_serve(exc):
            # The message goes back to the queue (``_job_task``): give the job back with
            # it, so that its next delivery need not wait for this lease to expire. With Redis
            # still away this fails too, and the lease expires by itself.
            with contextlib.suppress(Exception):
                jobs.transition(job_id, ("running",), "queued", token=lease.token)
        raise


def _run(
    task: Task,
    rt: Runtime,
    record: JobRecord,
    lease: _Lease,
    opens_at: datetime | None,
    fields: dict[str, str],
    kind: JobKind,
) -> dict[str, Any]:
    """The run that holds the job: defer it, or run the batch and record how it ended."""
    jobs, job_id, request = rt.jobs, record.job_id, record.request
    if opens_at is not None:
        # A run whose lease expired, taken over inside office hours: parked, not run.
        return _defer(rt, job_id, opens_at, lease, fields)
    log.info("job started", extra={**fields, **_size(record)})
    started = time.perf_counter()
    try:
        with lease.kept(), rt.engine.connect() as conn:
            try:
                outcome = kind.run(conn, request, Held(rt, record, lease, time.monotonic()))
            except BaseException:
                # Never hand a connection back to the pool mid-batch (it may hold LOCK TABLES).
                conn.invalidate()
                raise
    except Exception as exc:
        if _store_cannot_serve(exc):
            raise
        if is_transient(exc) and task.request.retries < MAX_RETRIES:
            log.warning(
                "job will be retried",
                extra={**fields, "error": type(exc).__name__, "retry": task.request.retries + 1},
            )
            # Backoff with full jitter, capped well below the visibility timeout.
            countdown = get_exponential_backoff_interval(
                factor=1,
                retries=task.request.retries,
                maximum=int(rt.settings.visibility_timeout.total_seconds() // 3),
                full_jitter=True,
            )
            queued = jobs.transition(
                job_id, ("running",), "queued", token=lease.token, due_in=countdown
            )
            if queued == "lost":
                return _lost(job_id, fields)
            raise task.retry(exc=exc, countdown=countdown) from exc
        if not _fail(rt, job_id, exc, fields, lease.token):
            return _lost(job_id, fields)
        if not request.dry_run:
            # A batch commits chunk by chunk, and an earlier attempt may have committed some
            # before a retry: a failed job may have changed data, so it is logged too. After
            # the job is marked failed, not before: the failure may be the database itself,
            # and the write must not delay or lose the job's result.
            failed = JobOutcome(
                job_id,
                record.owner,
                # A selection's runs saved their progress since this record was read.
                _lead_count(jobs.get(job_id) or record, None),
                request.requested(),
                error=type(exc).__name__,
                event_code=kind.event_code,
            )
            _record_in_admin_log(rt, record, failed, "failed", None)
        if isinstance(exc, LeadArchiveError | ValueError) or is_transient(exc):
            return {"job_id": job_id, "status": "failed", "error": type(exc).__name__}
        raise
    if outcome.status == "lost":
        return _lost(job_id, fields)
    if outcome.status == "deferred":
        # A selection paused between two batches: office hours began.
        if outcome.not_before is None:
            raise ValueError("a run deferred without the time office hours end")
        return _defer(rt, job_id, outcome.not_before, lease, fields)
    if outcome.status == "continued":
        # A selection that used its share of the time limit: queued again, then its next
        # message sent (in this order: a message that found the job still running would be
        # left alone; a message lost after the change is sent again by the sweep).
        if jobs.transition(job_id, ("running",), "queued", token=lease.token) == "lost":
            return _lost(job_id, fields)
        publish(task.app, job_id, request, rt.broker)
        log.info("job continues in a new run", extra=fields)
        return {"job_id": job_id, "status": "queued"}
    final: Status = "cancelled" if outcome.status == "cancelled" else "succeeded"
    report = outcome.report
    if not request.dry_run:
        # Before the job is marked as ended: a worker that dies in between runs the job again,
        # and the row is written then (the job record tells whether it was already).
        done = JobOutcome(
            job_id,
            record.owner,
            _lead_count(record, outcome),
            request.requested(),
            report.counts,
            event_code=kind.event_code,
            ended=final,
        )
        # The row may wait for the table (Vicidial's own writes lock it) longer than the lease.
        with lease.kept():
            _record_in_admin_log(rt, record, done, "running", lease.token)
    ended = jobs.transition(
        job_id,
        ("running",),
        final,
        token=lease.token,
        finished_at=now_iso(),
        result=report.as_json(),
    )
    if ended == "lost":
        return _lost(job_id, fields)
    jobs.refresh_ttl(job_id)
    seconds = time.perf_counter() - started
    metrics.BATCH_SECONDS.observe(seconds)
    metrics.JOBS.labels(final).inc()
    for action, outcomes in report.counts.items():
        for outcome_name, count in outcomes.items():
            if count:
                metrics.LEADS.labels(action, outcome_name, str(request.dry_run).lower()).inc(count)
    log.info(
        f"job {final}",
        extra={**fields, "duration_ms": round(seconds * 1000, 1), "counts": report.counts},
    )
    return {"job_id": job_id, "status": final, "counts": report.counts}


def _defer(
    rt: Runtime, job_id: str, opens_at: datetime, lease: _Lease, fields: dict[str, str]
) -> dict[str, Any]:
    """Park the job this run holds until the office-hours window opens."""
    if not rt.jobs.defer(job_id, opens_at, token=lease.token):
        return _lost(job_id, fields)
    log.info("job deferred", extra={**fields, "not_before": now_iso(opens_at)})
    return {"job_id": job_id, "status": "deferred", "not_before": now_iso(opens_at)}


def _size(record: JobRecord) -> dict[str, int]:
    """How big the job is, for its log lines: its lead IDs, or where a selection resumes."""
    if isinstance(record.request, SelectionRequest):
        return {"resume_after": int((record.checkpoint or {}).get("last_lead_id", 0))}
    return {"lead_count": len(record.lead_ids)}


def _lead_count(record: JobRecord, outcome: Outcome | None) -> int:
    """The leads a job went through, for the admin log: its lead IDs, or the leads a selection
    walked (as its outcome says, or its last checkpoint)."""
    if outcome is not None and outcome.lead_count is not None:
        return outcome.lead_count
    if isinstance(record.request, SelectionRequest):
        return int((record.checkpoint or {}).get("done", 0))
    return len(record.lead_ids)


def _message_request(payload: dict[str, Any], kind: JobKind) -> JobRequest | None:
    """The request a message carries, or None when it is not one this service sends."""
    try:
        return kind.model.model_validate(payload)
    except ValidationError:
        return None


def _lost(job_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """This run's lease expired and another run holds the job: leave the record to it."""
    log.warning(
        "job lease expired during the run: the record is left to the run holding it", extra=fields
    )
    return {"job_id": job_id, "status": "lost"}


def _fail(rt: Runtime, job_id: str, exc: BaseException, fields: dict[str, str], token: str) -> bool:
    """Mark the job failed with ``exc`` as its reason, count it and log it; False when another
    run holds the job (nothing changed)."""
    error = {"type": type(exc).__name__, "detail": str(exc) or type(exc).__name__}
    before = rt.jobs.transition(
        job_id, ("running",), "failed", token=token, finished_at=now_iso(), error=error
    )
    if before == "lost":
        return False
    rt.jobs.refresh_ttl(job_id)
    metrics.JOBS.labels("failed").inc()
    log.error("job failed", extra={**fields, "error": type(exc).__name__, "detail": str(exc)})
    return True


def record_cancelled_selection(rt: Runtime, record: JobRecord) -> None:
    """Write the admin-log row of a selection cancelled while it waited between two runs (the
    API cancelled its record; no run ends it): what its earlier runs did, from its checkpoint.
    A selection that never ran a batch, or a dry run, changed nothing and gets no row."""
    request, checkpoint = record.request, record.checkpoint
    if not isinstance(request, SelectionRequest) or request.dry_run or checkpoint is None:
        return
    cancelled = JobOutcome(
        record.job_id,
        record.owner,
        int(checkpoint.get("done", 0)),
        request.requested(),
        checkpoint.get("counts", {}),
        event_code=SELECTION.event_code,
        ended="cancelled",
    )
    _record_in_admin_log(rt, record, cancelled, "cancelled", None)


def _record_in_admin_log(
    rt: Runtime, record: JobRecord, outcome: JobOutcome, status: Status, token: str | None
) -> None:
    """Write the job's row in Vicidial's admin log once; a failure is logged, never raised.

    ``record`` is the job record as this delivery found it, ``status`` the job's status now. The
    record remembers a written row (``admin_logged``, never shown by the status endpoint): a job
    delivered again after its row was written (its worker died, or Redis failed, before the job
    was marked succeeded) writes none. Only a worker that dies in the milliseconds between the
    INSERT and that mark would leave two rows. A job that has ended is never run again, and
    tasks run one at a time (a run's lease is renewed until its row is written and the job
    marked ended, and a duplicate delivery finds it held).
    """
    settings = rt.settings
    if not settings.admin_log or record.admin_logged is not None:
        return
    fields = {"job_id": outcome.job_id, "key_name": outcome.key_name}
    try:
        with rt.engine.connect() as conn:
            written = admin_log.write(
                conn,
                outcome,
                user=settings.admin_log_user,
                ip_address=record.client_ip,
                lock_wait=settings.lock_wait_timeout,
            )
    except Exception as exc:
        original = getattr(exc, "orig", None) or exc
        extra = {**fields, "error": type(exc).__name__, "detail": str(original)}
        if mysql_error_code(exc) in MYSQL_ACCESS_DENIED:
            extra["hint"] = (
                "grant INSERT on vicidial_admin_log (deploy/grants.sql),"
                " or set LEADARCHIVE_ADMIN_LOG=false"
            )
        log.warning("job not written to vicidial_admin_log", extra=extra)
        return
    if not written:
        log.debug("no vicidial_admin_log table: the admin log is not written", extra=fields)
        return
    rt.jobs.transition(outcome.job_id, (status,), status, token=token, admin_logged=now_iso())
