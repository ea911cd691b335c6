"""``leadarchive seed-demo`` on a copy of a production server: new IDs only, fictional numbers.

The end-to-end run (seed, the seed's request through the API and a worker, remove) is in
tests/api/test_seed_demo.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import Connection

from leadarchive.cli import _prepare_embedded
from leadarchive.cli import main as leadarchive
from tasks.db import make_engine
from tasks.errors import SeedError
from tasks.seed import (
    DEMO_LIST_ID,
    DEMO_LIST_NAME,
    LEAD_COLUMNS,
    insert_leads,
    lead_rows,
    parse_demo_list,
    remove_demo,
    seed_demo,
)
from tests.helpers import Row, archive, column, live, mysql_user
from tests.production import (
    ARCHIVED,
    LIVE,
    REAL_LIST,
    auto_increment,
    created_list_id,
    lists,
    load_production,
    one_line,
    snapshot,
)

FICTIONAL = re.compile(rb"^(201|212|305|312|415|512|617|702|813|916)55501\d\d$")


def assert_fictional(row: Row) -> None:
    """A dialer given this lead could reach no one: country code 1, 555-01xx numbers."""
    assert row[column("phone_code")] == b"1"
    assert FICTIONAL.match(row[column("phone_number")] or b""), row[column("phone_number")]
    alt = row[column("alt_phone")]
    assert alt is None or FICTIONAL.match(alt), alt


def new_lead_id(conn: Connection) -> int:
    """What the next lead a dialer load inserts (no lead_id given) is assigned."""
    conn.exec_driver_sql(
        "INSERT INTO vicidial_list (phone_number, list_id, entry_date) VALUES"
        " ('3055550000', 1001, NOW())"
    )
    return int(conn.exec_driver_sql("SELECT LAST_INSERT_ID()").scalar_one())


def test_ids_start_above_the_archived_ones_though_the_live_table_is_empty(
    conn: Connection,
) -> None:
    """The issue's case: the old seed inserted 1..20, the archived history of 20 real leads."""
    load_production(conn, live_leads=False)
    archived = archive(conn)

    demo = seed_demo(conn, 20)

    assert list(demo.lead_ids) == list(range(51, 71))
    assert set(live(conn)) == set(demo.lead_ids)
    assert archive(conn) == archived
    # The range's last ID went in first: the dialer's next load is given an ID above the range.
    assert new_lead_id(conn) == 71


def test_ids_skip_the_ids_the_database_handed_out_before(conn: Connection) -> None:
    # Leads 11..499 were loaded and then deleted by Vicidial, without an archive copy: their call
    # logs and callbacks still name those IDs.
    insert_leads(conn, lead_rows(10, seed=63))
    conn.exec_driver_sql("ALTER TABLE vicidial_list AUTO_INCREMENT = 500")

    demo = seed_demo(conn, 5)

    assert list(demo.lead_ids) == [500, 501, 502, 503, 504]
    assert new_lead_id(conn) == 505


def test_the_list_is_new_inactive_marked_and_records_its_range(vicidial: Connection) -> None:
    load_production(vicidial)
    before = lists(vicidial)

    demo = seed_demo(vicidial, 3)

    after = lists(vicidial)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {DEMO_LIST_ID}
    row = vicidial.exec_driver_sql(
        "SELECT list_name, campaign_id, active, list_description FROM vicidial_lists"
        " WHERE list_id = %s",
        (DEMO_LIST_ID,),
    ).one()
    assert (row.list_name, row.active) == (DEMO_LIST_NAME, "N")
    assert "dummy leads 81-83" in row.list_description
    assert parse_demo_list(DEMO_LIST_ID, row.list_name, row.list_description) == demo
    leads = live(vicidial)
    for lead_id in demo.lead_ids:
        assert leads[lead_id][column("list_id")] == str(DEMO_LIST_ID).encode()
        assert_fictional(leads[lead_id])


def test_the_default_list_id_is_the_first_one_no_table_uses(vicidial: Connection) -> None:
    load_production(vicidial)
    # 9990001 has leads in the live table (no vicidial_lists row), 9990002 archived ones only,
    # 9990003 a custom fields table left behind by a deleted list.
    vicidial.exec_driver_sql("UPDATE vicidial_list SET list_id = 9990001 WHERE lead_id = 51")
    vicidial.exec_driver_sql("UPDATE vicidial_list_archive SET list_id = 9990002 WHERE lead_id = 1")
    vicidial.exec_driver_sql("CREATE TABLE custom_9990003 (lead_id INT(9) UNSIGNED PRIMARY KEY)")
    try:
        first = seed_demo(vicidial, 2)
        second = seed_demo(vicidial, 2)
    finally:
        vicidial.exec_driver_sql("DROP TABLE custom_9990003")

    assert (first.list_id, list(first.lead_ids)) == (9990004, [81, 82])
    assert (second.list_id, list(second.lead_ids)) == (9990005, [83, 84])


