"""A job's record, typed, and its one serialisation: the fields of a Redis hash (SQLite keeps the
same fields as one JSON object).

Invariants:

- ``to_fields``/``from_fields`` (and ``encode`` for a partial update) are the only places that
  turn a record into strings and back: structured fields (the request, the lead IDs, the result,
  the error) are JSON, times are ISO 8601 UTC text, ``attempts`` a decimal integer (Redis counts
  it with HINCRBY);
- the two large fields, the lead IDs and the result (500 leads: about 4 KB and 60 KB of JSON),
  are stored compressed (``z:`` and the base64 of their zlib-compressed JSON, about 2.5 KB and
  3 KB), so a finished 500-lead job keeps under 8 KB in Redis for the result lifetime; what a
  client reads is the same JSON. A value without the prefix is plain JSON (records written
  before compression was introduced stay readable);
- a field that is not set is absent from the stored fields, never an empty or ``null`` value;
- ``view`` never shows the owner or the internals (client address, idempotency claim, the admin
  log's mark, the run's token and lease, the allowed lists);
- ``lists``, the lists a scoped key may touch (``tasks.scopes.Lists``, stored as its text), is
  the scope the job was submitted with: the worker runs the batch with the record's lists, never
  a message's. An unscoped job's record has no such field.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal, cast

from tasks.requests import JobRequest, request_from_stored
from tasks.scopes import Lists

Status = Literal["queued", "deferred", "running", "succeeded", "failed", "cancelled"]
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

# Stored as JSON; every other field is stored as its text.
_JSON_FIELDS = frozenset({"result", "error", "progress", "checkpoint"})
# Stored as compressed JSON (see the module docstring).
_COMPRESSED_FIELDS = frozenset({"result", "lead_ids", "checkpoint"})
_COMPRESSED = "z:"


def _dump(name: str, value: Any) -> str:
    """A structured field's stored text: JSON, compressed for the large fields."""
    text = json.dumps(value, separators=(",", ":"))
    if name not in _COMPRESSED_FIELDS:
        return text
    return _COMPRESSED + base64.b64encode(zlib.compress(text.encode(), 9)).decode("ascii")


def _load(text: str) -> Any:
    """A structured field from its stored text (compressed or plain JSON)."""
    if text.startswith(_COMPRESSED):
        return json.loads(zlib.decompress(base64.b64decode(text[len(_COMPRESSED) :])))
    return json.loads(text)


def now_iso(now: datetime | None = None) -> str:
    """An aware UTC time as ISO 8601, the form every record time takes."""
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job: who asked for what, where it stands, and how it ended."""

    job_id: str
    owner: str
    status: Status
    submitted_at: str
    request: JobRequest
    # The submitter's address, for Vicidial's admin log (never shown).
    client_ip: str = ""
    # The idempotency claim's key, removed with the record (never shown).
    idempotency: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    not_before: str | None = None
    attempts: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    # When the job's row was written to vicidial_admin_log (never shown).
    admin_logged: str | None = None
    # The run that holds the job (``status`` running): its token, and until when its lease
    # lasts (epoch seconds, as text); never shown.
    run_token: str | None = None
    lease_until: str | None = None
    # The lists the submitting key was scoped to (None: every list); never shown.
    lists: Lists | None = None
    # A selection job (tasks.selection_job): how far it is (shown as ``progress``), where it
    # stands (its report so far, and the lead ID to resume after: ``checkpoint``, shown as the
    # result of a selection that ended before its end), and when a cancel asked it to stop
    # after its current batch.
    progress: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    cancel_requested: str | None = None

    @classmethod
    def queued(
        cls,
        job_id: str,
        owner: str,
        request: JobRequest,
        *,
        now: datetime | None = None,
        client_ip: str = "",
        idempotency: str = "",
        lists: Lists | None = None,
    ) -> JobRecord:
        """A new job's record: queued, submitted ``now``."""
        return cls(
            job_id=job_id,
            owner=owner,
            status="queued",
            submitted_at=now_iso(now),
            request=request,
            client_ip=client_ip,
            idempotency=idempotency,
            lists=lists,
        )

    @property
    def lead_ids(self) -> list[int]:
        """The leads the job archives, in request order."""
        return self.request.lead_ids

    def to_fields(self) -> dict[str, str]:
        """The record as stored: one string per field that is set."""
        stored: dict[str, str] = {
            "job_id": self.job_id,
            "owner": self.owner,
            "status": self.status,
            "submitted_at": self.submitted_at,
            "request": json.dumps(self.request.summary()),
            "lead_ids": _dump("lead_ids", self.request.lead_ids),
        }
        for field in fields(self):
            if field.name in stored or field.name == "request":
                continue
            value = getattr(self, field.name)
            if value is not None:
                stored.update(encode({field.name: value}))
        return stored

    @classmethod
    def from_fields(cls, stored: Mapping[str, str]) -> JobRecord:
        """The record from its stored fields (as ``to_fields`` or ``encode`` wrote them)."""
        request = request_from_stored(json.loads(stored["request"]), _load(stored["lead_ids"]))
        return cls(
            job_id=stored["job_id"],
            owner=stored["owner"],
            status=cast(Status, stored["status"]),
            submitted_at=stored["submitted_at"],
            request=request,
            client_ip=stored.get("client_ip", ""),
            idempotency=stored.get("idempotency", ""),
            started_at=stored.get("started_at"),
            finished_at=stored.get("finished_at"),
            not_before=stored.get("not_before"),
            attempts=int(stored["attempts"]) if "attempts" in stored else None,
            result=_load(stored["result"]) if "result" in stored else None,
            error=_load(stored["error"]) if "error" in stored else None,
            admin_logged=stored.get("admin_logged"),
            run_token=stored.get("run_token"),
            lease_until=stored.get("lease_until"),
            lists=Lists.parse(stored["lists"]) if "lists" in stored else None,
            progress=_load(stored["progress"]) if "progress" in stored else None,
            checkpoint=_load(stored["checkpoint"]) if "checkpoint" in stored else None,
            cancel_requested=stored.get("cancel_requested"),
        )

    def view(self) -> dict[str, Any]:
        """The record as the status endpoint shows it: never the owner, never raw internals."""
        shown: dict[str, Any] = {"job_id": self.job_id, "status": self.status}
        for name in (
            "submitted_at",
            "started_at",
            "finished_at",
            "not_before",
            "attempts",
            "cancel_requested",
            "progress",
        ):
            value = getattr(self, name)
            if value is not None:
                shown[name] = value
        shown["request"] = self.request.summary()
        if self.result is not None:
            shown["result"] = self.result
        elif self.status in FINAL and self.checkpoint is not None:
            # A selection cancelled (or failed) between batches: what it did up to then.
            shown["result"] = self.checkpoint
        if self.error is not None:
            shown["error"] = self.error
        return shown


def encode(changes: Mapping[str, Any]) -> dict[str, str]:
    """Fields of a record as stored, for a partial update (a status change's extra fields)."""
    return {
        name: _dump(name, value) if name in _JSON_FIELDS else str(value)
        for name, value in changes.items()
    }
