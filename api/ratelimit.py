"""Per-key request rate limits, counted in Redis so that every API process shares them."""

from __future__ import annotations

import math
import time

import redis
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import SlidingWindowCounterRateLimiter

from api.problems import Problem


class RateLimiter:
    """``limit`` (e.g. ``100/second``) per API key name; an empty limit allows everything."""

    def __init__(self, limit: str, client: redis.Redis | None) -> None:
        """Count in ``client``'s Redis, or in this process's memory when there is none."""
        self._item: RateLimitItem | None = parse(limit) if limit else None
        self._limiter: SlidingWindowCounterRateLimiter | None = None
        if self._item is not None:
            storage: Storage = (
                RedisStorage("redis://", connection_pool=client.connection_pool)
                if client is not None
                else MemoryStorage()
            )
            self._limiter = SlidingWindowCounterRateLimiter(storage)

    @property
    def enabled(self) -> bool:
        """False when no limit is configured (nothing to count, no Redis call)."""
        return self._limiter is not None

    def check(self, key_name: str) -> None:
        """Count one request for ``key_name``; a 429 problem when it is over the limit."""
        if self._item is None or self._limiter is None:
            return
        if self._limiter.hit(self._item, "leadarchive", key_name):
            return
        stats = self._limiter.get_window_stats(self._item, "leadarchive", key_name)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise Problem(
            429,
            "rate-limited",
            "Too Many Requests",
            f"more than {self._item} requests for this key; slow down",
            headers={"Retry-After": str(retry_after)},
        )
