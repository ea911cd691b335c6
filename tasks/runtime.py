"""What a process needs to run jobs: settings, the job store, a database engine, the clock.

Built lazily on first use, so a prefork worker builds its engine in each child after the fork,
never in the parent; ``worker`` also resets it on ``worker_process_init`` to be sure. Tests
install their own with ``configure``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

import redis
from redis import Redis
from sqlalchemy import Engine

from tasks.archive import Tuning
from tasks.db import make_engine
from tasks.jobs import JobStore, RedisJobStore
from tasks.office_hours import Clock, OfficeHours, system_clock
from tasks.settings import Settings, get_settings
from tasks.sql_jobs import SqliteJobStore


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
    def tuning(self) -> Tuning:
        return Tuning(
            chunk_time=self.settings.chunk_time,
            lock_wait_timeout=self.settings.lock_wait_timeout,
        )

    def close(self) -> None:
        """Release connections (the engine's pool, Redis's)."""
        if "engine" in self.__dict__:
            self.engine.dispose()
        for client in ("redis", "broker"):
            if self.__dict__.get(client) is not None:
                self.__dict__[client].close()


_lock = threading.Lock()
_current: Runtime | None = None


def current() -> Runtime:
    """This process's runtime, built from the settings on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = Runtime(get_settings())
        return _current


def configure(runtime: Runtime | None) -> None:
    """Install ``runtime`` (None: build a fresh one on next use), closing the one before."""
    global _current
    with _lock:
        previous, _current = _current, runtime
    if previous is not None and previous is not runtime:
        previous.close()


def forget_after_fork() -> None:
    """In a freshly forked child: drop the parent's runtime without touching its sockets."""
    global _current
    with _lock:
        previous, _current = _current, None
    if previous is not None and "engine" in previous.__dict__:
        previous.engine.dispose(close=False)
