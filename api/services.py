"""The API's collaborators, given to the app once and to each route by ``Depends``.

A route names what it needs as a parameter (``services: Svc``); nothing is global, so tests build
an app on their own settings, runtime and Celery app. Every Redis or broker call a route makes goes
through ``guard``: an unreachable Redis, or one that answers but cannot serve, is the contract's
503, never a 500 and never a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import kombu.exceptions
from celery import Celery
from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from api import problems
from api.ratelimit import RateLimiter
from tasks.errors import redis_unavailable
from tasks.runtime import Runtime
from tasks.settings import Settings

log = logging.getLogger("leadarchive.api")

T = TypeVar("T")

# Errors of the broker's client (kombu) and of sockets that mean Redis cannot be reached. Errors of
# the Redis client itself are judged by tasks.errors.redis_unavailable.
BROKER_DOWN = (
    kombu.exceptions.OperationalError,
    ConnectionError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a route reaches: the settings, the runtime (job store, clock, office hours,
    database), the Celery app that carries jobs to the worker, and the per-key rate limiter."""

    settings: Settings
    runtime: Runtime
    celery: Celery
    limiter: RateLimiter

    @classmethod
    def build(cls, settings: Settings, runtime: Runtime, celery: Celery) -> Services:
        """The limiter counts in the job store's Redis (in memory in the embedded demo)."""
        limiter = RateLimiter(settings.rate_limit, None if settings.embedded else runtime.redis)
        return cls(settings=settings, runtime=runtime, celery=celery, limiter=limiter)


def services_of(connection: HTTPConnection) -> Services:
    """The services of the app serving ``connection`` (set by ``api.app.create_app``)."""
    found: Services = connection.app.state.services
    return found


async def _services(request: Request) -> Services:
    # async: FastAPI would run a plain function in a worker thread, on every request.
    return services_of(request)


Svc = Annotated[Services, Depends(_services)]
"""A route parameter: this app's services."""


async def guard(aw: Awaitable[T]) -> T:
    """Await a Redis or broker call; an unreachable Redis becomes a 503, never a stack trace."""
    try:
        return await aw
    except Exception as exc:
        # Unreachable, or it answered but cannot serve now (out of memory, a replica, ...).
        if not (isinstance(exc, BROKER_DOWN) or redis_unavailable(exc)):
            raise
        log.warning("redis unreachable or cannot serve", exc_info=True)
        raise problems.broker_unavailable() from None
