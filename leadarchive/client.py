"""``leadarchive submit``: send many lead IDs to the API in batches, poll them, sum them up.

Each batch carries an Idempotency-Key derived from the run's input, so running the same command
again after a network error (or a crash) finds the jobs it already created instead of creating
new ones.

Batches go out in a sliding window: at most ``window`` of the run's jobs are unfinished at any
time, so a long run never fills the server's queue (or its per-key cap on unfinished jobs). A
``429`` or ``503`` is waited out as its ``Retry-After`` says, for up to ``max_wait`` seconds; a
``503`` for office hours is not: whether to wait hours is the operator's call.

``--dearchive`` sends the IDs to the restore endpoint instead (``Submitter(path=DEARCHIVE_PATH)``),
with the same batching, window and waiting; its summary counts each lead's outcome under
``restore``, and names the leads that are not live at the end (``not_restored``: in neither table,
or of a list the key may not touch).

``leadarchive select`` (``Selector``, ``select``) sends filters instead of IDs: one job on the
server walks the selection batch by batch, and the client follows its ``progress`` at a client's
pace. The first Ctrl-C asks the job to stop after its current batch (one ``DELETE``) and keeps
following it to its end; a second one stops waiting. Both clients talk to the API through
``ApiClient``: one key, one HTTP session, network errors and busy answers (429/503) retried the
same way.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO

import httpx2 as httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ARCHIVE_PATH = "/vicidial/leads/archive"
DEARCHIVE_PATH = "/vicidial/leads/dearchive"
SELECTION_PATH = "/vicidial/leads/archive/selection"
# The request's filters, as the API names them (at least one is required).
SELECTION_FILTERS = (
    "list_ids",
    "campaign_ids",
    "statuses",
    "entry_date_before",
    "last_call_before",
)
FINAL = ("succeeded", "failed", "cancelled")
# Leads the run wanted deleted but that stay in vicidial_list.
LEFT_LIVE = ("not_archived", "mismatch", "in_use", "id_reused")

# Jobs of one run unfinished at once: enough to keep a few workers busy, far below the server's
# default cap on a key's unfinished jobs.
DEFAULT_WINDOW = 8
# Answers worth asking again after a while, and how often a network error is tried again.
_BUSY = (429, 502, 503, 504)
_TRANSPORT_ATTEMPTS = 6

EXIT_OK = 0
# Leads left undeleted by an archive run, or not live at the end of a restore run.
EXIT_LEFT_LIVE = 1
EXIT_FAILED = 2
# The shell's code for a command stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

# A selection job's status is asked for about once a second (a client's pace); a deferred one
# waits for office hours to end, and is asked less often.
SELECTION_POLL = 1.0
DEFERRED_POLL = 10.0
# Leads left live shown under the summary (the JSON status lists up to 1,000).
LEFT_LIVE_SHOWN = 10


class SubmitError(Exception):
    """The API refused a request or could not be reached."""


class StoppedWaiting(Exception):
    """A second Ctrl-C: the client stopped following a selection job (``asked``: after it had
    asked the job to stop)."""

    def __init__(self, status_url: str, *, asked: bool) -> None:
        self.status_url = status_url
        self.asked = asked
        if asked:
            said = "it was asked to stop after its current batch"
        else:
            said = "it was not asked to stop yet (DELETE its status URL to stop it)"
        super().__init__(f"stopped waiting for the job; {said}: {status_url}")


class BatchTooLarge(SubmitError):
    """The server refused a batch for its size, and said how many lead IDs this key may send."""

    def __init__(self, limit: int, detail: str) -> None:
        self.limit = limit
        super().__init__(f"batch refused (422): {detail}")


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


def _left_live(lead: dict[str, Any]) -> bool:
    """A lead the run asked to delete that is (or, in a dry run, would stay) in vicidial_list:
    kept by the guard, or of a list the key may not touch (``forbidden``) while live."""
    outcome = lead.get("delete")
    return outcome in LEFT_LIVE or (outcome == "forbidden" and bool(lead.get("live")))


def _not_restored(lead: dict[str, Any]) -> bool:
    """A lead a restore run asked for that is not (or, in a dry run, would not be) live at the
    end: in neither table (``not_archived``), or of a list the key may not touch while archived
    (``forbidden``)."""
    return lead.get("restore") in ("not_archived", "forbidden") and not lead.get("live")


@dataclass
class Summary:
    """What a run did, totalled over its jobs."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)
    left_live: list[int] = field(default_factory=list)
    not_restored: list[int] = field(default_factory=list)

    def add(self, job: dict[str, Any]) -> None:
        self.jobs.append(job)
        if job["status"] != "succeeded":
            self.failed.append(job)
            return
        for action, outcomes in job["result"]["counts"].items():
            self.counts.setdefault(action, Counter()).update(outcomes)
        leads = job["result"]["leads"]
        self.left_live += [lead["lead_id"] for lead in leads if _left_live(lead)]
        self.not_restored += [lead["lead_id"] for lead in leads if _not_restored(lead)]

    @property
    def dry_run(self) -> bool:
        """The run's jobs were dry runs: they changed nothing."""
        return any(job.get("request", {}).get("dry_run") for job in self.jobs)

    def exit_code(self) -> int:
        if self.failed:
            return EXIT_FAILED
        return EXIT_LEFT_LIVE if self.left_live or self.not_restored else EXIT_OK

    def as_json(self) -> dict[str, Any]:
        return {
            "jobs": [{"job_id": j["job_id"], "status": j["status"]} for j in self.jobs],
            "counts": {a: dict(c) for a, c in self.counts.items()},
            "failed": [
                {"job_id": j["job_id"], "status": j["status"], "error": j.get("error")}
                for j in self.failed
            ],
            "left_live": sorted(self.left_live),
            "not_restored": sorted(self.not_restored),
            "dry_run": self.dry_run,
            "exit_code": self.exit_code(),
        }


