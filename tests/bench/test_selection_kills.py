"""bench/selection_kills.py's grading: a killed selection passes only when every lead of the list
is archived identically or named in the job's left_live, and every planned kill was resumed."""

from __future__ import annotations

from typing import Any

from bench.compare import WriterLog
from bench.oracle import Verdict
from bench.selection_kills import Kill, grade


def final(left_live: list[int], status: str = "succeeded") -> dict[str, Any]:
    result = {
        "selected": 10,
        "done": 10,
        "left_live": [{"lead_id": lead, "delete": "mismatch"} for lead in left_live],
        "left_live_total": len(left_live),
    }
    return {"status": status, "attempts": 4, "result": result}


def kills(resumed: bool = True) -> list[Kill]:
    return [Kill(5.0, 3, 3, 1, 10.5, 11.0 if resumed else None) for _ in range(3)]


def verdict(live: int) -> Verdict:
    return Verdict(checked=10, live=live, left_live=live, archived=10 - live)


def test_every_lead_archived_or_reported_live_passes() -> None:
    outcome = grade(final([7]), verdict(1), {7}, kills(), 10.0, 3, WriterLog())

    assert outcome.passed, outcome.checks
    assert outcome.leads_per_s == 1


def test_a_live_lead_the_job_did_not_report_fails() -> None:
    outcome = grade(final([]), verdict(1), {7}, kills(), 10.0, 3, WriterLog())

    assert not outcome.checks["every live lead reported in left_live"]
    assert outcome.live_not_reported == [7]


def test_a_lead_reported_live_that_is_gone_fails() -> None:
    outcome = grade(final([7, 8]), verdict(1), {7}, kills(), 10.0, 3, WriterLog())

    assert not outcome.checks["every live lead reported in left_live"]


def test_a_lost_lead_a_kill_not_resumed_or_a_failed_job_fails() -> None:
    lost = Verdict(checked=10, live=0, archived=9, stale=[3])

    assert not grade(final([]), lost, set(), kills(), 10.0, 3, WriterLog()).passed
    assert not grade(final([]), verdict(0), set(), kills(False), 10.0, 3, WriterLog()).passed
    assert not grade(final([]), verdict(0), set(), kills()[:2], 10.0, 3, WriterLog()).passed
    assert not grade(final([], "failed"), verdict(0), set(), kills(), 10.0, 3, WriterLog()).passed
