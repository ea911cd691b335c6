"""judge_outcomes, the fault scenarios' judgement of jobs and leads, on outcomes made up here.

The scenarios themselves (test_scenarios.py) take minutes and, when the service works, never show
the judgement failing; these cases show that each kind of wrong outcome is caught: a job failed
for a reason the scenario does not allow, a lead left live without an allowed reason, a lead a job
reported deleted that is live, one reported left live that is gone, a report missing a lead.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from testkit.checksum import TableCheck
from testkit.faults.judgement import JOB_FAILED, NOT_REQUESTED, Figures, Outcomes, judge_outcomes
from testkit.faults.scenarios import ALL_ARCHIVED, CRASHED_TABLE


def succeeded(
    outcomes: dict[int, str | None], *, delete: bool = True, finished: str = "2026-12-01T10:00:00"
) -> dict[str, Any]:
    """A succeeded job's view: each lead's delete outcome (``None``: delete not requested)."""
    leads = [
        {"lead_id": i, "delete": o, "live": o != "deleted", "archived": True}
        for i, o in outcomes.items()
    ]
    return {
        "status": "succeeded",
        "finished_at": finished,
        "request": {"delete_leads": delete},
        "result": {"leads": leads},
    }


def failed(detail: str, kind: str = "OperationalError") -> dict[str, Any]:
    return {"status": "failed", "error": {"type": kind, "detail": detail}}


def judge(
    jobs: dict[str, list[int]],
    views: dict[str, Any],
    live: set[int],
    outcomes: Outcomes = ALL_ARCHIVED,
) -> Figures:
    named = {i for ids in jobs.values() for i in ids}
    table = TableCheck(len(named), [], live, named)
    figures = Figures("made-up")
    judge_outcomes(jobs, views, table, outcomes, figures)
    return figures


CRASHED = "(1194, \"Table 'vicidial_list' is marked as crashed and should be repaired\")"


def test_every_lead_archived_by_succeeded_jobs_is_judged_clean() -> None:
    figures = judge(
        {"a": [1, 2], "b": [3]},
        {"a": succeeded({1: "deleted", 2: "deleted"}), "b": succeeded({3: "deleted"})},
        live=set(),
    )
    assert figures.problems == []
    assert (figures.archived, figures.left_live, figures.failed_jobs) == (3, {}, {})


def test_a_failed_job_is_a_problem_unless_the_scenario_allows_its_error() -> None:
    jobs = {"a": [1, 2], "b": [3]}
    views = {
        "a": failed("(2013, 'Lost connection to MySQL server during query')"),
        "b": succeeded({3: "deleted"}),
    }
    figures = judge(jobs, views, live={1, 2})
    assert figures.failed_jobs == {
        "OperationalError: (2013, 'Lost connection to MySQL server during query')": 1
    }
    assert any("1 jobs failed" in p for p in figures.problems), figures.problems
    assert any("left live as 'its job failed'" in p for p in figures.problems)
    crashed_only = Outcomes(failure=CRASHED_TABLE, left_live=frozenset({JOB_FAILED}))
    assert (
        judge(jobs, views, live={1, 2}, outcomes=crashed_only)
        .problems[0]
        .startswith("1 jobs failed")
    )


@pytest.mark.parametrize(
    "detail",
    [CRASHED, f"(pymysql.err.OperationalError) {CRASHED}\n[SQL: DELETE ...]"],
    ids=["driver", "sqlalchemy"],
)
def test_a_crashed_table_failure_is_allowed_where_the_scenario_names_it(detail: str) -> None:
    assert re.search(CRASHED_TABLE, f"OperationalError: {detail}")
    crashed_only = Outcomes(failure=CRASHED_TABLE, left_live=frozenset({JOB_FAILED}))
    figures = judge({"a": [1, 2]}, {"a": failed(detail)}, live={1, 2}, outcomes=crashed_only)
    assert figures.problems == []
    assert figures.left_live == {JOB_FAILED: 2}


def test_a_lead_left_live_needs_a_reason_the_scenario_allows() -> None:
    jobs = {"a": [1, 2]}
    views = {"a": succeeded({1: "deleted", 2: "mismatch"})}
    strict = judge(jobs, views, live={2})
    assert strict.left_live == {"mismatch": 1}
    assert any("left live as 'mismatch'" in p for p in strict.problems)
    assert (
        judge(jobs, views, live={2}, outcomes=Outcomes(left_live=frozenset({"mismatch"}))).problems
        == []
    )
    must = Outcomes(left_live=frozenset({"mismatch"}), must_archive=frozenset({2}))
    assert any("had to be archived" in p for p in judge(jobs, views, {2}, must).problems)


def test_a_lead_reported_deleted_that_is_live_is_caught() -> None:
    figures = judge({"a": [1]}, {"a": succeeded({1: "deleted"})}, live={1})
    assert any("live leads a job reported gone" in p for p in figures.problems)


def test_a_lead_reported_left_live_that_is_gone_is_caught_unless_another_job_deleted_it() -> None:
    alone = judge(
        {"a": [1]},
        {"a": succeeded({1: "mismatch"})},
        live=set(),
        outcomes=Outcomes(left_live=frozenset({"mismatch"})),
    )
    assert any("reported left live that are gone" in p for p in alone.problems)
    later = judge(
        {"a": [1], "b": [1]},
        {"a": succeeded({1: "mismatch"}), "b": succeeded({1: "deleted"}, finished="2026-12-02")},
        live=set(),
    )
    assert later.problems == [] and later.archived == 1


def test_a_report_missing_a_lead_and_a_lead_no_job_reported_are_caught() -> None:
    figures = judge({"a": [1, 2]}, {"a": succeeded({1: "deleted"})}, live={2})
    assert any("reports that leave out leads" in p for p in figures.problems)
    assert any("without a reason" in p for p in figures.problems)


def test_a_job_that_did_not_ask_to_delete_leaves_its_leads_live_as_not_requested() -> None:
    views = {"a": succeeded({1: None}, delete=False)}
    figures = judge(
        {"a": [1]}, views, live={1}, outcomes=Outcomes(left_live=frozenset({NOT_REQUESTED}))
    )
    assert figures.problems == [] and figures.left_live == {NOT_REQUESTED: 1}
