"""The API benchmark's figures and tables: statistics of a list of milliseconds, and the rich
tables ``bench/api.py`` prints for its three targets (latency, submission load, memory).

Everything here reads results (plain dicts, as written to ``--json``) and measures nothing.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.table import Table

from bench.engine import percentile

API_RSS_LIMIT_MB = 120.0
WORKER_RSS_LIMIT_MB = 150.0
E2E_SLACK_MS = 100.0
TARGET_P99_MS = 50.0


def summarize(values_ms: Sequence[float]) -> dict[str, float]:
    """n, min, p50, p90, p99, max and mean of a list of milliseconds."""
    if not values_ms:
        return {"n": 0}
    return {
        "n": len(values_ms),
        "min": round(min(values_ms), 2),
        "p50": round(percentile(values_ms, 50), 2),
        "p90": round(percentile(values_ms, 90), 2),
        "p99": round(percentile(values_ms, 99), 2),
        "max": round(max(values_ms), 2),
        "mean": round(statistics.fmean(values_ms), 2),
    }


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def mb(nbytes: float) -> float:
    return round(nbytes / 2**20, 1)


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "[green]met[/green]" if ok else "[red]missed[/red]"


def e2e_table(result: dict[str, Any]) -> Table:
    batch, e2e = result["batch_ms"], result["e2e_ms"]
    table = Table(
        title=f"1. 500-lead job (insert+update+delete): {batch['n']} batches, {e2e['n']} jobs",
        box=box.SIMPLE_HEAVY,
    )
    for name in ("", "median ms", "p90 ms", "min ms", "max ms"):
        table.add_column(name, justify="left" if not name else "right")
    for label, stats in (
        ("run_batch alone (in process)", batch),
        ("end to end: POST -> succeeded seen", e2e),
    ):
        table.add_row(
            label, fmt(stats["p50"]), fmt(stats["p90"]), fmt(stats["min"]), fmt(stats["max"])
        )
    table.add_row(
        "difference (end to end - batch)",
        fmt(e2e["p50"] - batch["p50"]),
        fmt(e2e["p90"] - batch["p90"]),
        "",
        "",
    )
    for label, key in (
        ("  POST round trip", "post_ms"),
        ("  queue wait (submitted_at -> started_at)", "queue_ms"),
        ("  worker run (started_at -> finished_at)", "run_ms"),
        ("  noticed by polling (finished_at -> seen)", "notice_ms"),
    ):
        stats = result["parts_ms"][key]
        table.add_row(
            label, fmt(stats["p50"]), fmt(stats["p90"]), fmt(stats["min"]), fmt(stats["max"])
        )
    ok = result["met"]
    table.caption = (
        f"target: median end to end <= median batch + {E2E_SLACK_MS:.0f} ms"
        f" = {fmt(batch['p50'] + E2E_SLACK_MS)} ms: {verdict(ok)};"
        f" polled every {result['poll_ms']:.0f} ms,"
        f" {fmt(result['polls_p50'], 0)} polls per job (median)"
    )
    return table


def load_table(result: dict[str, Any]) -> Table:
    load, lat, dr = result["load"], result["latency_ms"], result["drain"]
    table = Table(title="2. Submission load (open loop)", box=box.SIMPLE_HEAVY, show_header=False)
    table.add_column("", justify="left")
    table.add_column("", justify="right")
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(load["statuses"].items()))
    rows = [
        (
            "offered",
            f"{load['offered_rate']:.0f}/s for {load['duration']:.0f} s = {load['sent']} requests",
        ),
        ("client", f"{load['client']}, {load['connections']} keep-alive connections"),
        (
            "sent within",
            f"{load['send_seconds']:.2f} s"
            f" (generator lag max {load['max_dispatch_lag_ms']:.1f} ms)",
        ),
        ("achieved (202 / time to last answer)", f"{result['achieved_rate']:.1f}/s"),
        ("status codes", statuses),
        (
            "latency from scheduled time p50 / p99 / max",
            f"{fmt(lat['p50'])} / {fmt(lat['p99'])} / {fmt(lat['max'])} ms",
        ),
        ("API's own histogram: POSTs under 50 ms", result["server_side_under_50ms"]),
        ("backlog drained after the last answer", f"{dr['seconds']:.1f} s"),
        ("worker throughput while draining", f"{fmt(dr['worker_rate'])} jobs/s"),
        (
            "queue wait p50 / p99 / max",
            " / ".join(fmt(dr["queue_ms"].get(k), 0) for k in ("p50", "p99", "max")) + " ms",
        ),
        (
            "accepted jobs' final status",
            ", ".join(f"{k}: {v}" for k, v in sorted(dr["final"].items())),
        ),
        ("failed / not final / lost", f"{result['failed']} / {dr['not_final']} / {dr['lost']}"),
        ("left in the broker queue", str(dr["broker_left"])),
    ]
    for label, value in rows:
        table.add_row(label, value)
    table.caption = (
        f"target: {load['offered_rate']:.0f}/s with p99 < {TARGET_P99_MS:.0f} ms,"
        f" every accepted job completing: rate {verdict(result['rate_met'])},"
        f" p99 {verdict(result['p99_met'])},"
        f" completion {verdict(result['completion_met'])}. The generator runs on the same"
        f" {os.cpu_count()} cores as the API, the workers, MariaDB and Redis."
    )
    return table


def cpu_table(result: dict[str, Any]) -> Table:
    table = Table(title="CPU, % of one core", box=box.SIMPLE_HEAVY)
    table.add_column("process")
    table.add_column("during the load", justify="right")
    table.add_column("while draining", justify="right")
    load, drained = result["cpu_load"], result["cpu_drain"]
    for label in sorted(set(load) | set(drained)):
        table.add_row(label, fmt(load.get(label)), fmt(drained.get(label)))
    table.caption = "MariaDB and Redis are whole servers: anything else on the machine counts too."
    return table


def sweep_table(phases: list[dict[str, Any]]) -> Table:
    table = Table(title="2b. Load sweep", box=box.SIMPLE_HEAVY)
    names = ["offered/s", "workers", "achieved/s", "p50 ms", "p99 ms", "max ms", "codes"]
    names += ["API CPU %", "API <= 50 ms", "drain s", "succeeded"]
    for name in names:
        table.add_column(name, justify="right")
    for phase in phases:
        load, lat = phase["load"], phase["latency_ms"]
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(load["statuses"].items()))
        table.add_row(
            f"{load['offered_rate']:.0f}",
            "paused" if phase["workers_paused_during_load"] else "running",
            fmt(phase["achieved_rate"]),
            fmt(lat.get("p50")),
            fmt(lat.get("p99")),
            fmt(lat.get("max")),
            codes,
            fmt(phase["cpu_load"].get("api")),
            phase["server_side_under_50ms"],
            fmt(phase["drain"]["seconds"]),
            f"{phase['drain']['final'].get('succeeded', 0)} of {len_accepted(phase)}",
        )
    table.caption = (
        "Each run is followed by a wait until its jobs end. Paused: the worker is stopped"
        " (SIGSTOP) while the load runs, so the API has the machine to itself."
    )
    return table


def len_accepted(phase: dict[str, Any]) -> int:
    return int(phase["load"]["statuses"].get("202", 0))


def memory_table(result: dict[str, Any]) -> Table:
    table = Table(title="3. Memory (MB)", box=box.SIMPLE_HEAVY)
    for name in (
        "process",
        "idle RSS",
        "peak RSS",
        "after load RSS",
        "after load USS",
        "limit",
        "",
    ):
        table.add_column(name, justify="left" if name == "process" else "right")
    idle, after, peak = result["idle"], result["after"], result["peak"]
    for label in sorted(set(idle) | set(after), key=lambda s: (s != "api", s)):
        limit = API_RSS_LIMIT_MB if label == "api" else WORKER_RSS_LIMIT_MB
        worst = max(
            idle.get(label, {}).get("rss", 0.0),
            after.get(label, {}).get("rss", 0.0),
            peak.get(label, 0.0),
        )
        table.add_row(
            label,
            fmt(idle.get(label, {}).get("rss")),
            fmt(peak.get(label)),
            fmt(after.get(label, {}).get("rss")),
            fmt(after.get(label, {}).get("uss")),
            f"< {limit:.0f}",
            verdict(worst < limit),
        )
    table.caption = "RSS counts pages a prefork child shares with its parent; USS leaves them out."
    return table
