"""Vicidial's own database credentials, from ``/etc/astguiclient.conf``.

Lines look like ``VARDB_user => cron``; comments start with ``#``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from tasks.errors import ConfigurationError


def read_conf(path: Path) -> dict[str, str]:
    """The ``KEY => value`` pairs of an astguiclient.conf file."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=>" not in line:
            continue
        key, _, value = line.partition("=>")
        values[key.strip()] = value.strip()
    return values


def database_url_from(path: Path) -> str:
    """A SQLAlchemy URL for the Vicidial database that ``path`` describes."""
    values = read_conf(path)
    missing = [k for k in ("VARDB_server", "VARDB_database", "VARDB_user") if not values.get(k)]
    if missing:
        raise ConfigurationError(f"{path} lacks {', '.join(missing)}")
    user = quote(values["VARDB_user"], safe="")
    password = quote(values.get("VARDB_pass", ""), safe="")
    port = values.get("VARDB_port") or "3306"
    if not port.isdigit():
        raise ConfigurationError(f"{path}: VARDB_port must be a number")
    host = values["VARDB_server"]
    database = quote(values["VARDB_database"], safe="")
    # utf8mb4 on the wire; the tables keep their own charset and the batch copies server-side.
    return f"mysql+pymysql://{user}:{password}@{host}:{port}/{database}?charset=utf8mb4"
