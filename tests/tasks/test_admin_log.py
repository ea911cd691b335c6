"""tasks.admin_log on MariaDB (Vicidial's table, MyISAM) and on the embedded demo's SQLite."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from tasks import admin_log
from tasks.admin_log import JobOutcome, client_address
from tests.helpers import admin_log_rows, admin_log_sizes, assert_within_sizes, mysql_user

COUNTS = {
    "insert": {"inserted": 1, "already_archived": 0, "not_found": 1},
    "update": {"updated": 0, "unchanged": 1, "not_archived": 0, "not_found": 1},
    "delete": {"deleted": 1, "not_archived": 0, "mismatch": 0, "in_use": 0, "not_found": 1},
}
SUCCEEDED = JobOutcome(
    "Job-ID_0123456789abcdef", "alice", 2, ("insert", "update", "delete"), COUNTS
)


def server_now(conn: Connection) -> datetime:
    """The database server's local time, as a Vicidial page's NOW() sees it."""
    conn.exec_driver_sql("SET SESSION time_zone = @@global.time_zone")
    now: datetime = conn.exec_driver_sql("SELECT NOW()").scalar_one()
    return now


def test_a_row_as_vicidial_writes_its_own(vicidial: Connection) -> None:
    assert admin_log.write(vicidial, SUCCEEDED, user="VDAD", ip_address="203.0.113.7")

    (row,) = admin_log_rows(vicidial)
    assert_within_sizes(row, admin_log_sizes(vicidial))
    assert abs((server_now(vicidial) - row.pop("event_date")).total_seconds()) < 60
    assert row.pop("admin_log_id") > 0
    assert row == {
        "user": "VDAD",
        "ip_address": "203.0.113.7",
        "event_section": "LEADS",
        "event_type": "MODIFY",
        "record_id": "Job-ID_0123456789abcdef",
        "event_code": "LEAD ARCHIVE API",
        "event_sql": "",
        "event_notes": (
            "key=alice leads=2 actions=insert,update,delete status=succeeded"
            " insert: inserted=1 already_archived=0 not_found=1;"
            " update: updated=0 unchanged=1 not_archived=0 not_found=1;"
            " delete: deleted=1 not_archived=0 mismatch=0 in_use=0 not_found=1"
        ),
        "user_group": "---ALL---",
    }


def test_event_date_is_the_servers_local_time_whatever_zone_a_batch_left(
    vicidial: Connection,
) -> None:
    # A batch leaves its pooled connection at time_zone '+00:00'; this offset differs from any
    # server's own zone by hours, so a row stamped in the session's zone would show it.
    vicidial.exec_driver_sql("SET SESSION time_zone = '-11:00'")
    session_now: datetime = vicidial.exec_driver_sql("SELECT NOW()").scalar_one()

    admin_log.write(vicidial, SUCCEEDED, user="VDAD", ip_address="")

    (row,) = admin_log_rows(vicidial)
    assert abs((server_now(vicidial) - row["event_date"]).total_seconds()) < 60
    if abs((server_now(vicidial) - session_now).total_seconds()) > 3600:
        assert abs((session_now - row["event_date"]).total_seconds()) > 3600


def test_a_failed_job_says_so_with_the_errors_type_only(vicidial: Connection) -> None:
    failed = JobOutcome("j1", "bob", 500, ("insert",), error="OperationalError")

    admin_log.write(vicidial, failed, user="VDAD", ip_address="")

    (row,) = admin_log_rows(vicidial)
    assert row["event_notes"] == (
        "key=bob leads=500 actions=insert status=failed error=OperationalError"
    )
    assert (row["event_section"], row["event_type"]) == ("LEADS", "MODIFY")


def test_values_longer_than_vicidials_columns_are_cut_to_fit(vicidial: Connection) -> None:
    # Strict mode: the server would refuse a value too long for its column, not cut it.
    mode = vicidial.exec_driver_sql("SELECT @@SESSION.sql_mode").scalar_one()
    vicidial.exec_driver_sql("SET SESSION sql_mode = 'STRICT_ALL_TABLES'")
    long_job = JobOutcome("J" * 80, "k" * 64, 1, ("insert",), {"insert": {"inserted": 1}})

    try:
        admin_log.write(vicidial, long_job, user="U" * 30, ip_address="")
    finally:
        vicidial.exec_driver_sql(f"SET SESSION sql_mode = '{mode}'")

    (row,) = admin_log_rows(vicidial)
    sizes = admin_log_sizes(vicidial)
    assert_within_sizes(row, sizes)
    assert row["record_id"] == "J" * sizes["record_id"]
    assert row["user"] == "U" * sizes["user"]
    assert "key=" + "k" * 64 + " " in row["event_notes"]  # the notes have room for any name


@pytest.mark.parametrize(
    ("address", "written"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("255.255.255.255", "255.255.255.255"),  # the longest IPv4 text: 15 characters
        ("2001:db8::1", "2001:db8::1"),  # a short IPv6 address fits too
        # Longer than VARCHAR(15): nothing, as a cut address would name another machine.
        ("2001:db8:85a3::8a2e:370:7334", ""),
        ("::ffff:203.0.113.9", ""),
        ("", ""),
    ],
)
def test_only_an_address_that_fits_is_written(
    vicidial: Connection, address: str, written: str
) -> None:
    admin_log.write(vicidial, SUCCEEDED, user="VDAD", ip_address=address)

    (row,) = admin_log_rows(vicidial)
    assert row["ip_address"] == written


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.9", "203.0.113.9"),  # IPv4 through an IPv6 socket
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("testclient", ""),
        ("203.0.113.7; DROP TABLE x", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_client_address_is_an_ip_address_or_nothing(host: str | None, address: str) -> None:
    assert client_address(host) == address


def test_a_missing_table_is_no_error_and_writes_nothing(vicidial: Connection) -> None:
    vicidial.exec_driver_sql("DROP TABLE vicidial_admin_log")

    assert admin_log.write(vicidial, SUCCEEDED, user="VDAD", ip_address="") is False


def test_without_insert_on_the_table_the_error_is_raised(
    vicidial: Connection, database_url: str
) -> None:
    with (
        mysql_user(vicidial, database_url, "SELECT ON `{db}`.*") as limited,
        limited.connect() as conn,
        pytest.raises(DBAPIError) as denied,
    ):
        admin_log.write(conn, SUCCEEDED, user="VDAD", ip_address="")

    assert denied.value.orig is not None
    assert denied.value.orig.args[0] == 1142  # INSERT command denied
    assert admin_log_rows(vicidial) == []


def test_exactly_insert_on_the_table_is_enough(vicidial: Connection, database_url: str) -> None:
    with (
        mysql_user(vicidial, database_url, "INSERT ON `{db}`.`vicidial_admin_log`") as limited,
        limited.connect() as conn,
    ):
        assert admin_log.write(conn, SUCCEEDED, user="VDAD", ip_address="")

    assert [row["record_id"] for row in admin_log_rows(vicidial)] == [SUCCEEDED.job_id]


def test_the_embedded_demo_writes_the_same_row(lite: Connection) -> None:
    assert admin_log.write(lite, SUCCEEDED, user="VDAD", ip_address="203.0.113.7")

    (row,) = admin_log_rows(lite)
    local_now = lite.exec_driver_sql("SELECT datetime('now', 'localtime')").scalar_one()
    stamped = datetime.fromisoformat(row["event_date"])
    assert abs((datetime.fromisoformat(local_now) - stamped).total_seconds()) < 60
    assert (row["user"], row["ip_address"], row["record_id"]) == (
        "VDAD",
        "203.0.113.7",
        SUCCEEDED.job_id,
    )
    assert (row["event_section"], row["event_type"], row["event_code"], row["user_group"]) == (
        "LEADS",
        "MODIFY",
        "LEAD ARCHIVE API",
        "---ALL---",
    )
    assert row["event_notes"] == SUCCEEDED.notes()


def test_the_embedded_demo_without_the_table_writes_nothing(lite: Connection) -> None:
    lite.exec_driver_sql("DROP TABLE vicidial_admin_log")

    assert admin_log.write(lite, SUCCEEDED, user="VDAD", ip_address="") is False
