"""Archive by selection, killed: the whole worker SIGKILLed several times during one selection.

Issue 14: "a selection killed (SIGKILL of the whole worker) three times resumes each time and ends
with every selected lead archived or reported in left_live". On ``bench/compare.py``'s data (a
MyISAM ``vicidial_list`` of ``--leads`` seeded leads, ``--archive`` of them on list 9990002,
spread over the table), with ``leadarchive api`` and ``leadarchive worker`` as real processes:

1. the rows of the list are copied for the judge (``bench/oracle.py``'s ``take_copy``);
2. one ``POST /vicidial/leads/archive/selection`` of the list (insert, update, delete), its status
   polled every ``--poll-s`` seconds (1 s, a client's pace) from this process;
3. each time ``progress.done`` passes ``k / (kills + 1)`` of ``selected`` (k = 1..``--kills``), the
   worker's whole process group (main process and pool) is SIGKILLed (``testkit.processes.
   kill_group``), the job's status read at once (its last checkpoint), and a new worker started.
   The killed run's lease runs out after ``--job-lease`` (the service's default, 10 s) and the
   new worker hands the job back (every third of the lease); kombu would deliver the killed
   run's unacknowledged message again only after the visibility timeout. The timings are the
   service's defaults (``--visibility-timeout`` 30 s, ``--task-time-limit`` 20 s,
   ``--lock-wait-timeout`` 10 s; the settings require task_time_limit + lock_wait_timeout / 2 <
   visibility_timeout);
4. when the job has ended, the judge reads every lead of the list back (``bench/oracle.py``,
   byte for byte) and checks: the job succeeded; no lead lost (gone from ``vicidial_list`` with no
   identical archive copy), corrupted or vanished; no lead of another list gone; every lead still
   live is one the job reported in ``left_live`` (their number equals ``left_live_total``).

Reported for each kill: when it came (seconds after the POST), the checkpoint the job had
(``progress.done`` read right after the kill), how long until a new run of the job began (the
status's ``attempts`` grew) and until its progress moved past the checkpoint (both as seen by
the 1 s polls, so within a second). ``--mode aimed`` runs ``bench/compare.py``'s aimed writer
(16 connections, 200 updates/s on the next leads to be archived) meanwhile, so the leads it
changed between a batch's copy and its delete are left live (``mismatch``), and judged as such.

Everything runs in a throw-away database and an empty Redis database 2..15, removed at the end
with every process this command started. From the repository root::

    .venv/bin/python bench/selection_kills.py --leads 100000 --archive 20000
    .venv/bin/python bench/selection_kills.py --json /tmp/kills.json    # 1M leads, 200k, 3 kills
"""

# ruff: noqa: E402 - the imports below must follow the sys.path fix

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

from sqlalchemy import Engine

from bench.client import RawHTTP
from bench.compare import (
    ARCHIVE_LIST,
    BATCH,
    Writer,
    WriterLog,
    follow,
    load,
    post_selection,
)
from bench.engine import DEFAULT_URL, log
from bench.oracle import Verdict, drop_copy, judge, take_copy
from bench.report import epoch
from bench.stack import DEFAULT_REDIS, claim_redis_db, cleanup_on_signals, machine, scratch_database
from tasks.db import make_engine
from testkit.processes import kill_group
from testkit.services import Live, live_services


@dataclass(slots=True)
class Kill:
    """One SIGKILL of the whole worker, and how the job came back from it."""

    at_s: float  # seconds after the POST
    done_polled: int  # progress.done at the poll that decided it
    checkpoint: int  # progress.done read right after the kill: the job's last checkpoint
    attempts: int  # the job's runs so far, at the kill
    new_run_after_s: float | None = None  # until a poll saw attempts grow
    progress_after_s: float | None = None  # until a poll saw done pass the checkpoint


@dataclass(slots=True)
class Outcome:
    status: str
    seconds: float
    leads_per_s: float
    selected: int
    done: int
    attempts: int | None
    left_live_total: int
    kills: list[Kill]
    checked: int  # leads of the list, as copied before the run
    archived: int  # gone from vicidial_list with the newest version in the archive
    still_live: int
    lost: list[int]
    corrupted: list[int]
    vanished: list[int]
    others_gone: int
    live_not_reported: list[int]  # live leads of the list that left_live does not name
    writer_applied: int = 0
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())


