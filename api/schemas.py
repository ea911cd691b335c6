"""Request and response bodies, strict: no coercion, no unknown fields."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from tasks.archive import MAX_LEAD_ID, BatchReport

LeadId = Annotated[StrictInt, Field(ge=0, le=MAX_LEAD_ID)]

SEED_EXAMPLE: dict[str, Any] = {
    "insert_leads": True,
    "update_leads": True,
    "delete_leads": True,
    "lead_ids": [0, 1],
}


class ArchiveRequest(BaseModel):
    """Archive these leads: insert missing copies, refresh copies, delete verified leads."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [SEED_EXAMPLE]}
    )

    insert_leads: StrictBool = True
    update_leads: StrictBool = True
    delete_leads: StrictBool = False
    dry_run: StrictBool = False
    lead_ids: list[LeadId] = Field(min_length=1)

    @model_validator(mode="after")
    def _some_action(self) -> ArchiveRequest:
        if not (self.insert_leads or self.update_leads or self.delete_leads):
            raise ValueError(
                "at least one of insert_leads, update_leads, delete_leads must be true"
            )
        return self


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


class RequestSummary(BaseModel):
    """What the client asked for; the IDs themselves are in the result."""

    insert_leads: bool
    update_leads: bool
    delete_leads: bool
    dry_run: bool
    lead_count: int = Field(ge=1)


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
    attempts: int | None = Field(default=None, ge=1, description="batch runs so far (retries)")
    request: RequestSummary
    result: BatchReport | None = None
    error: JobError | None = None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    """Each dependency's check: ``ok``, or what is wrong."""

    status: Literal["ready", "not ready"]
    checks: dict[str, str]