class ApiClient:
    """One API, one key: requests with the key's header, network errors and busy answers
    (429/503) asked again; a job's status."""

    def __init__(
        self,
        http: httpx.Client,
        key: str,
        *,
        poll_interval: float = 0.5,
        max_wait: float = 600.0,
    ) -> None:
        self.http = http
        self.headers = {"Authorization": f"Key={key}"}
        self.poll_interval = poll_interval
        self.max_wait = max_wait

    def status(self, status_url: str) -> dict[str, Any]:
        """The job's status, as ``GET <status_url>`` answers it."""
        answer = self._call("GET", status_url)
        if answer.status_code != 200:
            raise SubmitError(f"polling failed ({answer.status_code}): {_detail(answer)}")
        job: dict[str, Any] = answer.json()
        return job

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, asked again after a network error (a few times) or a busy answer (as
        its Retry-After says, until ``max_wait`` has passed); the last answer otherwise."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        deadline = time.monotonic() + self.max_wait
        delay = 0.5
        failures = 0
        while True:
            try:
                answer = self.http.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                failures += 1
                if failures == _TRANSPORT_ATTEMPTS:
                    raise SubmitError(
                        f"cannot reach the API at {self.http.base_url}: {exc}"
                    ) from exc
                wait = delay
            else:
                if answer.status_code not in _BUSY or _office_hours(answer):
                    return answer
                wait = max(delay, _retry_after(answer))
                if time.monotonic() + wait > deadline:
                    return answer
            time.sleep(wait)
            delay = min(delay * 2, 30)


