"""What is judged after a fault scenario's run, and the figures it reports.

``Figures`` are the columns of docs/RELIABILITY.md. ``check_jobs``: every job ended, a failed one
with a clear error. ``check_invariant``: every lead's newest data is its live row or, once it is
no longer live, its archive row, byte for byte (read from the tables, ``testkit.checksum``).
``judge_outcomes``: every job and every lead by what the jobs reported and what the tables hold.
``count_http``: every 5xx the clients saw, unless the scenario expects a 503.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.records import FINAL, JobRecord
from testkit.checksum import Row, TableCheck, check_tables, describe_loss
from testkit.faults.stack import Answer, Stack


@dataclass
class Figures:
    """What one scenario saw: the columns of docs/RELIABILITY.md, and any problem found."""

    scenario: str
    runs: int = 0
    leads_checked: int = 0
    leads_lost: int = 0
    requests: int = 0
    five_xx: int = 0
    # Leads gone from vicidial_list whose archive row is their newest data, byte for byte.
    archived: int = 0
    # Leads still live at the end, by the reason their job reported (or "job failed: ...").
    left_live: dict[str, int] = field(default_factory=dict)
    # Jobs that ended `failed`, by error (type and detail).
    failed_jobs: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, other: Figures) -> None:
        """Fold another run of the same scenario into this one."""
        self.runs += other.runs
        self.leads_checked += other.leads_checked
        self.leads_lost += other.leads_lost
        self.requests += other.requests
        self.five_xx += other.five_xx
        self.archived += other.archived
        for reason, count in other.left_live.items():
            self.left_live[reason] = self.left_live.get(reason, 0) + count
        for reason, count in other.failed_jobs.items():
            self.failed_jobs[reason] = self.failed_jobs.get(reason, 0) + count
        self.problems += other.problems
        for name, value in other.notes.items():
            mine = self.notes.get(name)
            if isinstance(value, int | float) and isinstance(mine, int | float):
                self.notes[name] = mine + value
            elif isinstance(value, int | float) and mine is None:
                self.notes[name] = value
            else:
                self.notes[name] = value

    def summary(self) -> str:
        """The judged numbers in one line: what every run prints, and the total."""
        return (
            f"times run={self.runs} leads checked={self.leads_checked:,}"
            f" leads lost={self.leads_lost} archived={self.archived:,}"
            f" left live={by_reason(self.left_live)}"
            f" failed jobs={by_reason(self.failed_jobs)}"
            f" requests tried={self.requests:,} unexpected 5xx={self.five_xx}"
            f" problems={len(self.problems)}"
        )

    def __str__(self) -> str:
        return f"{self.scenario}: {self.summary()} | notes: {self.notes}" + "".join(
            f"\n  PROBLEM: {p[:2000]}" for p in self.problems
        )


def _fields(record: JobRecord | None) -> dict[str, str]:
    """A job record as its store keeps it; empty when there is none."""
    return {} if record is None else record.to_fields()


def by_reason(counts: dict[str, int]) -> str:
    """``3 (mismatch: 2; not_archived: 1)``; ``0`` when empty."""
    if not counts:
        return "0"
    total = sum(counts.values())
    return f"{total} (" + "; ".join(f"{r}: {n}" for r, n in sorted(counts.items())) + ")"


def check_jobs(
    stack: Stack, job_ids: list[str], statuses: dict[str, str], figures: Figures
) -> None:
    """Every job ended, and a failed one with an error that says what went wrong (whether it
    may fail at all is ``judge_outcomes``' question)."""
    stuck = [j for j, s in statuses.items() if s not in FINAL]
    if stuck:
        figures.problems.append(f"broker state: {broker_state(stack, stuck)}")
        figures.problems.append(
            f"{len(stuck)} jobs never ended, e.g. {stuck[:3]} {statuses[stuck[0]]!r}"
        )
    failed = [j for j, s in statuses.items() if s == "failed"]
    for job_id in failed:
        error = json.loads((_fields(stack.jobs.get(job_id))).get("error", "{}"))
        if not (error.get("type") and error.get("detail")):
            figures.problems.append(f"job {job_id} failed without a clear error: {error!r}")
    figures.notes["jobs"] = figures.notes.get("jobs", 0) + len(job_ids)


def broker_state(stack: Stack, stuck: list[str]) -> dict[str, Any]:
    """Where the stuck jobs' messages are in Redis (kombu's queue, unacked hash and mutex)."""
    r = stack.redis
    unacked = {k.decode(): v.decode() for k, v in r.hgetall("unacked").items()}  # type: ignore[union-attr]
    queued = [m.decode() for m in r.lrange("leadarchive", 0, -1)]  # type: ignore[union-attr]
    in_queue = [j for j in stuck if any(j in m for m in queued)]
    in_unacked = [j for j in stuck if any(j in body for body in unacked.values())]
    return {
        "now": time.time(),
        # A job in neither place has lost its message; the service's sweep re-sends only jobs
        # whose record is `queued`, so one left `running` by a killed batch stays so (issue 13).
        "lost (in neither the queue nor unacked)": {
            j: _fields(stack.jobs.get(j)).get("status")
            for j in stuck
            if j not in in_queue and j not in in_unacked
        },
        "queue length": len(queued),
        "stuck in queue": in_queue,
        "stuck unacked": {
            tag: r.zscore("unacked_index", tag)
            for tag, body in unacked.items()
            if any(j in body for j in stuck)
        },
        "unacked": len(unacked),
        "unacked_mutex ttl": r.ttl("unacked_mutex"),
        "records": {j: _fields(stack.jobs.get(j)) for j in stuck[:2]},
    }


def check_invariant(stack: Stack, expected: dict[int, Row], figures: Figures) -> TableCheck:
    """Read both tables back and count every lead whose newest data is in neither."""
    with stack.connect() as conn:
        result = check_tables(conn, expected)
        if result.lost:
            figures.problems.append(
                f"{len(result.lost)} leads lost: {describe_loss(conn, expected, result.lost)}"
            )
    figures.leads_checked += result.checked
    figures.leads_lost += len(result.lost)
    return result


# Why a job may report a lead it was asked to delete as still live (tasks.archive.DELETE_OUTCOMES).
LEFT_LIVE_REASONS = frozenset({"mismatch", "in_use", "not_archived", "id_reused"})
NOT_REQUESTED = "delete not requested"
JOB_FAILED = "its job failed"


@dataclass(frozen=True)
class Outcomes:
    """What a scenario allows beyond "every job succeeded and every lead was archived".

    ``failure``: the error (``"type: detail"``) a failed job may end with, matched as a regular
    expression; any other failure is a problem. ``left_live``: the reasons for which a lead may
    still be live at the end (a job's delete outcome, ``NOT_REQUESTED``, or ``JOB_FAILED`` for the
    leads of a job that failed as allowed). ``must_archive``: leads that must be archived whatever
    their jobs reported.
    """

    failure: str | None = None
    left_live: frozenset[str] = frozenset()
    must_archive: frozenset[int] = frozenset()


def judge_outcomes(
    jobs: dict[str, list[int]],
    views: dict[str, Any],
    table: TableCheck,
    outcomes: Outcomes,
    figures: Figures,
) -> dict[int, str]:
    """Judge every job and every lead by what the jobs reported and what the tables hold.

    ``views`` are the jobs as the API shows them (``GET /vicidial/leads/archive/{id}``); ``table``
    is the independent read-back (``check_invariant``), never the engine's own comparison. Every
    failed job counts by its error, and is a problem unless ``outcomes.failure`` allows it. Every
    lead of every job is either archived (gone from vicidial_list, its archive row its newest data
    byte for byte: the invariant) or still live with its newest data and a reason its jobs
    reported; a job that reported a lead deleted or not found while it is live, or left live while
    it is gone (and no other job deleted it), is a problem. Returns the live leads' reasons.
    """
    problems: dict[str, list[str]] = {}

    def problem(kind: str, example: str) -> None:
        problems.setdefault(kind, []).append(example)

    allowed_failure = re.compile(outcomes.failure) if outcomes.failure else None
    # lead -> (finished_at, job, its entry, whether the job asked for the delete)
    reports: dict[int, list[tuple[str, str, dict[str, Any], bool]]] = {}
    failed_leads: set[int] = set()
    for job_id, lead_ids in jobs.items():
        view = views.get(job_id)
        status = view.get("status") if isinstance(view, dict) else None
        if not isinstance(view, dict):
            problem("jobs the API could not show", f"{job_id}: {view!r}"[:200])
        elif status == "failed":
            error = view.get("error") or {}
            reason = f"{error.get('type')}: {error.get('detail')}"
            figures.failed_jobs[reason[:200]] = figures.failed_jobs.get(reason[:200], 0) + 1
            if allowed_failure is None or not allowed_failure.search(reason):
                problem("jobs failed", f"{job_id}: {reason[:200]}")
            failed_leads.update(lead_ids)
        elif status == "succeeded":
            leads = {int(e["lead_id"]): e for e in (view.get("result") or {}).get("leads", [])}
            if set(leads) != set(lead_ids):
                problem("reports that leave out leads or add others", job_id)
            delete = bool(view["request"]["delete_leads"])
            for lead_id, entry in leads.items():
                finished = str(view.get("finished_at") or "")
                reports.setdefault(lead_id, []).append((finished, job_id, entry, delete))
        elif status in FINAL:
            problem(f"jobs that ended {status}", job_id)
        # A job that never ended is check_jobs' problem.
    reasons: dict[int, str] = {}
    lost = set(table.lost)
    named = sorted({i for ids in jobs.values() for i in ids})
    figures.notes["leads in jobs"] = figures.notes.get("leads in jobs", 0) + len(named)
    for lead_id in named:
        entries = reports.get(lead_id, [])
        if lead_id not in table.live:
            if lead_id in table.archived and lead_id not in lost:
                figures.archived += 1
            said_live = [job for _, job, entry, _ in entries if entry.get("live")]
            deleted = any(entry.get("delete") == "deleted" for _, _, entry, _ in entries)
            if said_live and not deleted:
                problem("leads reported left live that are gone", f"{lead_id} by {said_live[0]}")
            continue
        for _, job_id, entry, _ in entries:
            if not entry.get("live"):
                problem(
                    "live leads a job reported gone",
                    f"{lead_id}: {job_id} says delete={entry.get('delete')} live=false",
                )
        deleting = sorted((f, str(e.get("delete"))) for f, _, e, d in entries if d)
        if deleting:
            reason = deleting[-1][1]  # what the job that ended last said
        elif entries:
            reason = NOT_REQUESTED
        elif lead_id in failed_leads:
            reason = JOB_FAILED
        else:
            reason = "no report (its job never ended)"
        reasons[lead_id] = reason
        figures.left_live[reason] = figures.left_live.get(reason, 0) + 1
        if reason in LEFT_LIVE_REASONS | {NOT_REQUESTED, JOB_FAILED}:
            if reason not in outcomes.left_live:
                problem(f"leads left live as {reason!r}", str(lead_id))
        else:
            problem("leads left live without a reason", f"{lead_id} ({reason})")
        if lead_id in outcomes.must_archive:
            problem("leads that had to be archived left live", f"{lead_id} ({reason})")
    for kind, examples in problems.items():
        figures.problems.append(f"{len(examples)} {kind}, e.g. {examples[:5]}")
    return reasons


def count_http(
    stack: Stack, figures: Figures, expected_503: Callable[[Answer], bool] | None = None
) -> None:
    """Fold the client's requests into the figures; 5xx are counted unless ``expected_503``."""
    if stack.http is None:
        return
    figures.requests += len(stack.http.answers)
    unexpected = [
        a for a in stack.http.five_xx if not (a.status == 503 and expected_503 and expected_503(a))
    ]
    figures.five_xx += len(unexpected)
    for answer in unexpected[:3]:
        figures.problems.append(
            f"{answer.method} answered {answer.status}: {str(answer.body)[:200]}"
        )
    unanswered = [a for a in stack.http.answers if a.status is None]
    if unanswered:
        figures.problems.append(f"{len(unanswered)} requests got no answer at all")
