"""The service's settings: ``LEADARCHIVE_*`` environment variables or a ``.env`` file.

Every value is checked when the settings are built, so a malformed one stops a process at start
instead of failing every request later. Refusals never repeat the value (a key may have been
pasted into the wrong variable). ``office_hours`` is None only when LEADARCHIVE_OFFICE_HOURS is
unset: undecided, which ``tasks.startup`` refuses for a real database; ``none`` and an empty
value both mean no restriction and are stored as "".
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from tasks.errors import ConfigurationError, WholeWeekError
from tasks.office_hours import OfficeHours
from tasks.scopes import UNSCOPED, KeyScope, ScopeError, parse_scope

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
# `name:sha256hex`, optionally followed by `:` and the key's scope (tasks.scopes, no commas).
_KEY_ENTRY = re.compile(
    r"^(?P<name>[A-Za-z0-9_.@-]{1,64}):(?P<digest>[0-9a-f]{64})(?::(?P<scope>[^,]*))?$"
)
_KEY_ENTRY_FORMAT = (
    "each entry must be name:sha256hex (64 lowercase hex digits), optionally followed by"
    " :scope (actions=...&lists=...&max=...); generate one with `leadarchive keys new NAME`"
)
# The placeholder of every secret in deploy/leadarchive.env.example; Flower refuses to run with it.
EXAMPLE_SECRET = "CHANGE-ME"  # noqa: S105 - the placeholder, refused, not a secret
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")
# The drivers this project ships: PyMySQL for MySQL and MariaDB, the standard library's sqlite3.
_MYSQL_DRIVERS = {"mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql"}
_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite"}
_DATABASE_EXAMPLE = "mysql+pymysql://USER:PASSWORD@HOST:3306/asterisk?charset=utf8mb4"
# What Celery (kombu's transports, Celery's result backends) and tasks.runtime both understand.
_BROKER_SCHEMES = ("redis", "rediss", "filesystem")
_BACKEND_SCHEMES = ("redis", "rediss", "file")
_SSL_CERT_REQS = {"required", "optional", "none", "cert_required", "cert_optional", "cert_none"}
OFFICE_HOURS_EXAMPLE = "mon-fri 08:00-18:00; sat 09:00-13:00"
_OFFICE_HOURS_FORMAT = (
    "write '<days> <HH:MM-HH:MM>[,<HH:MM-HH:MM>...]' entries separated by ';', days mon..sun"
    " alone, as a range (mon-fri) or a list (mon,wed,fri), times with two digits each,"
    f' e.g. "{OFFICE_HOURS_EXAMPLE}"; or none for no restriction'
)


def local_zone_name() -> str | None:
    """The IANA name of this machine's time zone (TZ, /etc/timezone, /etc/localtime), or None."""
    import tzlocal

    try:
        name = tzlocal.get_localzone_name()
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None  # conflicting or unreadable configuration
    return name if name and _is_zone(name) else None


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


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
    # `name:sha256hex[:scope]` entries, comma-separated: the SHA-256 of each key, never the
    # key; the optional scope limits the key's actions, lists and lead limit (tasks.scopes).
    api_keys: str = ""
    max_lead_ids: int = Field(default=500, ge=1, le=100_000)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Jobs one API key may have queued, deferred or running at once; more are refused with 429.
    max_pending_jobs: int = Field(default=10_000, ge=1, le=1_000_000)
    # Archive by selection waits before a batch while the server runs more statements than this
    # (gh-ost's --max-load on Threads_running); 0: no limit.
    max_threads_running: int = Field(default=0, ge=0)
    # Replicas a selection job watches (comma-separated MySQL URLs) and the lag it tolerates
    # (pt-archiver's --max-lag); a replica of unknown lag makes it wait too.
    replica_urls: str = ""
    max_replica_lag: timedelta = timedelta(seconds=10)
    # Empty: the server's local zone, as Vicidial's own schedules use. Declared before
    # office_hours, whose validator reads it.
    timezone: str = Field(default="", validate_default=True)
    # None: never set (undecided). "" (also written `none`): no restriction.
    office_hours: str | None = None
    rate_limit: str = "100/second"
    result_ttl: timedelta = timedelta(days=7)
    # How long one chunk of a batch may hold the table lock the dialer waits on.
    chunk_time: timedelta = timedelta(milliseconds=5)
    # A message a worker took and never acknowledged (the worker died) is delivered again after
    # this long. Every task, retry delay and time limit stays well below it.
    visibility_timeout: timedelta = timedelta(seconds=30)
    # A run holds its job under a lease of this length (at most the visibility timeout), renewed
    # every third of it while the run lives; a worker hands back a job whose lease has run out
    # (its run's worker died or froze), so the job runs again this long after a kill, not a
    # whole visibility timeout later; and a queued job whose message no worker has taken within
    # this long once it has been queued this long (its worker died before a run began).
    job_lease: timedelta = timedelta(seconds=10)
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
        "job_lease",
        "task_time_limit",
        "lock_wait_timeout",
        "release_interval",
        "max_replica_lag",
        mode="before",
    )
    @classmethod
    def _human_duration(cls, value: object) -> object:
        # `30` (seconds), `250ms`, `30s`, `5m`, `2h`, `7d`; ISO 8601 (`PT30S`) passes through.
        if isinstance(value, str) and (match := _DURATION.match(value)):
            return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
        return value

    @field_validator(
        "chunk_time",
        "task_time_limit",
        "lock_wait_timeout",
        "release_interval",
        "max_replica_lag",
    )
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value

    @field_validator("job_lease", "visibility_timeout")
    @classmethod
    def _lease_of_seconds(cls, value: timedelta) -> timedelta:
        # The lease is the shorter of the two. The queued index is in whole seconds: a shorter
        # lease could count a job whose message is on its way as lost, and every worker would
        # sweep several times a second.
        if value < timedelta(seconds=2):
            raise ValueError("must be at least 2 seconds (e.g. 10s)")
        return value

    @field_validator("result_ttl")
    @classmethod
    def _whole_seconds(cls, value: timedelta) -> timedelta:
        # Job records expire after this many whole seconds: 0 would be refused by Redis.
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1 second (e.g. 7d)")
        return value

    @field_validator("api_keys")
    @classmethod
    def _key_entries(cls, value: str) -> str:
        keys = parse_api_keys(value)  # never echoes an entry: it may be a raw key
        scopes: dict[str, KeyScope] = {}
        for key in keys.values():
            if scopes.setdefault(key.name, key.scope) != key.scope:
                # Jobs belong to a name: two keys of one name see each other's jobs.
                raise ValueError(
                    "entries that share a name (the old and new key of one client) must have"
                    " the same scope: give a key with other rights a name of its own"
                )
        return value

    @model_validator(mode="after")
    def _key_limits(self) -> Settings:
        for key in self.api_key_scopes().values():
            limit = key.scope.max_lead_ids
            if limit is not None and limit > self.max_lead_ids:
                # By position, never by name: a raw key may have been pasted as one.
                raise ValueError(
                    f"LEADARCHIVE_API_KEYS: entry {key.entry} has a max= above"
                    f" LEADARCHIVE_MAX_LEAD_IDS ({self.max_lead_ids}); a key's own limit can"
                    " only be lower"
                )
        return self

    @field_validator("flower_basic_auth")
    @classmethod
    def _user_password(cls, value: str) -> str:
        user, colon, password = value.partition(":")
        if value and not (colon and user and password):
            raise ValueError("must be user:password (or empty, and Flower does not start)")
        return value

    def flower_auth_problem(self) -> str | None:
        """Why Flower must not start with these credentials, or None. Flower shows every job and
        can revoke tasks: it never runs open, nor behind the env example's placeholder password."""
        user, _, password = self.flower_basic_auth.partition(":")
        if not (user and password):
            return "set LEADARCHIVE_FLOWER_BASIC_AUTH=user:password: Flower never runs open"
        if password.strip().upper() == EXAMPLE_SECRET:
            return (
                "LEADARCHIVE_FLOWER_BASIC_AUTH still has the example's password: choose one, e.g."
                ' python3 -c "import secrets; print(secrets.token_urlsafe(18))"'
            )
        return None

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

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(f"is not a database URL: write {_DATABASE_EXAMPLE}") from None
        if url.drivername in _SQLITE_DRIVERS:
            return value
        if url.drivername not in _MYSQL_DRIVERS:
            raise ValueError(f"must be a MySQL/MariaDB URL ({_DATABASE_EXAMPLE}) or sqlite:///PATH")
        if not (url.host and url.database):
            raise ValueError(f"needs a host and a database name: {_DATABASE_EXAMPLE}")
        if url.drivername == "mysql+pymysql":
            return value
        # PyMySQL is the driver installed, and it speaks to MySQL and MariaDB alike.
        return url.set(drivername="mysql+pymysql").render_as_string(hide_password=False)

    @field_validator("replica_urls")
    @classmethod
    def _replicas(cls, value: str) -> str:
        urls = [url.strip() for url in value.split(",") if url.strip()]
        for url in urls:
            checked = cls._database(url)
            if not checked.startswith("mysql+pymysql://"):
                raise ValueError(f"each must be a MySQL/MariaDB URL: {_DATABASE_EXAMPLE}")
        return ",".join(cls._database(url) for url in urls)

    def replicas(self) -> list[str]:
        """The replica URLs, one by one."""
        return [url for url in self.replica_urls.split(",") if url]

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        return _service_url(value.strip(), _BROKER_SCHEMES, "redis://HOST:6379/0")

    @field_validator("result_backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        value = _service_url(value.strip(), _BACKEND_SCHEMES, "redis://HOST:6379/1")
        if value.startswith("rediss://"):
            # Celery refuses a rediss:// result backend without it, at the first job.
            reqs = parse_qs(urlsplit(value).query).get("ssl_cert_reqs", [""])[-1]
            if reqs.lower() not in _SSL_CERT_REQS:
                raise ValueError(
                    "a rediss:// URL needs ?ssl_cert_reqs=required (or optional, none)"
                )
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        value = value.strip()
        if not value:
            # "" stays only when the local zone has no name; office_hours refuses a schedule then.
            return local_zone_name() or ""
        if not _is_zone(value):
            raise ValueError(
                "is not an IANA time zone name such as America/New_York"
                " (leave it unset for the server's local zone)"
            )
        return value

    @field_validator("office_hours")
    @classmethod
    def _schedule(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        spec = value.strip()
        if spec.lower() == "none":
            return ""
        # A bad timezone is reported on its own; the format is still checked, in UTC.
        zone = info.data.get("timezone", "UTC") or ""
        try:
            schedule = OfficeHours.parse(spec, zone or "UTC")
        except WholeWeekError:
            raise ValueError("covers the whole week: archiving could never run") from None
        except ValueError:
            # Never echo the value: it may be a key pasted into the wrong variable.
            raise ValueError(_unreadable_entry(spec)) from None
        if schedule.spans and not zone:
            raise ValueError(
                "needs a time zone and the server's local zone has no IANA name here:"
                " set LEADARCHIVE_TIMEZONE, e.g. America/New_York"
            )
        return spec

    @model_validator(mode="after")
    def _resolve_services(self) -> Settings:
        from tasks.astguiclient import database_url_from

        if not self.database_url and self.astguiclient_conf.is_file():
            try:
                self.database_url = database_url_from(self.astguiclient_conf)
            except (ConfigurationError, OSError) as exc:
                raise ValueError(
                    f"LEADARCHIVE_ASTGUICLIENT_CONF: {exc}"
                    " (or set LEADARCHIVE_DATABASE_URL instead)"
                ) from None
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'vicidial.db').resolve()}"
        embedded = self.embedded_database
        if not self.broker_url:
            self.broker_url = "filesystem://" if embedded else "redis://127.0.0.1:6379/0"
        if not self.result_backend:
            results = (self.data_dir / "results").resolve()
            self.result_backend = f"file://{results}" if embedded else "redis://127.0.0.1:6379/1"
        if not self.timezone:
            # No schedule needs it (the office_hours check): any zone reads "" alike.
            self.timezone = "UTC"
        return self

    @property
    def embedded(self) -> bool:
        """True when jobs and results live in data_dir instead of Redis."""
        return not self.result_backend.startswith(("redis://", "rediss://"))

    @property
    def embedded_database(self) -> bool:
        """True for the embedded demo's SQLite database: no dialer, no office hours to respect."""
        return self.database_url.startswith("sqlite")

    @property
    def office_hours_undecided(self) -> bool:
        """A real database with LEADARCHIVE_OFFICE_HOURS never set: services refuse to start."""
        return self.office_hours is None and not self.embedded_database

    @property
    def lease(self) -> timedelta:
        """How long a run's hold on its job lasts unless renewed: ``job_lease``, at most the
        visibility timeout."""
        return min(self.job_lease, self.visibility_timeout)

    def schedule(self) -> OfficeHours:
        """The parsed office hours; unset counts as no restriction (only the demo gets here)."""
        return OfficeHours.parse(self.office_hours or "", self.timezone)

    @model_validator(mode="after")
    def _limits_below_visibility(self) -> Settings:
        if self.task_time_limit + self.lock_wait_timeout / 2 >= self.visibility_timeout:
            raise ValueError(
                "LEADARCHIVE_TASK_TIME_LIMIT (plus half of LEADARCHIVE_LOCK_WAIT_TIMEOUT) must"
                " stay well below LEADARCHIVE_VISIBILITY_TIMEOUT, or a slow task is delivered to"
                " a second worker while it still runs"
            )
        return self

    def key_hashes(self) -> dict[str, str]:
        """``{sha256hex: name}`` of every configured API key."""
        return {digest: key.name for digest, key in parse_api_keys(self.api_keys).items()}

    def api_key_scopes(self) -> dict[str, ApiKey]:
        """``{sha256hex: ApiKey}`` of every configured API key: its name and its scope."""
        return parse_api_keys(self.api_keys)


