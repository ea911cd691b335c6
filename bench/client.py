"""The job API as the benchmarks call it: submit a 500-lead archive job and poll its status URL,
over the lean HTTP/1.1 client of ``testkit.http``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tasks.records import FINAL
from testkit.http import Answer, AsyncRawHTTP, RawHTTP

__all__ = [
    "ARCHIVE_PATH",
    "Answer",
    "AsyncRawHTTP",
    "RawHTTP",
    "archive_body",
    "poll_job",
    "submit",
]

ARCHIVE_PATH = "/vicidial/leads/archive"


def archive_body(ids: list[int]) -> dict[str, Any]:
    return {"insert_leads": True, "update_leads": True, "delete_leads": True, "lead_ids": ids}


def poll_job(
    client: RawHTTP,
    url: str,
    interval: float,
    timeout: float = 60.0,
    on_poll: Callable[[float, dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], float, int]:
    """Poll ``url`` every ``interval`` s (on a fixed schedule) until the job ends: its body, the
    perf_counter, polls. ``on_poll`` is given the seconds since the start and every poll's body
    (the last one's included)."""
    start = time.perf_counter()
    deadline = start + timeout
    tick = start
    polls = 0
    while True:
        tick += interval
        delay = tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        answer = client.request("GET", url)
        seen = time.perf_counter()
        polls += 1
        if answer.status != 200:
            raise RuntimeError(f"GET {url} answered {answer.status}: {answer.body[:300]!r}")
        body: dict[str, Any] = answer.json()
        if on_poll is not None:
            on_poll(seen - start, body)
        if body["status"] in FINAL:
            return body, seen, polls
        if seen > deadline:
            raise TimeoutError(f"job {url} still {body['status']} after {timeout} s")


def submit(client: RawHTTP, ids: list[int]) -> str:
    """POST a job; its status URL."""
    answer = client.request("POST", ARCHIVE_PATH, json.dumps(archive_body(ids)).encode())
    if answer.status != 202:
        raise RuntimeError(f"POST answered {answer.status}: {answer.body[:300]!r}")
    return answer.headers["location"]
