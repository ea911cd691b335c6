"""Request and response bodies, strict: no coercion, no unknown fields.

The request bodies are ``tasks.requests.ArchiveRequest``, ``RestoreRequest`` and
``SelectionRequest`` themselves
(re-exported here): the API adds no rule of its own to them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.archive import BatchReport
from tasks.archive.restore import RestoreReport

# The request body and its summary in a job's status are the job's own model, declared once.
from tasks.requests import (
    SEED_EXAMPLE,
    SELECTION_EXAMPLE,
    ArchiveRequest,
    RequestSummary,
    RestoreRequest,
    RestoreSummary,
    SelectionRequest,
    SelectionSummary,
)
from tasks.selection_job import SelectionProgress, SelectionReport

__all__ = [
    "RESTORE_EXAMPLE",
    "SEED_EXAMPLE",
    "SELECTION_EXAMPLE",
    "Accepted",
    "ArchiveRequest",
    "FieldError",
    "Health",
    "JobError",
    "JobView",
    "ProblemDetails",
    "Readiness",
    "RequestSummary",
    "RestoreReport",
    "RestoreRequest",
    "RestoreSummary",
    "SelectionProgress",
    "SelectionReport",
    "SelectionRequest",
    "SelectionSummary",
]

# The OpenAPI document's example of a restore request.
RESTORE_EXAMPLE: dict[str, Any] = {"lead_ids": [0, 1], "dry_run": False}


class Accepted(BaseModel):
    """The answer to a submission: where to poll."""

    job_id: str
    status: str
    status_url: str


# --- documentation of the answers (the OpenAPI document; see api/openapi.py) ---------------


class FieldError(BaseModel):
    """One invalid field: where it is, what is wrong, the error's kind."""

    loc: list[str | int]
    msg: str
    type: str


class ProblemDetails(BaseModel):
    """An RFC 9457 problem: every error answer, as ``application/problem+json``."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["urn:leadarchive:problem:invalid-request"])
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    errors: list[FieldError] | None = Field(
        default=None, description="The invalid fields (422 only)"
    )
    opens_at: str | None = Field(
        default=None, description="When the office-hours window opens (503 in office hours only)"
    )


class JobError(BaseModel):
    """Why a job failed."""

    type: str
    detail: str


class JobView(BaseModel):
    """A job's status and, when it has succeeded, its report."""

    job_id: str
    status: Literal["queued", "deferred", "running", "succeeded", "failed", "cancelled"]
    submitted_at: str
    started_at: str | None = None
    finished_at: str | None = None
    not_before: str | None = Field(
        default=None, description="deferred: the job waits for the office-hours window until then"
    )
    attempts: int | None = Field(
        default=None, ge=1, description="runs so far (retries; a selection's runs)"
    )
    cancel_requested: str | None = Field(
        default=None, description="A selection asked to stop after its current batch: when"
    )
    progress: SelectionProgress | None = Field(
        default=None, description="A selection: how far it is, and why it waits"
    )
    request: RequestSummary | RestoreSummary | SelectionSummary
    result: BatchReport | RestoreReport | SelectionReport | None = Field(
        default=None,
        description="An archive job's report, a restore job's (under restore), or a"
        " selection's (also when it was cancelled or failed: what it did)",
    )
    error: JobError | None = None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    """Each dependency's check: ``ok``, or what is wrong."""

    status: Literal["ready", "not ready"]
    checks: dict[str, str]