class ApiKey(NamedTuple):
    """A configured API key: the name its jobs belong to, and what it may do."""

    name: str
    scope: KeyScope
    # Its position in LEADARCHIVE_API_KEYS (1 for the first), which errors name it by.
    entry: int = 0


@lru_cache(maxsize=8)
def parse_api_keys(value: str) -> dict[str, ApiKey]:
    """``{sha256hex: ApiKey}`` of ``LEADARCHIVE_API_KEYS``; a ValueError naming the entry by its
    position, never by its text, when one cannot be read. Cached: the API reads it per request.
    """
    entries = value.split(",")
    keys: dict[str, ApiKey] = {}
    for number, entry in enumerate(entries, start=1):
        entry = entry.strip()
        if not entry:
            continue
        where = f"entry {number} of {len(entries)}"
        match = _KEY_ENTRY.match(entry)
        if match is None:
            raise ValueError(f"{where}: {_KEY_ENTRY_FORMAT}")
        scope = UNSCOPED
        if match["scope"] is not None:
            try:
                scope = parse_scope(match["scope"])
            except ScopeError as exc:
                raise ValueError(f"{where}: {exc}") from None
        keys[match["digest"]] = ApiKey(match["name"], scope, number)
    return keys


def _service_url(value: str, schemes: tuple[str, ...], example: str) -> str:
    """``value`` when empty (the default) or a URL of one of ``schemes`` that Redis can read."""
    if not value:
        return value
    # Lowercase only, as Celery and tasks.runtime compare them.
    scheme, separator, _ = value.partition("://")
    if not separator or scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise ValueError(f"must start with {allowed} (e.g. {example}), or be empty")
    if scheme in ("redis", "rediss"):
        from redis.connection import parse_url

        try:
            parse_url(value)  # type: ignore[no-untyped-call]
        except ValueError:
            raise ValueError(f"is not a Redis URL: write {example}") from None
    return value


def _unreadable_entry(spec: str) -> str:
    """Which entry of ``spec`` cannot be read, and how to write one, without repeating it."""
    entries = spec.split(";")
    for number, entry in enumerate(entries, start=1):
        if not entry.strip():
            return f"entry {number} of {len(entries)} is empty: remove the stray ';'"
        try:
            OfficeHours.parse(entry, "UTC")
        except WholeWeekError:
            continue
        except ValueError:
            return f"cannot read entry {number} of {len(entries)}: {_OFFICE_HOURS_FORMAT}"
    return f"cannot be read: {_OFFICE_HOURS_FORMAT}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
