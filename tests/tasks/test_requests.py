"""One model of an archive request: its one "at least one action" rule, its schema, the forms it
takes (the task's payload, the job record's summary, the batch's actions, the idempotency digest),
and the job record's one serialisation."""

from __future__ import annotations

import hashlib
import json

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

    assert fields["lead_ids"] == "[2, 1]"
    assert fields["attempts"] == "2"
    assert json.loads(fields["error"]) == {"type": "OperationalError", "detail": "lost"}
    assert "result" not in fields and "started_at" not in fields
    assert JobRecord.from_fields(fields) == record
    assert "owner" not in record.view() and record.view()["attempts"] == 2
