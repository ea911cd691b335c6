"""The selection job's walk (``tasks.selection_job.run_selection``) on Vicidial's tables, MyISAM
and InnoDB: every selected lead archived or reported in ``left_live``, every other lead untouched;
resumed from any checkpoint without a lead skipped; stopped after the current batch; paused by
its throttles with the reason in its progress; limited to a scoped key's lists; a dry run that
changes nothing.

The steward here is the test's: it records what the walk saves and answers as the job store
would. ``tests/worker/test_selection_lifecycle.py`` runs the same walk inside the real task.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pymysql
import pytest
from sqlalchemy import Connection

from tasks import selection_job
from tasks.archive import Actions, run_batch
from tasks.requests import SelectionRequest
from tasks.scopes import Lists
from tasks.seed import insert_leads, lead_rows
from tasks.selection_job import (
    Ended,
    Ending,
    SelectionProgress,
    SelectionReport,
    run_selection,
)
from tasks.throttle import Throttles, threads_running
from testkit.servers import mysql_connect
from tests.helpers import archive, live, wait_for

ZONE = ZoneInfo("America/New_York")
LEADS = 90
BATCH = 7
# Leads 1..90: every third lead is on list 2002, the others on list 1001.
OTHER_LIST = 2002
MISMATCH, HELD = 10, 20  # two leads of list 1001 a delete must leave live


@dataclass
class Steward:
    """Records every save; answers ``answer`` ("stopping": a cancel) after ``stop_after`` saves,
    and gives the job back (``interrupt``) before the batch that follows save number
    ``interrupt_after``."""

    stop_after: int | None = None
    answer: str | None = "stopping"
    interrupt_after: int | None = None
    interrupt: Ended = "continued"
    on_sleep: Any = None
    on_save: Any = None
    saves: list[tuple[SelectionReport, SelectionProgress]] = field(default_factory=list)
    sleeps: int = 0

    def save(self, report: SelectionReport, progress: SelectionProgress) -> str | None:
        self.saves.append((report.model_copy(deep=True), progress))
        if self.on_save is not None:
            self.on_save()
        if self.stop_after is not None and len(self.saves) > self.stop_after:
            return self.answer
        return "running"

    def interruption(self, steps: int) -> tuple[Ended, datetime | None] | None:
        if self.interrupt_after is not None and len(self.saves) >= self.interrupt_after:
            return self.interrupt, None
        return None

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.on_sleep is not None:
            self.on_sleep()

    @property
    def checkpoint(self) -> dict[str, Any]:
        return self.saves[-1][0].model_dump(exclude_none=True)


def fill(conn: Connection) -> None:
    """LEADS leads on two lists; lead MISMATCH's archive copy differs from it, lead HELD is
    queued in the hopper."""
    insert_leads(conn, lead_rows(LEADS, list_id=1001, seed=31))
    conn.exec_driver_sql(
        f"UPDATE vicidial_list SET list_id = {OTHER_LIST} WHERE MOD(lead_id, 3) = 0"
    )
    run_batch(conn, [MISMATCH], Actions(insert=True, update=False))
    conn.exec_driver_sql(f"UPDATE vicidial_list SET comments = 'called' WHERE lead_id = {MISMATCH}")
    conn.exec_driver_sql(
        "INSERT INTO vicidial_hopper (lead_id, campaign_id, list_id, status)"
        f" VALUES ({HELD}, 'CAMPA', 1001, 'READY')"
    )
    conn.commit()


def request(**fields: Any) -> SelectionRequest:
    body = {"list_ids": [1001], "update_leads": False, "delete_leads": True, **fields}
    # None leaves a field out (list_ids=None: no list filter).
    return SelectionRequest.model_validate({k: v for k, v in body.items() if v is not None})


def walk(conn: Connection, job: SelectionRequest, steward: Steward, **options: Any) -> Ending:
    return run_selection(conn, job, steward, zone=ZONE, batch_size=BATCH, **options)


SELECTED = [i for i in range(1, LEADS + 1) if i % 3]


def assert_archived_or_left_live(
    conn: Connection, before: dict[int, Any], report: SelectionReport
) -> None:
    """Every selected lead is archived identically and gone, or reported left live; every lead
    of the other list is as it was, and not archived."""
    now_live, archived = live(conn), archive(conn)
    left = {lead["lead_id"]: lead for lead in report.left_live}
    assert set(left) == {MISMATCH, HELD}
    assert left[MISMATCH]["delete"] == "mismatch"
    assert left[HELD]["delete"] == "in_use" and left[HELD]["held_by"] == "hopper"
    assert report.left_live_total == 2
    for lead_id in SELECTED:
        if lead_id in left:
            assert now_live[lead_id] == before[lead_id]
        else:
            assert lead_id not in now_live and archived[lead_id] == before[lead_id], lead_id
    for lead_id in range(3, LEADS + 1, 3):
        assert now_live[lead_id] == before[lead_id] and lead_id not in archived


def test_the_walk_archives_the_whole_selection_batch_by_batch(conn: Connection) -> None:
    fill(conn)
    before = live(conn)
    steward = Steward()

    ending = walk(conn, request(), steward)

    assert ending.status == "succeeded"
    report = ending.report
    assert (report.selected, report.done) == (len(SELECTED), len(SELECTED))
    assert report.counts == {
        "insert": {"inserted": 59, "already_archived": 1, "not_found": 0},
        "delete": {
            "deleted": 58,
            "not_archived": 0,
            "mismatch": 1,
            "in_use": 1,
            "not_found": 0,
            "id_reused": 0,
        },
    }
    assert_archived_or_left_live(conn, before, report)
    # A checkpoint before the first batch, and before and after every batch (before it, with
    # its lead IDs), each further on and counting every lead up to it.
    batches = -(-len(SELECTED) // BATCH)
    assert len(steward.saves) == 1 + 2 * batches
    assert steward.saves[-1][0] == report
    positions = [saved.last_lead_id for saved, _ in steward.saves]
    assert positions == sorted(positions) and positions[0] == 0
    for saved, progress in steward.saves:
        walked = [i for i in SELECTED if i <= saved.last_lead_id]
        assert saved.done == len(walked) == progress.done
        assert progress.selected == len(SELECTED) and progress.waiting is None
    in_flight = [saved.in_flight for saved, _ in steward.saves[1::2]]
    assert in_flight == [SELECTED[n : n + BATCH] for n in range(0, len(SELECTED), BATCH)]
    assert all(saved.in_flight is None for saved, _ in steward.saves[::2])


def test_a_walk_given_back_after_every_batch_resumes_from_its_checkpoint(
    conn: Connection,
) -> None:
    fill(conn)
    before = live(conn)
    runs, checkpoint = 0, None
    while True:
        # Given back before its second batch each time, as a run that used its time would be.
        steward = Steward(interrupt_after=2)
        ending = walk(conn, request(), steward, checkpoint=checkpoint)
        runs += 1
        if ending.status == "succeeded":
            break
        assert ending.status == "continued"
        assert ending.report.model_dump(exclude_none=True) == steward.checkpoint
        checkpoint = steward.checkpoint

    assert runs == -(-len(SELECTED) // BATCH)
    report = ending.report
    assert report.done == report.selected == len(SELECTED)
    assert report.counts["delete"]["deleted"] == 58
    assert_archived_or_left_live(conn, before, report)


class RunDied(Exception):
    """The run's process died here (SIGKILL, a power cut): nothing after this point runs."""


