"""A deployment's secrets: Redis' password travels in the service's URLs and shows nowhere else,
and Flower never runs open or behind the env example's placeholder password.

The real processes (``leadarchive api``, ``worker`` and ``flower``) on a Redis of this test's own
that asks for a password, as deploy/ and docker-compose.yml run it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import redis
from sqlalchemy import Connection

from tasks.seed import insert_leads, lead_rows
from tasks.settings import EXAMPLE_SECRET
from testkit.processes import free_port, leadarchive, service_env, start
from testkit.services import live_services, wait_for_job
from tests.helpers import private_redis, wait_for


class Flower:
    """Flower's HTTP pages, with its basic auth."""

    def __init__(self, port: int, auth: str) -> None:
        user, _, password = auth.partition(":")
        self.base = f"http://127.0.0.1:{port}"
        self.auth = (user, password)

    def get(self, path: str) -> tuple[int, str]:
        answer = httpx.get(self.base + path, auth=self.auth, timeout=10)
        return answer.status_code, answer.text

    def workers(self) -> dict[str, Any]:
        try:
            status, body = self.get("/api/workers?refresh=1")
        except httpx.TransportError:
            return {}
        workers: dict[str, Any] = json.loads(body) if status == 200 else {}
        return workers


def test_the_redis_password_shows_in_no_log_answer_or_flower_page(
    database_url: str, vicidial: Connection, tmp_path: Path
) -> None:
    insert_leads(vicidial, lead_rows(3, seed=11))
    vicidial.commit()
    lead_id = int(vicidial.exec_driver_sql("SELECT MIN(lead_id) FROM vicidial_list").scalar_one())
    password = secrets.token_urlsafe(18)
    flower_auth = f"admin:{secrets.token_urlsafe(12)}"
    seen: dict[str, str] = {}
    with private_redis(tmp_path) as server:
        redis.Redis(port=server.port).config_set("requirepass", password)
        url = f"redis://:{password}@127.0.0.1:{server.port}/0"
        logs = tmp_path / "logs"
        with live_services(
            database_url, url, logs, concurrency=1, flower_basic_auth=flower_auth
        ) as live:
            flower_port = free_port()
            argv = leadarchive("flower", "--port", str(flower_port))
            live.processes["flower"] = start(argv, live.env, logs / "flower.log")
            # The password works: a job goes through the broker and the job store.
            client = live.client()
            body = json.dumps({"lead_ids": [lead_id], "dry_run": True}).encode()
            accepted = client.request("POST", "/vicidial/leads/archive", body)
            client.close()
            assert accepted.status == 202, accepted.body[:300]
            assert wait_for_job(live, accepted.headers["location"], 90)["status"] == "succeeded"
            flower = Flower(flower_port, flower_auth)
            workers = wait_for(flower.workers, timeout=60, interval=0.5)
            (name,) = workers
            for path in ("/api/workers?refresh=1", "/broker", "/workers", f"/worker/{name}"):
                status, seen[f"flower {path}"] = flower.get(path)
                assert status == 200, (path, seen[f"flower {path}"][:300])
            # The page that names the broker shows its URL, the password masked.
            assert f"redis://:**@127.0.0.1:{server.port}/0" in seen["flower /broker"]

            # Redis now refuses the service's password: answers and logs about the failure.
            admin = redis.Redis(port=server.port, password=password)
            admin.config_set("requirepass", secrets.token_urlsafe(18))
            for kind in ("normal", "pubsub"):  # connected clients stay authenticated
                admin.client_kill_filter(_type=kind, skipme=True)
            admin.close()
            client = live.client()
            body = json.dumps({"lead_ids": [lead_id], "dry_run": True}).encode()
            refused = client.request("POST", "/vicidial/leads/archive", body)
            assert refused.status == 503, refused.body[:300]
            seen["503 answer"] = refused.body.decode(errors="replace")
            ready = client.request("GET", "/readyz")
            seen["readiness"] = ready.body.decode(errors="replace")
            client.close()
            wait_for(lambda: "rror" in (logs / "worker.log").read_text(errors="replace"), 30)
        for log in logs.glob("*.log"):
            seen[log.name] = log.read_text(errors="replace")
    check = subprocess.run(
        [sys.executable, "-m", "leadarchive.cli", "check"],
        env=service_env(database_url, url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    seen["leadarchive check"] = check.stdout + check.stderr
    for where, text in seen.items():
        assert password not in text, f"the Redis password shows in {where}"
    assert {"api.log", "worker.log", "flower.log"} <= set(seen)


@pytest.mark.parametrize(
    ("auth", "says"),
    [
        ("", "Flower never runs open"),
        (f"admin:{EXAMPLE_SECRET}", "example's password"),
        (f"admin:{EXAMPLE_SECRET.lower()}", "example's password"),
    ],
)
def test_flower_refuses_no_password_and_the_examples(
    database_url: str, redis_url: str, auth: str, says: str
) -> None:
    env = service_env(database_url, redis_url, flower_basic_auth=auth)
    started = subprocess.run(
        [sys.executable, "-m", "leadarchive.cli", "flower", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2
    assert says in started.stderr
