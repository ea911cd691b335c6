"""Issue 5's fault scenarios at CI size (soak/faults.py runs them at full size).

Each one injures a real deployment (API and worker processes, MariaDB, Redis) while it archives
leads, waits for every job to end, then reads both tables back byte for byte: a lead whose newest
data is neither its live row nor, once it is no longer live, its archive row, is lost. Then it
judges the outcomes (issue 11): no job fails unless the scenario means it to, and then only with
the error it names; every lead of every job is archived, or still live for a reason its job
reported (and really live, with its newest data).
"""

from __future__ import annotations

import re

import pytest

from testkit.faults.judgement import JOB_FAILED, NOT_REQUESTED, Figures
from testkit.faults.scenarios import CI_SIZES, CRASHED_TABLE, SCENARIOS, Servers

pytestmark = pytest.mark.faults


def _run(name: str, servers: Servers) -> Figures:
    figures = SCENARIOS[name](servers, **CI_SIZES[name])
    print(figures)  # shown with -s, and in the report of a failure
    assert figures.problems == [], str(figures)
    assert figures.leads_lost == 0
    assert figures.five_xx == 0
    assert figures.leads_checked >= CI_SIZES[name]["leads"]
    # Every lead some job named is accounted for: archived, or live for a reason.
    assert figures.archived + sum(figures.left_live.values()) == figures.notes["leads in jobs"]
    return figures


def _all_archived(figures: Figures) -> None:
    """No job failed, and every lead any job named was archived."""
    assert figures.failed_jobs == {}, str(figures)
    assert figures.left_live == {}, str(figures)
    assert figures.archived == figures.notes["leads in jobs"]


def test_sigkilled_workers_and_pool_processes_lose_nothing_and_jobs_end_within_a_minute(
    servers: Servers,
) -> None:
    figures = _run("sigkill", servers)
    _all_archived(figures)
    assert figures.notes["kills"] >= 20
    assert figures.notes["pool process kills"] and figures.notes["whole worker kills"]
    assert figures.notes["seconds to end after the last fault"] < 60


def test_killed_database_connections_fail_no_job_and_lose_nothing(servers: Servers) -> None:
    figures = _run("kill-connection", servers)
    _all_archived(figures)
    assert figures.notes["kills"] >= CI_SIZES["kill-connection"]["kills"]


def test_mariadb_stopped_and_started_fails_jobs_only_on_crashed_tables_loses_nothing(
    servers: Servers,
) -> None:
    figures = _run("mariadb-restart", servers)
    # Only a crash may fail jobs, and only with MyISAM's "marked as crashed"; their leads stay
    # live (whole: the invariant), every other lead is archived.
    assert all(re.search(CRASHED_TABLE, reason) for reason in figures.failed_jobs), str(figures)
    assert set(figures.left_live) <= {JOB_FAILED}, str(figures)
    assert (
        figures.archived + figures.left_live.get(JOB_FAILED, 0)
        == CI_SIZES["mariadb-restart"]["leads"]
    )


def test_redis_stopped_and_started_answers_503_loses_no_accepted_job(servers: Servers) -> None:
    figures = _run("redis-restart", servers)
    _all_archived(figures)
    assert figures.notes["POST answered 503 while Redis was down"] > 0
    assert figures.notes["accepted after the last outage"] > 0


def test_two_then_four_workers_on_overlapping_leads_lose_nothing(servers: Servers) -> None:
    figures = _run("overlapping-workers", servers)
    assert figures.failed_jobs == {}, str(figures)
    assert set(figures.left_live) <= {"mismatch", "not_archived", NOT_REQUESTED}, str(figures)
    assert figures.notes["leads that had to be archived"] > 0
    assert figures.notes["most jobs running at once with 4 workers"] >= 2


def test_a_busy_dialer_loses_no_write_and_every_lead_not_refused_is_archived(
    servers: Servers,
) -> None:
    figures = _run("busy-dialer", servers)
    assert figures.failed_jobs == {}, str(figures)
    assert set(figures.left_live) <= {"mismatch"}, str(figures)
    assert (
        figures.archived + figures.left_live.get("mismatch", 0) == CI_SIZES["busy-dialer"]["leads"]
    )
    assert figures.notes["leads written by the dialer"] > 100


def test_a_redis_filled_by_submissions_answers_store_full_and_every_accepted_job_ends(
    servers: Servers,
) -> None:
    figures = _run("redis-full", servers)
    _all_archived(figures)
    answers = figures.notes["answers"]
    assert set(answers) <= {"202", "429", "store-full"}
    assert answers["store-full"] > 0 and answers["202"] > 0
