"""Run issue 5's fault scenarios at full size, judge them, and print their figures.

The same scenarios as tests/faults (testkit/faults/scenarios.py), at the sizes the issue asks for:
24 SIGKILLs, 30 killed connections, 6 MariaDB and 6 Redis outages, 2 then 4 workers, and a dialer
writing 200+ leads per second while 50,000 leads are archived in 500-lead jobs. Everything runs on
a private MariaDB and Redis started in a temporary folder on free ports (the shared servers are
never touched), with the service's production timeouts (30 s visibility timeout) unless
``--ci-settings``.

``--repeat N`` runs each chosen scenario exactly N times, with seeds ``S, S+1, ... S+N-1``, where
``S`` is ``--seed`` or, without it, the scenario's own default seed (sigkill 1, kill-connection 2,
mariadb-restart 3, redis-restart 4, overlapping-workers 5, busy-dialer 6). The seed alone decides
the fault schedule (when and where each fault lands; its digest is printed with every run) and
the seeded leads, so the same command repeats the same schedule. Every run and every scenario's
total print: times run, leads checked, leads lost, leads archived, leads left live by reason,
failed jobs by reason, requests tried and unexpected 5xx. Exit status 1 when any judgement of any
run failed (a lost lead, an unexpected 5xx, a job failed for a reason the scenario does not allow,
a lead left live without an allowed reason, a job that never ended, ...).

Run it from the repository root::

    .venv/bin/python soak/faults.py                              # every scenario, once
    .venv/bin/python soak/faults.py --scenario sigkill --repeat 5 --seed 21   # 5 runs: seeds 21-25
    .venv/bin/python soak/faults.py --scenario sigkill --set kills=40 --seed 11
    .venv/bin/python soak/faults.py --sizes ci --ci-settings    # the CI sizes, as a command
    .venv/bin/python soak/faults.py --json /tmp/faults.json      # the figures, for the docs
"""

# ruff: noqa: E402 - the imports follow the sys.path fix; a command line tool prints
from __future__ import annotations

import argparse
import ast
import inspect
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path; the repository root must be
# there instead, for ``testkit`` and the service's packages.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "soak"]

from testkit.faults.judgement import Figures, by_reason
from testkit.faults.scenarios import CI_SIZES, FULL_SIZES, SCENARIOS, Servers
from testkit.faults.stack import CI_SETTINGS, PRODUCTION_SETTINGS
from testkit.servers import PrivateMariaDB, PrivateRedis

COLUMNS = (
    "times run",
    "leads checked",
    "leads lost",
    "archived",
    "left live (by reason)",
    "failed jobs (by reason)",
    "requests tried",
    "unexpected 5xx",
)


def _value(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable); default: all, in the issue's order",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each scenario (seeds S, S+1, ...)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="the first run's seed S (default: each's own)"
    )
    parser.add_argument(
        "--sizes",
        choices=("full", "ci"),
        default="full",
        help="the issue's sizes (default) or the CI tests' (tests/faults/test_scenarios.py)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a size, e.g. leads=100000 or kills=40 (applies to every chosen scenario)",
    )
    parser.add_argument(
        "--ci-settings",
        action="store_true",
        help="the CI tests' short timeouts (10 s visibility) instead of production's (30 s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder with the logs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


def command(args: argparse.Namespace, name: str) -> str:
    """The exact command that reproduces one scenario's row."""
    parts = [".venv/bin/python", "soak/faults.py", "--scenario", name]
    if args.sizes != "full":
        parts += ["--sizes", args.sizes]
    if args.repeat != 1:
        parts += ["--repeat", str(args.repeat)]
    parts += ["--seed", str(first_seed(args, name))]
    for item in args.set:
        parts += ["--set", item]
    if args.ci_settings:
        parts.append("--ci-settings")
    return shlex.join(parts)


def first_seed(args: argparse.Namespace, name: str) -> int:
    """The first run's seed: ``--seed``, or the scenario's own default."""
    if args.seed is not None:
        return int(args.seed)
    return int(inspect.signature(SCENARIOS[name]).parameters["seed"].default)


def failed(figures: Figures) -> bool:
    """Whether any judgement of these runs failed."""
    return bool(figures.problems or figures.leads_lost or figures.five_xx)


def run_once(servers: Servers, name: str, sizes: dict[str, object]) -> Figures:
    """One run; a run that raised is a failed run, not the end of the soak."""
    started = time.monotonic()
    try:
        figures = SCENARIOS[name](servers, **sizes)
    except Exception as exc:  # reported, counted, and the exit status says so
        figures = Figures(name, runs=1, notes={"seed": sizes.get("seed")})
        figures.problems.append(f"the run raised {exc!r}")
    figures.notes["seconds"] = round(time.monotonic() - started, 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.repeat < 1:
        raise SystemExit("--repeat must be 1 or more")
    names = args.scenario or list(SCENARIOS)
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    base_sizes = FULL_SIZES if args.sizes == "full" else CI_SIZES
    folder = Path(tempfile.mkdtemp(prefix="leadarchive-faults-"))
    print(f"logs in {folder}", flush=True)
    mariadb, redis = PrivateMariaDB(folder / "mariadb"), PrivateRedis(folder / "redis")
    results: dict[str, Figures] = {}
    mariadb.start()
    redis.start()
    try:
        servers = Servers(
            mariadb,
            redis,
            folder / "runs",
            CI_SETTINGS if args.ci_settings else PRODUCTION_SETTINGS,
        )
        for name in names:
            total = Figures(name)
            seed = first_seed(args, name)
            for run in range(args.repeat):
                sizes = {**base_sizes[name], **overrides, "seed": seed + run}
                figures = run_once(servers, name, sizes)
                print(
                    f"{name} run {run + 1} of {args.repeat} (seed {seed + run}): "
                    f"{figures.summary()} | {_notes(figures)}",
                    flush=True,
                )
                for problem in figures.problems:
                    print(f"  PROBLEM: {problem[:2000]}", flush=True)
                total.add(figures)
            if total.runs != args.repeat:
                total.problems.append(f"{total.runs} runs counted for --repeat {args.repeat}")
            print(f"{name} in total: {total.summary()}", flush=True)
            results[name] = total
    finally:
        redis.close()
        mariadb.close()
        if not args.keep and not any(failed(f) for f in results.values()):
            shutil.rmtree(folder, ignore_errors=True)
    print()
    print("| scenario | " + " | ".join(COLUMNS) + " | command |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for name, figures in results.items():
        row = (
            f"{figures.runs:,}",
            f"{figures.leads_checked:,}",
            f"{figures.leads_lost:,}",
            f"{figures.archived:,}",
            by_reason(figures.left_live),
            by_reason(figures.failed_jobs),
            f"{figures.requests:,}",
            f"{figures.five_xx:,}",
        )
        print(f"| {name} | " + " | ".join(row) + f" | `{command(args, name)}` |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {n: {**vars(f), "command": command(args, n)} for n, f in results.items()},
                indent=2,
                default=str,
            )
        )
    bad = [name for name, figures in results.items() if failed(figures)]
    if bad:
        print(f"\nFAILED: {', '.join(bad)}", flush=True)
    return 1 if bad else 0


def _notes(figures: Figures) -> str:
    return ", ".join(f"{k}={v}" for k, v in figures.notes.items())


if __name__ == "__main__":
    sys.exit(main())
