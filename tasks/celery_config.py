"""The Celery application: its configuration, its queue, and the tasks registered on it.

Every setting below that Celery has a default for is changed on purpose; the links say why. The
tasks themselves are thin and live elsewhere (``tasks.lifecycle``); they reach their collaborators
through the runtime attached to the app (``tasks.runtime.runtime_of``), never a process global.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery

from tasks.lifecycle import (
    ARCHIVE_TASK,
    MAX_RETRIES,
    RESTORE_TASK,
    SELECTION_TASK,
    archive_leads,
    archive_selection,
    restore_leads,
)
from tasks.publishing import QUEUE
from tasks.runtime import Runtime, attach
from tasks.settings import Settings

__all__ = ["QUEUE", "create_celery"]


def create_celery(settings: Settings, runtime: Runtime | None = None) -> Celery:
    """A Celery app for ``settings``, with every kind of job's task registered on it and
    ``runtime`` (built from ``settings`` on first use unless given) attached for its tasks."""
    app = Celery("leadarchive", set_as_current=False)
    attach(app, runtime or Runtime(settings))
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
    for name, task in (
        (ARCHIVE_TASK, archive_leads),
        (RESTORE_TASK, restore_leads),
        (SELECTION_TASK, archive_selection),
    ):
        app.task(
            name=name,
            bind=True,
            max_retries=MAX_RETRIES,
            acks_late=True,
            reject_on_worker_lost=True,
        )(task)
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
