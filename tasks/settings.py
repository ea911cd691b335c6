"""The service's settings: ``LEADARCHIVE_*`` environment variables or a ``.env`` file."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting, typed; built on first use by ``get_settings()``, never at import."""

    model_config = SettingsConfigDict(env_prefix="LEADARCHIVE_", env_file=".env", extra="ignore")

    database_url: str = ""
    broker_url: str = ""
    result_backend: str = ""
    api_keys: str = ""
    max_lead_ids: int = Field(default=500, ge=1, le=100_000)
    office_hours: str = ""
    timezone: str = "UTC"
    rate_limit: str = "100/second"
    result_ttl: timedelta = timedelta(days=7)
    # How long one chunk of a batch may hold the table lock the dialer waits on.
    chunk_time: timedelta = timedelta(milliseconds=10)

    @field_validator("chunk_time")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
