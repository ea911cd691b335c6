"""The Celery application and its one task, a thin wrapper around the archive batch.

Every setting below that Celery has a default for is changed on purpose; the links say why.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import kombu.exceptions
import redis
import redis.exceptions
from celery import Celery, Task
from celery.events import Event
from celery.exceptions import Reject
from celery.utils.nodenames import anon_nodename
from celery.utils.time import get_exponential_backoff_interval, utcoffset
from kombu import serialization

from tasks import admin_log, metrics, runtime
from tasks.admin_log import JobOutcome
from tasks.archive import Actions, run_batch
from tasks.errors import LeadArchiveError, is_transient
from tasks.jobs import FINAL, RedisJobStore, Status, now_iso
from tasks.settings import Settings

# Stable names: in-flight messages and Flower refer to tasks by these, not by module paths.
ARCHIVE_TASK = "leadarchive.archive_leads"
QUEUE = "leadarchive"
# Retries after a lost connection, deadlock or lock wait, with full-jitter backoff capped at a
# third of the visibility timeout (10 s): about 100 s in all on average, so a job outlives a
# MariaDB restart (8 retries, about 30 s, failed jobs in docs/RELIABILITY.md's restart runs).
MAX_RETRIES = 24

log = logging.getLogger("leadarchive.worker")


def create_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``, with the archive task registered on it."""
    app = Celery("leadarchive", set_as_current=False)
    visibility = settings.visibility_timeout.total_seconds()
    hard_limit = settings.task_time_limit.total_seconds()
    app.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.result_backend,
        # https://docs.celeryq.dev/en/stable/userguide/security.html#serializers
        # JSON only: a pickled message would run code of the sender's choosing.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # https://docs.celeryq.dev/en/stable/userguide/tasks.html#Task.acks_late
        # Acknowledge after the batch, and requeue if the worker process dies: safe because
        # batches are idempotent.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # https://docs.celeryq.dev/en/stable/userguide/optimizing.html#prefetch-limits
        worker_prefetch_multiplier=1,
        # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout
        # Short, so a job whose worker was killed runs again within a minute. Hence no long
        # countdowns anywhere: deferred jobs wait in Redis, not as ETA messages in a worker.
        broker_transport_options=_transport_options(settings),
        result_backend_transport_options={"visibility_timeout": visibility},
        task_time_limit=hard_limit,
        task_soft_time_limit=max(1.0, hard_limit * 0.8),
        result_expires=settings.result_ttl,
        # https://docs.celeryq.dev/en/stable/userguide/monitoring.html#events
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        # https://docs.celeryq.dev/en/stable/userguide/tasks.html#ignore-results-you-don-t-want
        # The job record is the result clients read; storing Celery's own too costs every
        # task a write, and every send a subscription to a result channel nobody reads.
        task_ignore_result=True,
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        # https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-connection-max-retries
        # A worker that lost Redis reconnects for as long as it takes (None: forever). A limit
        # here makes the worker exit ("Unrecoverable error") once Redis has been down longer
        # than the retries, and every queued job waits for someone to restart it.
        broker_connection_max_retries=None,
        # https://docs.celeryq.dev/en/stable/userguide/calling.html#message-sending-retry
        # Refuse to enqueue quickly when Redis is down, so the API can answer 503 at once.
        broker_connection_timeout=2,
        task_publish_retry_policy={
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        worker_hijack_root_logger=False,
    )
    app.task(
        name=ARCHIVE_TASK,
        bind=True,
        max_retries=MAX_RETRIES,
        acks_late=True,
        reject_on_worker_lost=True,
    )(archive_leads)
    return app


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.result_backend.startswith("file://"):
        Path(settings.result_backend.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    if settings.broker_url.startswith("filesystem://"):
        # The embedded default: messages are files in the data folder (one queue, so the
        # folder the API writes to is the one the worker reads from).
        queue = (settings.data_dir / "broker" / "queue").resolve()
        processed = (settings.data_dir / "broker" / "processed").resolve()
        for folder in (queue, processed):
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "data_folder_processed": str(processed),
            "store_processed": False,
        }
    return {
        "visibility_timeout": settings.visibility_timeout.total_seconds(),
        # Kombu looks for unacknowledged messages only every interval x throttle seconds (100 s
        # by default): every 5 s instead, or the short visibility timeout would not help.
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        # Only one worker at a time sweeps, under a Redis lock that outlives a worker killed
        # while holding it by this long (kombu's default, 300 s, would stop every sweep for
        # five minutes). A sweep takes milliseconds, and a message restored twice is not.
        "unacked_mutex_expire": 10,
    }