class Killer:
    """Called at every poll: SIGKILLs the worker at the planned points, starts a new one, and
    notes how the job comes back."""

    def __init__(self, live: Live, client: RawHTTP, url: str, kills: int) -> None:
        self.live, self.client, self.url, self.planned = live, client, url, kills
        self.kills: list[Kill] = []
        self.posted = 0.0  # time.perf_counter() of the POST

    def __call__(self, _since_first_poll: float, body: dict[str, Any]) -> None:
        now = time.perf_counter() - self.posted
        progress = body.get("progress") or {}
        done, selected = int(progress.get("done", 0)), int(progress.get("selected", 0))
        attempts = int(body.get("attempts") or 0)
        if self.kills:
            last = self.kills[-1]
            if last.new_run_after_s is None and attempts > last.attempts:
                last.new_run_after_s = round(now - last.at_s, 1)
            if last.progress_after_s is None and done > last.checkpoint:
                last.progress_after_s = round(now - last.at_s, 1)
            if last.progress_after_s is None:
                return  # not yet back from the last kill
        if len(self.kills) >= self.planned or not selected or body["status"] != "running":
            return
        if done < selected * (len(self.kills) + 1) / (self.planned + 1):
            return
        kill_group(self.live.processes["worker"])
        at = time.perf_counter() - self.posted
        after = self.client.request("GET", self.url).json()
        checkpoint = int((after.get("progress") or {}).get("done", 0))
        self.kills.append(Kill(round(at, 1), done, checkpoint, int(after.get("attempts") or 0)))
        log(f"  kill {len(self.kills)} at {at:.1f} s: checkpoint {checkpoint:,} of {selected:,}")
        # The killed worker's log is kept (the new worker's starts afresh).
        worker_log = self.live.logs / "worker.log"
        worker_log.rename(worker_log.with_name(f"worker-{len(self.kills)}.log"))
        self.live.start_worker()


def live_leads_of_list(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT lead_id FROM vicidial_list WHERE list_id = {ARCHIVE_LIST}"
        ).all()
    return {int(r[0]) for r in rows}


