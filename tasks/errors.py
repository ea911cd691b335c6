"""Errors of the archive domain. They know nothing about HTTP; ``api`` maps them to responses.

LeadArchiveError
├── ConfigurationError        settings that cannot work (bad URL, bad office hours, ...)
│   └── OfficeHoursError      LEADARCHIVE_OFFICE_HOURS cannot be read (also a ValueError)
│       └── WholeWeekError    the office hours leave no time to archive in
├── SchemaError               the tables cannot be archived between safely
│   ├── MissingTableError     vicidial_list or vicidial_list_archive does not exist
│   ├── SchemaMismatchError   the archive's columns differ from the live table's
│   └── InUseUnknownError     a dialer table exists but cannot be read: no delete
├── BatchError                a batch could not be carried out
│   ├── ConcurrentChangeError a row changed between the batch's check and its statement
│   └── BatchBusyError        another batch held the batch lock too long (retried)
├── SeedError                 seed-demo refused, or stopped part-way (says how to clean up)
├── IdempotencyConflict       an idempotency key used before with a different request
└── AdmissionError            a new job refused before anything is written: try again later
    ├── TooManyPendingJobs    the key has LEADARCHIVE_MAX_PENDING_JOBS jobs not finished yet
    └── StoreFullError        the job store has no room left for another job's result
"""

from __future__ import annotations

import redis.exceptions
from pymysql.constants import CR, ER
from sqlalchemy.exc import PendingRollbackError


class LeadArchiveError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigurationError(LeadArchiveError):
    """The settings cannot work."""


class SchemaError(LeadArchiveError):
    """The live and archive tables cannot be archived between safely."""


class MissingTableError(SchemaError):
    """A table the batch needs does not exist."""


class SchemaMismatchError(SchemaError):
    """The archive table's columns differ from the live table's; ``differences`` names each one."""

    def __init__(self, differences: list[str]) -> None:
        self.differences = differences
        super().__init__(
            "vicidial_list_archive does not match vicidial_list: " + "; ".join(differences)
        )


class InUseUnknownError(SchemaError):
    """A dialer table (hopper, live calls) cannot be read, so leads in use cannot be told apart.

    Deleting anyway could remove a lead the dialer is about to call; deletes are refused.
    """

    def __init__(self, tables: tuple[str, ...]) -> None:
        self.tables = tables
        super().__init__(
            f"cannot read {', '.join(tables)} (grant SELECT on it): a lead queued or in a call"
            " could not be recognised, so no lead is deleted"
        )


class BatchError(LeadArchiveError):
    """A batch could not be carried out."""


class ConcurrentChangeError(BatchError):
    """A statement touched other rows than the batch's locked check predicted.

    Nothing unsafe happened (every statement is guarded on its own); the chunk is retried.
    """


class BatchBusyError(BatchError):
    """Another batch on the same database held the batch lock past the wait; retry later."""


class SeedError(LeadArchiveError):
    """``leadarchive seed-demo`` refused (nothing changed) or stopped part-way (says what to do)."""


class OfficeHoursError(ConfigurationError, ValueError):
    """Office hours that cannot be read; a ValueError too, so a pydantic validator reports it."""


class WholeWeekError(OfficeHoursError):
    """The office hours cover the whole week: archiving could never run."""


class IdempotencyConflict(LeadArchiveError):
    """The idempotency key was used before with a different request."""


class AdmissionError(LeadArchiveError):
    """A new job is refused before anything is written; ``retry_after`` seconds is a fair wait."""

    retry_after = 30


class TooManyPendingJobs(AdmissionError):
    """The key has as many unfinished jobs as it may have (``LEADARCHIVE_MAX_PENDING_JOBS``)."""

    def __init__(self, pending: int, limit: int) -> None:
        self.pending, self.limit = pending, limit
        super().__init__(
            f"this key has {pending} jobs not finished yet; the limit is {limit}:"
            " wait for some to finish"
        )


class StoreFullError(AdmissionError):
    """The job store keeps too little memory free for every accepted job to record its result.

    Refused while there is still room, so no job already accepted ever meets a full Redis.
    """

    retry_after = 60


# MariaDB's "connection was killed" (KILL CONNECTION from another session): MySQL has no such
# number, so pymysql.constants.ER does not name it.
ER_CONNECTION_KILLED = 1927

# MySQL/MariaDB error numbers of operational trouble: retry. Anything else is about the data or
# the schema and would fail the same way again.
TRANSIENT_MYSQL_ERRORS: frozenset[int] = frozenset(
    {
        ER.CON_COUNT_ERROR,  # too many connections
        ER.SERVER_SHUTDOWN,  # server shutdown in progress
        ER.LOCK_WAIT_TIMEOUT,
        ER.LOCK_DEADLOCK,
        ER_CONNECTION_KILLED,
        CR.CR_CONNECTION_ERROR,  # can't connect (socket)
        CR.CR_CONN_HOST_ERROR,  # can't connect (TCP)
        CR.CR_SERVER_GONE_ERROR,  # server has gone away
        CR.CR_SERVER_LOST,  # lost connection during query
        CR.CR_SERVER_LOST_EXTENDED,  # lost connection (system error)
    }
)


def is_transient(exc: BaseException) -> bool:
    """True for a database error that a retry may cure (connection lost, deadlock, lock wait)."""
    # A connection SQLAlchemy found lost and invalidated is used again only after a rollback:
    # on our autocommit connections that refusal follows a lost connection and nothing else.
    if isinstance(exc, BatchBusyError | ConcurrentChangeError | PendingRollbackError):
        return True
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        original = getattr(current, "orig", None)
        for candidate in (current, original):
            if candidate is not None and mysql_error_code(candidate) in TRANSIENT_MYSQL_ERRORS:
                return True
            # pymysql's InterfaceError (0, '') after the socket died.
            if type(candidate).__name__ == "InterfaceError":
                return True
        current = current.__cause__ or current.__context__
    return False


# The server's "access denied" to a database or a table (a user without a privilege).
MYSQL_ACCESS_DENIED: frozenset[int] = frozenset(
    {ER.DBACCESS_DENIED_ERROR, ER.TABLEACCESS_DENIED_ERROR}
)


def mysql_error_code(exc: BaseException) -> int | None:
    """The MySQL/MariaDB error number of a driver error, or of the one SQLAlchemy wraps
    (``.orig``); None for any other exception."""
    original = getattr(exc, "orig", None)
    args = getattr(exc if original is None else original, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


# Redis' replies to a command it cannot carry out now, whatever the command: out of memory under
# `noeviction` (OOM), a failed background save that stops writes (MISCONF), a replica (READONLY),
# a script running too long (BUSY), still loading its data (LOADING, a BusyLoadingError), no
# reachable primary or too few replicas (MASTERDOWN, NOREPLICAS); and a transaction discarded
# because one of those refused a queued command (EXECABORT).
_UNAVAILABLE_REPLIES = ("OOM", "MISCONF", "READONLY", "BUSY", "LOADING", "MASTERDOWN", "NOREPLICAS")


def redis_unavailable(exc: BaseException) -> bool:
    """True when Redis cannot be reached or cannot serve now (see ``_UNAVAILABLE_REPLIES``):
    the caller answers "try again later", never a server error."""
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return True
    if isinstance(
        exc,
        redis.exceptions.OutOfMemoryError
        | redis.exceptions.ReadOnlyError
        | redis.exceptions.ExecAbortError,
    ):
        return True
    if isinstance(exc, redis.exceptions.ResponseError):
        return str(exc).split(" ", 1)[0] in _UNAVAILABLE_REPLIES
    return False