# Redis (the job store, or the broker a retry is sent through) could not be reached.
_REDIS_DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)


def archive_leads(
    task: Task,
    job_id: str,
    lead_ids: list[int],
    insert_leads: bool = True,
    update_leads: bool = True,
    delete_leads: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Run one archive job: defer it inside office hours, else run the batch and record it."""
    try:
        return _archive_leads(
            task, job_id, lead_ids, insert_leads, update_leads, delete_leads, dry_run
        )
    except _REDIS_DOWN as exc:
        # The job's record could not be read or written. Acknowledged, the message would be
        # gone and the record left `running` forever: hand it back to the queue instead (or,
        # while Redis is still down, leave it unacknowledged for the visibility timeout). The
        # batch is idempotent, so running it again is safe.
        log.warning("job store unreachable, job requeued", extra={"job_id": job_id})
        raise Reject(exc, requeue=True) from exc


def _archive_leads(
    task: Task,
    job_id: str,
    lead_ids: list[int],
    insert_leads: bool = True,
    update_leads: bool = True,
    delete_leads: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    rt = runtime.current()
    jobs = rt.jobs
    record = jobs.get(job_id)
    if record is None:
        return {"job_id": job_id, "status": "expired"}
    if record["status"] in FINAL or record["status"] == "deferred":
        # Delivered again after it ended, or a duplicate of a parked job: nothing to do.
        return {"job_id": job_id, "status": record["status"]}
    fields = {"job_id": job_id, "key_name": record["owner"]}
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
    log.info("job started", extra={**fields, "lead_count": len(lead_ids)})
    started = time.perf_counter()
    actions = Actions(
        insert=insert_leads, update=update_leads, delete=delete_leads, dry_run=dry_run
    )
    requested = tuple(
        name
        for name, wanted in (
            ("insert", insert_leads),
            ("update", update_leads),
            ("delete", delete_leads),
        )
        if wanted
    )
    try:
        with rt.engine.connect() as conn:
            try:
                report = run_batch(conn, lead_ids, actions, rt.tuning)
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
        _fail(job_id, exc)
        metrics.JOBS.labels("failed").inc()
        log.error("job failed", extra={**fields, "error": type(exc).__name__, "detail": str(exc)})
        if not dry_run:
            # A batch commits chunk by chunk, and an earlier attempt may have committed some
            # before a retry: a failed job may have changed data, so it is logged too. After
            # the job is marked failed, not before: the failure may be the database itself,
            # and the write must not delay or lose the job's result.
            failed = JobOutcome(
                job_id, record["owner"], len(lead_ids), requested, error=type(exc).__name__
            )
            _record_in_admin_log(rt, record, failed, "failed")
        if isinstance(exc, LeadArchiveError | ValueError) or is_transient(exc):
            return {"job_id": job_id, "status": "failed", "error": type(exc).__name__}
        raise
    if not dry_run:
        # Before the job is marked succeeded: a worker that dies in between runs the job again,
        # and the row is written then (the job record tells whether it was already).
        done = JobOutcome(job_id, record["owner"], len(lead_ids), requested, report.counts)
        _record_in_admin_log(rt, record, done, "running")
    jobs.transition(
        job_id,
        ("running",),
        "succeeded",
        finished_at=now_iso(),
        result=json.dumps(report.as_json()),
    )
    jobs.refresh_ttl(job_id)
    seconds = time.perf_counter() - started
    metrics.BATCH_SECONDS.observe(seconds)
    metrics.JOBS.labels("succeeded").inc()
    for action, outcomes in report.counts.items():
        for outcome, count in outcomes.items():
            if count:
                metrics.LEADS.labels(action, outcome, str(dry_run).lower()).inc(count)
    log.info(
        "job succeeded",
        extra={**fields, "duration_ms": round(seconds * 1000, 1), "counts": report.counts},
    )
    return {"job_id": job_id, "status": "succeeded", "counts": report.counts}


def enqueue(
    app: Celery,
    job_id: str,
    lead_ids: list[int],
    request: dict[str, Any],
    broker: redis.Redis | None = None,
) -> None:
    """Send the archive task for a job; the task ID is the job ID, so Flower shows both as one.

    With ``broker`` (the Redis database of ``broker_url``), the message Celery would send is
    pushed onto the queue's list in one call; otherwise Celery's producer sends it.
    """
    kwargs = {
        "job_id": job_id,
        "lead_ids": lead_ids,
        "insert_leads": bool(request["insert_leads"]),
        "update_leads": bool(request["update_leads"]),
        "delete_leads": bool(request["delete_leads"]),
        "dry_run": bool(request["dry_run"]),
    }
    if broker is None:
        app.send_task(ARCHIVE_TASK, kwargs=kwargs, task_id=job_id, queue=QUEUE)
        return
    task, sent_event = redis_messages(app, job_id, kwargs)
    pipe = broker.pipeline(transaction=False)  # one round trip
    pipe.lpush(QUEUE, task)
    if sent_event is not None:
        db = broker.connection_pool.connection_kwargs.get("db", 0)
        pipe.publish(f"/{db}.{EVENT_EXCHANGE}/task.sent", sent_event)
    pipe.execute()


EVENT_EXCHANGE = "celeryev"


def redis_messages(app: Celery, task_id: str, kwargs: dict[str, Any]) -> tuple[str, str | None]:
    """The archive task as kombu's Redis transport stores a message sent to ``QUEUE``, and its
    ``task-sent`` event as published to Flower (None when sent events are off).

    ``send_task`` costs the API more CPU than all the rest of a submission (a Redis client object
    per publish, a lookup of the queue's binding, the producer's and event dispatcher's
    machinery). Celery builds the task message and the event here; only kombu's envelopes (the
    JSON that the Redis channel's ``_put`` pushes and ``_put_fanout`` publishes) are written out,
    and a test holds both equal to what ``send_task`` sends, field by field.
    """
    sent_events = bool(app.conf.task_send_sent_event)
    message = app.amqp.create_task_message(
        task_id,
        ARCHIVE_TASK,
        (),
        kwargs,
        reply_to=app.thread_oid,
        ignore_result=None,
        create_sent_event=sent_events,
    )
    task = _envelope(
        message.body,
        message.headers,
        {**message.properties, "delivery_mode": 2},  # persistent
        exchange="",
        routing_key=QUEUE,
    )
    if message.sent_event is None:
        return task, None
    hostname = anon_nodename()
    event = Event(
        "task-sent",
        hostname=hostname,
        utcoffset=utcoffset(),
        pid=os.getpid(),
        clock=app.clock.forward(),
        **message.sent_event,
        queue=QUEUE,
        exchange="",
        routing_key=QUEUE,
    )
    sent = _envelope(
        event,
        {"hostname": hostname},
        {"delivery_mode": 1},  # transient, as Celery sends events
        exchange=EVENT_EXCHANGE,
        routing_key="task.sent",
    )
    return task, sent


def _envelope(
    body: Any, headers: dict[str, Any], properties: dict[str, Any], exchange: str, routing_key: str
) -> str:
    """A message in kombu's Redis envelope: JSON body, base64-encoded, with its delivery info."""
    content_type, encoding, data = serialization.dumps(  # type: ignore[no-untyped-call]
        body, serializer="json"
    )
    return json.dumps(
        {
            "body": base64.b64encode(data.encode(encoding)).decode("ascii"),
            "content-encoding": encoding,
            "content-type": content_type,
            "headers": headers,
            "properties": {
                **properties,
                "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def release_due_jobs(app: Celery) -> list[str]:
    """Send again every deferred job whose office-hours window has opened."""
    rt = runtime.current()
    released = []
    for job_id in rt.jobs.take_due(rt.clock()):
        record = rt.jobs.get(job_id)
        if record is None:
            continue
        lead_ids, request = json.loads(record["lead_ids"]), json.loads(record["request"])
        enqueue(app, job_id, lead_ids, request, rt.broker)
        released.append(job_id)
    return released


# KEYS[1] the queue's list, KEYS[2] kombu's hash of unacknowledged messages. Returns the task
# ID of every message in either (the first "id" of an envelope is its headers' task ID).
_MESSAGE_IDS = """
local ids = {}
for _, message in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local id = string.match(message, ', "id": "([^"]+)"')
  if id then table.insert(ids, id) end
end
for _, message in ipairs(redis.call('HVALS', KEYS[2])) do
  local id = string.match(message, ', "id": "([^"]+)"')
  if id then table.insert(ids, id) end
end
return ids
"""
UNACKED_KEY = "unacked"  # kombu's Redis transport's default
SWEEP_LOCK = "leadarchive:sweep"


def requeue_lost_jobs(app: Celery) -> list[str]:
    """Send again every job queued for long whose message is neither queued nor being worked on.

    kombu's Redis transport takes a message off the queue (BRPOP) before it records it as
    unacknowledged: a worker killed in between loses the message, and the job would stay
    `queued` forever. Sending it twice is safe: batches are idempotent (two at once on the same
    leads take turns), and a job that has ended ignores a second message.
    """
    rt = runtime.current()
    jobs, broker = rt.jobs, rt.broker
    if broker is None or not isinstance(jobs, RedisJobStore):
        return []
    # Long enough for a message to be taken off the queue and recorded as unacknowledged.
    cutoff = time.time() - 2 * rt.settings.visibility_timeout.total_seconds()
    stale = jobs.queued_before(cutoff)
    # One sweeper at a time, so that two workers never both send a lost job again.
    if not stale or not broker.set(SWEEP_LOCK, "1", nx=True, ex=30):
        return []
    try:
        found: list[bytes] = broker.eval(_MESSAGE_IDS, 2, QUEUE, UNACKED_KEY)  # type: ignore[assignment]
        present = {raw.decode() for raw in found}
        lost = [job_id for job_id in stale if job_id not in present]
        for job_id in lost:
            record = jobs.get(job_id)
            if record is None or record["status"] != "queued":
                continue
            lead_ids, request = json.loads(record["lead_ids"]), json.loads(record["request"])
            enqueue(app, job_id, lead_ids, request, broker)
            jobs.requeued(job_id)
            log.warning("job message lost, sent again", extra={"job_id": job_id})
        return lost
    finally:
        broker.delete(SWEEP_LOCK)


def _fail(job_id: str, exc: BaseException) -> None:
    jobs = runtime.current().jobs
    error = {"type": type(exc).__name__, "detail": str(exc) or type(exc).__name__}
    jobs.transition(
        job_id, ("running", "queued"), "failed", finished_at=now_iso(), error=json.dumps(error)
    )
    jobs.refresh_ttl(job_id)


# Denied: on a table, on the database. What the admin log's warning then says to do.
_ACCESS_DENIED = (1142, 1044)


def _record_in_admin_log(
    rt: runtime.Runtime, record: dict[str, str], outcome: JobOutcome, status: Status
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
    if not settings.admin_log or "admin_logged" in record:
        return
    fields = {"job_id": outcome.job_id, "key_name": outcome.key_name}
    try:
        with rt.engine.connect() as conn:
            written = admin_log.write(
                conn,
                outcome,
                user=settings.admin_log_user,
                ip_address=record.get("client_ip", ""),
                lock_wait=settings.lock_wait_timeout,
            )
    except Exception as exc:
        original = getattr(exc, "orig", None) or exc
        args = getattr(original, "args", ())
        extra = {**fields, "error": type(exc).__name__, "detail": str(original)}
        if args and args[0] in _ACCESS_DENIED:
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
