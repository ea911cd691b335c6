"""Configuration: LEADARCHIVE_* variables, astguiclient.conf, the embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.settings import Settings

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
        ("task_time_limit", "PT60S", "well below visibility_timeout"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as refused:
        _settings(tmp_path, **{field: value})

    assert "a-raw-key-pasted" not in str(refused.value)


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
    assert _settings(tmp_path, result_ttl=value).result_ttl.total_seconds() == seconds
