"""Archive by selection, the job: walk the selection batch by batch, each batch a per-ID batch.

``tasks.selection`` says which leads; this module runs the job that archives them, one batch of
the configured limit at a time, in lead_id order, each batch exactly ``tasks.archive.run_batch``
(the same guarded statements, the same outcomes). The run that holds the job (``tasks.lifecycle``)
is its ``Steward``: it saves the job's progress, and says when the job must give itself back.

Invariants:

- the checkpoint (``SelectionReport.last_lead_id``, with the counts so far) is saved after every
  batch, and before it with the batch's lead IDs (``in_flight``), while the run still holds the
  job; a run that is killed, loses its lease or fails is resumed from the last checkpoint: the
  batch in flight runs again (it is idempotent), no lead above the checkpoint is skipped, none
  below it is walked again;
- between two batches, and never inside one, the job gives itself back: when the office-hours
  window closes (``deferred`` until it opens again), when its run has used its share of the task
  time limit (``continued``: queued again, with a new message), when a cancel asked it to stop
  (``cancelled``, with what it did), or when its lease was lost (``lost``: the run that holds the
  job now carries on);
- before every batch the throttles are asked (``tasks.throttle``); while they say wait, the job
  waits, and its progress says why (``waiting``);
- the selection is taken among the leads that exist when the job starts: the walk ends at the
  highest lead_id of that moment (``until_lead_id``), so a lead the dialer adds to a selected
  list while the job runs is not archived with it. ``selected`` is counted then too; ``done``
  counts the leads walked, and leads changed meanwhile (a status, a call) may make it differ;
- ``left_live`` lists the leads a delete left in ``vicidial_list`` (at most ``LEFT_LIVE_SHOWN``,
  and their total): without ``delete_leads`` it is empty.

Counts after a kill: the leads of the batch in flight when the run died are counted when that
batch runs again, from the live table as it is then. Those the dead run had already archived and
deleted are gone from it: the next run counts them from ``in_flight`` (in ``done``, and as
``deleted``; their insert and update outcomes died with the run and are not counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from sqlalchemy import Connection

from tasks.archive import BatchReport, Tuning, make_report, run_batch
from tasks.requests import SelectionRequest
from tasks.scopes import Lists
from tasks.selection import archived_and_gone, count, highest_lead_id, next_batch, storable
from tasks.throttle import Throttles

# At most this many leads left live are listed in the result (their total is always given).
LEFT_LIVE_SHOWN = 1_000
# How long a throttled job waits before it asks the throttles again (s).
THROTTLE_PAUSE = 1.0

Ended = Literal["succeeded", "cancelled", "deferred", "continued", "lost"]


class SelectionProgress(BaseModel):
    """How far a selection job is: shown as ``progress`` in its status."""

    selected: int = Field(ge=0, description="Leads the filters selected when the job began")
    done: int = Field(ge=0, description="Leads walked so far")
    waiting: str | None = Field(
        default=None, description="Why the next batch waits (replica lag, server load)"
    )


class SelectionReport(BaseModel):
    """What a selection job did: its checkpoint while it runs, its result when it ends."""

    selected: int = Field(ge=0, description="Leads the filters selected when the job began")
    done: int = Field(default=0, ge=0, description="Leads walked")
    last_lead_id: int = Field(
        default=0, ge=0, description="Every selected lead up to this lead_id has been walked"
    )
    until_lead_id: int = Field(
        default=0,
        ge=0,
        description="The highest lead_id when the job began: leads added later are not selected",
    )
    counts: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Every batch's counts, summed"
    )
    left_live: list[dict[str, Any]] = Field(
        default_factory=list,
        description=f"Leads a delete left in vicidial_list, with their outcomes (the first"
        f" {LEFT_LIVE_SHOWN})",
    )
    left_live_total: int = Field(default=0, ge=0, description="How many leads a delete left live")
    sample: list[int] | None = Field(
        default=None, description="A dry run: the first 20 selected lead IDs"
    )
    in_flight: list[int] | None = Field(
        default=None,
        description="The lead IDs of the batch that was running when this checkpoint was saved",
    )

    def add(self, report: BatchReport, *, delete: bool) -> None:
        """Count one batch in."""
        self.done += len(report.leads)
        for action, outcomes in report.counts.items():
            summed = self.counts.setdefault(action, {})
            for outcome, number in outcomes.items():
                summed[outcome] = summed.get(outcome, 0) + number
        if not delete:
            return
        for lead in report.leads:
            # By its outcome, so that a dry run lists the leads it would leave live too.
            if lead.delete in ("deleted", "not_found"):
                continue
            self.left_live_total += 1
            if len(self.left_live) < LEFT_LIVE_SHOWN:
                shown = lead.as_json()
                del shown["archived"], shown["live"]
                self.left_live.append(shown)

    def add_deleted(self, leads: int) -> None:
        """Count in ``leads`` a dead run had archived and deleted (their other outcomes died
        with it)."""
        if leads:
            self.done += leads
            deleted = self.counts.setdefault("delete", {})
            deleted["deleted"] = deleted.get("deleted", 0) + leads

    def progress(self, waiting: str | None = None) -> SelectionProgress:
        return SelectionProgress(selected=self.selected, done=self.done, waiting=waiting)


class Steward(Protocol):
    """The run that holds the job, as the walk sees it."""

    def save(self, report: SelectionReport, progress: SelectionProgress) -> str | None:
        """Save the checkpoint and progress while this run holds the job: the job store's
        answer (``running``, ``stopping`` when a cancel asked the job to stop, anything else
        when this run no longer holds it)."""
        ...

    def interruption(self, steps: int) -> tuple[Ended, datetime | None] | None:
        """Why the job must give itself back before its next batch (office hours, with when
        they end; its lease lost; its share of the time limit used, once this run has taken
        ``steps`` > 0, batches or throttle waits, so that a run that only counted the selection
        still moves it on), or None."""
        ...

    def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Ending:
    """How a run of a selection job ended, and the job's report as it stands."""

    status: Ended
    report: SelectionReport
    not_before: datetime | None = None

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return self.report.counts

    def as_json(self) -> dict[str, Any]:
        return self.report.model_dump(exclude_none=True)


