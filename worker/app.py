"""The ``celery -A worker.app`` target: this process's Celery app, wired to its signals."""

from __future__ import annotations

import os
from typing import Any

from celery.signals import setup_logging, worker_process_init, worker_process_shutdown

from tasks import runtime
from tasks.celery_app import create_celery
from tasks.logs import configure_logging
from tasks.startup import service_settings
from worker import steps


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A prefork child must not share the parent's database or Redis sockets.
    runtime.forget_after_fork()


@worker_process_shutdown.connect
def _on_shutdown(pid: int | None = None, **_: Any) -> None:
    runtime.configure(None)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


@setup_logging.connect
def _logging(loglevel: str | int | None = None, **_: Any) -> None:
    # Connected, this keeps Celery from installing its own text handlers: JSON lines only.
    configure_logging(loglevel or "INFO")


# Built when the worker process imports this module (celery -A worker.app), not before; a
# malformed setting or undecided office hours stop the process here, naming the variable.
app = steps.install(create_celery(service_settings()))
