"""The ``celery -A worker.app`` target: this process's Celery app, wired to its signals."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown

from tasks import runtime
from tasks.celery_app import create_celery
from tasks.settings import get_settings
from worker import steps


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A prefork child must not share the parent's database or Redis sockets.
    runtime.forget_after_fork()


@worker_process_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    runtime.configure(None)


# Built when the worker process imports this module (celery -A worker.app), not before.
app = steps.install(create_celery(get_settings()))