def run_selection(
    conn: Connection,
    request: SelectionRequest,
    steward: Steward,
    *,
    zone: ZoneInfo,
    batch_size: int,
    tuning: Tuning | None = None,
    throttles: Throttles | None = None,
    lists: Lists | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> Ending:
    """Walk the selection from ``checkpoint`` (None: from the start) until it ends or must give
    itself back; see the module docstring."""
    filters, actions = storable(conn, request.filters()), request.actions()
    if checkpoint is None:
        until = highest_lead_id(conn)
        selected, sample = count(
            conn, filters, zone, lists=lists, until=until, sample=request.dry_run
        )
        report = SelectionReport(
            selected=selected,
            until_lead_id=until,
            # Every requested action's outcomes, at zero until a batch counts some.
            counts=make_report([], {}, actions, scoped=lists is not None).counts,
            sample=sample if request.dry_run else None,
        )
    else:
        report = SelectionReport.model_validate(checkpoint)
        if report.in_flight:
            # A run died inside this batch: the leads it had archived and deleted are gone from
            # the live table, and the next batch read from it no longer finds them.
            deleting = actions.delete and not request.dry_run
            report.add_deleted(archived_and_gone(conn, report.in_flight) if deleting else 0)
            report.in_flight = None
    answer = steward.save(report, report.progress())
    steps = 0  # batches run and throttle waits, in this run
    while answer == "running":
        interruption = steward.interruption(steps)
        if interruption is not None:
            status, not_before = interruption
            return Ending(status, report, not_before)
        reason = throttles.reason_to_wait(conn) if throttles is not None else None
        steps += 1
        if reason is not None:
            answer = steward.save(report, report.progress(reason))
            if answer == "running":
                steward.sleep(THROTTLE_PAUSE)
            continue
        batch = next_batch(
            conn,
            filters,
            zone,
            report.last_lead_id,
            batch_size,
            lists=lists,
            until=report.until_lead_id,
        )
        if batch.lead_ids:
            # Saved before it runs: a run that dies inside it leaves the next one its lead IDs.
            report.in_flight = batch.lead_ids
            answer = steward.save(report, report.progress())
            if answer != "running":
                report.in_flight = None  # it did not run
                break
            done = run_batch(conn, batch.lead_ids, actions, tuning, lists=lists)
            report.add(done, delete=actions.delete)
            report.in_flight = None
        report.last_lead_id = batch.position
        answer = steward.save(report, report.progress())
        if batch.done:
            # Saved first: a run that dies before the job is marked ended finds nothing left.
            return Ending("succeeded", report)
    return Ending("cancelled" if answer == "stopping" else "lost", report)
