"""Issue 5's fault scenarios at CI size (soak/faults.py runs them at full size).

Each one injures a real deployment (API and worker processes, MariaDB, Redis) while it archives
leads, waits for every job to end, then reads both tables back byte for byte: a lead whose newest
data is neither its live row nor, once it is no longer live, its archive row, is lost.
"""

from __future__ import annotations

import pytest

from tests.faults.scenarios import CI_SIZES, SCENARIOS, Servers
from tests.faults.stack import Figures

pytestmark = pytest.mark.faults


def _run(name: str, servers: Servers) -> Figures:
    figures = SCENARIOS[name](servers, **CI_SIZES[name])
    print(figures)  # shown with -s, and in the report of a failure
    assert figures.problems == [], "\n".join(figures.problems)
    assert figures.leads_lost == 0
    assert figures.five_xx == 0
    assert figures.leads_checked >= CI_SIZES[name]["leads"]
    return figures


def test_sigkilled_workers_and_pool_processes_lose_nothing_and_jobs_end_within_a_minute(
    servers: Servers,
) -> None:
    figures = _run("sigkill", servers)
    assert figures.notes["kills"] >= 20
    assert figures.notes["pool process kills"] and figures.notes["whole worker kills"]
    assert figures.notes["seconds to end after the last fault"] < 60


def test_killed_database_connections_lose_nothing(servers: Servers) -> None:
    figures = _run("kill-connection", servers)
    assert figures.notes["kills"] >= CI_SIZES["kill-connection"]["kills"]


def test_mariadb_stopped_and_started_while_jobs_run_loses_nothing(servers: Servers) -> None:
    _run("mariadb-restart", servers)


def test_redis_stopped_and_started_answers_503_loses_no_accepted_job(servers: Servers) -> None:
    figures = _run("redis-restart", servers)
    assert figures.notes["POST answered 503 while Redis was down"] > 0
    assert figures.notes["accepted after the last outage"] > 0


def test_two_then_four_workers_on_overlapping_leads_lose_nothing(servers: Servers) -> None:
    figures = _run("overlapping-workers", servers)
    assert figures.notes["most jobs running at once with 4 workers"] >= 2


def test_a_busy_dialer_loses_no_write_while_leads_are_archived(servers: Servers) -> None:
    figures = _run("busy-dialer", servers)
    assert figures.notes["leads written by the dialer"] > 100