class Submitter(ApiClient):
    """Submits batches to one API with one key, and polls them."""

    def __init__(
        self,
        http: httpx.Client,
        key: str,
        *,
        poll_interval: float = 0.5,
        max_wait: float = 600.0,
        path: str = ARCHIVE_PATH,
    ) -> None:
        super().__init__(http, key, poll_interval=poll_interval, max_wait=max_wait)
        # Where batches go: the archive endpoint, or the restore one (DEARCHIVE_PATH).
        self.path = path

    def server_limit(self) -> int:
        """The server's per-request limit, from its OpenAPI document."""
        spec = self._call("GET", "/openapi.json").json()
        post = spec["paths"][self.path]["post"]
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        return int(schema["properties"]["lead_ids"]["maxItems"])

    def submit(self, body: dict[str, Any], idempotency_key: str) -> str:
        """Submit one batch; the status URL. Retries network errors with the same key.

        Raises ``BatchTooLarge`` when the server says how many lead IDs this key may send (a
        scoped key's own limit is below the server's)."""
        answer = self._call(
            "POST", self.path, json=body, headers={"Idempotency-Key": idempotency_key}
        )
        limit = _lead_limit(answer)
        if limit is not None:
            raise BatchTooLarge(limit, _detail(answer))
        if answer.status_code != 202:
            raise SubmitError(f"batch refused ({answer.status_code}): {_detail(answer)}")
        return str(answer.headers["location"])

    def wait(self, status_url: str) -> dict[str, Any]:
        """Poll until the job ends; its final status."""
        while True:
            job = self.status(status_url)
            if job["status"] in FINAL:
                return job
            time.sleep(self.poll_interval)


class Selector(ApiClient):
    """Starts archive-by-selection jobs with one key, follows them, and asks them to stop."""

    def __init__(
        self,
        http: httpx.Client,
        key: str,
        *,
        poll_interval: float = SELECTION_POLL,
        max_wait: float = 600.0,
    ) -> None:
        super().__init__(http, key, poll_interval=poll_interval, max_wait=max_wait)

    def start(self, body: dict[str, Any]) -> str:
        """Submit the selection; the job's status URL."""
        # A key of this request alone: a network error's retry finds the job it may have made,
        # and running the command again (tomorrow's selection) starts a new job.
        key = secrets.token_urlsafe(16)
        answer = self._call("POST", SELECTION_PATH, json=body, headers={"Idempotency-Key": key})
        if answer.status_code != 202:
            raise SubmitError(f"selection refused ({answer.status_code}): {_detail(answer)}")
        return str(answer.headers["location"])

    def cancel(self, status_url: str) -> str:
        """Ask the job to stop (``DELETE``); what the API answered, in words."""
        answer = self._call("DELETE", status_url)
        if answer.status_code == 202:
            if (answer.json().get("progress") or {}).get("waiting"):
                # Between two batches, waiting for a throttle: it stops at its next check.
                return "the job stops at its next check (it was waiting, not in a batch)"
            return "the job stops after its current batch"
        if answer.status_code == 200:
            return "the job was cancelled (no batch was running)"
        return f"the job could not be cancelled ({answer.status_code}): {_detail(answer)}"


def _lead_limit(answer: httpx.Response) -> int | None:
    """The lead ID limit a 422 ``too-many-lead-ids`` answer gives, if this is one."""
    if answer.status_code != 422:
        return None
    try:
        body = answer.json()
    except ValueError:
        return None
    limit = body.get("limit") if isinstance(body, dict) else None
    if str(body.get("type", "")).endswith(":too-many-lead-ids") and isinstance(limit, int):
        return limit
    return None


def _office_hours(answer: httpx.Response) -> bool:
    return answer.status_code == 503 and "office-hours" in answer.text


