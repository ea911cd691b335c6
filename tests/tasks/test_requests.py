"""One model of an archive request: its one "at least one action" rule, its schema, the forms it
takes (the task's payload, the job record's summary, the batch's actions, the idempotency digest),
and the job record's one serialisation."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from tasks.archive import Actions
from tasks.records import JobRecord
from tasks.requests import SEED_EXAMPLE, ArchiveRequest


def test_an_empty_request_or_no_action_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one of insert"):
        ArchiveRequest(lead_ids=[1], insert_leads=False, update_leads=False, delete_leads=False)


def test_the_schema_states_the_rule_and_the_seed_example() -> None:
    schema = ArchiveRequest.model_json_schema()

    assert schema["examples"] == [SEED_EXAMPLE]
    assert schema["additionalProperties"] is False
    assert schema["not"]["properties"]["delete_leads"] == {"const": False}
    assert ArchiveRequest.model_validate(SEED_EXAMPLE).requested() == ("insert", "update", "delete")


def test_the_request_as_payload_summary_actions_and_fingerprint() -> None:
    request = ArchiveRequest(lead_ids=[3, 1, 2], update_leads=False, dry_run=True)

    assert request.payload() == {
        "lead_ids": [3, 1, 2],
        "insert_leads": True,
        "update_leads": False,
        "delete_leads": False,
        "dry_run": True,
    }
    assert ArchiveRequest.model_validate(request.payload()) == request
    assert request.summary() == {
        "insert_leads": True,
        "update_leads": False,
        "delete_leads": False,
        "dry_run": True,
        "lead_count": 3,
    }
    assert request.actions() == Actions(insert=True, update=False, delete=False, dry_run=True)
    # The digest of earlier releases, so idempotency keys claimed before an upgrade still match.
    canonical = json.dumps(
        {**request.summary(), "lead_ids": [3, 1, 2]}, sort_keys=True, separators=(",", ":")
    )
    assert request.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()
    assert request.fingerprint() != ArchiveRequest(lead_ids=[1, 2, 3]).fingerprint()


def test_a_record_round_trips_through_its_stored_fields() -> None:
    record = JobRecord(
        job_id="j",
        owner="alice",
        status="failed",
        submitted_at="t0",
        request=ArchiveRequest(lead_ids=[2, 1]),
        attempts=2,
        error={"type": "OperationalError", "detail": "lost"},
    )

    fields = record.to_fields()

    assert JobRecord.from_fields(fields).lead_ids == [2, 1]
    assert fields["attempts"] == "2"
    assert json.loads(fields["error"]) == {"type": "OperationalError", "detail": "lost"}
    assert "result" not in fields and "started_at" not in fields
    assert JobRecord.from_fields(fields) == record
    assert "owner" not in record.view() and record.view()["attempts"] == 2


def finished_500_lead_job() -> JobRecord:
    """A finished job of 500 leads spread over two million IDs, each archived and deleted."""
    lead_ids = sorted(random.Random(7).sample(range(1, 2_000_000), 500))
    leads = [
        {"lead_id": lead_id, "insert": "inserted", "delete": "deleted", "archived": True}
        | {"live": False}
        for lead_id in lead_ids
    ]
    counts = {"insert": {"inserted": 500}, "delete": {"deleted": 500}}
    return JobRecord(
        job_id="j",
        owner="alice",
        status="succeeded",
        submitted_at="2026-12-02T03:00:00.000+00:00",
        request=ArchiveRequest(lead_ids=lead_ids, delete_leads=True),
        started_at="2026-12-02T03:00:00.100+00:00",
        finished_at="2026-12-02T03:00:00.400+00:00",
        attempts=1,
        result={"counts": counts, "duplicates": [], "leads": leads},
    )


def test_a_finished_500_lead_job_is_stored_in_under_8_kb() -> None:
    record = finished_500_lead_job()

    fields = record.to_fields()

    stored_bytes = sum(len(name) + len(value) for name, value in fields.items())
    assert stored_bytes < 6 * 1024  # Redis' own overhead stays within the 8 KB target
    assert len(json.dumps(record.result)) > 40_000  # what the client reads is all there
    assert JobRecord.from_fields(fields) == record
    assert JobRecord.from_fields(fields).view()["result"] == record.result


def test_records_stored_as_plain_json_before_compression_still_read() -> None:
    record = finished_500_lead_job()
    assert record.result is not None
    fields = record.to_fields()
    fields["lead_ids"] = json.dumps(record.lead_ids)
    fields["result"] = json.dumps(record.result)

    assert JobRecord.from_fields(fields) == record
