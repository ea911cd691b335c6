"""What a client may ask for: one pydantic model per kind of job, declared once.

The model is the API's request body (its JSON schema, examples and error messages come from it),
the task message's keyword arguments (``payload``), what the job record keeps (``summary`` and the
lead IDs) and the batch's input (``actions``). Invariants:

- "at least one action" is checked here only, by the model validator, and stated in the JSON
  schema (``not``) so that the OpenAPI document says it too;
- strict: no coercion (``1.0``, ``"1"``, ``true`` are not lead IDs), no unknown fields;
- ``fingerprint`` depends on the request's meaning only (key order, whitespace), so that an
  idempotency key reused with the same body finds its job.

A new kind of job is a new model here, with its own ``task_name``; ``JobRequest`` is every kind,
and ``request_from_stored`` tells them apart in a job record (a summary with ``kind`` names it;
one without is an archive request, as every record written before restore existed).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from tasks.archive import MAX_LEAD_ID, Actions
from tasks.selection import SelectionFilters

LeadId = Annotated[StrictInt, Field(ge=0, le=MAX_LEAD_ID)]

# The request `leadarchive seed-demo` suggests, and the OpenAPI document's example.
SEED_EXAMPLE: dict[str, Any] = {
    "insert_leads": True,
    "update_leads": True,
    "delete_leads": True,
    "lead_ids": [0, 1],
}

_ACTIONS = ("insert_leads", "update_leads", "delete_leads")
NO_ACTION = "at least one of insert_leads, update_leads, delete_leads must be true"


def _digest(meaning: dict[str, Any]) -> str:
    """A request's fingerprint: the SHA-256 of its canonical JSON (key order, whitespace aside)."""
    canonical = json.dumps(meaning, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _some_action_schema(schema: dict[str, Any]) -> None:
    # At least one action: insert_leads and update_leads default to true, delete_leads to false,
    # so only a body that sets all three to false (two of them explicitly) has none.
    schema["not"] = {
        "required": ["insert_leads", "update_leads"],
        "properties": {name: {"const": False} for name in _ACTIONS},
    }


def _request_schema(schema: dict[str, Any]) -> None:
    schema["examples"] = [SEED_EXAMPLE]
    _some_action_schema(schema)


class ArchiveFlags(BaseModel):
    """Which actions an archive job carries out: the request's flags, shown again in its status."""

    model_config = ConfigDict(extra="forbid", strict=True)

    insert_leads: StrictBool = True
    update_leads: StrictBool = True
    delete_leads: StrictBool = False
    dry_run: StrictBool = False

    @model_validator(mode="after")
    def _some_action(self) -> Self:
        if not (self.insert_leads or self.update_leads or self.delete_leads):
            raise ValueError(NO_ACTION)
        return self

    def actions(self) -> Actions:
        """The batch's input: which actions to carry out."""
        return Actions(
            insert=self.insert_leads,
            update=self.update_leads,
            delete=self.delete_leads,
            dry_run=self.dry_run,
        )

    def requested(self) -> tuple[str, ...]:
        """The actions asked for, by their short names (``insert``, ``update``, ``delete``)."""
        return tuple(name.removesuffix("_leads") for name in _ACTIONS if getattr(self, name))


class ArchiveRequest(ArchiveFlags):
    """Archive these leads: insert missing copies, refresh copies, delete verified leads."""

    model_config = ConfigDict(json_schema_extra=_request_schema)

    # The Celery task that runs it (a stable name: in-flight messages and Flower refer to it).
    task_name: ClassVar[str] = "leadarchive.archive_leads"

    lead_ids: list[LeadId] = Field(
        min_length=1,
        # JSON Schema counts 1.0 as an integer; the contract does not.
        description='JSON integers only: 1.0, "1", true and null are refused, not coerced',
    )

    def summary(self) -> dict[str, Any]:
        """The request as the job's status shows it (the IDs themselves are in the result)."""
        return RequestSummary(
            **self.model_dump(exclude={"lead_ids"}), lead_count=len(self.lead_ids)
        ).model_dump()

    def payload(self) -> dict[str, Any]:
        """The task message's keyword arguments, besides the job ID."""
        return {"lead_ids": list(self.lead_ids), **self.model_dump(exclude={"lead_ids"})}

    def fingerprint(self) -> str:
        """A digest of the request's meaning, for idempotency keys."""
        return _digest({**self.summary(), "lead_ids": self.lead_ids})

    @classmethod
    def from_stored(cls, summary: dict[str, Any], lead_ids: list[int]) -> ArchiveRequest:
        """The request again, from a job record's summary and lead IDs."""
        flags = {name: summary[name] for name in ArchiveFlags.model_fields}
        return cls.model_validate({**flags, "lead_ids": lead_ids})


class RequestSummary(ArchiveFlags):
    """What the client asked for; the IDs themselves are in the result."""

    # Every field is always shown: required in the status's schema, defaults or not.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    lead_count: int = Field(ge=1)


RESTORE_KIND: Literal["restore"] = "restore"


class RestoreRequest(BaseModel):
    """Restore these leads from the archive (Vicidial's ``lead_dearchive``)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"lead_ids": [0, 1]}]}
    )

    # The Celery task that runs it (a stable name: in-flight messages and Flower refer to it).
    task_name: ClassVar[str] = "leadarchive.restore_leads"

    lead_ids: list[LeadId] = Field(
        min_length=1,
        description='JSON integers only: 1.0, "1", true and null are refused, not coerced',
    )
    dry_run: StrictBool = False

    def requested(self) -> tuple[str, ...]:
        """The one action asked for, for the admin log."""
        return (RESTORE_KIND,)

    def summary(self) -> dict[str, Any]:
        """The request as the job's status shows it (the IDs themselves are in the result)."""
        return RestoreSummary(dry_run=self.dry_run, lead_count=len(self.lead_ids)).model_dump()

    def payload(self) -> dict[str, Any]:
        """The task message's keyword arguments, besides the job ID."""
        return {"lead_ids": list(self.lead_ids), "dry_run": self.dry_run}

    def fingerprint(self) -> str:
        """A digest of the request's meaning (its kind included), for idempotency keys."""
        return _digest({**self.summary(), "lead_ids": self.lead_ids})

    @classmethod
    def from_stored(cls, summary: dict[str, Any], lead_ids: list[int]) -> RestoreRequest:
        """The request again, from a job record's summary and lead IDs."""
        return cls.model_validate({"dry_run": summary["dry_run"], "lead_ids": lead_ids})


class RestoreSummary(BaseModel):
    """What the client asked to restore; the IDs themselves are in the result."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    kind: Literal["restore"] = RESTORE_KIND
    dry_run: bool = False
    lead_count: int = Field(ge=1)


SELECTION_KIND: Literal["selection"] = "selection"
# The OpenAPI document's example of a selection.
SELECTION_EXAMPLE: dict[str, Any] = {
    "list_ids": [1001, 1002],
    "last_call_before": "2024-01-01",
    "insert_leads": True,
    "update_leads": True,
    "delete_leads": True,
}


_FILTERS = tuple(SelectionFilters.model_fields)


def _selection_schema(schema: dict[str, Any]) -> None:
    """The rules of a selection in its JSON schema too: a filter given is never null, at least
    one filter, at least one action."""
    schema["examples"] = [SELECTION_EXAMPLE]
    for name in _FILTERS:
        field = schema["properties"][name]
        kept = [s for s in field.pop("anyOf", []) if s.get("type") != "null"]
        field.pop("default", None)
        if len(kept) == 1:
            field.update(kept[0])
        elif kept:
            field["anyOf"] = kept
    schema["anyOf"] = [{"required": [name]} for name in _FILTERS]
    _some_action_schema(schema)


class SelectionRequest(ArchiveFlags, SelectionFilters):
    """Archive every live lead the filters select (``tasks.selection``), batch by batch.

    No lead IDs: the job walks the selection in lead_id order (``tasks.selection_job``). At least
    one filter, none of them null, and at least one action.
    """

    model_config = ConfigDict(json_schema_extra=_selection_schema)

    # The Celery task that runs it (a stable name: in-flight messages and Flower refer to it).
    task_name: ClassVar[str] = "leadarchive.archive_selection"

    @model_validator(mode="before")
    @classmethod
    def _no_null_filter(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = [name for name in _FILTERS if name in data and data[name] is None]
            if nulls:
                raise ValueError(f"{', '.join(nulls)}: null is not a filter; leave it out")
        return data

    @property
    def lead_ids(self) -> list[int]:
        """None given: the selection's leads are found as the job walks it."""
        return []

    def filters(self) -> SelectionFilters:
        """The filters alone: which leads the job walks."""
        return SelectionFilters.model_validate(
            self.model_dump(include=set(SelectionFilters.model_fields))
        )

    def summary(self) -> dict[str, Any]:
        """The request as the job's status shows it: its kind, flags and the filters given."""
        return {"kind": SELECTION_KIND, **self.payload()}

    def payload(self) -> dict[str, Any]:
        """The task message's keyword arguments, besides the job ID (dates as ISO 8601 text)."""
        return self.model_dump(mode="json", exclude_none=True)

    def fingerprint(self) -> str:
        """A digest of the request's meaning (its kind included), for idempotency keys."""
        return _digest(self.summary())

    @classmethod
    def from_stored(cls, summary: dict[str, Any], lead_ids: list[int]) -> SelectionRequest:
        """The request again, from a job record's summary (a selection keeps no lead IDs)."""
        return cls.model_validate({k: v for k, v in summary.items() if k != "kind"})


class SelectionSummary(SelectionRequest):
    """What the client asked to select and do: only the filters it gave are shown."""

    kind: Literal["selection"] = SELECTION_KIND


# Every kind of job a record may hold.
JobRequest = ArchiveRequest | RestoreRequest | SelectionRequest


def request_from_stored(summary: dict[str, Any], lead_ids: list[int]) -> JobRequest:
    """A job record's request, of the kind its summary names (none: an archive request)."""
    if summary.get("kind") == RESTORE_KIND:
        return RestoreRequest.from_stored(summary, lead_ids)
    if summary.get("kind") == SELECTION_KIND:
        return SelectionRequest.from_stored(summary, lead_ids)
    return ArchiveRequest.from_stored(summary, lead_ids)
