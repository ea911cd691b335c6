"""``RestoreRequest``: strict, its own task and fingerprint, and kept in a job record as itself
(records written before restore existed are archive requests still)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tasks.records import JobRecord
from tasks.requests import ArchiveRequest, RestoreRequest, request_from_stored


def test_a_record_keeps_its_kind() -> None:
    restore = RestoreRequest(lead_ids=[3, 1, 3], dry_run=True)
    record = JobRecord.queued("j" * 22, "alice", restore)
    again = JobRecord.from_fields(record.to_fields())
    assert again.request == restore and isinstance(again.request, RestoreRequest)
    assert again.view()["request"] == {"kind": "restore", "dry_run": True, "lead_count": 3}
    archive = ArchiveRequest(lead_ids=[1])
    stored = JobRecord.queued("k" * 22, "alice", archive).to_fields()
    assert "kind" not in json.loads(stored["request"])  # archive records are unchanged
    assert JobRecord.from_fields(stored).request == archive


def test_the_fingerprint_and_task_differ_from_an_archive_request() -> None:
    restore, archive = RestoreRequest(lead_ids=[1]), ArchiveRequest(lead_ids=[1])
    assert restore.fingerprint() != archive.fingerprint()
    assert restore.fingerprint() == RestoreRequest.model_validate({"lead_ids": [1]}).fingerprint()
    assert restore.task_name == "leadarchive.restore_leads" != archive.task_name
    assert restore.payload() == {"lead_ids": [1], "dry_run": False}
    assert restore.requested() == ("restore",)
    assert request_from_stored(restore.summary(), [1]) == restore


@pytest.mark.parametrize(
    "body",
    [
        {"lead_ids": [1.0]},
        {"lead_ids": ["1"]},
        {"lead_ids": [True]},
        {"lead_ids": []},
        {"lead_ids": [1], "dry_run": 1},
        {"lead_ids": [1], "insert_leads": True},
        {"lead_ids": [4294967296]},
    ],
)
def test_strict(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RestoreRequest.model_validate(body)
