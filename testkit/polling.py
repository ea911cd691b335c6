"""Waiting for something to become true: one poll loop for tests, benchmarks and soak runs.

``wait_until`` calls a predicate until it returns something truthy and returns that value. On
timeout it raises ``WaitTimeout``, which is both an ``AssertionError`` (a test that waited in
vain failed) and a ``TimeoutError`` (what a benchmark or a soak run catches). A process to watch
turns "it exited" into an immediate error instead of a long wait; a log file's tail goes into
either message.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError, TimeoutError):
    """What ``wait_until`` waited for did not happen in time."""


def tail(path: Path | None, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: object = None,
    *,
    interval: float = 0.05,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate()`` every ``interval`` s until it is truthy; its value.

    ``what`` names the wait in the error (default: the predicate). ``process``: fail at once
    when it exits. ``log``: its tail goes into the error. ``ignore``: exceptions the predicate
    may raise while the thing is not ready yet (they count as false).
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{what or predicate}: the process exited ({process.returncode}):\n{tail(log)}"
            )
        try:
            value = predicate()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:.0f}s waiting for {what or predicate}"
            raise WaitTimeout(f"{message}:\n{tail(log)}" if log is not None else message)
        time.sleep(interval)
