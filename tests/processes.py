"""The service's real processes for tests: `leadarchive worker` (prefork) and `leadarchive api`.

Each runs in a process group of its own, so a test can kill a worker with its pool (SIGKILL to
the group) or one pool process alone, and never leaves one behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import IO, Any


def service_env(database_url: str, redis_url: str, **settings: Any) -> dict[str, str]:
    """This process's environment plus ``LEADARCHIVE_*`` for the given servers and settings."""
    env = {
        **os.environ,
        "LEADARCHIVE_DATABASE_URL": database_url,
        "LEADARCHIVE_BROKER_URL": redis_url,
        "LEADARCHIVE_RESULT_BACKEND": redis_url,
        "LEADARCHIVE_OFFICE_HOURS": "",
    }
    for name, value in settings.items():
        env[f"LEADARCHIVE_{name.upper()}"] = str(value)
    return env


def start_worker(
    env: dict[str, str], log: IO[bytes], concurrency: int = 1
) -> subprocess.Popen[bytes]:
    """`leadarchive worker` (prefork, ``concurrency`` pool processes), logging to ``log``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leadarchive.cli",
            "worker",
            "--concurrency",
            str(concurrency),
            "--metrics-port",
            "0",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_api(env: dict[str, str], log: IO[bytes], port: int) -> subprocess.Popen[bytes]:
    """`leadarchive api` (uvicorn) on 127.0.0.1:``port``, logging to ``log``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leadarchive.cli",
            "api",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and everything in its group (a worker with its pool), then reap it."""
    # Even when the leader is gone, its pool processes may not be.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
