"""Private MariaDB and Redis servers that a fault test may stop, kill and start again.

The shared servers on 3306 and 6379 serve other test runs and CI: never stop those. These run
from a folder of their own, on free ports, as children of the process that starts them. A fresh
MariaDB data folder takes about 3 s to create and the server about 0.5 s to boot, so one of each
serves a whole test session (or soak run); each scenario takes a fresh database in it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import redis
from sqlalchemy import URL, Connection, Engine, make_url

from tasks.db import make_engine
from testkit.polling import wait_until
from testkit.processes import free_port

MARIADBD = shutil.which("mariadbd", path="/usr/sbin:/usr/bin:/usr/local/sbin") or "mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "mariadb-install-db"
REDIS_SERVER = shutil.which("redis-server") or "redis-server"


# Vicidial's stock `cron` user's grants (for mysql_user): no CREATE TEMPORARY TABLES, so a MyISAM
# batch takes the locked path.
CRON_GRANTS = "SELECT, INSERT, UPDATE, DELETE, LOCK TABLES ON `{db}`.*"


@contextmanager
def mysql_user(
    conn: Connection, database_url: str, *grants: str, pool_size: int = 2
) -> Iterator[Engine]:
    """An engine for a fresh MariaDB user holding only ``grants`` (``{db}`` is the database).

    Each grant reads like ``SELECT ON `{db}`.*``; the user is dropped afterwards.
    """
    url = make_url(database_url)
    user, password = f"la_{secrets.token_hex(5)}", secrets.token_hex(12)
    account = f"'{user}'@'{url.host or '127.0.0.1'}'"
    conn.exec_driver_sql(f"CREATE USER {account} IDENTIFIED BY '{password}'")
    engine = make_engine(
        url.set(username=user, password=password).render_as_string(hide_password=False),
        pool_size=pool_size,
    )
    try:
        for grant in grants:
            conn.exec_driver_sql(f"GRANT {grant.format(db=url.database)} TO {account}")
        yield engine
    finally:
        engine.dispose()
        conn.exec_driver_sql(f"DROP USER {account}")


def mysql_connect(url: str, **options: Any) -> pymysql.Connection[Any]:
    """A plain pymysql connection (autocommit, utf8mb4) to the server and database of a
    SQLAlchemy URL, as a dialer or an operator's session would open one; ``options`` go to
    ``pymysql.connect``."""
    u = make_url(url)
    return pymysql.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
        database=u.database,
        charset="utf8mb4",
        autocommit=True,
        **options,
    )


@contextmanager
def scratch_database(server: Engine, prefix: str) -> Iterator[URL]:
    """A new database ``<prefix>_<random>`` on ``server`` in Vicidial's default utf8 /
    utf8_unicode_ci, dropped afterwards; its URL (connections in utf8mb4).

    MyISAM cannot roll back: a run is isolated by a database of its own, never by transactions.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with server.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8 COLLATE utf8_unicode_ci")
    try:
        yield server.url.set(database=name, query={"charset": "utf8mb4"})
    finally:
        with server.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")


def claim_redis_db(
    base_url: str, key: str, value: str, numbers: Iterable[int], *, expire: int | None = None
) -> tuple[int, redis.Redis] | None:
    """The first empty database among ``numbers`` of a shared Redis (``base_url``: no number),
    claimed by setting ``key`` to ``value`` if absent (expiring after ``expire`` s); its number
    and a client on it, or None when none is free.

    Only an empty database is taken, claimed atomically, and given up again if anything else
    was written meanwhile: parallel runs, and a developer's own data, are never touched.
    """
    for number in numbers:
        client = redis.Redis.from_url(f"{base_url.rstrip('/')}/{number}")
        claimed = False
        try:
            if client.dbsize() == 0:
                claimed = bool(client.set(key, value, nx=True, ex=expire))
                if claimed and client.dbsize() != 1:  # someone else started writing meanwhile
                    client.delete(key)
                    claimed = False
        finally:
            if not claimed:
                client.close()
        if claimed:
            return number, client
    return None


