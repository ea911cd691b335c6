"""A simulated Vicidial dialer: threads writing live leads while they are archived, each write
recorded, so that every lead's newest data is known at the end.

Like Vicidial's dialer, it writes live leads all the time: first_name (often only its case or a
trailing space, bytes the collation calls equal), comments and modify_date. ``Dialer.expected``
turns the writes into each lead's newest row, for ``testkit.checksum.check_tables``.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pymysql
from pymysql.constants import CLIENT

from tasks.archive import SQL_MODE
from testkit.checksum import Row, column
from testkit.servers import mysql_connect

DIALER_NAMES = ("bob", "Bob", "BOB", "bob ")
_TIMESTAMP_BASE = datetime(2030, 1, 1)


@dataclass
class Write:
    """One dialer UPDATE that found its row: the values it stored, and when."""

    lead_id: int
    first_name: str
    comments: str
    modify_date: str
    at: float


class Dialer:
    """Threads, one connection each, updating random leads of their own at a combined ``rate``
    in the database of ``database_url``.

    Like Vicidial's dialer, it writes live leads all the time: first_name (often only its case or
    a trailing space, bytes the collation calls equal), comments, and modify_date. Each thread
    owns every ``threads``-th lead, so the order of writes to one lead is the order one thread
    made them, and the last write that found its row is the lead's newest data. A lead whose
    UPDATE finds no row has been archived; the thread stops picking it.
    """

    def __init__(
        self,
        database_url: str,
        lead_ids: list[int],
        *,
        threads: int = 16,
        rate: float = 250,
        seed: int = 0,
    ) -> None:
        self.database_url = database_url
        self.threads = threads
        self.rate = rate
        self.seed = seed
        self.owned = [lead_ids[k::threads] for k in range(threads)]
        self.writes: list[list[Write]] = [[] for _ in range(threads)]
        self.missed = [0] * threads
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = self.stopped = 0.0

    def __enter__(self) -> Dialer:
        self.started = time.monotonic()
        for k in range(self.threads):
            thread = threading.Thread(target=self._run, args=(k,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.stopped = time.monotonic()

    @property
    def alive(self) -> bool:
        """Whether a thread is still running (after ``__exit__``: it did not stop in time)."""
        return any(thread.is_alive() for thread in self._threads)

    def _connect(self) -> pymysql.Connection[Any]:
        # rowcount = rows found, not rows changed: a write of the same values still counts.
        conn = mysql_connect(self.database_url, client_flag=CLIENT.FOUND_ROWS)
        with conn.cursor() as cursor:
            cursor.execute(f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00'")
        return conn

    def _run(self, k: int) -> None:
        rng = random.Random(self.seed * 1000 + k)
        leads = list(self.owned[k])
        period = self.threads / self.rate
        next_at = time.monotonic()
        seq = 0
        try:
            conn = self._connect()
            with conn.cursor() as cursor:
                while leads and not self._stop.is_set():
                    next_at += period
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    elif delay < -1:
                        next_at = time.monotonic()  # fell behind: no burst to catch up
                    seq += 1
                    lead_id = rng.choice(leads)
                    name = rng.choice(DIALER_NAMES)
                    comments = f"dialer {k}-{seq}"
                    stamp = _TIMESTAMP_BASE + timedelta(seconds=k * 1_000_000 + seq)
                    modify_date = stamp.strftime("%Y-%m-%d %H:%M:%S")
                    found = cursor.execute(
                        "UPDATE vicidial_list SET first_name = %s, comments = %s, modify_date = %s"
                        " WHERE lead_id = %s",
                        (name, comments, modify_date, lead_id),
                    )
                    if found:
                        self.writes[k].append(
                            Write(lead_id, name, comments, modify_date, time.monotonic())
                        )
                    else:
                        self.missed[k] += 1
                        leads.remove(lead_id)
            conn.close()
        except BaseException as exc:  # reported by the scenario
            self.errors.append(exc)

    @property
    def applied(self) -> int:
        return sum(len(w) for w in self.writes)

    def rate_while(self, start: float, end: float) -> float:
        """Writes per second that found their row between ``start`` and ``end``."""
        count = sum(1 for ws in self.writes for w in ws if start <= w.at <= end)
        return count / max(end - start, 1e-9)

    def expected(self, original: dict[int, Row]) -> dict[int, Row]:
        """Every lead's newest data: its original row with its last write applied."""
        newest: dict[int, Write] = {}
        for writes in self.writes:
            for write in writes:
                newest[write.lead_id] = write
        name, comments, modified = column("first_name"), column("comments"), column("modify_date")
        expected = dict(original)
        for lead_id, write in newest.items():
            row = list(original[lead_id])
            row[name] = write.first_name.encode()
            row[comments] = write.comments.encode()
            row[modified] = write.modify_date.encode()
            expected[lead_id] = tuple(row)
        return expected
