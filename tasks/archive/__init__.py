"""The archive batch: insert, refresh and verified delete of Vicidial leads, on MySQL/MariaDB.

A plain function over a database connection; no Celery here. The invariant it keeps at every
instant, for every lead: the lead is in ``vicidial_list``, or its identical copy is in
``vicidial_list_archive``.

How a batch runs. The unique lead IDs are sorted and cut into chunks. For each chunk the rows are
locked (``LOCK TABLES`` on MyISAM, row locks in ``lead_id`` order on InnoDB), their state is read
(live? archived? identical? queued or in a call?), and the insert, update and delete statements run
on exactly the leads that state calls for, each statement still guarded in SQL on its own: the
delete compares every column, NULL-safe and byte for byte, in the deleting statement itself. The
lock is released after every chunk, and the chunk size follows a target lock time (like
pt-online-schema-change's ``--chunk-time``) so the dialer never waits long for the table.

One job per module:

- ``plan``: the outcome model and the pure planner ``plan_lead`` (no database);
- ``sql``: every statement's SQL, and the byte-exact comparison (``same``);
- ``cursor``: the ``Cursor`` every statement goes through, and the ``StatementObserver`` it tells;
- ``sizing``: the ``ChunkSizer`` and the sizes learned per process (``LEARNED``);
- ``chunk``: what every strategy does with a chunk (read, plan, write), ``Tuning``, the batch lock;
- one module per strategy: ``myisam_snapshot``, ``myisam_locked``, ``innodb``, ``sqlite``;
- ``batch``: ``run_batch``, which picks the strategy.
"""

from tasks.archive.batch import run_batch
from tasks.archive.chunk import AfterRead, Tuning
from tasks.archive.cursor import StatementObserver
from tasks.archive.plan import (
    DELETE_OUTCOMES,
    INSERT_OUTCOMES,
    MAX_LEAD_ID,
    UPDATE_OUTCOMES,
    Actions,
    BatchReport,
    DeleteOutcome,
    InsertOutcome,
    LeadResult,
    LeadState,
    UpdateOutcome,
    make_report,
    plan_lead,
    validate_lead_ids,
)
from tasks.archive.sql import SNAPSHOT, SQL_MODE, q

__all__ = [
    "DELETE_OUTCOMES",
    "INSERT_OUTCOMES",
    "MAX_LEAD_ID",
    "SNAPSHOT",
    "SQL_MODE",
    "UPDATE_OUTCOMES",
    "Actions",
    "AfterRead",
    "BatchReport",
    "DeleteOutcome",
    "InsertOutcome",
    "LeadResult",
    "LeadState",
    "StatementObserver",
    "Tuning",
    "UpdateOutcome",
    "make_report",
    "plan_lead",
    "q",
    "run_batch",
    "validate_lead_ids",
]
