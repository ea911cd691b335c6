"""`leadarchive select` against the real API and the real worker, on Vicidial's tables in MariaDB.

The command runs as the operator runs it (``leadarchive.cli.main``), against the API served by
uvicorn in a thread of this process; the worker is the in-thread Celery worker. Ctrl-C is a real
SIGINT sent to this process while the job runs; a selection is kept running (waiting) by a
throttle that always says wait: a server-load limit below the one statement that checks it.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
import pytest
import redis
import uvicorn
from celery import Celery
from rich.console import Console
from sqlalchemy import Connection, Engine

from api.app import create_app
from leadarchive.cli import build_parser, main
from leadarchive.client import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LEFT_LIVE,
    EXIT_OK,
    FINAL,
    Selector,
    StoppedWaiting,
    select,
    selection_exit_code,
)
from tasks.archive import Tuning
from tasks.runtime import Runtime
from tasks.seed import insert_leads, lead_rows
from tasks.settings import Settings
from tasks.throttle import Throttles
from tests.api.conftest import SATURDAY_NIGHT, FakeClock, add_keys
from tests.helpers import (
    ALICE,
    ALICE_KEY,
    Row,
    archive,
    free_port,
    live,
    wait_for,
    waits_for_a_table,
)

pytestmark = pytest.mark.usefixtures("worker")

LEADS = 1_200
# Every fourth lead is on list 2002, the others on list 1001: three batches of the limit (500).
SELECTED = [i for i in range(1, LEADS + 1) if i % 4]
# May archive and delete, but not select.
ARCHIVER_KEY = "archiver-test-key-0123456789abcd"
MOVE = {"list_ids": [1001], "insert_leads": True, "update_leads": True, "delete_leads": True}
MONDAY_MORNING = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 10:00 in New York: office hours
MONDAY_EVENING = "2026-11-30T23:00:00.000+00:00"  # 18:00 in New York: they end
JOBS = "leadarchive:job:*"


@pytest.fixture(autouse=True)
def archiver_key(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    add_keys(settings, monkeypatch, {"archiver": (ARCHIVER_KEY, "actions=archive+delete")})


@pytest.fixture
def leads(vicidial: Connection) -> dict[int, Row]:
    insert_leads(vicidial, lead_rows(LEADS, list_id=1001, seed=61))
    vicidial.exec_driver_sql("UPDATE vicidial_list SET list_id = 2002 WHERE MOD(lead_id, 4) = 0")
    vicidial.commit()
    return live(vicidial)


@pytest.fixture
def api_url(
    settings: Settings, rt: Runtime, celery_app: Celery, clock: FakeClock, archiver_key: None
) -> Iterator[str]:
    """The API, served over HTTP by uvicorn in a thread (no signal handlers outside the main
    thread), with the session's runtime, clock and worker."""
    app = create_app(settings, runtime=rt, celery=celery_app)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def held(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Selections wait before every batch: at most 0 statements may run, and the check is one."""
    monkeypatch.setitem(rt.__dict__, "throttles", Throttles(max_threads_running=0))


def _ignore(signum: int, frame: object) -> None:
    """A SIGINT that arrives when the client no longer listens must not stop pytest."""


@pytest.fixture
def sigint() -> Iterator[Callable[[], None]]:
    """Press Ctrl-C: a real SIGINT to this process, handled in the main thread."""
    previous = signal.signal(signal.SIGINT, _ignore)
    try:
        yield lambda: os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)


class Helper(threading.Thread):
    """Does ``steps`` beside the client (the operator's hand on the keyboard); records a failure
    instead of raising it in its thread. Then, should the job not end (the client never asked
    it to stop), it cancels it itself, so that a broken client fails the test instead of
    following a held job for ever."""

    def __init__(self, steps: Callable[[], None], rt: Runtime, redis_client: redis.Redis) -> None:
        super().__init__(name="operator", daemon=True)
        self.steps, self.rt, self.redis = steps, rt, redis_client
        self.failure: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.steps()
        except BaseException as exc:
            self.failure = exc
        try:
            wait_for(lambda: not _unfinished(self.rt, self.redis), timeout=15)
        except AssertionError:
            for job_id in _unfinished(self.rt, self.redis):
                self.rt.jobs.cancel(job_id, between_batches=True)
            self.failure = self.failure or AssertionError("the job did not end: cancelled it")

    def check(self) -> None:
        self.join(timeout=30)
        if self.failure is not None:
            raise self.failure


def leadarchive(api_url: str, *args: str, key: str | None = ALICE_KEY) -> int:
    """``leadarchive select --url API [--key KEY] ARGS``; its exit code."""
    return main(["select", "--url", api_url, *(["--key", key] if key else []), *args])


def _row(*cells: object) -> str:
    """A pattern for one row of a rich table."""
    return r"\s*│\s*".join(re.escape(str(cell)) for cell in cells)


def test_a_selection_is_archived_and_summed_up(
    api_url: str, vicidial: Connection, leads: dict[int, Row], capsys: pytest.CaptureFixture[str]
) -> None:
    # A lead queued in the dialer's hopper stays live.
    vicidial.exec_driver_sql("INSERT INTO vicidial_hopper (lead_id, list_id) VALUES (5, 1001)")
    vicidial.commit()

    code = leadarchive(api_url, "--list-ids", "1001", "--delete")

    out, err = capsys.readouterr()
    assert code == EXIT_LEFT_LIVE
    now_live, archived = live(vicidial), archive(vicidial)
    assert set(now_live) == {*range(4, LEADS + 1, 4), 5}
    assert now_live[5] == leads[5]
    assert set(archived) == set(SELECTED) and all(archived[i] == leads[i] for i in SELECTED)
    moved = len(SELECTED) - 1
    assert re.search(_row("insert", "inserted", len(SELECTED)), out), out
    assert re.search(_row("delete", "deleted", moved), out), out
    assert re.search(_row("delete", "in_use", 1), out), out
    assert f"{len(SELECTED)} leads selected, {len(SELECTED)} walked (up to lead ID {LEADS})" in out
    assert "1 leads were left in vicidial_list (not deleted); the first 1:" in out
    assert re.search(_row(5, "in_use", "hopper"), out), out
    assert "succeeded" in out and "dry run" not in out
    # The job's address first, then the bar at its end, on standard error.
    assert re.search(r"selection job: http://127\.0\.0\.1:\d+/vicidial/leads/archive/\S{22}", err)
    assert f"{len(SELECTED)}/{len(SELECTED)}" in err


def test_a_dry_run_changes_nothing_and_shows_the_count_and_a_sample(
    api_url: str, vicidial: Connection, leads: dict[int, Row], capsys: pytest.CaptureFixture[str]
) -> None:
    code = leadarchive(api_url, "--list-ids", "1001", "--delete", "--dry-run")

    out, _ = capsys.readouterr()
    assert code == EXIT_OK
    assert live(vicidial) == leads and archive(vicidial) == {}
    assert "(dry run: nothing was changed)" in out
    assert f"{len(SELECTED)} leads selected" in out
    sample = ", ".join(str(i) for i in SELECTED[:20])
    assert f"sample of the selected lead IDs: {sample}\n" in out
    assert re.search(_row("delete", "deleted", len(SELECTED)), out), out


def test_json_prints_the_final_status_and_nothing_else(
    api_url: str, vicidial: Connection, leads: dict[int, Row], capsys: pytest.CaptureFixture[str]
) -> None:
    before = "2010-06-01T12:00:00-04:00"  # noon in New York, the service's zone
    picked = {
        row[0]
        for row in vicidial.exec_driver_sql(
            "SELECT lead_id FROM vicidial_list"
            " WHERE list_id = 2002 AND entry_date < '2010-06-01 12:00:00'"
        )
    }
    assert 0 < len(picked) < LEADS // 4

    code = leadarchive(api_url, "--list-ids", "2002", "--entry-date-before", before, "--json")

    out, err = capsys.readouterr()
    job = json.loads(out)
    assert code == EXIT_OK
    with httpx.Client(base_url=api_url, headers=ALICE) as http:
        assert http.get(f"/vicidial/leads/archive/{job['job_id']}").json() == job
    assert job["status"] == "succeeded"
    assert job["request"] == {
        "kind": "selection",
        "list_ids": [2002],
        "entry_date_before": before,
        "insert_leads": True,
        "update_leads": True,
        "delete_leads": False,
        "dry_run": False,
    }
    assert job["result"]["done"] == len(picked)
    assert job["result"]["counts"]["insert"]["inserted"] == len(picked)
    assert set(archive(vicidial)) == picked and live(vicidial) == leads
    # No bar: standard error has the job's address only.
    assert err.strip().startswith("selection job: ") and "\n" not in err.strip()


@pytest.mark.usefixtures("nothing_enqueued")
def test_a_selection_without_a_filter_is_refused_before_the_api_is_asked(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = leadarchive(api_url, "--delete", "--dry-run")

    assert code == EXIT_FAILED
    assert "give at least one filter: --list-ids, --campaign-ids, --statuses" in (
        capsys.readouterr().err
    )


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize(
    ("key", "args", "says"),
    [
        (ARCHIVER_KEY, ["--delete"], "selection refused (403): this API key may not use the"),
        (ALICE_KEY, ["--no-insert", "--no-update"], "selection refused (422): "),
    ],
    ids=["key without selection", "no action"],
)
def test_a_selection_the_api_refuses_says_why(
    api_url: str,
    leads: dict[int, Row],
    vicidial: Connection,
    key: str,
    args: list[str],
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The key from the environment, as an operator's shell gives it.
    monkeypatch.setenv("LEADARCHIVE_CLIENT_KEY", key)

    code = leadarchive(api_url, "--list-ids", "1001", *args, key=None)

    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert says in err
    assert ("'selection'" if key == ARCHIVER_KEY else "at least one of insert_leads") in err
    assert live(vicidial) == leads and archive(vicidial) == {}


def test_filters_come_from_comma_lists_repeated_options_and_iso_dates() -> None:
    args = build_parser().parse_args(
        [
            "select",
            "--list-ids",
            "1001, 1002",
            "--list-ids",
            "1003",
            "--campaign-ids",
            "TESTCAMP,sales",
            "--statuses",
            "NEW",
            "--statuses",
            "NA,B,",
            "--entry-date-before",
            "2024-01-01",
            "--last-call-before",
            "2024-01-01T08:00:00-05:00",
        ]
    )

    assert args.list_ids == [1001, 1002, 1003]
    assert args.campaign_ids == ["TESTCAMP", "sales"]
    assert args.statuses == ["NEW", "NA", "B"]
    assert args.entry_date_before == "2024-01-01"
    assert args.last_call_before == "2024-01-01T08:00:00-05:00"
    assert (args.delete, args.dry_run, args.no_insert, args.json) == (False, False, False, False)
    # A space for the T, as MySQL writes it: sent as ISO 8601.
    spaced = build_parser().parse_args(["select", "--last-call-before", "2024-01-01 08:00"])
    assert spaced.last_call_before == "2024-01-01T08:00:00"
    unfiltered = build_parser().parse_args(["select"])
    assert (unfiltered.list_ids, unfiltered.entry_date_before) == (None, None)


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ("--list-ids=1001,x", "'1001,x' is not a comma-separated list of list IDs"),
        ("--list-ids=-5", "'-5' is not a comma-separated list of list IDs"),
        ("--statuses=,", "',' has no value"),
        ("--entry-date-before=2024-13-01", "'2024-13-01' is not a date (2024-01-01)"),
        ("--last-call-before=last tuesday", "'last tuesday' is not a date"),
    ],
)
def test_malformed_filters_stop_the_command(
    option: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["select", option, "--key", ALICE_KEY, "--url", "http://127.0.0.1:9"])

    assert stopped.value.code == 2
    assert says in capsys.readouterr().err


def _views(rt: Runtime, redis_client: redis.Redis) -> list[dict[str, Any]]:
    """Every job's status, as the API shows it."""
    records = (rt.jobs.get(key.decode().rsplit(":", 1)[1]) for key in redis_client.keys(JOBS))
    return [record.view() for record in records if record is not None]


def _unfinished(rt: Runtime, redis_client: redis.Redis) -> list[str]:
    return [view["job_id"] for view in _views(rt, redis_client) if view["status"] not in FINAL]


def _waiting_job(rt: Runtime, redis_client: redis.Redis) -> dict[str, Any] | None:
    """The running selection whose next batch waits, as its status shows it."""
    for view in _views(rt, redis_client):
        if view["status"] == "running" and view.get("progress", {}).get("waiting"):
            return view
    return None


@pytest.mark.usefixtures("held")
def test_ctrl_c_asks_the_job_to_stop_and_follows_it_to_its_end(
    api_url: str,
    vicidial: Connection,
    leads: dict[int, Row],
    rt: Runtime,
    redis_client: redis.Redis,
    sigint: Callable[[], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    def operator() -> None:
        wait_for(lambda: _waiting_job(rt, redis_client), timeout=20)
        sigint()

    helper = Helper(operator, rt, redis_client)

    code = leadarchive(api_url, "--list-ids", "1001", "--delete", "--json")

    helper.check()
    out, err = capsys.readouterr()
    job = json.loads(out)
    assert code == EXIT_FAILED
    assert job["status"] == "cancelled" and job["cancel_requested"]
    assert job["result"]["done"] == 0 and job["result"]["selected"] == len(SELECTED)
    # It was waiting for the throttle, not in a batch: the client says so.
    assert (
        "Ctrl-C: the job stops at its next check (it was waiting, not in a batch);"
        " following it to its end" in " ".join(err.split())
    )
    assert live(vicidial) == leads and archive(vicidial) == {}


@pytest.mark.parametrize("presses", [1, 2], ids=["once", "twice"])
def test_ctrl_c_while_a_batch_deletes_stops_the_job_after_that_batch(
    api_url: str,
    vicidial: Connection,
    engine: Engine,
    leads: dict[int, Row],
    rt: Runtime,
    redis_client: redis.Redis,
    sigint: Callable[[], None],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    presses: int,
) -> None:
    # The dialer's read lock holds the first batch at its first DELETE (the snapshot path's: the
    # test's user may create temporary tables), well within the batch's lock wait.
    monkeypatch.setitem(rt.__dict__, "tuning", Tuning(lock_wait_timeout=timedelta(seconds=30)))
    dialer = engine.connect()
    dialer.exec_driver_sql("LOCK TABLES vicidial_list READ")
    asked, client_ended = threading.Event(), threading.Event()
    ask = Selector.cancel

    def cancel(selector: Selector, status_url: str) -> str:
        said = ask(selector, status_url)
        asked.set()
        return said

    monkeypatch.setattr(Selector, "cancel", cancel)

    def operator() -> None:
        try:
            wait_for(lambda: waits_for_a_table(dialer, "DELETE%vicidial_list%"))
            sigint()
            wait_for(asked.is_set)
            if presses == 2:
                sigint()
                client_ended.wait(timeout=10)
        finally:
            dialer.exec_driver_sql("UNLOCK TABLES")
            dialer.close()

    helper = Helper(operator, rt, redis_client)

    code = leadarchive(api_url, "--list-ids", "1001", "--delete", "--json")

    client_ended.set()
    helper.check()
    out, err = capsys.readouterr()
    if presses == 1:
        assert code == EXIT_FAILED
        job = json.loads(out)
        assert "Ctrl-C: the job stops after its current batch; following it to its end" in err
    else:
        # It stopped waiting while the batch was still held, and said how to find the job.
        assert code == EXIT_INTERRUPTED and out == ""
        assert "stopped waiting for the job; it was asked to stop after its current batch" in err
        job_id = err.split("/vicidial/leads/archive/", 1)[1].split()[0]

        def ended() -> dict[str, Any] | None:
            record = rt.jobs.get(job_id)
            view = record.view() if record is not None else None
            return view if view is not None and view["status"] in FINAL else None

        job = wait_for(ended)
    assert job["status"] == "cancelled" and job["cancel_requested"]
    result = job["result"]
    assert 0 < result["done"] < len(SELECTED)
    walked = [i for i in SELECTED if i <= result["last_lead_id"]]
    assert result["done"] == len(walked) == result["counts"]["delete"]["deleted"]
    now_live, archived = live(vicidial), archive(vicidial)
    assert set(archived) == set(walked) and all(archived[i] == leads[i] for i in walked)
    assert all(now_live[i] == leads[i] for i in leads if i not in walked)


class Watched(Selector):
    """A selector that keeps every status it read and counts the cancels it sent."""

    def __init__(self, http: httpx.Client, key: str, poll_interval: float) -> None:
        super().__init__(http, key, poll_interval=poll_interval)
        self.seen: list[dict[str, Any]] = []
        self.cancels = 0

    def status(self, status_url: str) -> dict[str, Any]:
        job = super().status(status_url)
        self.seen.append(job)
        return job

    def cancel(self, status_url: str) -> str:
        self.cancels += 1
        return super().cancel(status_url)

    def saw(self, check: Callable[[dict[str, Any]], Any]) -> bool:
        return any(check(job) for job in list(self.seen))


def _terminal() -> Console:
    """A terminal 200 columns wide, into a string: the bar's every refresh is kept."""
    return Console(file=io.StringIO(), force_terminal=True, width=200)


@pytest.mark.usefixtures("held")
def test_the_bar_says_why_the_job_waits_and_a_second_ctrl_c_stops_waiting(
    api_url: str,
    vicidial: Connection,
    leads: dict[int, Row],
    rt: Runtime,
    redis_client: redis.Redis,
    sigint: Callable[[], None],
) -> None:
    # Polled every 3 s: the second Ctrl-C surely comes while the client waits for the end.
    http = httpx.Client(base_url=api_url)
    selector = Watched(http, ALICE_KEY, poll_interval=3.0)

    def operator() -> None:
        wait_for(lambda: selector.saw(lambda job: job.get("progress", {}).get("waiting")))
        sigint()
        wait_for(
            lambda: selector.cancels == 1 and selector.saw(lambda j: j.get("cancel_requested"))
        )
        sigint()

    helper = Helper(operator, rt, redis_client)
    shown = _terminal()
    try:
        with pytest.raises(StoppedWaiting) as stopped:
            select(selector, MOVE, console=shown)
        helper.check()
        url = stopped.value.status_url
        # The job was asked to stop once, and stops at its next check.
        assert selector.cancels == 1 and stopped.value.asked
        assert "it was asked to stop after its current batch" in str(stopped.value)
        final = wait_for(lambda: _final(http, url))
    finally:
        http.close()
    assert final["status"] == "cancelled" and final["result"]["done"] == 0
    text = shown.file.getvalue()  # type: ignore[attr-defined]
    reason = "waiting: the database server is busy: Threads_running is"
    assert reason in text and "(LEADARCHIVE_MAX_THREADS_RUNNING is 0)" in text
    assert "stopping after its current batch" in text
    assert "(Ctrl-C again to stop waiting)" in text
    assert live(vicidial) == leads and archive(vicidial) == {}


def _final(http: httpx.Client, url: str) -> dict[str, Any] | None:
    job: dict[str, Any] = http.get(url, headers=ALICE).json()
    return job if job["status"] in ("succeeded", "failed", "cancelled") else None


@pytest.mark.usefixtures("held")
def test_a_deferred_job_shows_until_when_and_ctrl_c_cancels_it_at_once(
    api_url: str,
    vicidial: Connection,
    leads: dict[int, Row],
    clock: FakeClock,
    rt: Runtime,
    redis_client: redis.Redis,
    sigint: Callable[[], None],
) -> None:
    http = httpx.Client(base_url=api_url)
    selector = Watched(http, ALICE_KEY, poll_interval=0.1)

    def operator() -> None:
        wait_for(lambda: selector.saw(lambda job: job.get("progress", {}).get("waiting")))
        # Office hours begin while the job waits: it gives itself back until they end.
        clock.now = MONDAY_MORNING
        wait_for(lambda: selector.saw(lambda job: job["status"] == "deferred"))
        sigint()

    helper = Helper(operator, rt, redis_client)
    shown = _terminal()
    try:
        job = select(selector, MOVE, console=shown)
        helper.check()
    finally:
        clock.now = SATURDAY_NIGHT
        http.close()

    assert job["status"] == "cancelled" and selector.cancels == 1
    assert selection_exit_code(job) == EXIT_FAILED
    text = shown.file.getvalue()  # type: ignore[attr-defined]
    assert f"deferred for office hours until {MONDAY_EVENING}" in text
    assert "Ctrl-C: the job was cancelled (no batch was running)" in text
    assert live(vicidial) == leads and archive(vicidial) == {}
