"""The real processes for hostile input: ``leadarchive api`` and ``leadarchive worker`` as
subprocesses (started with testkit.services, the harness the load command uses), on a MariaDB
database and a Redis database of their own, so that their jobs never meet the in-thread worker's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tasks.db import make_engine
from tasks.ddl import create_vicidial_tables
from tasks.seed import insert_leads, lead_rows
from testkit.servers import scratch_database
from testkit.services import Live, live_services
from tests.conftest import SERVER_URL, claim_redis_database

LEADS = 200


@contextmanager
def own_database() -> Iterator[tuple[str, Engine]]:
    """A fresh database with MyISAM Vicidial tables and ``LEADS`` leads; dropped afterwards."""
    server = make_engine(SERVER_URL)
    try:
        with scratch_database(server, "leadarchive_hostile") as url:
            database_url = url.render_as_string(hide_password=False)
            engine = make_engine(database_url)
            try:
                with engine.connect() as conn:
                    create_vicidial_tables(conn, "MyISAM")
                    insert_leads(conn, lead_rows(LEADS, seed=41))
                yield database_url, engine
            finally:
                engine.dispose()
    finally:
        server.dispose()


LiveFactory = Callable[..., AbstractContextManager[tuple[Live, Engine]]]


@pytest.fixture(scope="module")
def start_live(tmp_path_factory: pytest.TempPathFactory) -> LiveFactory:
    """Start the API (and the worker unless ``worker=False``) on a database and Redis of their
    own; ``settings`` become ``LEADARCHIVE_*`` variables."""

    @contextmanager
    def start(*, worker: bool = True, **settings: str) -> Iterator[tuple[Live, Engine]]:
        logs: Path = tmp_path_factory.mktemp("live-logs")
        with (
            own_database() as (database_url, engine),
            claim_redis_database() as redis_url,
            live_services(
                database_url, redis_url, logs, concurrency=1, worker=worker, **settings
            ) as live,
        ):
            yield live, engine

    return start
