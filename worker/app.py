"""The ``celery -A worker.app`` target: this process's Celery app, wired to its signals.

The app carries the process's runtime (settings, engine, job store: ``tasks.runtime.attach``), as
the API's app does; a prefork child replaces it with its own on ``worker_process_init``, so no
database or Redis socket is shared across the fork.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_process_init, worker_process_shutdown

from tasks.celery_config import create_celery
from tasks.logs import configure_logging
from tasks.runtime import Runtime, attach, runtime_of
from tasks.startup import service_settings
from worker import steps


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A prefork child must not share the parent's database or Redis sockets.
    attach(app, runtime_of(app).forked())


@worker_process_shutdown.connect
def _on_shutdown(pid: int | None = None, **_: Any) -> None:
    runtime_of(app).close()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


@setup_logging.connect
def _logging(loglevel: str | int | None = None, **_: Any) -> None:
    # Connected, this keeps Celery from installing its own text handlers: JSON lines only.
    configure_logging(loglevel or "INFO")


def _build() -> Celery:
    settings = service_settings()
    return steps.install(create_celery(settings, Runtime(settings)))


# Built when the worker process imports this module (celery -A worker.app), not before; a
# malformed setting or undecided office hours stop the process here, naming the variable.
app = _build()