def test_a_run_that_died_inside_a_batch_is_resumed_and_counts_what_it_had_deleted(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(conn)
    before = live(conn)
    batches: list[list[int]] = []

    def dies_inside_its_third_batch(c: Connection, lead_ids: list[int], *a: Any, **k: Any) -> Any:
        batches.append(lead_ids)
        if len(batches) == 3:
            run_batch(c, lead_ids[:4], *a, **k)  # archives and deletes four of its leads
            raise RunDied
        return run_batch(c, lead_ids, *a, **k)

    monkeypatch.setattr(selection_job, "run_batch", dies_inside_its_third_batch)
    steward = Steward()
    with pytest.raises(RunDied):
        walk(conn, request(), steward)
    monkeypatch.undo()
    # Its last checkpoint: two batches done, the third's lead IDs saved before it ran.
    checkpoint = steward.checkpoint
    assert checkpoint["done"] == 2 * BATCH and checkpoint["in_flight"] == SELECTED[14:21]
    assert not set(SELECTED[14:18]) & set(live(conn))

    ending = walk(conn, request(), Steward(), checkpoint=checkpoint)

    assert ending.status == "succeeded"
    report = ending.report
    # The four it had deleted are counted, though the next batch no longer finds them live.
    assert report.done == report.selected == len(SELECTED)
    assert report.counts["delete"]["deleted"] == 58 and report.in_flight is None
    assert_archived_or_left_live(conn, before, report)


def test_a_cancel_stops_the_walk_after_its_current_batch(conn: Connection) -> None:
    fill(conn)
    before = live(conn)
    # The job's first save, then two batches (each saved before and after), and the third's
    # first save: the answer to its last one is "stopping".
    steward = Steward(stop_after=6)

    ending = walk(conn, request(), steward)

    assert ending.status == "cancelled"
    report = ending.report
    assert report.done == 3 * BATCH  # the batch that was running when asked ended too
    walked = SELECTED[: 3 * BATCH]
    assert report.last_lead_id == walked[-1]
    now_live, archived = live(conn), archive(conn)
    for lead_id in SELECTED[3 * BATCH :]:
        assert now_live[lead_id] == before[lead_id] and lead_id not in archived
    assert all(lead_id not in now_live for lead_id in walked if lead_id not in (MISMATCH, HELD))


@pytest.mark.parametrize(
    ("answer", "status"),
    [("stopping", "cancelled"), (None, "lost")],
    ids=["cancelled", "lease lost"],
)
def test_a_stop_answered_before_a_batch_runs_none_of_it(
    conn: Connection, answer: str | None, status: str
) -> None:
    fill(conn)
    before = live(conn)
    # The job's first save, then two batches (each saved before and after): the save before the
    # third, the one that carries its lead IDs, is answered "stopping" (a cancel) or, for a run
    # that no longer holds the job, with nothing.
    steward = Steward(stop_after=5, answer=answer)

    ending = walk(conn, request(), steward)

    assert ending.status == status
    assert steward.saves[-1][0].in_flight == SELECTED[2 * BATCH : 3 * BATCH]
    report = ending.report
    assert report.done == 2 * BATCH and report.in_flight is None
    assert report.last_lead_id == SELECTED[2 * BATCH - 1]
    now_live, archived = live(conn), archive(conn)
    for lead_id in SELECTED[2 * BATCH :]:
        assert now_live[lead_id] == before[lead_id] and lead_id not in archived


def test_a_status_no_column_can_hold_selects_no_lead_and_fails_nothing(
    conn: Connection,
) -> None:
    fill(conn)
    conn.exec_driver_sql("UPDATE vicidial_list SET status = IF(lead_id <= 30, 'SALE', 'NEW')")
    conn.commit()
    sale = [i for i in SELECTED if i <= 30]
    # A 4-byte character, which Vicidial's utf8 status column cannot hold, beside "SALE".
    emoji = "\U0001f600"

    ending = walk(conn, request(statuses=[emoji, "SALE"]), Steward())

    assert ending.status == "succeeded"
    assert ending.report.selected == ending.report.done == len(sale)
    assert ending.report.counts["delete"]["deleted"] == len(sale) - 2  # MISMATCH and HELD stay
    assert set(live(conn)) == set(range(1, LEADS + 1)) - set(sale) | {MISMATCH, HELD}
    alone = walk(conn, request(statuses=[emoji]), Steward())
    assert alone.status == "succeeded" and alone.report.selected == alone.report.done == 0


def test_a_dry_run_counts_and_samples_and_changes_nothing(conn: Connection) -> None:
    fill(conn)
    before = (live(conn), archive(conn))

    ending = walk(conn, request(dry_run=True), Steward())

    report = ending.report
    assert ending.status == "succeeded"
    assert report.selected == report.done == len(SELECTED)
    assert report.sample == SELECTED[:20]
    assert report.counts["delete"]["deleted"] == 58
    assert {lead["lead_id"] for lead in report.left_live} == {MISMATCH, HELD}
    assert (live(conn), archive(conn)) == before


def test_a_key_limited_to_lists_walks_only_those_lists(conn: Connection) -> None:
    fill(conn)
    conn.exec_driver_sql("UPDATE vicidial_list SET status = 'NA'")
    conn.commit()
    before = live(conn)
    # Every lead selected by the filters (both lists), but the key may touch list 2002 only.
    job = request(list_ids=None, statuses=["NA"])

    ending = walk(conn, job, Steward(), lists=Lists.of([(OTHER_LIST, OTHER_LIST)]))

    other = [i for i in range(1, LEADS + 1) if i % 3 == 0]
    assert ending.report.selected == ending.report.done == len(other)
    assert ending.report.counts["delete"]["forbidden"] == 0
    now_live, archived = live(conn), archive(conn)
    assert set(now_live) == set(SELECTED)
    assert all(now_live[i] == before[i] for i in SELECTED)
    assert set(archived) == {MISMATCH, *other}


@pytest.mark.parametrize("table_engine", ["MyISAM"], indirect=True)
def test_a_busy_server_pauses_the_walk_and_its_progress_says_why(
    conn: Connection, database_url: str
) -> None:
    fill(conn)
    before = live(conn)
    throttles = Throttles(max_threads_running=threads_running(conn) + 2)
    # Statements the test keeps running, as a busy dialer's would be, until the job has waited.
    sleepers = [mysql_connect(database_url) for _ in range(5)]
    kill = mysql_connect(database_url)
    ids = [connection.thread_id() for connection in sleepers]

    def busy(connection: pymysql.Connection) -> None:
        with contextlib.suppress(pymysql.err.OperationalError):  # interrupted: the load is gone
            connection.cursor().execute("SELECT SLEEP(60)")

    threads = [threading.Thread(target=busy, args=(c,), daemon=True) for c in sleepers]

    def load_gone() -> None:  # the signal: the busy statements end
        for thread_id in ids:
            kill.cursor().execute(f"KILL QUERY {thread_id}")
        for thread in threads:
            thread.join(timeout=10)
        wait_for(lambda: throttles.reason_to_wait(conn) is None, timeout=10)

    steward = Steward(on_sleep=load_gone)
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: throttles.reason_to_wait(conn), timeout=10)
        ending = walk(conn, request(), steward, throttles=throttles)
    finally:
        for connection in (*sleepers, kill):
            connection.close()

    assert ending.status == "succeeded" and steward.sleeps >= 1
    waiting = [progress.waiting for _, progress in steward.saves]
    # The first save, then the wait (no batch ran yet), then the batches without a reason, each
    # saved before and after it (a server that other clients keep busy, as the test's own
    # machine may be, adds waits).
    assert waiting[0] is None and "Threads_running" in (waiting[1] or "")
    assert steward.saves[1][0].done == 0
    assert waiting.count(None) == 1 + 2 * -(-len(SELECTED) // BATCH)
    for (saved, progress), (previous, _) in zip(steward.saves[1:], steward.saves, strict=False):
        if progress.waiting is not None:  # a wait runs no batch
            assert saved.done == previous.done
    assert_archived_or_left_live(conn, before, ending.report)


def test_leads_added_while_the_job_runs_are_not_selected(conn: Connection) -> None:
    fill(conn)

    def dialer_adds_a_lead() -> None:  # to the very list being archived, after the job began
        if len(steward.saves) == 1:
            insert_leads(conn, lead_rows(1, first_lead_id=LEADS + 1, list_id=1001, seed=77))
            conn.commit()

    steward = Steward(on_save=dialer_adds_a_lead)
    ending = walk(conn, request(), steward)

    assert ending.status == "succeeded"
    assert ending.report.until_lead_id == LEADS
    assert ending.report.done == ending.report.selected == len(SELECTED)
    assert LEADS + 1 in live(conn) and LEADS + 1 not in archive(conn)