def _retry_after(answer: httpx.Response) -> float:
    value = answer.headers.get("retry-after", "")
    return float(value) if value.isdigit() else 0.0


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
    window: int = DEFAULT_WINDOW,
    salt: str = "",
    console: Console | None = None,
) -> Summary:
    """Submit every batch, at most ``window`` unfinished at once, showing progress on
    ``console``; the jobs are summed up in the order of their batches."""
    if window < 1:
        raise ValueError("window must be at least 1")
    console = console or Console(stderr=True)
    size = batch_size or submitter.server_limit()
    # A restore run's keys differ from an archive run's on the same input.
    run = run_key(ids, flags, salt if submitter.path == ARCHIVE_PATH else f"{submitter.path}{salt}")
    parts = list(batches(ids, size))
    first: str | None = None
    if parts:
        try:
            first = submitter.submit({**flags, "lead_ids": parts[0]}, f"{run}-0")
        except BatchTooLarge as exc:
            # A key limited below the server's limit: batches of its own size. The refused
            # batch wrote nothing, so the run's batches are numbered afresh.
            if batch_size is not None or exc.limit >= size or exc.limit < 1:
                raise
            parts = list(batches(ids, exc.limit))
            first = submitter.submit({**flags, "lead_ids": parts[0]}, f"{run}-0")
    summary = Summary()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        sending = progress.add_task("submitted", total=len(parts))
        done = progress.add_task("finished ", total=len(parts))
        unfinished: deque[str] = deque()
        if first is not None:
            unfinished.append(first)
            progress.advance(sending)
        for number, part in enumerate(parts[1:], start=1):
            if len(unfinished) == window:
                summary.add(submitter.wait(unfinished.popleft()))
                progress.advance(done)
            unfinished.append(submitter.submit({**flags, "lead_ids": part}, f"{run}-{number}"))
            progress.advance(sending)
        while unfinished:
            summary.add(submitter.wait(unfinished.popleft()))
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
    if summary.dry_run:
        console.print("dry run: nothing was changed, the counts say what a run would do")
    for job in summary.failed:
        console.print(f"[red]job {job['job_id']} {job['status']}[/red]: {job.get('error')}")
    if summary.left_live:
        verb = "would not be" if summary.dry_run else "were not"
        console.print(f"{len(summary.left_live)} leads {verb} deleted (see --json for IDs)")
    if summary.not_restored:
        verb = "would not be" if summary.dry_run else "are not"
        console.print(
            f"{len(summary.not_restored)} leads {verb} live: not archived, or of a list"
            " this key may not touch (see --json for IDs)"
        )


@contextmanager
def ctrl_c_stops(stop: threading.Event) -> Iterator[None]:
    """While inside: the first Ctrl-C sets ``stop``, the second raises ``KeyboardInterrupt``.
    Outside the main thread (where no signal arrives) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def describe(job: dict[str, Any]) -> str:
    """What a selection job is doing, in a few words: the progress bar's description."""
    status = job["status"]
    if status == "deferred":
        return f"deferred for office hours until {job.get('not_before', '?')}"
    if status != "running":
        return str(status)
    if job.get("cancel_requested"):
        return "stopping after its current batch"
    waiting = (job.get("progress") or {}).get("waiting")
    if waiting:
        return f"waiting: {waiting}"
    return "dry run" if job["request"].get("dry_run") else "archiving"


def follow(
    selector: Selector,
    status_url: str,
    *,
    stop: threading.Event | None = None,
    console: Console | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Poll a selection job until it ends, its progress on a bar (total: the leads selected,
    done: those walked); once ``stop`` is set, ask the job to stop (one ``DELETE``) and go on
    polling. The job's final status; ``StoppedWaiting`` on a ``KeyboardInterrupt``."""
    console = console or Console(stderr=True)
    stop = stop or threading.Event()
    asked = False
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not show_progress) as progress:
        bar = progress.add_task("queued", total=None)
        try:
            while True:
                job = selector.status(status_url)
                if stop.is_set() and not asked and job["status"] not in FINAL:
                    said = selector.cancel(status_url)
                    asked = True
                    progress.console.print(
                        f"Ctrl-C: {said}; following it to its end (Ctrl-C again to stop waiting)",
                        highlight=False,
                        markup=False,
                        soft_wrap=True,
                    )
                    job = selector.status(status_url)
                done = job.get("result") or job.get("progress") or {}
                progress.update(
                    bar,
                    description=describe(job),
                    total=done.get("selected"),
                    completed=done.get("done", 0),
                )
                if job["status"] in FINAL:
                    return job
                pause = DEFERRED_POLL if job["status"] == "deferred" else selector.poll_interval
                _sleep(pause, stop if not asked else None)
        except KeyboardInterrupt:
            raise StoppedWaiting(status_url, asked=asked) from None


