"""Settings for a test run: two API keys (alice and bob) and short timeouts, built in one place.

``make_settings`` reads no ``.env`` file, and what it sets wins over the environment, so a test
runs the same on every machine; any field can be overridden by name.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from api.auth import hash_key
from tasks.settings import Settings

ALICE_KEY = "alice-test-key-0123456789abcdef"
BOB_KEY = "bob-test-key-0123456789abcdef012"
ALICE = {"Authorization": f"Key={ALICE_KEY}"}
BOB = {"Authorization": f"Key={BOB_KEY}"}


def make_settings(database_url: str, redis_url: str, **overrides: Any) -> Settings:
    """Settings for these servers: alice's and bob's keys, no rate limit, office hours on
    weekdays in New York, and short release and lock-wait intervals."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "broker_url": redis_url,
        "result_backend": redis_url,
        "api_keys": f"alice:{hash_key(ALICE_KEY)},bob:{hash_key(BOB_KEY)}",
        "rate_limit": "",
        "office_hours": "mon-fri 08:00-18:00",
        "timezone": "America/New_York",
        "release_interval": timedelta(milliseconds=200),
        "lock_wait_timeout": timedelta(seconds=1),
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)
