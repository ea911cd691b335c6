"""The archive job's lifecycle, as one Celery task: run, retry, defer, fail, and its admin-log row.

A thin wrapper: the batch is ``tasks.archive.run_batch``, the request ``tasks.requests``, the record
``tasks.records``; this module only moves the job record along its states (``tasks.jobs``) around
one run of the batch. Invariants:

- a job that has ended, or is deferred, is never run again by a late or duplicate message;
- inside office hours a job is deferred (parked in the job store), never run;
- a lost job store hands the message back to the queue (the record would otherwise stay
  ``running`` forever); a transient database error is retried with backoff, anything else fails
  the job once;
- the admin log's row is written at most once per job, and a failure to write it never fails the
  job.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kombu.exceptions
import redis.exceptions
from celery import Task
from celery.exceptions import Reject
from celery.utils.time import get_exponential_backoff_interval
from pydantic import ValidationError

from tasks import admin_log, metrics
from tasks.admin_log import JobOutcome
from tasks.archive import run_batch
from tasks.errors import MYSQL_ACCESS_DENIED, LeadArchiveError, is_transient, mysql_error_code
from tasks.records import FINAL, JobRecord, Status, now_iso
from tasks.requests import ArchiveRequest
from tasks.runtime import Runtime, runtime_of

# Stable names: in-flight messages and Flower refer to tasks by these, not by module paths.
ARCHIVE_TASK = ArchiveRequest.task_name
# Retries after a lost connection, deadlock or lock wait, with full-jitter backoff capped at a
# third of the visibility timeout (10 s): about 100 s in all on average, so a job outlives a
# MariaDB restart (8 retries, about 30 s, failed jobs in docs/RELIABILITY.md's restart runs).
MAX_RETRIES = 24

log = logging.getLogger("leadarchive.worker")

# Redis (the job store, or the broker a retry is sent through) could not be reached.
_REDIS_DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)


def archive_leads(task: Task, job_id: str, **payload: Any) -> dict[str, Any]:
    """Run one archive job: defer it inside office hours, else run the batch and record it.

    ``payload`` is ``ArchiveRequest.payload()``: the message's keyword arguments.
    """
    try:
        return _archive_leads(task, runtime_of(task.app), job_id, payload)
    except _REDIS_DOWN as exc:
        # The job's record could not be read or written. Acknowledged, the message would be
        # gone and the record left `running` forever: hand it back to the queue instead (or,
        # while Redis is still down, leave it unacknowledged for the visibility timeout). The
        # batch is idempotent, so running it again is safe.
        log.warning("job store unreachable, job requeued", extra={"job_id": job_id})
        raise Reject(exc, requeue=True) from exc


def _archive_leads(task: Task, rt: Runtime, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    jobs = rt.jobs
    record = jobs.get(job_id)
    if record is None:
        return {"job_id": job_id, "status": "expired"}
    if record.status in FINAL or record.status == "deferred":
        # Delivered again after it ended, or a duplicate of a parked job: nothing to do.
        return {"job_id": job_id, "status": record.status}
    fields = {"job_id": job_id, "key_name": record.owner}
    try:
        request = ArchiveRequest.model_validate(payload)
    except ValidationError as exc:
        # Only a message not sent by this service can hold a request the API would refuse.
        _fail(rt, job_id, exc, fields)
        return {"job_id": job_id, "status": "failed", "error": type(exc).__name__}
    now = rt.clock()
    opens_at = rt.office_hours.window_opens_at(now)
    if opens_at is not None:
        jobs.defer(job_id, opens_at)
        log.info("job deferred", extra={**fields, "not_before": now_iso(opens_at)})
        return {"job_id": job_id, "status": "deferred", "not_before": now_iso(opens_at)}
    before = jobs.transition(job_id, ("queued", "running"), "running", started_at=now_iso())
    if before not in ("queued", "running"):
        return {"job_id": job_id, "status": before or "expired"}
    jobs.count_attempt(job_id)
    log.info("job started", extra={**fields, "lead_count": len(request.lead_ids)})
    started = time.perf_counter()
    try:
        with rt.engine.connect() as conn:
            try:
                report = run_batch(conn, request.lead_ids, request.actions(), rt.tuning)
            except BaseException:
                # Never hand a connection back to the pool mid-batch (it may hold LOCK TABLES).
                conn.invalidate()
                raise
    except Exception as exc:
        if is_transient(exc) and task.request.retries < MAX_RETRIES:
            log.warning(
                "job will be retried",
                extra={**fields, "error": type(exc).__name__, "retry": task.request.retries + 1},
            )
            jobs.transition(job_id, ("running",), "queued")
            # Backoff with full jitter, capped well below the visibility timeout.
            countdown = get_exponential_backoff_interval(
                factor=1,
                retries=task.request.retries,
                maximum=int(rt.settings.visibility_timeout.total_seconds() // 3),
                full_jitter=True,
            )
            raise task.retry(exc=exc, countdown=countdown) from exc
        _fail(rt, job_id, exc, fields)
        if not request.dry_run:
            # A batch commits chunk by chunk, and an earlier attempt may have committed some
            # before a retry: a failed job may have changed data, so it is logged too. After
            # the job is marked failed, not before: the failure may be the database itself,
            # and the write must not delay or lose the job's result.
            failed = JobOutcome(
                job_id,
                record.owner,
                len(request.lead_ids),
                request.requested(),
                error=type(exc).__name__,
            )
            _record_in_admin_log(rt, record, failed, "failed")
        if isinstance(exc, LeadArchiveError | ValueError) or is_transient(exc):
            return {"job_id": job_id, "status": "failed", "error": type(exc).__name__}
        raise
    if not request.dry_run:
        # Before the job is marked succeeded: a worker that dies in between runs the job again,
        # and the row is written then (the job record tells whether it was already).
        done = JobOutcome(
            job_id, record.owner, len(request.lead_ids), request.requested(), report.counts
        )
        _record_in_admin_log(rt, record, done, "running")
    jobs.transition(
        job_id, ("running",), "succeeded", finished_at=now_iso(), result=report.as_json()
    )
    jobs.refresh_ttl(job_id)
    seconds = time.perf_counter() - started
    metrics.BATCH_SECONDS.observe(seconds)
    metrics.JOBS.labels("succeeded").inc()
    for action, outcomes in report.counts.items():
        for outcome, count in outcomes.items():
            if count:
                metrics.LEADS.labels(action, outcome, str(request.dry_run).lower()).inc(count)
    log.info(
        "job succeeded",
        extra={**fields, "duration_ms": round(seconds * 1000, 1), "counts": report.counts},
    )
    return {"job_id": job_id, "status": "succeeded", "counts": report.counts}


def _fail(rt: Runtime, job_id: str, exc: BaseException, fields: dict[str, str]) -> None:
    """Mark the job failed with ``exc`` as its reason, count it and log it."""
    error = {"type": type(exc).__name__, "detail": str(exc) or type(exc).__name__}
    rt.jobs.transition(job_id, ("running", "queued"), "failed", finished_at=now_iso(), error=error)
    rt.jobs.refresh_ttl(job_id)
    metrics.JOBS.labels("failed").inc()
    log.error("job failed", extra={**fields, "error": type(exc).__name__, "detail": str(exc)})


def _record_in_admin_log(
    rt: Runtime, record: JobRecord, outcome: JobOutcome, status: Status
) -> None:
    """Write the job's row in Vicidial's admin log once; a failure is logged, never raised.

    ``record`` is the job record as this delivery found it, ``status`` the job's status now. The
    record remembers a written row (``admin_logged``, never shown by the status endpoint): a job
    delivered again after its row was written (its worker died, or Redis failed, before the job
    was marked succeeded) writes none. Only a worker that dies in the milliseconds between the
    INSERT and that mark would leave two rows. A job that has ended is never run again, and
    tasks run one at a time (the time limit stays below the visibility timeout).
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
    rt.jobs.transition(outcome.job_id, (status,), status, admin_logged=now_iso())
