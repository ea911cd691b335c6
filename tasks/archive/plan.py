"""What a batch decides for each lead: the outcome model and the pure planner ``plan_lead``.

Nothing here touches a database. ``plan_lead`` decides every requested action's outcome for one
lead from the state its rows were read in while locked (``LeadState``); the strategies run exactly
the statements those outcomes call for, and ``make_report`` assembles what the job shows. An
outcome other than ``inserted``, ``updated`` or ``deleted`` means nothing was written for that
action.

A job of a key scoped to some lists (``tasks.scopes.Lists``) reads each lead's list with its
state: a lead of another list is ``forbidden`` for every requested action, before any other
outcome is considered, so nothing is ever written for it. Only such a job's counts have a
``forbidden`` entry; an unscoped job's report is what it always was.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

InsertOutcome = Literal["inserted", "already_archived", "not_found", "forbidden"]
UpdateOutcome = Literal[
    "updated", "unchanged", "not_archived", "not_found", "id_reused", "forbidden"
]
DeleteOutcome = Literal[
    "deleted", "not_archived", "mismatch", "in_use", "not_found", "id_reused", "forbidden"
]

INSERT_OUTCOMES: tuple[InsertOutcome, ...] = ("inserted", "already_archived", "not_found")
UPDATE_OUTCOMES: tuple[UpdateOutcome, ...] = (
    "updated",
    "unchanged",
    "not_archived",
    "not_found",
    "id_reused",
)
DELETE_OUTCOMES: tuple[DeleteOutcome, ...] = (
    "deleted",
    "not_archived",
    "mismatch",
    "in_use",
    "not_found",
    "id_reused",
)
# A scoped key's lead of another list (counted only in the reports of jobs scoped to lists).
FORBIDDEN: Literal["forbidden"] = "forbidden"

MAX_LEAD_ID = 4_294_967_295


@dataclass(slots=True)
class LeadResult:
    """One requested lead: an outcome per requested action and where the lead is at the end."""

    lead_id: int
    archived: bool
    live: bool
    insert: InsertOutcome | None = None
    update: UpdateOutcome | None = None
    delete: DeleteOutcome | None = None
    # What the dialer still needs the lead for, when its delete is ``in_use`` (schema.HELD_BY).
    held_by: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The lead as the job status shows it: actions not requested are left out."""
        shown: dict[str, Any] = {"lead_id": self.lead_id}
        for action in ("insert", "update", "delete"):
            outcome = getattr(self, action)
            if outcome is not None:
                shown[action] = outcome
        if self.delete == "in_use":
            shown["held_by"] = self.held_by
        shown["archived"], shown["live"] = self.archived, self.live
        return shown


@dataclass(slots=True)
class LeadsReport:
    """What a batch of any kind did (or, in a dry run, would do) to every requested lead: the
    counts by action and outcome, the IDs asked for more than once, and each lead's result."""

    counts: dict[str, dict[str, int]]
    duplicates: list[int]
    leads: list[Any]

    def as_json(self) -> dict[str, Any]:
        """The report as the job status shows it."""
        return {
            "counts": self.counts,
            "duplicates": self.duplicates,
            "leads": [lead.as_json() for lead in self.leads],
        }


@dataclass(slots=True)
class BatchReport(LeadsReport):
    """What an archive batch did (or, in a dry run, would do) to every requested lead."""

    leads: list[LeadResult]


@dataclass(frozen=True, slots=True)
class Actions:
    """Which actions a batch carries out (``tasks.requests.ArchiveRequest.actions`` builds it
    from a request, whose validator ensures that at least one is asked for)."""

    insert: bool = True
    update: bool = True
    delete: bool = False
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class LeadState:
    """A lead's state, read while its rows are locked."""

    live: bool = False
    archived: bool = False
    identical: bool = False
    # The live and archive rows have the same entry_date: one lead, not two sharing a reused ID.
    same_lead: bool = True
    # Why the dialer still needs the lead (schema.HELD_BY), or None.
    held_by: str | None = None
    # The lead's list (its live row's, else its archive row's) is not one the job may touch.
    forbidden: bool = False


def plan_lead(lead_id: int, state: LeadState, actions: Actions) -> LeadResult:
    """Decide every requested action's outcome for one lead, in the order insert, update, delete.

    A live row and an archive row whose entry_date differ are two leads that share a reused ID
    (Vicidial sets entry_date at load and never changes it): the archive row is another
    person's history, neither refreshed nor taken as the live lead's copy (``id_reused``).
    A lead of a list the job may not touch is ``forbidden`` for every action, and stays as it is.
    """
    live, archived, identical = state.live, state.archived, state.identical
    reused = live and archived and not state.same_lead
    result = LeadResult(lead_id, archived, live)
    if state.forbidden:
        result.insert = FORBIDDEN if actions.insert else None
        result.update = FORBIDDEN if actions.update else None
        result.delete = FORBIDDEN if actions.delete else None
        return result
    if actions.insert:
        if archived:
            result.insert = "already_archived"
        elif live:
            result.insert = "inserted"
            archived = identical = True
        else:
            result.insert = "not_found"
    if actions.update:
        if not archived:
            result.update = "not_archived" if live else "not_found"
        elif reused:
            result.update = "id_reused"
        elif live and not identical:
            result.update = "updated"
            identical = True
        else:
            result.update = "unchanged"
    if actions.delete:
        if not live:
            result.delete = "not_found"
        elif not archived:
            result.delete = "not_archived"
        elif reused:
            result.delete = "id_reused"
        elif not identical:
            result.delete = "mismatch"
        elif state.held_by is not None:
            result.delete = "in_use"
            result.held_by = state.held_by
        else:
            result.delete = "deleted"
            live = False
    if not actions.dry_run:
        result.archived, result.live = archived, live
    return result


def make_report(
    ids: Sequence[int],
    results: dict[int, LeadResult],
    actions: Actions,
    *,
    scoped: bool = False,
) -> BatchReport:
    """Assemble the report: every requested ID once, in request order, with counts (with a
    ``forbidden`` count for each action when the job is ``scoped`` to lists)."""
    seen = Counter(ids)
    order = list(dict.fromkeys(ids))
    leads = [results[i] for i in order]
    counts: dict[str, dict[str, int]] = {}
    for action, outcomes in (
        ("insert", INSERT_OUTCOMES),
        ("update", UPDATE_OUTCOMES),
        ("delete", DELETE_OUTCOMES),
    ):
        if getattr(actions, action):
            tally = Counter(getattr(lead, action) for lead in leads)
            counts[action] = {outcome: tally[outcome] for outcome in outcomes}
            if scoped:
                counts[action][FORBIDDEN] = tally[FORBIDDEN]
    return BatchReport(
        counts=counts,
        duplicates=[i for i in order if seen[i] > 1],
        leads=leads,
    )


def validate_lead_ids(ids: Iterable[int]) -> list[int]:
    """Refuse anything but integers in Vicidial's lead_id range (bool is not an integer here)."""
    checked = []
    for i in ids:
        if type(i) is not int or not 0 <= i <= MAX_LEAD_ID:
            raise ValueError(f"lead_id must be an integer from 0 to {MAX_LEAD_ID}, got {i!r}")
        checked.append(i)
    if not checked:
        raise ValueError("at least one lead_id is required")
    return checked
