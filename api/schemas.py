"""Request and response bodies, strict: no coercion, no unknown fields."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from tasks.archive import MAX_LEAD_ID

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
