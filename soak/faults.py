"""Run issue 5's fault scenarios at full size and print their figures.

The same scenarios as tests/faults (tests/faults/scenarios.py), at the sizes the issue asks for:
24 SIGKILLs, 30 killed connections, 6 MariaDB and 6 Redis outages, 2 then 4 workers, and a dialer
writing 200+ leads per second while 50,000 leads are archived in 500-lead jobs. Everything runs on
a private MariaDB and Redis started in a temporary folder on free ports (the shared servers are
never touched), with the service's production timeouts (30 s visibility timeout) unless
``--ci-settings``. Exit status 1 when any scenario lost a lead, saw an unexpected 5xx or had any
other problem.

Run it from the repository root::

    .venv/bin/python soak/faults.py                              # every scenario, once
    .venv/bin/python soak/faults.py --scenario busy-dialer --repeat 3
    .venv/bin/python soak/faults.py --scenario sigkill --set kills=40 --seed 11
    .venv/bin/python soak/faults.py --json /tmp/faults.json      # the figures, for the docs
"""

# ruff: noqa: E402 - the imports follow the sys.path fix; a command line tool prints
from __future__ import annotations

import argparse
import ast
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path; the repository root must be
# there instead, for ``tests.faults`` and the service's packages.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "soak"]

from tests.faults.scenarios import FULL_SIZES, SCENARIOS, Servers
from tests.faults.servers import PrivateMariaDB, PrivateRedis
from tests.faults.stack import CI_SETTINGS, PRODUCTION_SETTINGS, Figures

COLUMNS = ("runs", "leads checked", "leads lost", "requests tried", "5xx seen")


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
    parser.add_argument("--repeat", type=int, default=1, help="runs of each scenario")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: each's own)")
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
    if args.repeat != 1:
        parts += ["--repeat", str(args.repeat)]
    if args.seed is not None:
        parts += ["--seed", str(args.seed)]
    for item in args.set:
        parts += ["--set", item]
    if args.ci_settings:
        parts.append("--ci-settings")
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    overrides = dict(item.split("=", 1) for item in args.set)
    folder = Path(tempfile.mkdtemp(prefix="leadarchive-faults-"))
    print(f"logs in {folder}", flush=True)
    mariadb, redis = PrivateMariaDB(folder / "mariadb"), PrivateRedis(folder / "redis")
    results: dict[str, Figures] = {}
    failed = False
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
            sizes = {**FULL_SIZES[name], **{k: _value(v) for k, v in overrides.items()}}
            total = Figures(name)
            for run in range(args.repeat):
                if args.seed is not None:
                    sizes["seed"] = args.seed + run
                started = time.monotonic()
                figures = SCENARIOS[name](servers, **sizes)
                figures.notes["seconds"] = round(time.monotonic() - started, 1)
                print(f"{name} run {run + 1}: {_summary(figures)}", flush=True)
                for problem in figures.problems:
                    print(f"  PROBLEM: {problem[:2000]}", flush=True)
                total.add(figures)
            results[name] = total
            failed |= bool(total.problems or total.leads_lost or total.five_xx)
    finally:
        redis.close()
        mariadb.close()
        if not args.keep and not failed:
            shutil.rmtree(folder, ignore_errors=True)
    print()
    print("| scenario | " + " | ".join(COLUMNS) + " | command |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for name, figures in results.items():
        row = (
            figures.runs,
            figures.leads_checked,
            figures.leads_lost,
            figures.requests,
            figures.five_xx,
        )
        print(f"| {name} | " + " | ".join(f"{v:,}" for v in row) + f" | `{command(args, name)}` |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {n: {**vars(f), "command": command(args, n)} for n, f in results.items()},
                indent=2,
                default=str,
            )
        )
    return 1 if failed else 0


def _summary(figures: Figures) -> str:
    notes = ", ".join(f"{k}={v}" for k, v in figures.notes.items() if k != "errors")
    return (
        f"leads checked={figures.leads_checked} lost={figures.leads_lost}"
        f" requests={figures.requests} 5xx={figures.five_xx} problems={len(figures.problems)}"
        f" | {notes}"
        + (f" | errors={figures.notes['errors']}" if "errors" in figures.notes else "")
    )


if __name__ == "__main__":
    sys.exit(main())
