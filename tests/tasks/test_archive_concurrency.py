"""Concurrency: a simulated dialer writes leads while two batches on overlapping IDs archive them.

No lead whose live data differed from its archive copy at delete time may be deleted: for every
deleted lead, the archive must hold the last values the dialer successfully wrote to it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine

from tasks.archive import Actions, Tuning, run_batch
from tasks.seed import insert_leads, lead_rows
from tests.helpers import archive, column, live

LEADS = 600
ALL = Actions(insert=True, update=True, delete=True)


def _dialer(
    engine: Engine,
    leads: list[int],
    last_write: dict[int, tuple[bytes, bytes]],
    stop: threading.Event,
    seed: int,
) -> None:
    """Update random leads of its own until stopped, recording each write that found its row.

    Most writes change only the case or the trailing space of first_name: different bytes that
    the collation calls equal. The rest change comments.
    """
    rng = random.Random(seed)
    with engine.connect() as c:
        seq = 0
        while not stop.is_set():
            lead = rng.choice(leads)
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


def _archiver(
    engine: Engine,
    batches: list[list[int]],
    actions: Actions,
    errors: list[BaseException],
    tuning: Tuning,
) -> Callable[[], None]:
    def run() -> None:
        try:
            with engine.connect() as c:
                for _ in range(3):
                    for ids in batches:
                        run_batch(c, ids, actions, tuning)
        except BaseException as exc:  # pragma: no cover - reported by the test
            errors.append(exc)

    return run


def test_no_lead_is_deleted_while_its_live_data_differs_from_the_copy(
    engine: Engine, conn: Connection
) -> None:
    insert_leads(conn, lead_rows(LEADS, first_lead_id=1, seed=7))
    original = live(conn)
    ids = list(range(1, LEADS + 1))
    last_write: dict[int, tuple[bytes, bytes]] = {}
    stop = threading.Event()
    errors: list[BaseException] = []
    tuning = Tuning(first_chunk=10, max_chunk=40)
    # Two batch streams over the same leads, in different orders, with different batch sizes.
    forward = [ids[i : i + 50] for i in range(0, LEADS, 50)]
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    backward = [shuffled[i : i + 75] for i in range(0, LEADS, 75)]
    writers = [
        threading.Thread(target=_dialer, args=(engine, ids[k::2], last_write, stop, k))
        for k in range(2)
    ]
    # One stream only copies, the other only deletes: the deleting batches meet archive copies
    # that the dialer has made stale since, which the guard alone must refuse.
    copy_only = Actions(insert=True, update=False, delete=False)
    delete_only = Actions(insert=False, update=False, delete=True)
    archivers = [
        threading.Thread(target=_archiver(engine, forward, copy_only, errors, tuning)),
        threading.Thread(target=_archiver(engine, backward, delete_only, errors, tuning)),
        threading.Thread(target=_archiver(engine, backward[::-1], ALL, errors, tuning)),
    ]
    for t in writers:
        t.start()
    time.sleep(0.05)
    for t in archivers:
        t.start()
    for t in archivers:
        t.join(timeout=240)
    stop.set()
    for t in writers:
        t.join(timeout=30)

    assert errors == []
    live_after, archive_after = live(conn), archive(conn)
    deleted = [i for i in ids if i not in live_after]
    assert len(deleted) > LEADS // 2, "the batches should have archived most leads"
    assert len(last_write) > 100, "the dialer should have written while batches ran"
    name, comments = column("first_name"), column("comments")
    for i in ids:
        if i in live_after:
            continue
        copy = archive_after[i]
        expected = last_write.get(i, (original[i][name], original[i][comments]))
        assert (copy[name], copy[comments]) == expected, f"lead {i} lost its newest data"
    # A final pass with no dialer running archives the rest: nothing is stuck.
    run_batch(conn, ids, ALL)
    assert live(conn) == {}
    assert len(archive(conn)) == LEADS
