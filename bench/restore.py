"""Benchmark restore (``run_restore``) on bench/engine.py's data: restore leads/s.

The same throw-away MyISAM database as bench/engine.py's cost ratio (``Bench.load``: ``size``
seeded leads, the dialer's tables filled as a busy call center's, utf8 / utf8_unicode_ci), dropped
at the end even on error. For each of ``--batches`` batches, ``--batch-size`` randomly chosen lead
IDs (never the probe's) are archived and deleted by ``run_batch`` (untimed), then restored by
``run_restore`` (timed: INSERT of the live copies under the table lock, then the DELETE that
compares each archive row with its live copy, column by column). One untimed batch first warms the
table handles. Reported: restore leads/s, the median batch, whether the table's checksum and counts
are what they were (every lead back, the archive empty), and the noise the figure was taken in (CPU
of other processes, other clients' queries, the load average).

Run it from the repository root::

    .venv/bin/python bench/restore.py --sizes 100000
    .venv/bin/python bench/restore.py --sizes 10000 --batches 5   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.engine import DEFAULT_URL, Bench, Noise, NoiseStats, int_list, log, machine, ms
from tasks.archive import Actions, run_batch
from tasks.archive.restore import run_restore
from tasks.db import make_engine
from testkit.servers import scratch_database

MOVE = Actions(insert=True, update=True, delete=True)


@dataclass(frozen=True, slots=True)
class RestoreRow:
    size: int
    batches: int
    batch_size: int
    restore_leads_per_s: int
    restore_median_ms: float
    archive_leads_per_s: int
    data_intact: bool
    load_average: tuple[float, float, float]
    noise: NoiseStats


def measure(bench: Bench, args: argparse.Namespace) -> RestoreRow:
    pool = bench.batch_pool()
    before = bench.checksum()
    restore_times: list[float] = []
    archive_times: list[float] = []
    noise = Noise(bench.engine, bench.database)
    with noise, bench.engine.connect() as conn:
        for index in range(1 + args.batches):
            ids = sorted(bench.rng.sample(pool, args.batch_size))
            t0 = time.perf_counter()
            archived = run_batch(conn, ids, MOVE)
            spent_archive = time.perf_counter() - t0
            if archived.counts["delete"]["deleted"] != len(ids):
                raise RuntimeError(f"archived {archived.counts} of {len(ids)}")
            t0 = time.perf_counter()
            restored = run_restore(conn, ids)
            spent = time.perf_counter() - t0
            if restored.counts["restore"]["restored"] != len(ids):
                raise RuntimeError(f"restored {restored.counts} of {len(ids)}")
            if index:
                restore_times.append(spent)
                archive_times.append(spent_archive)
    after = bench.checksum()
    leads = args.batch_size * args.batches
    return RestoreRow(
        size=bench.size,
        batches=args.batches,
        batch_size=args.batch_size,
        restore_leads_per_s=round(leads / sum(restore_times)),
        restore_median_ms=ms(statistics.median(restore_times)),
        archive_leads_per_s=round(leads / sum(archive_times)),
        data_intact=before == after and after[1] == bench.size and after[2] == 0,
        load_average=os.getloadavg(),
        noise=noise.stats,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int_list, default=[100_000])
    parser.add_argument("--batches", type=int, default=15, help="timed batches per size")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--agents", type=int, default=500, help="as bench/engine.py")
    parser.add_argument("--callbacks", type=int, default=20_000, help="as bench/engine.py")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", default=DEFAULT_URL, help="server URL, without a database")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = make_engine(args.url)
    info = machine(server)
    rows: list[RestoreRow] = []
    # A throw-away database in Vicidial's utf8 / utf8_unicode_ci, dropped at the end even on error.
    with scratch_database(server, "leadarchive_bench") as url:
        engine = make_engine(url.render_as_string(hide_password=False), pool_size=4)
        try:
            bench = Bench(
                args=args,
                url=url,
                database=str(url.database),
                engine=engine,
                rng=random.Random(args.seed),
            )
            for size in sorted(args.sizes):
                log(f"loading {size:,} leads")
                bench.load(size)
                rows.append(measure(bench, args))
                row = rows[-1]
                log(
                    f"[{size:,} leads] restore {row.restore_leads_per_s:,} leads/s"
                    f" (median {row.restore_median_ms} ms per {args.batch_size}), archive"
                    f" {row.archive_leads_per_s:,} leads/s; intact {row.data_intact};"
                    f" load {row.load_average[0]:.2f}, other CPU {row.noise.other_cpu_pct}%"
                )
        finally:
            engine.dispose()
    log(f"dropped {url.database}")
    server.dispose()
    if args.json:
        payload = {"machine": info, "restore": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0 if all(r.data_intact for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
