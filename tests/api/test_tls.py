"""`leadarchive api --certfile --keyfile` serves HTTPS itself, so the seed's `curl -k` works."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import redis

from tasks.celery_config import QUEUE
from tests.conftest import claim_redis_database
from tests.helpers import ALICE, make_settings, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_seed_curl_works_against_the_api_serving_tls(tmp_path: Path, database_url: str) -> None:
    # A Redis database of its own: the seed's job is left queued there, never taken by the
    # in-thread test worker to run on another test's tables.
    with claim_redis_database() as redis_url:
        _seed_curl_over_tls(tmp_path, database_url, redis_url)


def _seed_curl_over_tls(tmp_path: Path, database_url: str, redis_url: str) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    settings = make_settings(database_url, redis_url, office_hours="")
    port = _free_port()
    env = {
        **os.environ,
        "LEADARCHIVE_DATABASE_URL": database_url,
        "LEADARCHIVE_BROKER_URL": redis_url,
        "LEADARCHIVE_RESULT_BACKEND": redis_url,
        "LEADARCHIVE_API_KEYS": settings.api_keys,
        "LEADARCHIVE_OFFICE_HOURS": "",
    }
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leadarchive.cli",
            "api",
            "--port",
            str(port),
            "--certfile",
            str(cert),
            "--keyfile",
            str(key),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"https://127.0.0.1:{port}/vicidial/leads/archive"
    try:
        wait_for(
            lambda: (
                subprocess.run(
                    ["curl", "-ks", f"https://127.0.0.1:{port}/healthz"], capture_output=True
                ).returncode
                == 0
            ),
            timeout=30,
            interval=0.2,
        )
        # The seed's command, as written, with this test's key.
        answer = subprocess.run(
            [
                "curl",
                "-k",
                "-s",
                "-X",
                "POST",
                url,
                "-H",
                f"Authorization: {ALICE['Authorization']}",
                "-H",
                "Content-Type: application/json",
                "-d",
                '{"insert_leads": true, "update_leads": true, "delete_leads": true,'
                ' "lead_ids": [0, 1]}',
                "-w",
                "\\n%{http_code}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        plain = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                f"http://127.0.0.1:{port}/healthz",
            ],
            capture_output=True,
            text=True,
        ).stdout
        queue = redis.Redis.from_url(redis_url)
        try:
            queued = queue.llen(QUEUE)
        finally:
            queue.close()
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=20)

    body, status = answer.rsplit("\n", 1)
    assert status == "202"
    assert json.loads(body)["status"] == "queued"
    assert queued == 1  # the job's message, for a worker
    assert plain == "000"  # plain HTTP is not served on the TLS port
