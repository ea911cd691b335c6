"""The README's run command on a fresh folder with no configuration: the embedded default."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import httpx2 as httpx
import psutil

from tasks.db import make_engine
from tasks.records import FINAL
from tasks.requests import ArchiveRequest
from tasks.sql_jobs import SqliteJobStore
from testkit.processes import start, stop_group
from tests.helpers import Row, archive, free_port, live, wait_for

REPO = Path(__file__).resolve().parent.parent
SEED_REQUEST = {
    "insert_leads": True,
    "update_leads": True,
    "delete_leads": True,
    "lead_ids": [0, 1],
}


def test_run_command_serves_the_seed_request_from_an_empty_folder(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADARCHIVE_")}
    output = tmp_path / "run.log"
    process = start([str(REPO / "scripts" / "run"), "--port", str(port)], env, output, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        wait_for(lambda: _healthy(base), timeout=120, interval=0.2)
        key = wait_for(lambda: _printed_key(output), timeout=10)
        seeded = _tables(tmp_path)
        headers = {"Authorization": f"Key={key}"}
        answer = httpx.post(f"{base}/vicidial/leads/archive", json=SEED_REQUEST, headers=headers)
        assert answer.status_code == 202, answer.text
        status_url = base + answer.headers["location"]
        final = wait_for(
            lambda: (
                (b := httpx.get(status_url, headers=headers).json())["status"] == "succeeded" and b
            ),
            timeout=60,
        )
        elapsed = time.monotonic() - started
        # The client people use: IDs on standard input, batches of 2, a JSON report.
        submitted = subprocess.run(
            [
                str(REPO / ".venv" / "bin" / "leadarchive"),
                "submit",
                "--url",
                base,
                f"--key={key}",
                "--delete",
                "--batch-size",
                "2",
                "--file",
                "-",
                "--json",
            ],
            input="2 3\n4, 5\n1\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    finally:
        stop_group(process, grace=30)

    leads = {lead["lead_id"]: lead for lead in final["result"]["leads"]}
    assert leads[0]["insert"] == "not_found"
    assert leads[1] == {
        "lead_id": 1,
        "insert": "inserted",
        "update": "unchanged",
        "delete": "deleted",
        "archived": True,
        "live": False,
    }
    assert (tmp_path / "leadarchive-data" / "vicidial.db").is_file()
    text = output.read_text()
    assert f"curl -s -X POST {base}/vicidial/leads/archive" in text
    assert elapsed < 120
    assert submitted.returncode == 0, submitted.stderr
    report = json.loads(submitted.stdout)
    assert len(report["jobs"]) == 3
    assert report["counts"]["delete"] == {
        "deleted": 4,
        "not_archived": 0,
        "mismatch": 0,
        "in_use": 0,
        "not_found": 1,
        "id_reused": 0,
    }
    assert report["left_live"] == []
    # The demo's own leads 1 to 5 moved, each copy equal to the row it was, value and type.
    moved = {i: seeded[0][i] for i in range(1, 6)}
    live_after, archive_after = _tables(tmp_path)
    assert {i: r for i, r in archive_after.items() if i in moved} == moved
    assert set(live_after) == set(seeded[0]) - set(moved)
    # Vicidial's admin log, in the demo's SQLite too: one row per job, from the local client.
    with closing(sqlite3.connect(tmp_path / "leadarchive-data" / "vicidial.db")) as db:
        rows = db.execute(
            "SELECT record_id, ip_address, user, event_section, event_code FROM vicidial_admin_log"
        ).fetchall()
    job_ids = [final["job_id"], *(job["job_id"] for job in report["jobs"])]
    assert sorted(row[0] for row in rows) == sorted(job_ids)
    assert {row[1:] for row in rows} == {("127.0.0.1", "VDAD", "LEADS", "LEAD ARCHIVE API")}


def _tables(folder: Path) -> tuple[dict[int, Row], dict[int, Row]]:
    """The embedded demo's vicidial_list and vicidial_list_archive, by lead."""
    engine = make_engine(f"sqlite:///{folder / 'leadarchive-data' / 'vicidial.db'}")
    try:
        with engine.connect() as conn:
            return live(conn), archive(conn)
    finally:
        engine.dispose()


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _printed_key(output: Path) -> str | None:
    match = re.search(r"Demo API key: (\S+)", output.read_text())
    return match.group(1) if match else None


def _start_demo(folder: Path, port: int, output: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADARCHIVE_")}
    process = start([str(REPO / "scripts" / "run"), "--port", str(port)], env, output, folder)
    wait_for(lambda: _healthy(f"http://127.0.0.1:{port}"), timeout=120, interval=0.2)
    return process


def test_the_demo_keeps_its_data_private_and_runs_again_a_job_it_was_running_when_stopped(
    tmp_path: Path,
) -> None:
    data = tmp_path / "leadarchive-data"
    port = free_port()
    process = _start_demo(tmp_path, port, tmp_path / "run-1.log")
    try:
        key = wait_for(lambda: _printed_key(tmp_path / "run-1.log"), timeout=10)
        headers = {"Authorization": f"Key={key}"}
        base = f"http://127.0.0.1:{port}"
        answer = httpx.post(f"{base}/vicidial/leads/archive", json=SEED_REQUEST, headers=headers)
        status_url = base + answer.headers["location"]
        wait_for(lambda: httpx.get(status_url, headers=headers).json()["status"] in FINAL, 60)
    finally:
        stop_group(process, grace=30)

    # Private from the first byte: the folder 0700, every file in it 0600 (the key included).
    assert data.stat().st_mode & 0o777 == 0o700
    files = [path for path in data.rglob("*")]
    assert (data / "demo-api-key") in files and (data / "jobs.db") in files
    for path in files:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode & 0o777)}"

    # The demo stopped while a job was running: its record says running, under a lease that
    # nobody renews any more.
    store = SqliteJobStore(data / "jobs.db", timedelta(days=7))
    request = ArchiveRequest(lead_ids=[7], insert_leads=True, update_leads=True, delete_leads=True)
    job_id, _ = store.create("demo", request)
    assert store.start(job_id, "the stopped run", timedelta(seconds=2)) == "started"

    process = _start_demo(tmp_path, port, tmp_path / "run-2.log")
    try:
        record = wait_for(
            lambda: (r := store.get(job_id)) is not None and r.status in FINAL and r, timeout=90
        )
    finally:
        stop_group(process, grace=30)

    assert (record.status, record.attempts) == ("succeeded", 2)
    live_after, archive_after = _tables(tmp_path)
    assert 7 in archive_after and 7 not in live_after


def test_a_sigterm_to_the_run_command_alone_stops_its_worker_too(tmp_path: Path) -> None:
    process = _start_demo(tmp_path, free_port(), tmp_path / "run.log")
    try:
        # The worker, and its pool process once it is ready.
        run = psutil.Process(process.pid)
        workers = wait_for(lambda: len(run.children(recursive=True)) == 2 and run.children(True))

        # To the run process alone, as `kill PID` or a supervisor's stop sends it.
        process.send_signal(signal.SIGTERM)

        assert process.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert alive == [], f"left running: {alive}"
    finally:
        stop_group(process, grace=30)
