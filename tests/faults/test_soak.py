"""soak/faults.py's own promises: ``--repeat N`` is N runs, ``--seed`` fixes the fault schedule,
every run and the total print the judged numbers, and any failed judgement exits non-zero.

The scenario here is a stand-in that returns figures at once (the real ones take minutes and run
in test_scenarios.py); the command still starts its private MariaDB and Redis.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from testkit.faults import scenarios
from testkit.faults.judgement import Figures

ROOT = Path(__file__).resolve().parents[2]


def _soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak_faults", ROOT / "soak" / "faults.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    path = sys.path[:]
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
    return module


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A scenario "stand-in" that records each run's sizes; a run with seed 13 loses a lead."""
    calls: list[dict[str, Any]] = []

    def stand_in(servers: scenarios.Servers, *, leads: int = 10, seed: int = 9) -> Figures:
        calls.append({"leads": leads, "seed": seed})
        figures = Figures("stand-in", runs=1, leads_checked=leads, archived=leads - 1)
        figures.left_live["mismatch"] = 1
        figures.failed_jobs["OperationalError: boom"] = 2
        figures.requests = 3
        if seed == 13:
            figures.leads_lost = 1
            figures.problems.append("1 leads lost")
        return figures

    monkeypatch.setitem(scenarios.SCENARIOS, "stand-in", stand_in)
    monkeypatch.setitem(scenarios.FULL_SIZES, "stand-in", {"leads": 10})
    monkeypatch.setitem(scenarios.CI_SIZES, "stand-in", {"leads": 5})
    return calls


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the command (its --scenario choices include the stand-in); its status and output.
    The log folder, which it keeps after a failed judgement, is removed."""
    status = int(_soak().main(argv))
    out = capsys.readouterr().out
    folder = Path(out.splitlines()[0].removeprefix("logs in "))
    assert folder.name.startswith("leadarchive-faults-")
    shutil.rmtree(folder, ignore_errors=True)
    return status, out


def test_repeat_n_is_n_runs_with_consecutive_seeds_and_prints_every_run_and_the_total(
    stand_in: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = _main(["--scenario", "stand-in", "--repeat", "3", "--seed", "40"], capsys)

    assert status == 0, out
    assert [c["seed"] for c in stand_in] == [40, 41, 42]
    assert all(c["leads"] == 10 for c in stand_in)
    for run, seed in ((1, 40), (2, 41), (3, 42)):
        assert f"stand-in run {run} of 3 (seed {seed}): times run=1 leads checked=10" in out
    total = "stand-in in total: times run=3 leads checked=30 leads lost=0 archived=27"
    assert total in out
    assert "left live=3 (mismatch: 3) failed jobs=6 (OperationalError: boom: 6)" in out
    assert "requests tried=9 unexpected 5xx=0" in out
    assert "`.venv/bin/python soak/faults.py --scenario stand-in --repeat 3 --seed 40`" in out


def test_without_a_seed_the_runs_start_at_the_scenarios_own_and_the_command_names_it(
    stand_in: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = _main(["--scenario", "stand-in", "--repeat", "2", "--sizes", "ci"], capsys)

    assert status == 0, out
    assert stand_in == [{"leads": 5, "seed": 9}, {"leads": 5, "seed": 10}]
    assert "--scenario stand-in --sizes ci --repeat 2 --seed 9`" in out


def test_a_failed_judgement_in_any_run_exits_non_zero_and_says_which(
    stand_in: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = _main(["--scenario", "stand-in", "--repeat", "3", "--seed", "12"], capsys)

    assert status == 1
    assert [c["seed"] for c in stand_in] == [12, 13, 14]
    assert "stand-in run 2 of 3 (seed 13): times run=1 leads checked=10 leads lost=1" in out
    assert "PROBLEM: 1 leads lost" in out
    assert "FAILED: stand-in" in out


@pytest.mark.parametrize(
    "schedule",
    [
        lambda seed: scenarios.sigkill_schedule(seed, 24),
        lambda seed: scenarios.kill_connection_schedule(seed, 30),
        lambda seed: scenarios.mariadb_restart_schedule(seed, 6, (1.0, 15.0)),
        lambda seed: scenarios.redis_restart_schedule(seed, 6, (1.0, 10.0), (3.0, 5.0)),
    ],
    ids=["sigkill", "kill-connection", "mariadb-restart", "redis-restart"],
)
def test_a_seed_fixes_the_fault_schedule(schedule: Any) -> None:
    assert schedule(22) == schedule(22)
    assert schedule(22) != schedule(23)
    assert scenarios.schedule_digest(schedule(22)) == scenarios.schedule_digest(schedule(22))
