"""Would copying the next batch while this one deletes pay? (issue 14's speed targets)

A MyISAM batch spends about 40 % of its time inserting the archive copies, which locks the archive
alone, and about 40 % in the guarded deletes, which lock ``vicidial_list``. On two cores the two
could overlap: the next batch's copy on a second connection while this batch deletes. This
measures that idea against the serial order ``run_batch`` uses, on the same data and the same
statements (the engine's own SQL), the dialer probe every 5 ms in its own process:

- **serial**: per 500-lead batch, the snapshot read, the state read, the insert into the archive
  from the snapshot, then the guarded deletes in chunks of ``--chunk`` leads, each followed by the
  lock-wait read (``SHOW GLOBAL STATUS``), as the snapshot path sends them;
- **overlapped**: the same, the next batch's snapshot, state read and insert on a second
  connection while this batch's deletes run (no ``LOCK TABLES`` on the copy: MyISAM's concurrent
  insert lets the deletes read the archive meanwhile).

Rounds alternate the two ways, each on fresh leads of the benchmark's list. Run::

    .venv/bin/python bench/overlap.py                      # 1M leads, 3 rounds of 40 batches each

It loads ``bench/compare.py``'s data (about 2.5 minutes at 1M) into a database of its own and
drops it afterwards. Not a timed test: the figures are in bench/README.md.
"""

# ruff: noqa: E402 - the imports below must follow the sys.path fix

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run as a script, bench/ comes first on sys.path and hides the project's ``api`` package behind
# bench/api.py; the repository root gives ``bench.*`` and the project's packages instead.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

from rich.console import Console
from rich.table import Table

from bench.compare import load
from bench.engine import DEFAULT_URL, Probe, ProbeStats, log
from tasks.archive import SNAPSHOT, SQL_MODE
from tasks.archive.sql import Statements, id_list
from tasks.db import make_engine
from testkit.servers import mysql_connect, scratch_database

BATCH = 500


class Copier:
    """One connection's snapshot, state read and insert of a batch, timed."""

    def __init__(self, url: str, sql: Statements) -> None:
        self.conn = mysql_connect(url)
        self.cursor = self.conn.cursor()
        self.sql = sql
        self.cursor.execute(f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00'")
        self.cursor.execute(sql.snapshot_create().format(engine="MEMORY"))
        self.copying = 0.0
        self.deleting = 0.0

    def copy(self, batch: list[int]) -> None:
        started = time.perf_counter()
        ids, snapshot = id_list(batch), f"{SNAPSHOT} AS l"
        self.cursor.execute(f"DELETE FROM {SNAPSHOT}")
        self.cursor.execute(self.sql.snapshot_fill(ids))
        self.cursor.execute(self.sql.states(ids, snapshot))
        self.cursor.fetchall()
        self.cursor.execute(self.sql.insert(ids, source=snapshot))
        if self.cursor.rowcount != len(batch):
            raise RuntimeError(f"inserted {self.cursor.rowcount} of {len(batch)}")
        self.copying += time.perf_counter() - started

    def delete(self, batch: list[int], chunk: int) -> None:
        started = time.perf_counter()
        for position in range(0, len(batch), chunk):
            leads = batch[position : position + chunk]
            self.cursor.execute(self.sql.delete(id_list(leads)))
            if self.cursor.rowcount != len(leads):
                raise RuntimeError(f"deleted {self.cursor.rowcount} of {len(leads)}")
            self.cursor.execute("SHOW GLOBAL STATUS LIKE 'Table_locks_waited'")
            self.cursor.fetchall()
        self.deleting += time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


def serial(one: Copier, _: Copier, batches: list[list[int]], chunk: int) -> None:
    for batch in batches:
        one.copy(batch)
        one.delete(batch, chunk)


def overlapped(one: Copier, other: Copier, batches: list[list[int]], chunk: int) -> None:
    other.copy(batches[0])
    for k, batch in enumerate(batches):
        ahead = None
        if k + 1 < len(batches):
            ahead = threading.Thread(target=other.copy, args=(batches[k + 1],))
            ahead.start()
        one.delete(batch, chunk)
        if ahead is not None:
            ahead.join()


WAYS = {"serial": serial, "overlapped": overlapped}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=40, help="per way and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=60, help="leads per guarded DELETE")
    parser.add_argument("--probe-interval-ms", type=float, default=5.0)
    parser.add_argument("--url", default=DEFAULT_URL, help="server URL, without a database")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = make_engine(args.url)
    needed = BATCH * args.batches * len(WAYS) * args.rounds
    if needed > args.leads // 5:
        raise SystemExit(f"{needed:,} leads needed, the list has {args.leads // 5:,}")
    rows: list[dict[str, Any]] = []
    with scratch_database(server, "leadarchive_bench_overlap") as url:
        engine = make_engine(url.render_as_string(hide_password=False))
        log(f"loading {args.leads:,} leads")
        data = load(url, engine, args.leads, args.leads // 5, seed=1)
        ids = sorted(data.archive_ids)
        batches = [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]
        sql = Statements(data.pair)
        url_text = url.render_as_string(hide_password=False)
        taken = 0
        for round_ in range(args.rounds):
            for way, run in WAYS.items():
                chosen = batches[taken : taken + args.batches]
                taken += args.batches
                one, other = Copier(url_text, sql), Copier(url_text, sql)
                try:
                    with Probe(
                        url_text, args.leads, args.probe_interval_ms / 1000, round_, thread=False
                    ) as probe:
                        probe.record(True)
                        started = time.perf_counter()
                        run(one, other, chosen, args.chunk)
                        wall = time.perf_counter() - started
                        probe.record(False)
                        stats = ProbeStats.of(probe.finish())
                finally:
                    one.close()
                    other.close()
                rows.append(
                    {
                        "round": round_ + 1,
                        "way": way,
                        "ms_per_batch": wall / len(chosen) * 1000,
                        "leads_per_s": BATCH * len(chosen) / wall,
                        "copy_ms": (one.copying + other.copying) / len(chosen) * 1000,
                        "delete_ms": one.deleting / len(chosen) * 1000,
                        "p99_ms": stats.pair_p99_ms,
                    }
                )
                log(f"round {round_ + 1}, {way}: {rows[-1]['leads_per_s']:,.0f} leads/s")
        engine.dispose()
    server.dispose()
    table = Table(title=f"{args.leads:,} leads, {BATCH} a batch, deletes of {args.chunk}")
    for name in ("round", "way", "ms/batch", "leads/s", "copy ms", "delete ms", "probe p99 ms"):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(
            str(row["round"]),
            row["way"],
            f"{row['ms_per_batch']:.1f}",
            f"{row['leads_per_s']:,.0f}",
            f"{row['copy_ms']:.1f}",
            f"{row['delete_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
        )
    for way in WAYS:
        mine = [r["leads_per_s"] for r in rows if r["way"] == way]
        table.add_row("median", way, "", f"{statistics.median(mine):,.0f}", "", "", "")
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