def _end(process: subprocess.Popen[bytes] | None, signum: int, timeout: float) -> None:
    """Send ``signum`` to a running server and wait ``timeout`` s for it to exit, then SIGKILL."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


@dataclass
class PrivateMariaDB:
    """A mariadbd of our own in ``folder``: ``start``, ``stop`` (clean), ``kill`` (crash)."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # Server options beside this class's own (later ones win: ``--log-bin`` over
    # ``--skip-log-bin`` for a replication primary).
    options: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """The server as root, no database selected (like ``LEADARCHIVE_TEST_MYSQL_URL``)."""
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/"

    @property
    def log(self) -> Path:
        return self.folder / "mariadbd.log"

    def install(self) -> None:
        """Create the data folder (once)."""
        data = self.folder / "data"
        if (data / "mysql").is_dir():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        options = ["--auth-root-authentication-method=normal", "--skip-test-db"]
        if os.geteuid() == 0:
            options.append("--user=root")
        subprocess.run(
            [INSTALL_DB, "--no-defaults", f"--datadir={data}", *options],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait until it answers."""
        self.install()
        args = [
            MARIADBD,
            "--no-defaults",
            f"--datadir={self.folder / 'data'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.folder / 'mariadbd.sock'}",
            f"--pid-file={self.folder / 'mariadbd.pid'}",
            f"--log-error={self.log}",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
            "--max-connections=300",
            # Repair a MyISAM table a crash left marked as crashed when it is next opened, as
            # MariaDB's default does; spelled out because this server reads no config file.
            "--myisam-recover-options=BACKUP,QUICK",
            *self.options,
        ]
        if os.geteuid() == 0:
            args.append("--user=root")
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait_until(self.answers, timeout, "the private MariaDB", log=self.log)

    def answers(self) -> bool:
        """True when a root connection succeeds."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"mariadbd exited: {self.log.read_text(errors='replace')[-2000:]}")
        try:
            pymysql.connect(
                host="127.0.0.1", port=self.port, user="root", connect_timeout=1
            ).close()
        except pymysql.err.OperationalError:
            return False
        return True

    def stop(self, timeout: float = 60) -> None:
        """A clean shutdown (SIGTERM, as ``mariadb-admin shutdown`` or systemd would)."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """A crash: SIGKILL, no flushing."""
        self._signal(signal.SIGKILL, 30)

    def _signal(self, signum: int, timeout: float) -> None:
        _end(self.process, signum, timeout)

    def close(self) -> None:
        """Stop the server for good (the folder is the caller's to remove)."""
        self.stop()


@dataclass
class PrivateRedis:
    """A redis-server of our own, persisting to an append-only file like the deployed one.

    Stopped cleanly it keeps every key (deploy/redis-leadarchive.conf: appendonly yes), so a
    restart loses no queued message or job record, as in production. With ``persist=False`` it
    keeps nothing on disk (a test that only needs a Redis it may stop).
    """

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    persist: bool = True

    @property
    def url(self) -> str:
        """Its database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.folder / "redis.log"

    def start(self, timeout: float = 30) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"]
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--logfile",
                str(self.log),
                "--save",
                "",
                *(persistence if self.persist else ["--appendonly", "no"]),
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_until(self.answers, timeout, "the private Redis", log=self.log)
        except BaseException:
            self.stop()
            raise

    def answers(self) -> bool:
        """True when it answers PING."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {self.log.read_text(errors='replace')}")
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False
        finally:
            client.close()

    def stop(self, timeout: float = 30) -> None:
        """A clean shutdown (SIGTERM: the append-only file is flushed first); returns once it is
        gone (its port then refuses connections)."""
        _end(self.process, signal.SIGTERM, timeout)

    def close(self) -> None:
        self.stop()


@contextmanager
def private_redis(folder: Path) -> Iterator[PrivateRedis]:
    """A running redis-server of the caller's own that keeps nothing on disk, stopped after."""
    server = PrivateRedis(folder, persist=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()
