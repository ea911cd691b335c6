"""The service's settings: ``LEADARCHIVE_*`` environment variables or a ``.env`` file."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_KEY_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9_.@-]{1,64}):(?P<digest>[0-9a-f]{64})$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")


class Settings(BaseSettings):
    """Every setting, typed; built on first use by ``get_settings()``, never at import."""

    # hide_input_in_errors: a key pasted into the wrong variable must not land in a log.
    model_config = SettingsConfigDict(
        env_prefix="LEADARCHIVE_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    # Empty: the Vicidial credentials of astguiclient_conf if it exists, else the embedded
    # default (SQLite, Celery's filesystem broker and file results, all under data_dir).
    database_url: str = ""
    broker_url: str = ""
    result_backend: str = ""
    astguiclient_conf: Path = Path("/etc/astguiclient.conf")
    data_dir: Path = Path("leadarchive-data")
    # `name:sha256hex` entries, comma-separated: the SHA-256 of each key, never the key.
    api_keys: str = ""
    max_lead_ids: int = Field(default=500, ge=1, le=100_000)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    office_hours: str = ""
    timezone: str = "UTC"
    rate_limit: str = "100/second"
    result_ttl: timedelta = timedelta(days=7)
    # How long one chunk of a batch may hold the table lock the dialer waits on.
    chunk_time: timedelta = timedelta(milliseconds=5)
    # A message a worker took and never acknowledged (the worker died) is delivered again after
    # this long. Every task, retry delay and time limit stays well below it.
    visibility_timeout: timedelta = timedelta(seconds=30)
    task_time_limit: timedelta = timedelta(seconds=20)
    lock_wait_timeout: timedelta = timedelta(seconds=10)
    # How often a worker looks for deferred jobs whose office-hours window has opened.
    release_interval: timedelta = timedelta(seconds=15)
    # `user:password` for Flower's basic auth; Flower refuses to start without it.
    flower_basic_auth: str = ""
    # Vicidial's Administration Change Log: one vicidial_admin_log row per finished job that was
    # not a dry run, when the table exists. The user is the name the row is written under (the
    # column is VARCHAR(20)); VDAD is what Vicidial's own cron scripts write.
    admin_log: bool = True
    admin_log_user: str = "VDAD"

    @field_validator(
        "result_ttl",
        "chunk_time",
        "visibility_timeout",
        "task_time_limit",
        "lock_wait_timeout",
        "release_interval",
        mode="before",
    )
    @classmethod
    def _human_duration(cls, value: object) -> object:
        # `30` (seconds), `250ms`, `30s`, `5m`, `2h`, `7d`; ISO 8601 (`PT30S`) passes through.
        if isinstance(value, str) and (match := _DURATION.match(value)):
            return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
        return value

    @field_validator("chunk_time", "task_time_limit", "lock_wait_timeout", "release_interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value

    @field_validator("api_keys")
    @classmethod
    def _key_entries(cls, value: str) -> str:
        for entry in filter(None, (e.strip() for e in value.split(","))):
            if not _KEY_ENTRY.match(entry):
                # Never echo the entry: it may be a raw key pasted by mistake.
                raise ValueError(
                    "each entry must be name:sha256hex (64 lowercase hex digits);"
                    " generate one with `leadarchive keys new NAME`"
                )
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        if value.strip() and not _RATE.match(value):
            raise ValueError("must look like 100/second, 3000/minute, or be empty for no limit")
        return value.strip()

    @field_validator("admin_log_user")
    @classmethod
    def _admin_log_user(cls, value: str) -> str:
        # Vicidial's user column is VARCHAR(20); its user IDs have no spaces.
        value = value.strip()
        if not re.fullmatch(r"[\x21-\x7e]{1,20}", value):
            raise ValueError("must be 1 to 20 characters, printable ASCII without spaces")
        return value

    @model_validator(mode="after")
    def _resolve_services(self) -> Settings:
        from tasks.astguiclient import database_url_from

        if not self.database_url and self.astguiclient_conf.is_file():
            self.database_url = database_url_from(self.astguiclient_conf)
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'vicidial.db').resolve()}"
        embedded = self.database_url.startswith("sqlite")
        if not self.broker_url:
            self.broker_url = "filesystem://" if embedded else "redis://127.0.0.1:6379/0"
        if not self.result_backend:
            results = (self.data_dir / "results").resolve()
            self.result_backend = f"file://{results}" if embedded else "redis://127.0.0.1:6379/1"
        return self

    @property
    def embedded(self) -> bool:
        """True when jobs and results live in data_dir instead of Redis."""
        return not self.result_backend.startswith(("redis://", "rediss://", "unix://"))

    @model_validator(mode="after")
    def _limits_below_visibility(self) -> Settings:
        if self.task_time_limit + self.lock_wait_timeout / 2 >= self.visibility_timeout:
            raise ValueError(
                "task_time_limit must stay well below visibility_timeout, or a slow task is"
                " delivered to a second worker while it still runs"
            )
        return self

    def key_hashes(self) -> dict[str, str]:
        """``{sha256hex: name}`` of every configured API key."""
        pairs = (e.strip().split(":", 1) for e in self.api_keys.split(",") if e.strip())
        return {digest: name for name, digest in pairs}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
