"""Concurrency: a simulated dialer writes leads while batches on overlapping IDs archive them.

No lead whose live data differed from its archive copy at delete time may be deleted: for every
deleted lead, the archive must hold the last values the dialer successfully wrote to it, and every
lead still live must hold them in its live row. And the race must really happen: the dialer aims
its writes at the leads of the deleting batch in flight, whose archive copies exist already, so
some deleting batch meets a copy the dialer has made stale and must refuse the lead (``mismatch``)
— on MyISAM's snapshot path often after the snapshot, where only the DELETE's own comparison
stands between the write and its loss.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine

from tasks.archive import Actions, BatchReport, Tuning, run_batch
from tasks.seed import insert_leads, lead_rows
from tests.helpers import archive, column, live

LEADS = 600
ALL = Actions(insert=True, update=True, delete=True)
COPY_ONLY = Actions(insert=True, update=False, delete=False)
DELETE_ONLY = Actions(insert=False, update=False, delete=True)


@dataclass
class InFlight:
    """The leads of the deleting batch now running: where the dialer aims."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    leads: frozenset[int] = frozenset()

    def set(self, leads: list[int]) -> None:
        with self.lock:
            self.leads = frozenset(leads)

    def get(self) -> frozenset[int]:
        with self.lock:
            return self.leads


def _dialer(
    engine: Engine,
    leads: list[int],
    last_write: dict[int, tuple[bytes, bytes]],
    written: dict[int, set[tuple[bytes, bytes]]],
    stop: threading.Event,
    seed: int,
    aim: InFlight,
    errors: list[BaseException],
) -> None:
    """Update leads of its own until stopped, recording each write that found its row.

    Four writes in five go to a lead of the deleting batch in flight (when it has one of this
    dialer's leads), the rest to any lead. Most writes change only the case or the trailing space
    of first_name: different bytes that the collation calls equal. The rest change comments.
    """
    rng = random.Random(seed)
    mine = set(leads)
    try:
        with engine.connect() as c:
            seq = 0
            while not stop.is_set():
                targets = sorted(aim.get() & mine)
                lead = rng.choice(targets if targets and rng.random() < 0.8 else leads)
                seq += 1
                name, comment = rng.choice(("bob", "Bob", "BOB", "bob ")), f"dialer {seed}-{seq}"
                if lead in last_write and rng.random() < 0.7:
                    comment = last_write[lead][1].decode()
                # modify_date kept as it is, so the case is the only difference the batch can see.
                found = c.exec_driver_sql(
                    "UPDATE vicidial_list SET first_name = %s, comments = %s,"
                    " modify_date = modify_date WHERE lead_id = %s",
                    (name, comment, lead),
                ).rowcount
                if found:
                    last_write[lead] = (name.encode(), comment.encode())
                    written.setdefault(lead, set()).add(last_write[lead])
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def _archiver(
    engine: Engine,
    batches: list[list[int]],
    actions: Actions,
    errors: list[BaseException],
    tuning: Tuning,
    reports: list[BatchReport],
    aim: InFlight | None = None,
    after: Callable[[Connection, BatchReport], None] | None = None,
) -> Callable[[], None]:
    def run() -> None:
        try:
            with engine.connect() as c:
                for _ in range(3):
                    for ids in batches:
                        if aim is not None:
                            aim.set(ids)
                        report = run_batch(c, ids, actions, tuning)
                        reports.append(report)
                        if after is not None:
                            after(c, report)
                if aim is not None:
                    aim.set([])
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    return run