def grade(
    final: dict[str, Any],
    verdict: Verdict,
    live_now: set[int],
    kills: list[Kill],
    seconds: float,
    planned: int,
    writes: WriterLog,
) -> Outcome:
    result = final.get("result") or {}
    reported = {int(lead["lead_id"]) for lead in result.get("left_live", [])}
    total = int(result.get("left_live_total", 0))
    # left_live names at most 1,000 leads; past that, the count must still agree.
    unreported = sorted(live_now - reported) if total <= len(reported) else []
    written = {lead for lead, _, _ in writes.applied}
    lost = sorted(verdict.stale + [lead for lead in verdict.vanished if lead in written])
    archived = verdict.checked - verdict.live
    outcome = Outcome(
        status=final["status"],
        seconds=round(seconds, 1),
        leads_per_s=round(archived / seconds) if seconds else 0,
        selected=int(result.get("selected", 0)),
        done=int(result.get("done", 0)),
        attempts=final.get("attempts"),
        left_live_total=total,
        kills=kills,
        checked=verdict.checked,
        archived=verdict.archived,
        still_live=verdict.live,
        lost=lost,
        corrupted=verdict.corrupted,
        vanished=verdict.vanished,
        others_gone=verdict.others_gone,
        live_not_reported=unreported,
        writer_applied=len(writes.applied),
    )
    outcome.checks = {
        "the job succeeded": final["status"] == "succeeded",
        f"{planned} kills, each resumed": len(kills) == planned
        and all(k.progress_after_s is not None for k in kills),
        "none lost, corrupted or vanished": not (lost or verdict.corrupted or verdict.vanished),
        "no lead of another list gone": verdict.others_gone == 0,
        "every lead gone is archived identically": verdict.archived == archived,
        # Every lead the job names is live, every live lead is named (past the 1,000 the job
        # lists, its total must still agree).
        "every live lead reported in left_live": not unreported
        and reported <= live_now
        and total == len(live_now) == verdict.live,
    }
    return outcome


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--leads", type=int, default=1_000_000, help="leads in vicidial_list")
    parser.add_argument("--archive", type=int, default=200_000, help="leads of the list")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of the whole worker")
    parser.add_argument("--mode", choices=("clean", "aimed"), default="clean")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes")
    parser.add_argument("--visibility-timeout", type=int, default=30, help="seconds")
    parser.add_argument("--job-lease", type=int, default=10, help="seconds")
    parser.add_argument("--task-time-limit", type=int, default=20, help="seconds")
    parser.add_argument("--lock-wait-timeout", type=int, default=10, help="seconds")
    parser.add_argument("--poll-s", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after (s)")
    parser.add_argument("--writer-threads", type=int, default=16)
    parser.add_argument("--writer-rate", type=float, default=200.0, help="updates/s in all")
    parser.add_argument("--aim-window", type=int, default=2 * BATCH, help="aimed: leads ahead")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", default=DEFAULT_URL, help="MariaDB server URL, no database")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="Redis server URL, no database")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    if not 0 < args.archive <= args.leads * 0.9 - BATCH:
        parser.error("--archive must be positive and leave 10 % of --leads to the probe")
    if args.task_time_limit + args.lock_wait_timeout / 2 >= args.visibility_timeout:
        parser.error("task time limit + lock wait timeout / 2 must stay below the visibility")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    with contextlib.ExitStack() as stack:
        stack.enter_context(cleanup_on_signals())
        redis_db, rclient = claim_redis_db(args.redis_url)
        stack.callback(rclient.close)
        stack.callback(rclient.flushdb)
        server = make_engine(args.url)
        stack.callback(server.dispose)
        results["machine"] = machine(server, rclient)
        url = scratch_database(stack, server, args.url, "leadarchive_bench_kills")
        db_url = url.render_as_string(hide_password=False)
        engine = make_engine(db_url, pool_size=4)
        stack.callback(engine.dispose)
        log(f"database {url.database}, Redis database {redis_db}; loading {args.leads:,} leads")
        data = load(url, engine, args.leads, args.archive, args.seed)
        redis_url = f"{args.redis_url.rstrip('/')}/{redis_db}"
        logs = Path(tempfile.mkdtemp(prefix="leadarchive-bench-kills-"))
        log(f"process logs in {logs}")
        live = stack.enter_context(
            live_services(
                db_url,
                redis_url,
                logs,
                concurrency=args.concurrency,
                owner="bench",
                metrics=False,
                rate_limit="",
                visibility_timeout=f"{args.visibility_timeout}s",
                job_lease=f"{args.job_lease}s",
                task_time_limit=f"{args.task_time_limit}s",
                lock_wait_timeout=f"{args.lock_wait_timeout}s",
            )
        )
        copy = take_copy(engine, f"list_id = {ARCHIVE_LIST}")
        aimed = args.mode == "aimed"
        writer = Writer(db_url, args.mode, args.leads, data.archive_ids, args) if aimed else None
        client = live.client()
        stack.callback(client.close)
        writes = WriterLog()
        with writer or contextlib.nullcontext():
            posted_wall = time.time()
            posted = time.perf_counter()
            status_url = post_selection(client, ARCHIVE_LIST)
            killer = Killer(live, client, status_url, args.kills)
            killer.posted = posted
            log(f"posted the selection of list {ARCHIVE_LIST}: {status_url}")
            followed = follow(client, status_url, args.poll_s, args.timeout, killer)
            if writer is not None:
                writes = writer.finish()
        final = followed.final
        ended = final.get("finished_at")
        seconds = epoch(ended) - posted_wall if ended else followed.seen - posted
        verdict = judge(engine, copy, writes.applied)
        live_now = live_leads_of_list(engine)
        drop_copy(engine)
        outcome = grade(final, verdict, live_now, killer.kills, seconds, args.kills, writes)
        results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        results["progress"] = followed.samples
        results["worker_logs"] = str(logs)

    print_outcome(outcome, results)
    if args.json:
        results["outcome"] = asdict(outcome)
        results["passed"] = outcome.passed
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        log(f"wrote {args.json}")
    return 0 if outcome.passed else 1


def print_outcome(outcome: Outcome, results: dict[str, Any]) -> None:
    info = results["machine"]
    print(f"\nselection of list {ARCHIVE_LIST}: {outcome.status} in {outcome.seconds} s")
    print(
        f"  selected {outcome.selected:,}, done {outcome.done:,}, runs {outcome.attempts},"
        f" left live {outcome.left_live_total:,}; {outcome.leads_per_s:,} leads/s with the kills"
    )
    print("  kill  at s  checkpoint  new run after s  progress after s")
    for n, kill in enumerate(outcome.kills, 1):
        print(
            f"  {n:>4}  {kill.at_s:>4}  {kill.checkpoint:>10,}  {kill.new_run_after_s!s:>15}"
            f"  {kill.progress_after_s!s:>16}"
        )
    print(
        f"  judge: {outcome.checked:,} leads of the list, {outcome.archived:,} archived"
        f" identically and gone, {outcome.still_live:,} live, lost {len(outcome.lost)},"
        f" corrupted {len(outcome.corrupted)}, vanished {len(outcome.vanished)}, other lists'"
        f" leads gone {outcome.others_gone}, live but not in left_live"
        f" {len(outcome.live_not_reported)}; writer updates {outcome.writer_applied:,}"
    )
    for check, ok in outcome.checks.items():
        print(f"  {'ok    ' if ok else 'FAILED'}  {check}")
    print(
        f"{info['date']}  code {info['commit']}; load average at start"
        f" {info['load_average_at_start']}, at end {results['load_average_at_end']}"
    )


if __name__ == "__main__":
    sys.exit(main())
