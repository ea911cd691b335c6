"""Worker bootsteps and the broker classes the worker runs with."""

from __future__ import annotations

from typing import Any

from celery import Celery, bootsteps

from tasks.lifecycle import ARCHIVE_TASK
from tasks.runtime import runtime_of
from tasks.sweeps import hand_back_expired_runs, release_due_jobs, requeue_lost_jobs
from worker.broker import BrokerConsumer, JobMessageRequest


class ReleaseDeferredJobs(bootsteps.StartStopStep):
    """Every few seconds (``LEADARCHIVE_RELEASE_INTERVAL``), send again the deferred jobs whose
    office-hours window has opened; every third of the job lease, the jobs whose run's lease
    expired (``hand_back_expired_runs``) and the queued jobs whose message was lost
    (``requeue_lost_jobs``): a killed worker's job runs again about one lease after the kill,
    whether a run of it had begun or not.

    Deferred jobs wait in a Redis sorted set rather than as countdown messages, which would sit
    unacknowledged in a worker for hours and be delivered twice after the visibility timeout.
    """

    requires = ("celery.worker.components:Timer",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._entries: list[Any] = []

    def start(self, parent: Any) -> None:
        settings = runtime_of(parent.app).settings
        every = (
            (settings.release_interval, release_due_jobs),
            (settings.lease / 3, hand_back_expired_runs),
            (settings.lease / 3, requeue_lost_jobs),
        )
        self._entries = [
            parent.timer.call_repeatedly(interval.total_seconds(), sweep, (parent.app,))
            for interval, sweep in every
        ]

    def stop(self, parent: Any) -> None:
        for entry in self._entries:
            entry.cancel()
        self._entries = []


def install(celery_app: Celery) -> Celery:
    """Add this project's worker steps to ``celery_app``, and the consumer and request classes
    that outlive a broker outage (``worker.broker``)."""
    celery_app.steps["worker"].add(ReleaseDeferredJobs)
    celery_app.conf.worker_consumer = f"{BrokerConsumer.__module__}:{BrokerConsumer.__name__}"
    celery_app.tasks[ARCHIVE_TASK].Request = JobMessageRequest
    return celery_app
