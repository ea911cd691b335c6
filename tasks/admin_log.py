"""Vicidial's Administration Change Log: one ``vicidial_admin_log`` row for a finished job.

The row reads like the ones Vicidial writes itself (VICIDIAL.md), so an administrator finds archive
jobs in Vicidial's Admin Change Log next to everything else:

- ``event_section`` LEADS, ``event_type`` MODIFY, ``record_id`` the job ID, ``event_code``
  ``LEAD ARCHIVE API`` (``LEAD DEARCHIVE API`` for a restore job), ``user_group`` ``---ALL---``
  (every administrator sees it), ``event_date`` the database server's local time, as Vicidial's
  own ``NOW()``;
- ``event_notes`` name the API key and give the counts; nothing in the row is lead data, and
  ``event_sql`` stays empty (a batch runs many parametrised statements; the job's status has the
  detail, lead by lead);
- every value is cut to its column's size here, so the server stores exactly what is sent, in
  strict mode or not;
- values travel as bind parameters only;
- the service needs INSERT on the table and nothing more. Not SELECT: the log holds other
  administrators' SQL. So whether a job's row exists is never read from the table; the job record
  says (see ``tasks.lifecycle``);
- a missing table is not an error (the log is written where the table exists); every other failure
  is raised to the caller, which logs it and never fails the job for it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta

from pymysql.constants import ER
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from tasks.errors import mysql_error_code

TABLE = "vicidial_admin_log"
EVENT_SECTION = "LEADS"
EVENT_TYPE = "MODIFY"
EVENT_CODE = "LEAD ARCHIVE API"
RESTORE_EVENT_CODE = "LEAD DEARCHIVE API"
USER_GROUP = "---ALL---"
# Vicidial's column sizes in characters (VICIDIAL.md, from Vicidial 2.14's create script).
SIZES = {
    "user": 20,
    "ip_address": 15,
    "event_section": 30,
    "record_id": 50,
    "event_code": 255,
    "user_group": 20,
}
# MEDIUMTEXT holds 16 MiB; the notes are a few hundred characters. A cap all the same, far below
# the column's size even at 4 bytes a character.
NOTES_LIMIT = 65_535

_INSERT = """
INSERT INTO vicidial_admin_log (event_date, `user`, ip_address, event_section, event_type,
                                record_id, event_code, event_sql, event_notes, user_group)
VALUES (NOW(), :user, :ip_address, :event_section, :event_type,
        :record_id, :event_code, :event_sql, :event_notes, :user_group)
"""
# SQLite (the embedded demo) has no NOW(); this is the same local time.
_INSERT_SQLITE = _INSERT.replace("NOW()", "datetime('now', 'localtime')")


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """A finished job as its admin-log row tells it."""

    job_id: str
    key_name: str
    lead_count: int
    actions: tuple[str, ...]
    # For a job that succeeded: action -> outcome -> count (``BatchReport.counts``).
    counts: dict[str, dict[str, int]] | None = None
    # For a job that failed: the error's type (never its message, which may quote data).
    error: str = ""
    # The row's event_code: which kind of job (archive, or restore).
    event_code: str = EVENT_CODE
    # How a job without an error ended: succeeded, or (a selection) cancelled.
    ended: str = "succeeded"

    def notes(self) -> str:
        """``event_notes``: the key's name, the lead count, the status and every count."""
        head = (
            f"key={self.key_name} leads={self.lead_count} actions={','.join(self.actions)}"
            f" status={'failed' if self.error else self.ended}"
        )
        if self.error:
            return f"{head} error={self.error}"
        parts = [
            f"{action}: " + " ".join(f"{outcome}={count}" for outcome, count in outcomes.items())
            for action, outcomes in (self.counts or {}).items()
        ]
        return f"{head} {'; '.join(parts)}" if parts else head


def client_address(host: str | None) -> str:
    """The client's IP address in its usual text form; '' when ``host`` is not an IP address.

    An IPv4 address seen through an IPv6 socket (``::ffff:192.0.2.1``) is given as IPv4.
    """
    if not host:
        return ""
    try:
        address = ipaddress.ip_address(host.strip().split("%", 1)[0])
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def fit(column: str, value: str) -> str:
    """``value`` cut to the column's size."""
    return value[: SIZES[column]]


def write(
    conn: Connection,
    outcome: JobOutcome,
    *,
    user: str,
    ip_address: str,
    lock_wait: timedelta = timedelta(seconds=5),
) -> bool:
    """Insert the job's row; False when the table does not exist (nothing written).

    ``ip_address`` is kept only when it fits Vicidial's VARCHAR(15) (every IPv4 address, short
    IPv6 ones): a cut address would name another machine, so a longer one is written as ''.
    """
    dialect = conn.dialect.name
    if dialect != "sqlite":
        # A pooled connection keeps the session a batch set (time_zone '+00:00'): the server's
        # own zone again, so NOW() is its local time as in Vicidial's rows; and no long wait
        # behind a lock on the log.
        conn.execute(
            text("SET SESSION time_zone = @@global.time_zone, lock_wait_timeout = :wait"),
            {"wait": max(1, int(lock_wait.total_seconds()))},
        )
    params = {
        "user": fit("user", user),
        "ip_address": ip_address if len(ip_address) <= SIZES["ip_address"] else "",
        "event_section": fit("event_section", EVENT_SECTION),
        "event_type": EVENT_TYPE,
        "record_id": fit("record_id", outcome.job_id),
        "event_code": fit("event_code", outcome.event_code),
        "event_sql": "",
        "event_notes": outcome.notes()[:NOTES_LIMIT],
        "user_group": fit("user_group", USER_GROUP),
    }
    try:
        conn.execute(text(_INSERT_SQLITE if dialect == "sqlite" else _INSERT), params)
    except DBAPIError as exc:
        if _no_such_table(exc):
            return False
        raise
    return True


def _no_such_table(exc: DBAPIError) -> bool:
    if mysql_error_code(exc) == ER.NO_SUCH_TABLE:
        return True
    args: tuple[object, ...] = getattr(exc.orig, "args", ())
    # SQLite (the embedded demo) says it in words.
    return bool(args) and isinstance(args[0], str) and args[0].startswith("no such table")
