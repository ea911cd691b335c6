"""Watching the real worker: Flower (`leadarchive flower`) shows every task with its name,
arguments and result, only with the basic-auth credentials; the worker serves Prometheus metrics
of jobs and leads by outcome and logs one JSON line per event."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from sqlalchemy import Connection

from tasks.celery_config import create_celery
from tasks.lifecycle import ARCHIVE_TASK
from tasks.publishing import publish
from tasks.requests import ArchiveRequest
from tasks.runtime import Runtime
from tasks.seed import insert_leads, lead_rows
from testkit.processes import kill_group, leadarchive, service_env, start, start_worker
from tests.conftest import claim_redis_database
from tests.helpers import free_port, make_settings, wait_for

AUTH = ("operator", "flower-test-password")


@pytest.fixture
def own_redis() -> Iterator[str]:
    with claim_redis_database() as url:
        yield url


def test_flower_lists_tasks_with_arguments_and_results_behind_basic_auth(
    vicidial: Connection, database_url: str, own_redis: str, tmp_path: Path
) -> None:
    insert_leads(vicidial, lead_rows(3, seed=31))
    port, metrics_port = free_port(), free_port()
    env = service_env(database_url, own_redis, flower_basic_auth=":".join(AUTH))
    settings = make_settings(database_url, own_redis, office_hours="")
    rt = Runtime(settings)
    processes: list[subprocess.Popen[bytes]] = []
    log_path = tmp_path / "processes.log"
    log = log_path.open("ab")
    base = f"http://127.0.0.1:{port}"
    try:
        processes.append(start(leadarchive("flower", "--port", str(port)), env, log))
        processes.append(start_worker(env, log, 1, metrics_port=metrics_port))
        # Two processes starting at once on a loaded 2-core machine: a minute each.
        wait_for(lambda: _answers(f"{base}/healthcheck"), timeout=60)
        # Flower needs a moment to subscribe to events before the task is sent.
        wait_for(lambda: _workers_seen(base), timeout=60, interval=0.5)
        request = ArchiveRequest(
            lead_ids=[1, 2], insert_leads=True, update_leads=True, delete_leads=True, dry_run=False
        )
        job_id, _ = rt.jobs.create("alice", request)
        publish(create_celery(settings), job_id, request)

        task = wait_for(lambda: _task(base, job_id), timeout=60, interval=0.3)
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        refused = httpx.get(f"{base}/api/tasks", timeout=5)
        wrong = httpx.get(f"{base}/api/tasks", auth=(AUTH[0], "wrong"), timeout=5)
    finally:
        for process in processes:
            kill_group(process)
        rt.close()
        log.close()

    assert task["name"] == ARCHIVE_TASK
    assert job_id in task["kwargs"] and "lead_ids" in task["kwargs"]
    assert "succeeded" in task["result"]
    assert refused.status_code == 401
    assert wrong.status_code == 401
    assert 'leadarchive_jobs_total{status="succeeded"} 1.0' in metrics
    assert 'leadarchive_leads_total{action="delete",dry_run="false",outcome="deleted"} 2.0' in (
        metrics
    )
    assert "leadarchive_batch_duration_seconds_count 1.0" in metrics
    events = [
        json.loads(line)
        for line in log_path.read_text().splitlines()
        if line.startswith("{") and job_id in line
    ]
    succeeded = next(e for e in events if e["message"] == "job succeeded")
    assert succeeded["key_name"] == "alice"
    assert succeeded["counts"]["delete"]["deleted"] == 2
    assert {"time", "level", "logger"} <= set(succeeded)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def _workers_seen(base: str) -> bool:
    answer = httpx.get(f"{base}/api/workers", auth=AUTH, params={"refresh": 1}, timeout=10)
    return answer.status_code == 200 and bool(answer.json())


def _task(base: str, job_id: str) -> dict | None:
    answer = httpx.get(f"{base}/api/tasks", auth=AUTH, timeout=5)
    if answer.status_code != 200:
        return None
    task = answer.json().get(job_id)
    return task if task and task.get("state") == "SUCCESS" else None
