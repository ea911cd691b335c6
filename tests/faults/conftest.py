"""One private MariaDB and one private Redis for the whole session: the scenarios stop them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.faults.scenarios import Servers
from testkit.servers import PrivateMariaDB, PrivateRedis


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    folder: Path = tmp_path_factory.mktemp("faults")
    mariadb = PrivateMariaDB(folder / "mariadb")
    redis = PrivateRedis(folder / "redis")
    mariadb.start()
    try:
        redis.start()
        try:
            yield Servers(mariadb, redis, folder / "runs")
        finally:
            redis.close()
    finally:
        mariadb.close()
