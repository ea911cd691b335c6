"""deploy/grants.sql's optional [restore] block, for real: without it a restore job fails with a
clear error and changes nothing; with it a restore works; archiving needs it not.

The sandboxes are test_grants.py's: a fresh database with Vicidial's tables and 20 leads, and a
fresh user given grants.sql (with or without options).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tasks.archive import Actions, run_batch
from tasks.archive.restore import RestoreGrantError, run_restore
from tasks.db import make_engine
from tasks.schema import ARCHIVE_TABLE, LIVE_TABLE
from tests.deploy.mariadb import run_sql
from tests.deploy.test_grants import (
    Sandbox,
    documented_grants,
    make_sandbox,
)
from tests.deploy.test_grants import (
    test_documented_sed_command_renders_the_same_sql as renders_the_same_sql,
)
from tests.helpers import archive, live

MOVE = Actions(insert=True, update=True, delete=True)


@pytest.fixture(params=["MyISAM", "InnoDB"])
def engine_sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    yield from make_sandbox(str(request.param))


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    yield from make_sandbox()


def user_engine(sandbox: Sandbox) -> Engine:
    return make_engine(sandbox.url())


def archive_some(sandbox: Sandbox, engine: Engine) -> None:
    with engine.connect() as conn:
        assert run_batch(conn, [1, 2, 3], MOVE).counts["delete"]["deleted"] == 3


def test_without_the_restore_grants_a_restore_fails_clearly_and_changes_nothing(
    engine_sandbox: Sandbox,
) -> None:
    sandbox = engine_sandbox
    sandbox.grant()
    engine = user_engine(sandbox)
    try:
        archive_some(sandbox, engine)
        before = (live(sandbox.root), archive(sandbox.root))
        with engine.connect() as conn, pytest.raises(RestoreGrantError) as refused:
            run_restore(conn, [1, 2, 3, 4])
        # A dry run only reads: it works with the archive's grants.
        with engine.connect() as conn:
            dry = run_restore(conn, [1, 2, 3, 4], dry_run=True)
    finally:
        engine.dispose()
    assert "INSERT on vicidial_list and DELETE on vicidial_list_archive" in str(refused.value)
    assert "[restore]" in str(refused.value)
    assert (live(sandbox.root), archive(sandbox.root)) == before
    assert dry.counts["restore"] == {"restored": 3, "already_live": 1, "not_archived": 0}


def test_insert_without_delete_still_changes_nothing(sandbox: Sandbox) -> None:
    # Half the block: the lead could come back but its archive row could not go. Refused before
    # any write, so no lead is left in both tables by a restore that cannot finish.
    sandbox.grant()
    db = sandbox.database
    engine = user_engine(sandbox)
    try:
        archive_some(sandbox, engine)
        run_sql(db, f"GRANT INSERT ON `{db}`.`{LIVE_TABLE}` TO '{sandbox.user}'@'{sandbox.host}';")
        before = (live(sandbox.root), archive(sandbox.root))
        with engine.connect() as conn, pytest.raises(RestoreGrantError):
            run_restore(conn, [1, 2])
    finally:
        engine.dispose()
    assert (live(sandbox.root), archive(sandbox.root)) == before


def test_with_the_restore_block_a_restore_works(engine_sandbox: Sandbox) -> None:
    sandbox = engine_sandbox
    sandbox.grant("restore")
    db = sandbox.database
    expected = documented_grants(db)
    expected[f"{db}.{LIVE_TABLE}"] |= {"INSERT"}
    expected[f"{db}.{ARCHIVE_TABLE}"] |= {"DELETE"}
    assert sandbox.grants() == expected
    before = live(sandbox.root)
    engine = user_engine(sandbox)
    try:
        archive_some(sandbox, engine)
        with engine.connect() as conn:
            report = run_restore(conn, [1, 2, 3, 4, 99])
    finally:
        engine.dispose()
    assert report.counts["restore"] == {"restored": 3, "already_live": 1, "not_archived": 1}
    assert live(sandbox.root) == before
    assert archive(sandbox.root) == {}


def test_the_documented_sed_expression_enables_the_block() -> None:
    # The header's sed expression for [restore] (and the other options) renders the same SQL.
    renders_the_same_sql(("restore",))
    renders_the_same_sql(("seed-demo", "restore"))