def _sleep(seconds: float, stop: threading.Event | None) -> None:
    """Sleep ``seconds``, or less when ``stop`` gets set (a Ctrl-C is answered at once)."""
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        if stop is not None and stop.is_set():
            return
        time.sleep(min(left, 0.1))


def select(
    selector: Selector,
    body: dict[str, Any],
    *,
    console: Console | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Start a selection job and follow it to its end (Ctrl-C asks it to stop, a second one
    raises ``StoppedWaiting``); its final status."""
    console = console or Console(stderr=True)
    status_url = selector.start(body)
    stop = threading.Event()
    where = str(selector.http.base_url.join(status_url))
    try:
        with ctrl_c_stops(stop):
            console.print(f"selection job: {where}", highlight=False, soft_wrap=True)
            return follow(
                selector, status_url, stop=stop, console=console, show_progress=show_progress
            )
    except SubmitError as exc:
        raise SubmitError(f"{exc} (the job may still run: {where})") from exc


def selection_exit_code(job: dict[str, Any]) -> int:
    """``submit``'s codes: 0 done, 1 leads left undeleted, 2 failed (or cancelled)."""
    if job["status"] != "succeeded":
        return EXIT_FAILED
    return EXIT_LEFT_LIVE if (job.get("result") or {}).get("left_live_total") else EXIT_OK


def print_selection(job: dict[str, Any], out: TextIO | None = None) -> None:
    """A selection job's summary: outcomes per action, how far it went, what stayed live, and
    for a dry run the selected leads' sample."""
    console = Console(file=out, soft_wrap=True)
    result: dict[str, Any] = job.get("result") or {}
    dry = bool(job["request"].get("dry_run"))
    title = f"selection {job['job_id']}: {job['status']}"
    table = Table(title=title + (" (dry run: nothing was changed)" if dry else ""))
    table.add_column("action")
    table.add_column("outcome")
    table.add_column("leads", justify="right")
    for action, outcomes in result.get("counts", {}).items():
        for outcome, count in outcomes.items():
            table.add_row(action, outcome, str(count))
    console.print(table)
    if result:
        console.print(
            f"{result['selected']} leads selected, {result['done']} walked"
            f" (up to lead ID {result['last_lead_id']})",
            highlight=False,
        )
    if result.get("sample"):
        sample = ", ".join(str(lead_id) for lead_id in result["sample"])
        console.print(f"sample of the selected lead IDs: {sample}", highlight=False)
    left = result.get("left_live_total", 0)
    if left:
        verb = "would be left" if dry else "were left"
        shown = result["left_live"][:LEFT_LIVE_SHOWN]
        console.print(
            f"{left} leads {verb} in vicidial_list (not deleted); the first {len(shown)}:",
            highlight=False,
        )
        leads = Table("lead_id", "delete", "held by")
        for lead in shown:
            leads.add_row(str(lead["lead_id"]), str(lead.get("delete")), lead.get("held_by") or "")
        console.print(leads)
        if left > len(shown):
            console.print("--json lists up to 1,000 of them")
    if job["status"] == "cancelled":
        last = result.get("last_lead_id")
        where = f" after lead ID {last}" if last else ""
        console.print(f"[yellow]cancelled[/yellow]: no lead{where} was touched", highlight=False)
    if job["status"] == "failed":
        error = job.get("error") or {}
        console.print(
            f"[red]failed[/red]: {escape(str(error.get('type')))}:"
            f" {escape(str(error.get('detail')))}",
            highlight=False,
        )