def test_no_lead_is_deleted_while_its_live_data_differs_from_the_copy(
    engine: Engine, conn: Connection
) -> None:
    insert_leads(conn, lead_rows(LEADS, first_lead_id=1, seed=7))
    original = live(conn)
    ids = list(range(1, LEADS + 1))
    # Half the leads have their archive copy before the race starts, so a write the dialer aims
    # at them makes the copy stale; the copy-only stream below copies the rest as it goes.
    run_batch(conn, ids[: LEADS // 2], COPY_ONLY)
    last_write: dict[int, tuple[bytes, bytes]] = {}
    written: dict[int, set[tuple[bytes, bytes]]] = {}
    stop = threading.Event()
    errors: list[BaseException] = []
    dialer_errors: list[BaseException] = []
    tuning = Tuning(first_chunk=10, max_chunk=40)
    # Batch streams over the same leads, in different orders, with different batch sizes.
    forward = [ids[i : i + 50] for i in range(0, LEADS, 50)]
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    backward = [shuffled[i : i + 75] for i in range(0, LEADS, 75)]
    aim = InFlight()
    writers = [
        threading.Thread(
            target=_dialer,
            args=(engine, ids[k::2], last_write, written, stop, k, aim, dialer_errors),
        )
        for k in range(2)
    ]
    name, comments = column("first_name"), column("comments")
    refused: set[int] = set()
    stayed: set[int] = set()

    def read_back(c: Connection, report: BatchReport) -> None:
        """Right after a deleting batch: which leads it refused as ``mismatch`` are live with
        a write of the dialer while their archive copy holds other bytes (CAST AS BINARY)."""
        kept = [lead.lead_id for lead in report.leads if lead.delete == "mismatch" and lead.live]
        if not kept:
            return
        refused.update(kept)
        live_now, archive_now = live(c), archive(c)
        for i in kept:
            row, copy = live_now.get(i), archive_now.get(i)
            if row is None or copy is None or row == copy:
                continue  # another batch refreshed or deleted it meanwhile
            if (row[name], row[comments]) in written.get(i, set()):
                stayed.add(i)

    # One stream only copies, another only deletes: the deleting batches meet archive copies
    # that the dialer has made stale since, which the guard alone must refuse.
    copies: list[BatchReport] = []
    deletes: list[BatchReport] = []
    archivers = [
        threading.Thread(target=_archiver(engine, forward, COPY_ONLY, errors, tuning, copies)),
        threading.Thread(
            target=_archiver(engine, backward, DELETE_ONLY, errors, tuning, deletes, aim, read_back)
        ),
        threading.Thread(
            target=_archiver(engine, backward[::-1], ALL, errors, tuning, deletes, after=read_back)
        ),
    ]
    for t in writers:
        t.start()
    time.sleep(0.05)
    for t in archivers:
        t.start()
    for t in archivers:
        t.join(timeout=120)
    stop.set()
    for t in writers:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in archivers + writers), "a thread did not finish"

    assert errors == [] and dialer_errors == []
    live_after, archive_after = live(conn), archive(conn)
    deleted = [i for i in ids if i not in live_after]
    assert len(deleted) > LEADS // 2, "the batches should have archived most leads"
    assert len(last_write) > 100, "the dialer should have written while batches ran"

    def newest(i: int) -> tuple[bytes | None, bytes | None]:
        return last_write.get(i, (original[i][name], original[i][comments]))

    for i in ids:
        row = live_after.get(i) or archive_after[i]
        assert (row[name], row[comments]) == newest(i), f"lead {i} lost its newest data"
    # The race happened: deleting batches refused leads the dialer had written since their copy
    # (each refused lead is one it wrote), and read back right after the batch, refused leads
    # were live with the dialer's bytes while their copies held older ones.
    assert refused, "no deleting batch met a copy the dialer had made stale"
    assert refused <= set(written), "a lead the dialer never wrote was refused"
    assert stayed, f"none of the {len(refused)} refused leads was seen live with the newer data"
    # A final pass with no dialer running archives the rest: nothing is stuck.
    run_batch(conn, ids, ALL)
    assert live(conn) == {}
    assert len(archive(conn)) == LEADS
    assert all((row[name], row[comments]) == newest(i) for i, row in archive(conn).items()), (
        "the final pass lost the dialer's newest data"
    )
