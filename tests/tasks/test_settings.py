"""Configuration: LEADARCHIVE_* variables, astguiclient.conf, the embedded default."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import make_url

from tasks.settings import Settings, local_zone_name

VICIDIAL_CONF = """\
# astguiclient.conf - configuration elements for the astguiclient package
PATHhome => /usr/share/astguiclient
VARserver_ip => 10.0.0.5
VARDB_server => db.callcenter.local
VARDB_database => asterisk
VARDB_user => cron
VARDB_pass => p@ss:w/rd#1
VARDB_custom_user => custom
VARDB_port => 3307
"""


def _settings(tmp_path: Path, **values: object) -> Settings:
    values.setdefault("astguiclient_conf", tmp_path / "missing.conf")
    values.setdefault("data_dir", tmp_path / "data")
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_vicidial_credentials_come_from_astguiclient_conf(tmp_path: Path) -> None:
    conf = tmp_path / "astguiclient.conf"
    conf.write_text(VICIDIAL_CONF)

    settings = _settings(tmp_path, astguiclient_conf=conf)

    assert settings.database_url == (
        "mysql+pymysql://cron:p%40ss%3Aw%2Frd%231@db.callcenter.local:3307/asterisk?charset=utf8mb4"
    )
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.result_backend == "redis://127.0.0.1:6379/1"
    assert not settings.embedded


def test_an_explicit_database_url_wins_over_astguiclient_conf(tmp_path: Path) -> None:
    conf = tmp_path / "astguiclient.conf"
    conf.write_text(VICIDIAL_CONF)

    settings = _settings(
        tmp_path, astguiclient_conf=conf, database_url="mysql+pymysql://u:p@h/asterisk"
    )

    assert settings.database_url == "mysql+pymysql://u:p@h/asterisk"


def test_nothing_configured_is_the_embedded_default(tmp_path: Path) -> None:
    settings = _settings(tmp_path)

    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'vicidial.db'}"
    assert settings.broker_url == "filesystem://"
    assert settings.result_backend == f"file://{tmp_path / 'data' / 'results'}"
    assert settings.embedded


def test_environment_variables_use_the_leadarchive_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADARCHIVE_DATABASE_URL", "mysql+pymysql://a:b@c/d")
    monkeypatch.setenv("LEADARCHIVE_MAX_LEAD_IDS", "250")
    monkeypatch.setenv("LEADARCHIVE_RATE_LIMIT", "3000/minute")
    monkeypatch.setenv("LEADARCHIVE_OFFICE_HOURS", "mon-fri 08:00-18:00")
    monkeypatch.setenv("LEADARCHIVE_TIMEZONE", "America/New_York")

    settings = _settings(tmp_path)

    assert settings.database_url == "mysql+pymysql://a:b@c/d"
    assert settings.max_lead_ids == 250
    assert settings.rate_limit == "3000/minute"
    assert settings.office_hours == "mon-fri 08:00-18:00"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("api_keys", "alice:not-a-hash", "name:sha256hex"),
        ("api_keys", "a-raw-key-pasted-by-mistake", "name:sha256hex"),
        ("rate_limit", "lots", "100/second"),
        ("max_lead_ids", 0, "greater than or equal to 1"),
        ("chunk_time", "-PT1S", "must be positive"),
        ("job_lease", "0", "at least 2 seconds"),
        ("job_lease", "1500ms", "at least 2 seconds"),
        ("visibility_timeout", "1s", "at least 2 seconds"),
        ("task_time_limit", "PT60S", "well below LEADARCHIVE_VISIBILITY_TIMEOUT"),
        ("result_ttl", "0", "at least 1 second"),
        ("result_ttl", "250ms", "at least 1 second"),
        ("office_hours", "mon-fri 8-18", "cannot read entry 1 of 1: .*mon-fri 08:00-18:00"),
        ("office_hours", "mon-fri 08:00-18:00; mars 09:00-13:00", "cannot read entry 2 of 2"),
        ("office_hours", "mon 08:00-09:00;", "entry 2 of 2 is empty"),
        ("office_hours", "mon-sun 00:00-24:00", "covers the whole week"),
        ("office_hours", "a-raw-key-pasted-by-mistake", "cannot read entry 1"),
        ("timezone", "Mars/Olympus", "IANA time zone"),
        ("timezone", "/etc/localtime", "IANA time zone"),
        ("database_url", "nonsense", "is not a database URL"),
        ("database_url", "postgresql://u:pw@db/asterisk", "MySQL/MariaDB URL"),
        ("database_url", "mysql+mysqldb://u:pw@db/asterisk", "MySQL/MariaDB URL"),
        ("database_url", "mysql+pymysql://u:pw@db", "needs a host and a database name"),
        ("broker_url", "http://x", "redis://, rediss://, filesystem://"),
        # Neither Celery's transports nor its result backends know unix:// (redis-py does).
        ("broker_url", "unix:///run/redis.sock", "redis://, rediss://, filesystem://"),
        ("broker_url", "redis://127.0.0.1:port/0", "is not a Redis URL"),
        ("broker_url", "REDIS://127.0.0.1:6379/0", "redis://, rediss://, filesystem://"),
        ("result_backend", "unix:///run/redis.sock", "redis://, rediss://, file://"),
        ("result_backend", "rediss://redis.example:6380/1", "ssl_cert_reqs"),
        ("flower_basic_auth", "admin", "user:password"),
        ("flower_basic_auth", ":pw", "user:password"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as refused:
        _settings(tmp_path, **{field: value})

    assert "a-raw-key-pasted" not in str(refused.value)
    if isinstance(value, str) and len(value) > 3:
        assert value not in str(refused.value)


@pytest.mark.parametrize(
    ("values", "seconds"),
    [
        ({}, 10.0),  # the default: a third of the default visibility timeout
        ({"job_lease": "3s"}, 3.0),
        ({"job_lease": "PT45S"}, 30.0),  # never longer than the visibility timeout
        ({"visibility_timeout": "8s", "task_time_limit": "4s", "lock_wait_timeout": "4s"}, 8.0),
    ],
)
def test_a_runs_lease_is_the_job_lease_at_most_the_visibility_timeout(
    tmp_path: Path, values: dict[str, str], seconds: float
) -> None:
    assert _settings(tmp_path, **values).lease.total_seconds() == seconds


def test_office_hours_unset_are_undecided_with_a_database(tmp_path: Path) -> None:
    settings = _settings(tmp_path, database_url="mysql+pymysql://u:p@h/asterisk")

    assert settings.office_hours is None
    assert settings.office_hours_undecided


def test_the_embedded_demo_needs_no_office_hours(tmp_path: Path) -> None:
    settings = _settings(tmp_path)

    assert settings.office_hours is None
    assert not settings.office_hours_undecided
    assert settings.schedule().spans == ()


@pytest.mark.parametrize("decided", ["none", "None", " NONE ", "", "  "])
def test_none_or_empty_office_hours_mean_no_restriction(tmp_path: Path, decided: str) -> None:
    settings = _settings(
        tmp_path, database_url="mysql+pymysql://u:p@h/asterisk", office_hours=decided
    )

    assert settings.office_hours == ""
    assert not settings.office_hours_undecided
    assert settings.schedule().spans == ()


def test_an_explicit_empty_variable_differs_from_an_unset_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADARCHIVE_DATABASE_URL", "mysql+pymysql://u:p@h/asterisk")
    monkeypatch.delenv("LEADARCHIVE_OFFICE_HOURS", raising=False)
    assert _settings(tmp_path).office_hours_undecided

    monkeypatch.setenv("LEADARCHIVE_OFFICE_HOURS", "")
    assert _settings(tmp_path).office_hours == ""
    assert not _settings(tmp_path).office_hours_undecided


def test_office_hours_are_read_in_the_configured_zone(tmp_path: Path) -> None:
    settings = _settings(tmp_path, office_hours="mon-fri 08:00-18:00", timezone="America/New_York")

    schedule = settings.schedule()
    assert schedule.zone.key == "America/New_York"
    # Monday 12:00 in New York is 16:00 UTC in summer: inside; 23:00 UTC is 19:00: outside.
    assert schedule.inside(datetime(2025, 7, 7, 16, 0, tzinfo=UTC))
    assert not schedule.inside(datetime(2025, 7, 7, 23, 0, tzinfo=UTC))


def test_the_time_zone_defaults_to_the_servers_local_zone(tmp_path: Path) -> None:
    # A process of its own: the local zone is read once per process (TZ here, as systemd or a
    # shell sets it; /etc/localtime on a server).
    probe = "from tasks.settings import Settings; print(Settings(_env_file=None).timezone)"
    env = {"TZ": "America/Chicago", "LEADARCHIVE_ASTGUICLIENT_CONF": str(tmp_path / "none")}
    found = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )

    assert found.stdout.strip() == "America/Chicago"
    assert _settings(tmp_path).timezone == local_zone_name()


def test_a_schedule_without_a_nameable_local_zone_needs_the_timezone_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tasks.settings.local_zone_name", lambda: None)

    with pytest.raises(ValidationError, match="set LEADARCHIVE_TIMEZONE"):
        _settings(tmp_path, office_hours="mon-fri 08:00-18:00")
    # No schedule, no zone needed; an explicit zone is enough.
    assert _settings(tmp_path, office_hours="none").timezone == "UTC"
    assert _settings(tmp_path, office_hours="mon 08:00-09:00", timezone="Europe/Paris").schedule()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:p%40ss@db:3306/asterisk?charset=utf8mb4",
        "mariadb://u:p%40ss@db:3306/asterisk?charset=utf8mb4",
        "mariadb+pymysql://u:p%40ss@db:3306/asterisk?charset=utf8mb4",
    ],
)
def test_mysql_and_mariadb_urls_use_the_installed_driver(tmp_path: Path, url: str) -> None:
    settings = _settings(tmp_path, database_url=url)

    assert settings.database_url == "mysql+pymysql://u:p%40ss@db:3306/asterisk?charset=utf8mb4"
    assert make_url(settings.database_url).password == "p@ss"


def test_redis_over_tls_is_accepted_with_its_certificate_policy(tmp_path: Path) -> None:
    backend = "rediss://redis.example:6380/1?ssl_cert_reqs=required"

    settings = _settings(
        tmp_path, broker_url="rediss://redis.example:6380/0", result_backend=backend
    )

    assert settings.result_backend == backend
    assert not settings.embedded


def test_key_hashes_map_each_hash_to_its_name(tmp_path: Path) -> None:
    alice, bob = "a" * 64, "b" * 64

    settings = _settings(tmp_path, api_keys=f"alice:{alice}, bob:{bob}")

    assert settings.key_hashes() == {alice: "alice", bob: "bob"}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30),
        ("250ms", 0.25),
        ("45s", 45),
        ("5m", 300),
        ("2h", 7200),
        ("7d", 604800),
        ("PT30S", 30),
        ("00:01:00", 60),
    ],
)
def test_durations_read_as_people_write_them(tmp_path: Path, value: str, seconds: float) -> None:
    assert _settings(tmp_path, chunk_time=value).chunk_time.total_seconds() == seconds
