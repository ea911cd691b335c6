"""The selection job's throttles, each with a signal the test controls: statements kept running on
the server (Threads_running), and a real replica delayed or stopped (its lag)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pymysql
import pytest
from sqlalchemy import Connection, Engine

from tasks.db import make_engine
from tasks.throttle import Throttles, replica_lag, threads_running
from testkit.servers import PrivateMariaDB, mysql_connect
from tests.helpers import wait_for


def test_no_limit_means_no_check(vicidial: Connection) -> None:
    assert Throttles().reason_to_wait(vicidial) is None


def test_a_busy_server_makes_the_job_wait_and_says_why(
    vicidial: Connection, database_url: str
) -> None:
    idle = threads_running(vicidial)
    throttles = Throttles(max_threads_running=idle + 2)
    assert throttles.reason_to_wait(vicidial) is None

    # Five statements kept running (as a busy dialer's would be) by the test itself.
    sleepers = [mysql_connect(database_url) for _ in range(5)]
    threads = [
        threading.Thread(target=lambda c=c: c.cursor().execute("SELECT SLEEP(4)"), daemon=True)
        for c in sleepers
    ]
    try:
        for thread in threads:
            thread.start()
        reason = wait_for(lambda: throttles.reason_to_wait(vicidial), timeout=10)
        assert "Threads_running" in reason and f"is {idle + 2})" in reason
        for thread in threads:
            thread.join(timeout=10)
        # The load is gone: the job may go on.
        assert wait_for(lambda: throttles.reason_to_wait(vicidial) is None, timeout=10)
    finally:
        for connection in sleepers:
            connection.close()


@pytest.fixture(scope="module")
def replication(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Engine]]:
    """A primary and its replica, private servers of this module's own: (primary, replica)."""
    folder = tmp_path_factory.mktemp("replication")
    primary = PrivateMariaDB(folder / "primary", options=("--log-bin", "--server-id=1"))
    replica = PrivateMariaDB(folder / "replica", options=("--server-id=2",))
    primary.start()
    replica.start()
    try:
        with pymysql.connect(host="127.0.0.1", port=replica.port, user="root") as conn:
            cursor = conn.cursor()
            cursor.execute(
                f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port},"
                " MASTER_USER='root', MASTER_USE_GTID=slave_pos"
            )
            cursor.execute("START REPLICA")
        engines = (make_engine(primary.url), make_engine(replica.url))
        with engines[0].connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE lag_probe")
            conn.exec_driver_sql("CREATE TABLE lag_probe.t (n INT)")
            conn.commit()
        yield engines
        for engine in engines:
            engine.dispose()
    finally:
        replica.stop()
        primary.stop()


def _replica_sql(replica: Engine, statement: str) -> None:
    with replica.connect() as conn:
        conn.exec_driver_sql(statement)


def test_a_lagging_replica_makes_the_job_wait_until_it_catches_up(
    replication: tuple[Engine, Engine], vicidial: Connection
) -> None:
    primary, replica = replication
    throttles = Throttles(max_lag=timedelta(seconds=1), replicas=(replica,))
    assert wait_for(lambda: replica_lag(replica) == 0, timeout=30)
    assert throttles.reason_to_wait(vicidial) is None

    # The replica applies every change 5 s late: a write on the primary puts it behind.
    _replica_sql(replica, "STOP REPLICA")
    _replica_sql(replica, "CHANGE MASTER TO MASTER_DELAY = 5")
    _replica_sql(replica, "START REPLICA")
    try:
        # Until its I/O thread has reconnected the replica's lag is unknown (a wait of its own,
        # tested below); the write goes in once the lag reads as a number again.
        assert wait_for(lambda: replica_lag(replica) is not None, timeout=30, interval=0.2)
        with primary.connect() as conn:
            conn.exec_driver_sql("INSERT INTO lag_probe.t VALUES (1)")
            conn.commit()

        def behind() -> str | None:
            reason = throttles.reason_to_wait(vicidial)
            return reason if reason is not None and "s behind" in reason else None

        reason = wait_for(behind, timeout=30, interval=0.2)
        assert "LEADARCHIVE_MAX_REPLICA_LAG is 1 s" in reason
    finally:
        _replica_sql(replica, "STOP REPLICA")
        _replica_sql(replica, "CHANGE MASTER TO MASTER_DELAY = 0")
        _replica_sql(replica, "START REPLICA")
    assert wait_for(lambda: throttles.reason_to_wait(vicidial) is None, timeout=30, interval=0.2)


def test_a_replica_whose_lag_is_unknown_counts_as_lagging(
    replication: tuple[Engine, Engine], vicidial: Connection
) -> None:
    _, replica = replication
    throttles = Throttles(max_lag=timedelta(seconds=30), replicas=(replica,))
    _replica_sql(replica, "STOP REPLICA SQL_THREAD")
    try:
        reason = throttles.reason_to_wait(vicidial)
    finally:
        _replica_sql(replica, "START REPLICA SQL_THREAD")
    assert reason is not None and "replication is not running" in reason
    # A replica nobody can reach: unknown too.
    gone = make_engine("mysql+pymysql://root@127.0.0.1:1/")
    assert Throttles(max_lag=timedelta(seconds=30), replicas=(gone,)).reason_to_wait(vicidial)
    gone.dispose()


def test_the_settings_build_the_throttles(database_url: str) -> None:
    from tasks.runtime import Runtime
    from tasks.settings import Settings

    replica = "mysql://monitor:pw@10.0.0.12:3306/asterisk"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        max_threads_running="40",  # type: ignore[arg-type]
        replica_urls=f" {replica} ,",
        max_replica_lag="5s",  # type: ignore[arg-type]
    )
    throttles = Runtime(settings).throttles

    assert throttles.max_threads_running == 40
    assert throttles.max_lag == timedelta(seconds=5)
    assert [e.url.render_as_string(hide_password=False) for e in throttles.replicas] == [
        "mysql+pymysql://monitor:pw@10.0.0.12:3306/asterisk"
    ]
    with pytest.raises(ValueError, match="MySQL/MariaDB URL"):
        Settings(_env_file=None, replica_urls="redis://10.0.0.12/0")  # type: ignore[call-arg]
    unthrottled = Runtime(Settings(_env_file=None, database_url=database_url)).throttles  # type: ignore[call-arg]
    assert (unthrottled.max_threads_running, unthrottled.max_lag) == (None, None)
