"""What a process needs to run jobs: settings, the job store, a database engine, the clock.

Each collaborator is built lazily on first use, so a prefork worker builds its engine in each child
after the fork, never in the parent; ``worker`` also replaces the runtime on
``worker_process_init`` to be sure (``forked``). No process global: the API is given its runtime
(``api.app.create_app``), and the worker's tasks and steps read theirs from the Celery app they run
in (``attach``/``runtime_of``), so tests and benchmarks pass their own the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import redis
from celery import Celery
from redis import Redis
from sqlalchemy import Engine

from tasks.archive import Tuning
from tasks.db import make_engine
from tasks.jobs import JobStore, RedisJobStore
from tasks.office_hours import Clock, OfficeHours, system_clock
from tasks.settings import Settings
from tasks.sql_jobs import SqliteJobStore
from tasks.throttle import Throttles


@dataclass
class Runtime:
    """One process's collaborators, each built on first use."""

    settings: Settings
    clock: Clock = field(default=system_clock)

    @cached_property
    def redis(self) -> redis.Redis:
        """The Redis database that holds job records (the result backend's)."""
        return redis.Redis.from_url(
            self.settings.result_backend, socket_timeout=5, socket_connect_timeout=2
        )

    @cached_property
    def broker(self) -> Redis | None:
        """The broker's Redis database, when the broker is Redis (None: use Celery's producer)."""
        if not self.settings.broker_url.startswith(("redis://", "rediss://")):
            return None
        return redis.Redis.from_url(
            self.settings.broker_url, socket_timeout=5, socket_connect_timeout=2
        )

    @cached_property
    def jobs(self) -> JobStore:
        if self.settings.embedded:
            return SqliteJobStore(self.settings.data_dir / "jobs.db", self.settings.result_ttl)
        return RedisJobStore(self.redis, self.settings.result_ttl)

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def office_hours(self) -> OfficeHours:
        return self.settings.schedule()

    @cached_property
    def throttles(self) -> Throttles:
        """When a selection job's next batch must wait (replica lag, server load)."""
        settings = self.settings
        return Throttles(
            max_threads_running=settings.max_threads_running or None,
            max_lag=settings.max_replica_lag if settings.replica_urls else None,
            replicas=tuple(make_engine(url, pool_size=1) for url in settings.replicas()),
        )

    @cached_property
    def tuning(self) -> Tuning:
        return Tuning(
            chunk_time=self.settings.chunk_time,
            lock_wait_timeout=self.settings.lock_wait_timeout,
        )

    def forked(self) -> Runtime:
        """In a freshly forked child: a new runtime, dropping this one's without touching the
        parent's sockets."""
        if "engine" in self.__dict__:
            self.engine.dispose(close=False)
        return Runtime(self.settings, self.clock)

    def close(self) -> None:
        """Release connections (the engine's pool, Redis's)."""
        if "engine" in self.__dict__:
            self.engine.dispose()
        for client in ("redis", "broker"):
            if self.__dict__.get(client) is not None:
                self.__dict__[client].close()


_ATTRIBUTE = "leadarchive_runtime"


def attach(app: Celery, runtime: Runtime) -> None:
    """Give ``app``'s tasks and worker steps ``runtime`` (the one they had is not closed: after a
    fork it holds the parent's sockets)."""
    setattr(app, _ATTRIBUTE, runtime)


def runtime_of(app: Celery) -> Runtime:
    """The runtime attached to ``app`` (``tasks.celery_config.create_celery`` attaches one)."""
    runtime: Runtime | None = getattr(app, _ATTRIBUTE, None)
    if runtime is None:
        raise RuntimeError("no runtime attached to this Celery app (tasks.runtime.attach)")
    return runtime
