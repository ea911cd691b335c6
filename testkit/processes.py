"""The service's real processes: `leadarchive api` and `leadarchive worker` (prefork), and ports.

Each runs in a process group of its own, so a test can kill a worker with its pool (SIGKILL to
the group) or one pool process alone, and nothing is ever left behind: ``kill_group`` (a crash)
and ``stop_group`` (SIGTERM, then SIGKILL after a grace period) take the whole group. The
environment comes from ``service_env`` alone: no ``LEADARCHIVE_*`` variable of the calling shell
leaks into a process, so what runs is what the caller configured.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import psutil

REPO = Path(__file__).resolve().parent.parent
# The console script the project installs; `python -m leadarchive.cli` where it is not installed.
CLI = Path(sys.executable).parent / "leadarchive"


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def leadarchive(*args: str) -> list[str]:
    """The command line of ``leadarchive ARGS``."""
    command = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "leadarchive.cli"]
    return [*command, *args]


def service_env(database_url: str, redis_url: str, **settings: Any) -> dict[str, str]:
    """This process's environment without its ``LEADARCHIVE_*`` variables, plus those for the
    given servers (office hours off) and ``settings`` (``rate_limit=""`` is
    ``LEADARCHIVE_RATE_LIMIT=``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADARCHIVE_")}
    env.update(
        LEADARCHIVE_DATABASE_URL=database_url,
        LEADARCHIVE_BROKER_URL=redis_url,
        LEADARCHIVE_RESULT_BACKEND=redis_url,
        LEADARCHIVE_OFFICE_HOURS="",
    )
    for name, value in settings.items():
        env[f"LEADARCHIVE_{name.upper()}"] = str(value)
    return env


def start(
    argv: Sequence[str], env: dict[str, str], log: IO[bytes] | Path, cwd: Path = REPO
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in ``cwd``, in a process group of its own, output to ``log`` (a file, or a
    path that is created afresh)."""
    if isinstance(log, Path):
        with log.open("wb") as out:
            return start(argv, env, out, cwd)
    return subprocess.Popen(
        list(argv),
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_worker(
    env: dict[str, str],
    log: IO[bytes] | Path,
    concurrency: int = 1,
    *,
    metrics_port: int | None = 0,
    nice: int = 0,
) -> subprocess.Popen[bytes]:
    """`leadarchive worker` (prefork, ``concurrency`` pool processes), logging to ``log``.

    ``metrics_port``: 0 for none, ``None`` for the default; ``nice``: a lower CPU priority."""
    argv = leadarchive("worker", "--concurrency", str(concurrency))
    if metrics_port is not None:
        argv += ["--metrics-port", str(metrics_port)]
    if nice:
        argv = ["nice", "-n", str(nice), *argv]
    return start(argv, env, log)


def start_api(env: dict[str, str], log: IO[bytes] | Path, port: int) -> subprocess.Popen[bytes]:
    """`leadarchive api` (uvicorn) on 127.0.0.1:``port``, logging to ``log``."""
    return start(leadarchive("api", "--host", "127.0.0.1", "--port", str(port)), env, log)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and everything in its group (a worker with its pool), then reap it."""
    # Even when the leader is gone, its pool processes may not be.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def stop_group(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the process group (resumed first, in case it was paused), SIGKILL it after
    ``grace`` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    # Prefork children may outlive their parent for a moment: the group goes in any case.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def alive_children(process: psutil.Process) -> list[psutil.Process]:
    """A worker's pool processes that still run (zombies left out)."""
    try:
        return [c for c in process.children() if c.status() != psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []
