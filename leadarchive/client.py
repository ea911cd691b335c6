"""``leadarchive submit``: send many lead IDs to the API in batches, poll them, sum them up.

Each batch carries an Idempotency-Key derived from the run's input, so running the same command
again after a network error (or a crash) finds the jobs it already created instead of creating
new ones.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx2 as httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

ARCHIVE_PATH = "/vicidial/leads/archive"
FINAL = ("succeeded", "failed", "cancelled")
# Leads the run wanted deleted but that stay in vicidial_list.
LEFT_LIVE = ("not_archived", "mismatch", "in_use", "id_reused")

EXIT_OK = 0
EXIT_LEFT_LIVE = 1
EXIT_FAILED = 2


class SubmitError(Exception):
    """The API refused a batch or could not be reached."""


def read_lead_ids(sources: Iterable[str]) -> list[int]:
    """Lead IDs from text: integers separated by whitespace or commas; anything else refused."""
    ids: list[int] = []
    for number, line in enumerate(sources, start=1):
        for token in re.split(r"[\s,]+", line.strip()):
            if not token:
                continue
            if not token.isdigit():
                raise ValueError(f"line {number}: {token!r} is not a lead ID")
            ids.append(int(token))
    return ids


def batches(ids: list[int], size: int) -> Iterator[list[int]]:
    """``ids`` cut into lists of at most ``size``."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


@dataclass
class Summary:
    """What a run did, totalled over its jobs."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)
    left_live: list[int] = field(default_factory=list)

    def add(self, job: dict[str, Any]) -> None:
        self.jobs.append(job)
        if job["status"] != "succeeded":
            self.failed.append(job)
            return
        for action, outcomes in job["result"]["counts"].items():
            self.counts.setdefault(action, Counter()).update(outcomes)
        self.left_live += [
            lead["lead_id"] for lead in job["result"]["leads"] if lead.get("delete") in LEFT_LIVE
        ]

    def exit_code(self) -> int:
        if self.failed:
            return EXIT_FAILED
        return EXIT_LEFT_LIVE if self.left_live else EXIT_OK

    def as_json(self) -> dict[str, Any]:
        return {
            "jobs": [{"job_id": j["job_id"], "status": j["status"]} for j in self.jobs],
            "counts": {a: dict(c) for a, c in self.counts.items()},
            "failed": [
                {"job_id": j["job_id"], "status": j["status"], "error": j.get("error")}
                for j in self.failed
            ],
            "left_live": sorted(self.left_live),
            "exit_code": self.exit_code(),
        }


class Submitter:
    """Submits batches to one API with one key, and polls them."""

    def __init__(self, http: httpx.Client, key: str, *, poll_interval: float = 0.5) -> None:
        self.http = http
        self.headers = {"Authorization": f"Key={key}"}
        self.poll_interval = poll_interval

    def server_limit(self) -> int:
        """The server's per-request limit, from its OpenAPI document."""
        spec = self._call("GET", "/openapi.json").json()
        post = spec["paths"][ARCHIVE_PATH]["post"]
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        return int(schema["properties"]["lead_ids"]["maxItems"])

    def submit(self, body: dict[str, Any], idempotency_key: str) -> str:
        """Submit one batch; the status URL. Retries network errors with the same key."""
        answer = self._call(
            "POST", ARCHIVE_PATH, json=body, headers={"Idempotency-Key": idempotency_key}
        )
        if answer.status_code != 202:
            raise SubmitError(f"batch refused ({answer.status_code}): {_detail(answer)}")
        return str(answer.headers["location"])

    def wait(self, status_url: str) -> dict[str, Any]:
        """Poll until the job ends; its final status."""
        while True:
            answer = self._call("GET", status_url)
            if answer.status_code != 200:
                raise SubmitError(f"polling failed ({answer.status_code}): {_detail(answer)}")
            job: dict[str, Any] = answer.json()
            if job["status"] in FINAL:
                return job
            time.sleep(self.poll_interval)

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        delay = 0.5
        for attempt in range(6):
            try:
                answer = self.http.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if attempt == 5:
                    raise SubmitError(f"cannot reach the API: {exc}") from exc
            else:
                if answer.status_code not in (429, 502, 503, 504):
                    return answer
                if attempt == 5:
                    return answer
                retry_after = answer.headers.get("retry-after", "")
                # Inside office hours the wait can be hours: that is for the operator to decide.
                if answer.status_code == 503 and "office-hours" in answer.text:
                    return answer
                if retry_after.isdigit():
                    delay = max(delay, float(retry_after))
            time.sleep(delay)
            delay = min(delay * 2, 30)
        raise AssertionError("unreachable")  # pragma: no cover


def _detail(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:200]
    return str(body.get("detail") or body)


def run_key(ids: list[int], flags: dict[str, bool], salt: str = "") -> str:
    """A digest of the whole run's input: the same input gives the same idempotency keys."""
    material = json.dumps({"ids": ids, "flags": flags, "salt": salt}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:24]


def submit_all(
    submitter: Submitter,
    ids: list[int],
    flags: dict[str, bool],
    *,
    batch_size: int | None = None,
    salt: str = "",
    console: Console | None = None,
) -> Summary:
    """Submit every batch, then poll each to its end, showing progress on ``console``."""
    console = console or Console(stderr=True)
    size = batch_size or submitter.server_limit()
    parts = list(batches(ids, size))
    run = run_key(ids, flags, salt)
    summary = Summary()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        sending = progress.add_task("submitted", total=len(parts))
        done = progress.add_task("finished ", total=len(parts))
        urls = []
        for number, part in enumerate(parts):
            urls.append(submitter.submit({**flags, "lead_ids": part}, f"{run}-{number}"))
            progress.advance(sending)
        for url in urls:
            summary.add(submitter.wait(url))
            progress.advance(done)
    return summary


def print_summary(summary: Summary, out: TextIO | None = None) -> None:
    """A table of outcomes per action, and what needs attention."""
    console = Console(file=out)
    table = Table(title=f"{len(summary.jobs)} jobs")
    table.add_column("action")
    table.add_column("outcome")
    table.add_column("leads", justify="right")
    for action, outcomes in summary.counts.items():
        for outcome, count in outcomes.items():
            table.add_row(action, outcome, str(count))
    console.print(table)
    for job in summary.failed:
        console.print(f"[red]job {job['job_id']} {job['status']}[/red]: {job.get('error')}")
    if summary.left_live:
        console.print(f"{len(summary.left_live)} leads were not deleted (see --json for IDs)")
