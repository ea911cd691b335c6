"""The dialer probe's p99 runs from each slot's due time: a stall counts every slot it delayed."""

from __future__ import annotations

import time

from sqlalchemy import Connection, Engine

from bench.engine import Probe, ProbeSamples, ProbeStats
from tasks.seed import insert_leads, lead_rows

PERIOD = 0.005
HOLD = 0.25  # how long the probe is kept waiting, at least
WAITING = (
    "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
    " WHERE DB = DATABASE() AND STATE LIKE 'Waiting for table%%lock'"
)


def test_a_stalled_probe_counts_every_slot_the_stall_delayed(
    vicidial: Connection, engine: Engine, database_url: str
) -> None:
    insert_leads(vicidial, lead_rows(100, seed=1))
    with engine.connect() as watcher, Probe(database_url, 100, PERIOD, 1, thread=True) as probe:
        probe.record(True)
        time.sleep(0.6)  # ordinary slots before the stall: over 100 slots in all
        vicidial.exec_driver_sql("LOCK TABLES vicidial_list WRITE")
        try:
            deadline = time.monotonic() + 30
            while watcher.exec_driver_sql(WAITING).scalar_one() == 0:
                assert time.monotonic() < deadline, "the probe never waited for the lock"
                time.sleep(0.005)
            seen_waiting = time.monotonic()
            time.sleep(HOLD)
            # A floor of the blocked pair's time: it began before it was seen waiting, and
            # ends after the unlock below.
            held = time.monotonic() - seen_waiting
        finally:
            vicidial.exec_driver_sql("UNLOCK TABLES")
        time.sleep(0.6)  # and after it
        probe.record(False)
        start, end = probe.window
        samples = probe.finish()
    assert not probe.worker.is_alive()
    stats = ProbeStats.of(samples)

    # Every slot due in the window is there, none skipped: the stall's too.
    assert abs(stats.ops - (end - start) / PERIOD) <= 2
    assert stats.errors == 0 and stats.unserved == 0
    # The blocked pair itself, and the slots it delayed, each from its own due time.
    assert stats.stall_ms >= held * 1000
    assert stats.pair_max_ms >= held * 1000
    delayed = [x for x in samples.late if x >= held / 2]
    assert len(delayed) >= held / 2 / PERIOD - 2
    assert stats.pair_p99_ms >= held / 2 * 1000
    # The old measure, each pair's own time, sees one slow pair: its p99 is the lower bound.
    assert stats.service_p99_ms < stats.pair_p99_ms


def test_unserved_slots_are_charged_the_time_they_waited() -> None:
    """The figures count what the probe gave up on, at the least latency it is owed."""
    samples = ProbeSamples(
        due=[0.0, 0.005, 0.010],
        late=[0.001, 0.4, 0.395],
        pair=[0.001, float("nan"), float("nan")],
        read=[0.0005, float("nan"), float("nan")],
        update=[0.0005, float("nan"), float("nan")],
        unserved=2,
    )
    stats = ProbeStats.of(samples.window(0.0, 0.010))
    assert (stats.ops, stats.unserved) == (3, 2)
    assert stats.pair_p99_ms == 400.0
    assert stats.stall_ms == 1.0
