"""`leadarchive check` and `leadarchive create-archive-table` on real MariaDB databases."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection

from leadarchive.cli import main
from tests.helpers import mysql_user


def test_check_reports_a_ready_database(
    vicidial: Connection, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check", "--database-url", database_url])

    out = capsys.readouterr().out
    assert code == 0
    assert "vicidial_list: engine MyISAM, collation utf8mb3_unicode_ci" in out
    assert "vicidial_list_archive: engine MyISAM" in out
    assert "columns match" in out
    assert "ready" in out.splitlines()[-1]


def test_check_names_a_drifted_column(
    vicidial: Connection, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    vicidial.exec_driver_sql(
        "ALTER TABLE vicidial_list_archive MODIFY called_since_last_reset"
        " ENUM('Y','N','Y1','Y2','Y3','Y4','Y5','Y6','Y7','Y8','Y9','Y10') DEFAULT 'N'"
    )

    code = main(["check", "--database-url", database_url])

    out = capsys.readouterr().out
    assert code == 1
    assert "`called_since_last_reset` is enum(" in out
    assert "not ready" in out


def test_a_missing_archive_is_reported_then_created_by_vicidials_recipe(
    vicidial: Connection, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    vicidial.exec_driver_sql("DROP TABLE vicidial_list_archive")

    missing = main(["check", "--database-url", database_url])
    missing_out = capsys.readouterr().out
    created = main(["create-archive-table", "--database-url", database_url])
    again = main(["create-archive-table", "--database-url", database_url])
    ready = main(["check", "--database-url", database_url])

    assert missing == 1
    assert "vicidial_list_archive does not exist" in missing_out
    assert "create-archive-table" in missing_out
    assert (created, again, ready) == (0, 1, 0)
    extra = vicidial.exec_driver_sql(
        "SELECT EXTRA FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
        " AND TABLE_NAME = 'vicidial_list_archive' AND COLUMN_NAME = 'lead_id'"
    ).scalar_one()
    assert "auto_increment" not in extra


def test_check_lists_the_privileges_a_user_lacks(
    vicidial: Connection, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with mysql_user(vicidial, database_url, "SELECT ON `{db}`.*") as limited:
        url = limited.url.render_as_string(hide_password=False)
        code = main(["check", "--database-url", url])

    out = capsys.readouterr().out
    assert code == 1
    assert "DELETE, INSERT, UPDATE on vicidial_list missing" in out
    assert "LOCK TABLES on the database missing" in out
    assert str(limited.url.password) not in out


def test_check_says_whether_jobs_are_written_to_vicidials_admin_log(
    vicidial: Connection, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    written = main(["check", "--database-url", database_url])
    written_out = capsys.readouterr().out
    with mysql_user(vicidial, database_url, "SELECT ON `{db}`.*") as limited:
        denied = main(["check", "--database-url", limited.url.render_as_string(False)])
    denied_out = capsys.readouterr().out
    vicidial.exec_driver_sql("DROP TABLE vicidial_admin_log")
    absent = main(["check", "--database-url", database_url])
    absent_out = capsys.readouterr().out

    assert written == 0
    assert "vicidial_admin_log: every finished job that is not a dry run is written" in written_out
    assert denied == 1
    assert "INSERT on vicidial_admin_log missing" in denied_out
    assert "vicidial_admin_log: jobs are not written to it until INSERT" in denied_out
    # The admin log is optional: without the table the database is still ready.
    assert absent == 0
    assert "vicidial_admin_log is absent, or this user holds no privilege on it" in absent_out
