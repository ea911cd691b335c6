"""Start-up refusals: `leadarchive api`, `worker`, `flower`, `run` (and `celery -A worker.app`)
exit with status 2 at once on a malformed setting or undecided office hours, naming the variable
on standard error and never repeating its value; `none` and an empty value start.

Each process runs as a real subprocess with a clean environment (``LEADARCHIVE_*`` only), in an
empty folder (no ``.env``), with an astguiclient.conf path that does not exist.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import claim_redis_database
from tests.helpers import ALICE, free_port, make_settings, wait_for

BIN = Path(sys.executable).parent
LEADARCHIVE = str(BIN / "leadarchive")
CELERY = str(BIN / "celery")
# A refusal comes before anything connects or retries (a started service would stay up until
# _start's 60 s): well within this, even for an interpreter starting on a loaded 2-core machine.
REFUSED_WITHIN = 30.0
OFFICE_HOURS_ADVICE = (
    'LEADARCHIVE_OFFICE_HOURS="mon-fri 08:00-18:00',
    "LEADARCHIVE_OFFICE_HOURS=none",
)


def _argv(command: str) -> list[str]:
    port = str(free_port())
    return {
        "api": [LEADARCHIVE, "api", "--port", port],
        "worker": [LEADARCHIVE, "worker", "--concurrency", "1", "--metrics-port", "0"],
        "flower": [LEADARCHIVE, "flower", "--port", port],
        "run": [LEADARCHIVE, "run", "--port", port],
        "celery": [CELERY, "-A", "worker.app", "worker", "--concurrency", "1"],
    }[command]


def _environment(folder: Path, db_url: str, **settings: str | None) -> dict[str, str]:
    """A valid configuration (every service would start), changed by ``settings`` (None: unset)."""
    values: dict[str, str | None] = {
        "astguiclient_conf": str(folder / "no-astguiclient.conf"),
        "data_dir": str(folder / "data"),
        "database_url": db_url,
        # Nothing connects before the refusal; the one test that starts uses its own database.
        "broker_url": "redis://127.0.0.1:6379/15",
        "result_backend": "redis://127.0.0.1:6379/15",
        "office_hours": "mon-fri 08:00-18:00",
        "timezone": "America/New_York",
        "flower_basic_auth": "admin:flower-pw",
        **settings,
    }
    return {f"LEADARCHIVE_{k.upper()}": v for k, v in values.items() if v is not None}


def _start(command: str, folder: Path, env: dict[str, str]) -> tuple[int, str, float]:
    """Run ``command`` until it exits: (status, stdout + stderr, seconds). Fails if it stays up."""
    started = time.monotonic()
    process = subprocess.Popen(
        _argv(command),
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"`{command}` started instead of refusing")
    return process.returncode, err + out, time.monotonic() - started


def _assert_refused(status: int, output: str, elapsed: float, variable: str) -> None:
    assert status == 2, output
    assert elapsed < REFUSED_WITHIN
    assert f"leadarchive: {variable}" in output, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        ("api", "LEADARCHIVE_OFFICE_HOURS", "mon-fri 8-18"),
        ("api", "LEADARCHIVE_TIMEZONE", "Mars/Olympus"),
        ("api", "LEADARCHIVE_RATE_LIMIT", "lots"),
        ("api", "LEADARCHIVE_DATABASE_URL", "nonsense"),
        ("api", "LEADARCHIVE_DATABASE_URL", "postgresql://u:pw@db/asterisk"),
        ("api", "LEADARCHIVE_BROKER_URL", "http://x"),
        ("api", "LEADARCHIVE_RESULT_BACKEND", "unix:///run/redis.sock"),
        ("worker", "LEADARCHIVE_OFFICE_HOURS", "mon-fri 8-18"),
        ("worker", "LEADARCHIVE_BROKER_URL", "http://x"),
        ("flower", "LEADARCHIVE_TIMEZONE", "Mars/Olympus"),
        ("run", "LEADARCHIVE_RATE_LIMIT", "lots"),
        ("run", "LEADARCHIVE_DATABASE_URL", "nonsense"),
        ("celery", "LEADARCHIVE_TIMEZONE", "Mars/Olympus"),
    ],
)
def test_a_malformed_setting_stops_the_service_naming_the_variable(
    tmp_path: Path, database_url: str, command: str, variable: str, value: str
) -> None:
    name = variable.removeprefix("LEADARCHIVE_").lower()
    env = _environment(tmp_path, database_url, **{name: value})

    status, output, elapsed = _start(command, tmp_path, env)

    _assert_refused(status, output, elapsed, variable)
    assert value not in output
    # Nothing was started: the embedded folder is not even created.
    assert not (tmp_path / "data").exists()


def test_each_bad_variable_gets_a_line_and_a_pasted_key_is_never_echoed(
    tmp_path: Path, database_url: str
) -> None:
    key = "la_live_7Hq2m9XvR4sT8wYb"  # a client's key, pasted into the wrong variable
    env = _environment(tmp_path, database_url, timezone=key, office_hours=key, rate_limit="lots")

    status, output, elapsed = _start("api", tmp_path, env)

    _assert_refused(status, output, elapsed, "LEADARCHIVE_TIMEZONE")
    lines = output.strip().splitlines()
    assert sorted(line.split(":")[1].strip() for line in lines) == [
        "LEADARCHIVE_OFFICE_HOURS",
        "LEADARCHIVE_RATE_LIMIT",
        "LEADARCHIVE_TIMEZONE",
    ]
    assert key not in output
    assert "7Hq2m9" not in output


@pytest.mark.parametrize("command", ["api", "worker", "flower", "run", "celery"])
def test_undecided_office_hours_with_a_database_refuse_to_start(
    tmp_path: Path, database_url: str, command: str
) -> None:
    env = _environment(tmp_path, database_url, office_hours=None)

    status, output, elapsed = _start(command, tmp_path, env)

    _assert_refused(status, output, elapsed, "LEADARCHIVE_OFFICE_HOURS is not set")
    for advice in OFFICE_HOURS_ADVICE:
        assert advice in output, output
    # It says which zone those hours would be read in: the server's, here.
    assert "America/New_York" in output


def test_a_vicidial_servers_astguiclient_conf_is_a_database_too(
    tmp_path: Path, database_url: str
) -> None:
    conf = tmp_path / "astguiclient.conf"
    conf.write_text(
        "VARDB_server => 127.0.0.1\nVARDB_database => asterisk\nVARDB_user => cron\n"
        "VARDB_pass => 1234\nVARDB_port => 3306\n",
        encoding="utf-8",
    )
    env = _environment(
        tmp_path, database_url, database_url=None, office_hours=None, astguiclient_conf=str(conf)
    )

    status, output, elapsed = _start("api", tmp_path, env)

    _assert_refused(status, output, elapsed, "LEADARCHIVE_OFFICE_HOURS is not set")


@pytest.mark.parametrize("decided", ["none", "NONE", ""])
def test_office_hours_none_or_empty_start_the_api_without_restriction(
    tmp_path: Path, database_url: str, decided: str
) -> None:
    # A Redis database of its own: the accepted job is left queued there, never taken by the
    # in-thread test worker.
    with claim_redis_database() as redis_url:
        _accepted_at_any_hour(tmp_path, database_url, redis_url, decided)


def _accepted_at_any_hour(tmp_path: Path, database_url: str, redis_url: str, decided: str) -> None:
    port = free_port()
    env = _environment(
        tmp_path,
        database_url,
        broker_url=redis_url,
        result_backend=redis_url,
        office_hours=decided,
        api_keys=make_settings(database_url, redis_url).api_keys,
    )
    api = subprocess.Popen(
        [LEADARCHIVE, "api", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(base, api), timeout=60, interval=0.1)
        # Accepted at any hour: no 503 "inside office hours", no 500.
        answer = httpx.post(
            f"{base}/vicidial/leads/archive",
            json={"lead_ids": [1], "dry_run": True},
            headers=ALICE,
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=30)
    assert answer.status_code == 202, answer.text


def _healthy(base: str, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, "the API exited"
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_operators_tools_run_without_office_hours_and_check_says_what_is_next(
    tmp_path: Path, database_url: str
) -> None:
    env = _environment(tmp_path, database_url, office_hours=None)

    keys = subprocess.run(
        [LEADARCHIVE, "keys", "new", "acme"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    check = subprocess.run(
        [LEADARCHIVE, "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )

    assert keys.returncode == 0, keys.stderr
    assert "acme:" in keys.stdout
    # check judges the database (0 ready, 1 not); it is never refused for office hours.
    assert check.returncode in (0, 1), check.stderr
    assert "LEADARCHIVE_OFFICE_HOURS is not set" in check.stdout
    assert OFFICE_HOURS_ADVICE[1] in check.stdout


def test_a_malformed_setting_stops_check_too(tmp_path: Path, database_url: str) -> None:
    env = _environment(tmp_path, database_url, timezone="Mars/Olympus")

    check = subprocess.run(
        [LEADARCHIVE, "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )

    assert check.returncode == 2
    assert "leadarchive: LEADARCHIVE_TIMEZONE:" in check.stderr
    assert "Mars/Olympus" not in check.stderr + check.stdout
