"""The seed's test procedure on a copy of a production server, end to end.

``leadarchive seed-demo --ids-file F``, then the seed's request (insert, update, delete) on F's IDs
through the real API and a real worker, then ``seed-demo --remove``: every row that was there
before stays byte-identical throughout, and only the dummies come and go.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import Connection

from leadarchive.cli import main as leadarchive
from leadarchive.client import EXIT_OK, Submitter, read_lead_ids, submit_all
from tests.helpers import ALICE_KEY, archive, column, live
from tests.production import created_list_id, lists, load_production, one_line

pytestmark = pytest.mark.usefixtures("worker")

SEED_REQUEST = {"insert_leads": True, "update_leads": True, "delete_leads": True, "dry_run": False}
FICTIONAL = re.compile(rb"^\d{3}55501\d\d$")


def test_the_seeds_procedure_leaves_every_real_lead_byte_identical(
    client: TestClient,
    vicidial: Connection,
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    load_production(vicidial)
    live_before, archive_before, lists_before = live(vicidial), archive(vicidial), lists(vicidial)
    ids_file = tmp_path / "demo-ids.txt"

    seeded = leadarchive(
        ["seed-demo", "--count", "20", "--ids-file", str(ids_file), "--database-url", database_url]
    )

    out = one_line(capsys.readouterr().out)
    assert seeded == 0
    list_id = created_list_id(out)
    assert list_id not in lists_before
    assert lists(vicidial)[list_id][3] == "N", "the demo list is inactive"
    # What `leadarchive submit --file F` reads.
    with ids_file.open(encoding="utf-8") as source:
        ids = read_lead_ids(source)
    assert ids == list(range(81, 101))
    assert "lead IDs: 81-100" in out
    dummies = {i: r for i, r in live(vicidial).items() if i not in live_before}
    assert sorted(dummies) == ids
    for row in dummies.values():
        assert row[column("list_id")] == str(list_id).encode()
        assert row[column("phone_code")] == b"1"
        assert FICTIONAL.match(row[column("phone_number")] or b"")
    assert {i: r for i, r in live(vicidial).items() if i in live_before} == live_before
    assert archive(vicidial) == archive_before

    summary = submit_all(
        Submitter(client, ALICE_KEY, poll_interval=0.02),
        ids,
        SEED_REQUEST,
        console=Console(file=io.StringIO()),
    )

    assert summary.exit_code() == EXIT_OK
    assert summary.counts["insert"]["inserted"] == 20
    assert summary.counts["delete"]["deleted"] == 20
    assert live(vicidial) == live_before
    archived = archive(vicidial)
    assert {i: r for i, r in archived.items() if i in archive_before} == archive_before
    assert {i: r for i, r in archived.items() if i not in archive_before} == dummies

    removed = leadarchive(["seed-demo", "--remove", str(list_id), "--database-url", database_url])

    out = one_line(capsys.readouterr().out)
    assert removed == 0
    assert "deleted 0 dummy leads from vicidial_list and 20 from vicidial_list_archive" in out
    assert live(vicidial) == live_before
    assert archive(vicidial) == archive_before
    assert lists(vicidial) == lists_before
