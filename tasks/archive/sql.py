"""The batch's SQL, built once per batch from the live columns: every statement it sends.

Each statement is guarded in SQL on its own, whatever the batch read before: the delete compares
every column of the live row with its archive copy, NULL-safe and byte for byte (``same``), and
checks that no dialer table holds the lead (``held``), in the deleting statement itself; the
update never overwrites another lead's history (``same_lead``) and never runs as a no-op. The
statements name identifiers only through ``q`` and lead IDs only through ``id_list`` (integers
checked by ``validate_lead_ids``): nothing a client sends is spliced in as text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tasks.schema import ARCHIVE_TABLE, LIVE_TABLE, Column, Hold, TablePair

# Strict for every table (STRICT_TRANS_TABLES lets a multi-row MyISAM statement store adjusted
# values after its first row). No NO_ZERO_DATE: Vicidial rows carry zero dates that must copy.
SQL_MODE = (
    "STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION"
)


def q(identifier: str) -> str:
    """Quote a MySQL identifier (`rank` is reserved since MySQL 8.0.2)."""
    return "`" + identifier.replace("`", "``") + "`"


def id_list(ids: Iterable[int]) -> str:
    """The lead IDs as a SQL list (``1,2,3``)."""
    # Only ints validated by validate_lead_ids reach here, so inlining them is injection-free
    # and saves the driver's per-value escaping on every chunk.
    return ",".join(str(int(i)) for i in ids)


# The snapshot path's private temporary table (a session's own, one per connection).
SNAPSHOT = "leadarchive_snapshot"


def same(column: Column, left: str, right: str, dialect: str) -> str:
    """NULL-safe, byte-exact equality of one column between two aliases."""
    name = q(column.name)
    if dialect == "sqlite":
        # IS is NULL-safe, and SQLite's default BINARY collation compares bytes.
        return f"{left}.{name} IS {right}.{name}"
    if column.is_numeric:
        return f"{left}.{name} <=> {right}.{name}"
    # Bytes, not the collation: 'Bob' vs 'BOB' and 'x' vs 'x ' differ. Temporal values compare
    # as their text in the session's fixed UTC time zone, which maps TIMESTAMPs one to one.
    return f"CAST({left}.{name} AS BINARY) <=> CAST({right}.{name} AS BINARY)"


def held(hold: Hold, alias: str, *, indexed: bool) -> str:
    """True while ``hold`` names the live lead ``l`` (never NULL).

    Written for the plan it should get, measured at 1M leads with 500 agents and 20,000
    callbacks: MariaDB turns an EXISTS into a semi-join that materialises the whole subquery per
    statement (every pending callback: 10 ms for a 20-lead chunk). On an indexed column a scalar
    subquery stays a per-lead index lookup instead; an unindexed one (``preview_lead_id``,
    ``vicidial_auto_calls.lead_id``) is best read once per statement, as an uncorrelated IN
    whose NULLs are left out (a NULL would make NOT IN unknown, and the delete never happen).
    """
    if indexed:
        condition = hold.condition(alias).format(lead="l.lead_id")
        return f"(SELECT 1 FROM {q(hold.table)} AS {alias} WHERE {condition} LIMIT 1) IS NOT NULL"
    column = f"{alias}.{q(hold.column)}"
    return (
        f"l.lead_id IN (SELECT {column} FROM {q(hold.table)} AS {alias}"
        f" WHERE {column} IS NOT NULL{hold.status_condition(alias)})"
    )


@dataclass(slots=True)
class Statements:
    """The SQL of one table pair, built once per batch from the live columns."""

    pair: TablePair
    live_by_id: str = ""
    archive_by_id: str = ""
    identical: str = ""
    same_lead: str = ""
    in_use: str = ""
    held_by: str = ""
    insert_columns: str = ""
    insert_values: str = ""
    update_set: str = ""
    lock_tables: str = ""

    def __post_init__(self) -> None:
        columns = self.pair.columns
        dialect = self.pair.dialect
        # Primary-key lookups, always: on a small or freshly emptied table the optimizer may
        # choose a full scan, which on InnoDB would lock every row it reads.
        by_id = " FORCE INDEX (PRIMARY)" if dialect == "mysql" else ""
        self.live_by_id = f"{q(LIVE_TABLE)} AS l{by_id}"
        self.archive_by_id = f"{q(ARCHIVE_TABLE)} AS a{by_id}"
        self.identical = "(" + " AND ".join(same(c, "l", "a", dialect) for c in columns) + ")"
        # One lead, not two sharing a reused ID: entry_date is set at load and never changed.
        entry_date = [c for c in columns if c.name == "entry_date"]
        self.same_lead = same(entry_date[0], "l", "a", dialect) if entry_date else "1"
        # Each hold gets an alias of its own (LOCK TABLES locks every alias a statement uses).
        holds = [(hold, f"u{n}") for n, hold in enumerate(self.pair.holds)]
        checks = [
            (hold.reason, held(hold, alias, indexed=hold.reason in self.pair.indexed_holds))
            for hold, alias in holds
        ]
        self.in_use = "(" + " OR ".join(check for _, check in checks) + ")" if checks else "0"
        self.held_by = (
            "CASE " + " ".join(f"WHEN {check} THEN '{reason}'" for reason, check in checks) + " END"
            if checks
            else "NULL"
        )
        self.insert_columns = ", ".join(q(c.name) for c in columns)
        self.insert_values = ", ".join(f"l.{q(c.name)}" for c in columns)
        # Every column, modify_date included: left out, ON UPDATE would stamp a new time and the
        # copy could never match again. (SQLite names the target's columns unqualified.)
        target = "a." if dialect == "mysql" else ""
        self.update_set = ", ".join(
            f"{target}{q(c.name)} = l.{q(c.name)}" for c in columns if c.name != "lead_id"
        )
        in_use_locks = [f"{q(hold.table)} AS {alias} READ" for hold, alias in holds]
        self.lock_tables = "LOCK TABLES " + ", ".join(
            [
                f"{q(LIVE_TABLE)} AS l WRITE",
                f"{q(ARCHIVE_TABLE)} AS a WRITE",
                f"{q(ARCHIVE_TABLE)} WRITE",
                *in_use_locks,
            ]
        )

    def classify(self, ids: str) -> str:
        """Why each live lead is still live: (lead_id, archived, identical, same_lead, held_by)."""
        return (
            f"SELECT l.lead_id, a.lead_id IS NOT NULL, {self.identical}, {self.same_lead},"
            f" {self.held_by} FROM {self.live_by_id} LEFT JOIN {self.archive_by_id}"
            f" ON a.lead_id = l.lead_id WHERE l.lead_id IN ({ids})"
        )

    def states(self, ids: str, source: str = "", *, with_list: bool = False) -> str:
        """Live rows (from ``source``) with their archive comparison, then every archived lead.

        One statement: (lead_id, live, archived, identical, same_lead, held_by) rows, and each
        row's ``list_id`` after them ``with_list`` (a job scoped to lists; an unscoped job's
        statement is the same as before scopes). The snapshot is never in use itself; its
        leads' use is checked by the guarded DELETE.
        """
        held_by = "NULL" if source else self.held_by
        by_id = " FORCE INDEX (PRIMARY)" if self.pair.dialect == "mysql" else ""
        live_list, archive_list = (", l.list_id", ", list_id") if with_list else ("", "")
        return (
            f"SELECT l.lead_id, 1, a.lead_id IS NOT NULL, {self.identical}, {self.same_lead},"
            f" {held_by}{live_list} FROM {source or self.live_by_id} LEFT JOIN"
            f" {self.archive_by_id} ON a.lead_id = l.lead_id WHERE l.lead_id IN ({ids})"
            f" UNION ALL SELECT lead_id, 0, 1, 0, 1, NULL{archive_list} FROM"
            f" {q(ARCHIVE_TABLE)}{by_id} WHERE lead_id IN ({ids})"
        )

    # insert and update copy from `source`, aliased `l`: the live table, or the snapshot.
    def insert(self, ids: str, source: str = "") -> str:
        """Copy the leads from ``source`` into the archive."""
        # The archive's primary key refuses a second copy; the lock made the check exact.
        return (
            f"INSERT INTO {q(ARCHIVE_TABLE)} ({self.insert_columns})"
            f" SELECT {self.insert_values} FROM {source or self.live_by_id}"
            f" WHERE l.lead_id IN ({ids})"
        )

    def update(self, ids: str, source: str = "") -> str:
        """Refresh the leads' archive copies from ``source`` where they differ."""
        source = source or self.live_by_id
        if self.pair.dialect == "sqlite":
            return (
                f"UPDATE {self.archive_by_id} SET {self.update_set} FROM {source}"
                f" WHERE l.lead_id = a.lead_id AND a.lead_id IN ({ids})"
                f" AND {self.same_lead} AND NOT {self.identical}"
            )
        # Guarded like the delete: never another lead's history (same_lead), never a no-op.
        return (
            f"UPDATE {self.archive_by_id} JOIN {source} ON l.lead_id = a.lead_id"
            f" SET {self.update_set} WHERE a.lead_id IN ({ids})"
            f" AND {self.same_lead} AND NOT {self.identical}"
        )

    def delete(self, ids: str) -> str:
        """Delete the live leads whose archive copy is identical and that nothing holds."""
        # The guard is the comparison itself, evaluated by the deleting statement.
        if self.pair.dialect == "sqlite":
            return (
                f"DELETE FROM {self.live_by_id} WHERE l.lead_id IN ({ids})"
                f" AND EXISTS (SELECT 1 FROM {self.archive_by_id}"
                f" WHERE a.lead_id = l.lead_id AND {self.identical}) AND NOT {self.in_use}"
            )
        return (
            f"DELETE l FROM {self.live_by_id} JOIN {self.archive_by_id} ON a.lead_id = l.lead_id"
            f" WHERE l.lead_id IN ({ids}) AND {self.identical} AND NOT {self.in_use}"
        )

    # The snapshot path: the batch's live rows, read once by primary key into a private
    # temporary table aliased `l`, so every expression above serves both sources.
    def snapshot_create(self) -> str:
        """Create the session's snapshot table (``{engine}`` left to fill in)."""
        return (
            f"CREATE TEMPORARY TABLE {SNAPSHOT} (PRIMARY KEY (lead_id)) ENGINE={{engine}}"
            f" AS SELECT {self.insert_columns} FROM {q(LIVE_TABLE)} LIMIT 0"
        )

    def snapshot_fill(self, ids: str) -> str:
        """Read the leads' live rows into the snapshot, by primary key."""
        return (
            f"INSERT INTO {SNAPSHOT} ({self.insert_columns})"
            f" SELECT {self.insert_values} FROM {self.live_by_id} WHERE l.lead_id IN ({ids})"
        )

    def lock_rows(self, table: str, ids: str) -> str:
        """Lock the leads' rows of ``table`` in ``lead_id`` order (InnoDB)."""
        return (
            f"SELECT lead_id FROM {q(table)} FORCE INDEX (PRIMARY) WHERE lead_id IN ({ids})"
            " ORDER BY lead_id FOR UPDATE"
        )
