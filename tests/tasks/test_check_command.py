"""`leadarchive check` and `leadarchive create-archive-table` on real MariaDB databases."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection

from leadarchive.cli import main
from tasks.archive import Actions, run_batch
from tasks.checks import column_definitions
from tasks.seed import insert_leads, lead_rows
from tests.helpers import CRON_GRANTS, mysql_user


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


@pytest.mark.usefixtures("no_settings")
def test_check_says_the_services_will_not_start_without_office_hours(
    vicidial: Connection,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # This machine's settings, as the service reads them: a database, no office hours.
    monkeypatch.setenv("LEADARCHIVE_DATABASE_URL", database_url)

    code = main(["check"])

    out = " ".join(capsys.readouterr().out.split())
    assert code == 0  # the database is ready
    assert "! api, worker and flower will not start: LEADARCHIVE_OFFICE_HOURS is not set" in out
    assert out.endswith("the database is ready; the services wait for office hours")


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
    capsys.readouterr()
    again = main(["create-archive-table", "--database-url", database_url])
    again_err = capsys.readouterr().err
    ready = main(["check", "--database-url", database_url])

    assert missing == 1
    assert "vicidial_list_archive does not exist" in missing_out
    assert "create-archive-table" in missing_out
    assert (created, again, ready) == (0, 1, 0)
    assert " ".join(again_err.split()) == (
        "vicidial_list_archive already exists: nothing was changed"
        " (`leadarchive check` compares it with vicidial_list)"
    )
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
    # Least privilege by capability: the batch never writes vicidial_list's rows nor deletes
    # archive rows, so check asks for neither.
    assert "privileges: DELETE on vicidial_list missing" in out
    assert "privileges: INSERT, UPDATE on vicidial_list_archive missing" in out
    assert "LOCK TABLES on the database missing" in out
    assert str(limited.url.password) not in out


# The archive as a 2015 Vicidial made it: no 'D' in the ENUM (added 2021), no entry_list_id
# (added 2010), modify_date a bare TIMESTAMP (the explicit definition came in 2025).
OLD_ARCHIVE = (
    "ALTER TABLE vicidial_list_archive"
    " MODIFY called_since_last_reset"
    " ENUM('Y','N','Y1','Y2','Y3','Y4','Y5','Y6','Y7','Y8','Y9','Y10') DEFAULT 'N',"
    " MODIFY modify_date TIMESTAMP NULL DEFAULT NULL,"
    " DROP COLUMN entry_list_id"
)


def printed_alter(out: str) -> str:
    """The ALTER TABLE statement check printed, exactly as an administrator would copy it."""
    start = out.index("ALTER TABLE `vicidial_list_archive`")
    return out[start : out.index(";", start)]


def definitions(conn: Connection, table: str) -> list[tuple[str, str]]:
    return [
        (name, definition.replace(" AUTO_INCREMENT", ""))
        for name, definition in column_definitions(conn, table).items()
    ]


def test_check_prints_the_alter_that_makes_a_drifted_archive_match(
    vicidial: Connection, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    insert_leads(vicidial, lead_rows(5, seed=5))
    run_batch(vicidial, [1, 2, 3], Actions(insert=True, update=False))
    vicidial.exec_driver_sql(OLD_ARCHIVE)
    archived = vicidial.exec_driver_sql(
        "SELECT lead_id, first_name, called_since_last_reset FROM vicidial_list_archive"
    ).all()

    drifted = main(["check", "--database-url", database_url])
    out = capsys.readouterr().out
    alter = printed_alter(out)

    assert drifted == 1
    assert "LeadArchive never alters a table" in out
    assert "`called_since_last_reset` enum('Y','N','Y1'" in alter
    added = "ADD COLUMN `entry_list_id` bigint(14) unsigned NOT NULL DEFAULT 0 AFTER `owner`"
    assert added in alter
    assert "MODIFY COLUMN `modify_date` timestamp NOT NULL DEFAULT current_timestamp()" in alter
    # The administrator runs it; then the tables match, column for column and in order.
    vicidial.exec_driver_sql(alter)
    ready = main(["check", "--database-url", database_url])
    after = capsys.readouterr().out
    assert ready == 0, after
    assert "ALTER TABLE" not in after
    assert definitions(vicidial, "vicidial_list_archive") == definitions(vicidial, "vicidial_list")
    assert (
        vicidial.exec_driver_sql(
            "SELECT lead_id, first_name, called_since_last_reset FROM vicidial_list_archive"
        ).all()
        == archived
    )


def test_check_finds_columns_in_another_order_and_how_to_fix_it(
    vicidial: Connection, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    vicidial.exec_driver_sql(
        "ALTER TABLE vicidial_list_archive MODIFY owner VARCHAR(20) DEFAULT '' AFTER lead_id"
    )

    code = main(["check", "--database-url", database_url])
    out = capsys.readouterr().out
    alter = printed_alter(out)

    assert code == 1
    assert "the archive's columns are in another order than vicidial_list's" in out
    assert "columns match" in out  # the same columns and types: only the order differs
    vicidial.exec_driver_sql(alter)
    assert main(["check", "--database-url", database_url]) == 0
    assert definitions(vicidial, "vicidial_list_archive") == definitions(vicidial, "vicidial_list")


def test_check_reports_reused_ids_pending_callbacks_and_custom_fields(
    vicidial: Connection, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    insert_leads(vicidial, lead_rows(30, seed=30))
    run_batch(vicidial, list(range(1, 31)), Actions(insert=True, update=False))
    vicidial.exec_driver_sql(
        "UPDATE vicidial_list_archive SET entry_date = '2001-01-01 00:00:00'"
        " WHERE lead_id IN (4, 17)"
    )
    vicidial.exec_driver_sql(
        "UPDATE vicidial_list SET entry_date = '2026-01-01 00:00:00' WHERE lead_id IN (4, 17)"
    )
    for lead_id, status in ((1, "ACTIVE"), (2, "LIVE"), (3, "ACTIVE"), (5, "INACTIVE")):
        vicidial.exec_driver_sql(
            "INSERT INTO vicidial_callbacks (lead_id, list_id, campaign_id, status, callback_time)"
            f" VALUES ({lead_id}, 1, 'C1', '{status}', '2026-12-02 10:00:00')"
        )
    vicidial.exec_driver_sql("CREATE TABLE custom_1001 (lead_id INT(9) UNSIGNED PRIMARY KEY)")
    try:
        code = main(["check", "--database-url", database_url])
    finally:
        vicidial.exec_driver_sql("DROP TABLE custom_1001")
    out = capsys.readouterr().out

    assert code == 0
    assert "reused lead IDs: 2 (4, 17)" in out
    assert "pending callbacks (ACTIVE or LIVE): 3" in out
    assert "lists with custom fields: 1001" in out
    assert "held by: hopper, live_call, agent, preview, callback" in out


def test_check_tells_a_user_without_create_temporary_tables_how_to_get_the_faster_path(
    vicidial: Connection, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Vicidial's stock cron grants are enough (ready), but MyISAM batches then take the slower
    locked path: check says so, and prints the GRANT that gives the snapshot path."""
    with mysql_user(vicidial, database_url, CRON_GRANTS) as limited:
        url = limited.url.render_as_string(hide_password=False)
        locked = main(["check", "--database-url", url])
        locked_out = capsys.readouterr().out
        grants = [line for line in locked_out.splitlines() if line.startswith("GRANT ")]
        assert len(grants) == 1
        vicidial.exec_driver_sql(grants[0])  # the administrator runs what check printed
        granted = main(["check", "--database-url", url])
        granted_out = capsys.readouterr().out

    assert locked == 0
    assert "MyISAM batches take the locked path" in " ".join(locked_out.split())
    assert grants[0] == (
        f"GRANT CREATE TEMPORARY TABLES ON `{limited.url.database}`.*"
        f" TO '{limited.url.username}'@'127.0.0.1';"
    )
    assert granted == 0
    assert "GRANT" not in granted_out
    assert "MyISAM batches copy from a snapshot of their own" in " ".join(granted_out.split())


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
