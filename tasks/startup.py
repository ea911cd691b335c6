"""Start-up of a long-running process (``api``, ``worker``, ``flower``, ``run``, ``celery -A
worker.app``): its settings, or a refusal before anything listens or consumes.

Invariants:

- a malformed setting never reaches a running service: the process exits with status 2 and one
  line per bad variable on standard error, each naming it as ``LEADARCHIVE_<NAME>``;
- a refusal never repeats a value (settings hide their input: a key may have been pasted into the
  wrong variable);
- with a real database (not the embedded demo), LEADARCHIVE_OFFICE_HOURS must have been set:
  office hours are decided by the operator, never defaulted. ``none`` or an empty value decide
  "no restriction".

The operator's tools (``check``, ``seed-demo``, ``submit``, ``keys``) do not come here: an
administrator runs ``leadarchive check`` before deciding office hours.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import NoReturn

from pydantic import ValidationError

from tasks.settings import OFFICE_HOURS_EXAMPLE, Settings, get_settings

EXIT_BAD_SETTINGS = 2
_PREFIXES = ("Value error, ", "Assertion failed, ")


def service_settings() -> Settings:
    """This process's settings, checked for a service to start; exits with status 2 if not."""
    settings = checked_settings()
    if settings.office_hours_undecided:
        refuse([undecided_office_hours(settings)])
    return settings


def checked_settings() -> Settings:
    """This process's settings for an operator's tool: exits with status 2 if one is malformed."""
    try:
        return get_settings()
    except ValidationError as exc:
        refuse(describe(exc))


def describe(exc: ValidationError) -> list[str]:
    """One line per problem, naming the variable, without the value."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        message = str(error["msg"])
        for prefix in _PREFIXES:
            message = message.removeprefix(prefix)
        location = error["loc"]
        if location:
            lines.append(f"LEADARCHIVE_{str(location[0]).upper()}: {message}")
        else:
            # A check across settings: its message names each variable itself.
            lines.append(message)
    return lines


def undecided_office_hours(settings: Settings) -> str:
    """How to decide office hours, for a service with a real database and none set."""
    return (
        "LEADARCHIVE_OFFICE_HOURS is not set: decide when archiving must not run (the dialer"
        f' owns vicidial_list then), e.g. LEADARCHIVE_OFFICE_HOURS="{OFFICE_HOURS_EXAMPLE}"'
        f" (times in LEADARCHIVE_TIMEZONE, currently {settings.timezone}), or"
        " LEADARCHIVE_OFFICE_HOURS=none for no restriction"
    )


def refuse(lines: Iterable[str]) -> NoReturn:
    """Print why the service cannot start, and exit with status 2."""
    for line in lines:
        sys.stderr.write(f"leadarchive: {line}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_BAD_SETTINGS)