def test_fictional_phones_change_the_phone_numbers_and_nothing_else() -> None:
    plain = list(lead_rows(300, seed=5))
    fictional = list(lead_rows(300, seed=5, fictional_phones=True))
    phones = {LEAD_COLUMNS.index(c) for c in ("phone_code", "phone_number", "alt_phone")}
    for before, after in zip(plain, fictional, strict=True):
        assert [v for i, v in enumerate(before) if i not in phones] == [
            v for i, v in enumerate(after) if i not in phones
        ]
        assert after[LEAD_COLUMNS.index("phone_code")] == "1"
        assert FICTIONAL.match(after[LEAD_COLUMNS.index("phone_number")].encode())
    assert any(row[LEAD_COLUMNS.index("alt_phone")] for row in fictional)


def test_the_cli_prints_the_range_and_writes_the_ids_file(
    vicidial: Connection, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_production(vicidial)
    ids_file = tmp_path / "ids.txt"

    code = leadarchive(
        ["seed-demo", "--count", "4", "--ids-file", str(ids_file), "--database-url", database_url]
    )

    out = one_line(capsys.readouterr().out)
    assert code == 0
    assert created_list_id(out) == DEMO_LIST_ID
    assert "lead IDs: 81-84" in out
    assert f"leadarchive seed-demo --remove {DEMO_LIST_ID}" in out
    assert ids_file.read_text() == "81\n82\n83\n84\n"


def refuse(database_url: str, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run seed-demo, expect a refusal, return what it said."""
    code = leadarchive(["seed-demo", *argv, "--database-url", database_url])
    captured = capsys.readouterr()
    assert code != 0, captured.out
    return one_line(captured.err)


@pytest.mark.parametrize(
    ("list_id", "where"),
    [
        (REAL_LIST, "vicidial_lists, vicidial_list, vicidial_list_archive"),
        (7001, "vicidial_list"),
        (7002, "vicidial_list_archive"),
        (7003, "custom_7003"),
    ],
)
def test_a_list_id_in_use_anywhere_is_refused_and_nothing_changes(
    vicidial: Connection,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    list_id: int,
    where: str,
) -> None:
    load_production(vicidial)
    vicidial.exec_driver_sql("UPDATE vicidial_list SET list_id = 7001 WHERE lead_id = 60")
    vicidial.exec_driver_sql("UPDATE vicidial_list_archive SET list_id = 7002 WHERE lead_id = 9")
    vicidial.exec_driver_sql("CREATE TABLE custom_7003 (lead_id INT(9) UNSIGNED PRIMARY KEY)")
    try:
        before = snapshot(vicidial)
        said = refuse(database_url, capsys, "--list-id", str(list_id))
        assert snapshot(vicidial) == before
    finally:
        vicidial.exec_driver_sql("DROP TABLE custom_7003")
    assert f"list ID {list_id} is already used (in {where})" in said
    assert "nothing was changed" in said


def test_a_free_list_id_of_ones_own_is_used(vicidial: Connection) -> None:
    load_production(vicidial)
    assert seed_demo(vicidial, 1, list_id=424242).list_id == 424242
    assert lists(vicidial)[424242][3] == "N"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (("--count", "0"), "at least 1"),
        (("--list-id", "0"), "outside 1.."),
        (("--ids-file", "/nonexistent-dir/ids.txt"), "cannot write --ids-file"),
    ],
)
def test_bad_input_is_refused_and_nothing_changes(
    vicidial: Connection,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    said: str,
) -> None:
    load_production(vicidial)
    before = snapshot(vicidial)
    assert said in refuse(database_url, capsys, *argv)
    assert snapshot(vicidial) == before


def test_more_ids_than_lead_id_can_hold_are_refused(vicidial: Connection) -> None:
    load_production(vicidial)
    vicidial.exec_driver_sql("ALTER TABLE vicidial_list AUTO_INCREMENT = 4294967290")
    before = snapshot(vicidial)
    with pytest.raises(SeedError, match="would pass 4294967295"):
        seed_demo(vicidial, 10)
    assert snapshot(vicidial) == before


def test_a_seed_stopped_part_way_says_so_and_remove_cleans_it_up(
    vicidial: Connection, database_url: str
) -> None:
    load_production(vicidial)
    before = snapshot(vicidial)
    # Allowed to add the list but not its leads: the list row goes in, the leads cannot.
    grants = (
        "SELECT, INSERT ON `{db}`.`vicidial_lists`",
        "SELECT ON `{db}`.`vicidial_list`",
        "SELECT ON `{db}`.`vicidial_list_archive`",
        "LOCK TABLES ON `{db}`.*",
    )
    with (
        mysql_user(vicidial, database_url, *grants) as limited,
        limited.connect() as conn,
        pytest.raises(SeedError, match="could not load all its leads") as stopped,
    ):
        seed_demo(conn, 5)
    assert f"leadarchive seed-demo --remove {DEMO_LIST_ID}" in str(stopped.value)
    assert snapshot(vicidial)[:2] == before[:2], "no lead was touched"

    removal = remove_demo(vicidial, DEMO_LIST_ID)

    assert (removal.live_deleted, removal.list_removed) == (0, True)
    assert snapshot(vicidial)[:3] == before[:3]


def test_remove_takes_no_seeding_options(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["seed-demo", "--remove", "9990001", "--count", "3", "--database-url", database_url]
    assert leadarchive(argv) == 2
    assert "--remove takes no" in capsys.readouterr().err


def test_remove_deletes_only_the_dummies_and_the_list(
    vicidial: Connection, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    load_production(vicidial)
    before = snapshot(vicidial)
    demo = seed_demo(vicidial, 6)
    # Some dummies archived (and deleted), as the seed's request does.
    vicidial.exec_driver_sql(
        "INSERT INTO vicidial_list_archive SELECT * FROM vicidial_list WHERE lead_id IN (81, 82)"
    )
    vicidial.exec_driver_sql("DELETE FROM vicidial_list WHERE lead_id IN (81, 82)")

    code = leadarchive(["seed-demo", "--remove", str(demo.list_id), "--database-url", database_url])

    out = one_line(capsys.readouterr().out)
    assert code == 0
    assert "deleted 4 dummy leads from vicidial_list and 2 from vicidial_list_archive" in out
    assert f"removed demo list {demo.list_id}" in out
    live_after, archive_after, lists_after, _ = snapshot(vicidial)
    assert (live_after, archive_after, lists_after) == before[:3]


def test_remove_keeps_leads_that_are_not_its_dummies_and_then_the_list(
    vicidial: Connection, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    load_production(vicidial)
    demo = seed_demo(vicidial, 4)
    # A real lead moved into the demo list, and a dummy given a real person's number to try it.
    vicidial.exec_driver_sql(
        f"UPDATE vicidial_list SET list_id = {demo.list_id} WHERE lead_id = 60"
    )
    vicidial.exec_driver_sql(
        "UPDATE vicidial_list SET phone_number = '3125550000' WHERE lead_id = 82"
    )
    kept = {i: r for i, r in live(vicidial).items() if i in (60, 82)}

    code = leadarchive(["seed-demo", "--remove", str(demo.list_id), "--database-url", database_url])

    captured = capsys.readouterr()
    assert code == 1
    assert "deleted 3 dummy leads from vicidial_list" in one_line(captured.out)
    assert f"kept list {demo.list_id}: 2 of its leads are not dummies" in one_line(captured.err)
    after = live(vicidial)
    assert {i: after[i] for i in (60, 82)} == kept
    assert not {81, 83, 84} & set(after)
    assert demo.list_id in lists(vicidial)


@pytest.mark.parametrize("case", ["real list", "missing list", "forged mark", "active demo list"])
def test_remove_refuses_anything_but_an_inactive_demo_list(
    vicidial: Connection, database_url: str, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    load_production(vicidial)
    demo = seed_demo(vicidial, 3)
    target = {"real list": REAL_LIST, "missing list": 5555}.get(case, demo.list_id)
    if case == "forged mark":
        vicidial.exec_driver_sql(
            "UPDATE vicidial_lists SET list_description = 'dummy leads 1-80' WHERE list_id = %s",
            (demo.list_id,),
        )
    if case == "active demo list":
        vicidial.exec_driver_sql(
            "UPDATE vicidial_lists SET active = 'Y' WHERE list_id = %s", (demo.list_id,)
        )
    before = snapshot(vicidial)

    said = refuse(database_url, capsys, "--remove", str(target))

    assert snapshot(vicidial) == before
    assert "nothing was changed" in said
    expected = {
        "real list": "is not a LeadArchive demo list",
        "missing list": "there is no list 5555",
        "forged mark": "is not a LeadArchive demo list",
        "active demo list": "is active: set it inactive first",
    }[case]
    assert expected in said


def test_the_embedded_sqlite_demo_is_seeded_and_removed_the_same_way(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'vicidial.db'}"
    _prepare_embedded(url, 7)
    engine = make_engine(url)
    try:
        with engine.connect() as lite:
            seeded = live(lite)
            # An empty database: the demo's IDs are 1..7, so the printed request on [0, 1] works.
            assert set(seeded) == set(range(1, 8))
            for row in seeded.values():
                assert row[column("phone_code")] == ("str", "1")
                assert FICTIONAL.match(row[column("phone_number")][1].encode())
            second = seed_demo(lite, 3)
            assert (second.list_id, list(second.lead_ids)) == (DEMO_LIST_ID + 1, [8, 9, 10])
            with pytest.raises(SeedError, match="already used"):
                seed_demo(lite, 3, list_id=DEMO_LIST_ID)
            assert set(live(lite)) == set(range(1, 11))

            removal = remove_demo(lite, DEMO_LIST_ID)

            assert (removal.live_deleted, removal.list_removed) == (7, True)
            assert set(live(lite)) == {8, 9, 10}
            names = lite.exec_driver_sql("SELECT list_id FROM vicidial_lists").scalars().all()
            assert names == [DEMO_LIST_ID + 1]
    finally:
        engine.dispose()


def test_production_copy_fixture_is_what_the_tests_say(vicidial: Connection) -> None:
    load_production(vicidial)
    assert set(archive(vicidial)) == set(ARCHIVED)
    assert set(live(vicidial)) == set(LIVE)
    assert auto_increment(vicidial) == LIVE.stop
