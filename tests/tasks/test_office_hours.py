"""Office hours: parsing LEADARCHIVE_OFFICE_HOURS and deciding when archiving may run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tasks.office_hours import DAY_NAMES, Clock, OfficeHours, system_clock

NEW_YORK = "America/New_York"
KOLKATA = "Asia/Kolkata"


def local(
    zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, fold: int = 0
) -> datetime:
    """An aware datetime from local wall-clock fields in ``zone``."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone), fold=fold)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def open_days(spec: str, zone: str = "UTC", hour: int = 12) -> list[str]:
    """The days of the week 2026-06-01 (a Monday) that are inside office hours at ``hour``:00."""
    hours = OfficeHours.parse(spec, zone)
    return [DAY_NAMES[day] for day in range(7) if hours.inside(local(zone, 2026, 6, 1 + day, hour))]


# --- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "days"),
    [
        ("wed 08:00-18:00", ["wed"]),
        ("mon-fri 08:00-18:00", ["mon", "tue", "wed", "thu", "fri"]),
        ("mon,wed,fri 08:00-18:00", ["mon", "wed", "fri"]),
        ("fri-mon 08:00-18:00", ["mon", "fri", "sat", "sun"]),
        ("sat-sun 08:00-18:00", ["sat", "sun"]),
        ("mon-tue,thu 08:00-18:00", ["mon", "tue", "thu"]),
        ("MON-Fri 08:00-18:00", ["mon", "tue", "wed", "thu", "fri"]),
        ("  mon , wed - thu   08:00 - 18:00  ", ["mon", "wed", "thu"]),
        ("mon 08:00-18:00; sat 09:00-13:00", ["mon", "sat"]),
    ],
)
def test_day_specs_select_their_days(spec: str, days: list[str]) -> None:
    assert open_days(spec) == days


def test_several_time_ranges_leave_the_gap_between_them_outside() -> None:
    hours = OfficeHours.parse("mon-fri 08:00-12:00,13:00-18:00", "UTC")

    assert hours.inside(utc(2026, 6, 1, 11, 59))
    assert not hours.inside(utc(2026, 6, 1, 12, 0))
    assert not hours.inside(utc(2026, 6, 1, 12, 59))
    assert hours.inside(utc(2026, 6, 1, 13, 0))
    assert hours.window_opens_at(utc(2026, 6, 1, 9)) == utc(2026, 6, 1, 12)


def test_end_of_24_00_closes_at_the_next_midnight() -> None:
    hours = OfficeHours.parse("mon 20:00-24:00", "UTC")

    assert hours.inside(utc(2026, 6, 1, 23, 59, 59))
    assert not hours.inside(utc(2026, 6, 2, 0, 0))
    assert hours.window_opens_at(utc(2026, 6, 1, 20)) == utc(2026, 6, 2)


@pytest.mark.parametrize("spec", ["", "   ", "\t\n"])
def test_empty_spec_never_restricts(spec: str) -> None:
    hours = OfficeHours.parse(spec, NEW_YORK)
    now = utc(2026, 6, 3, 14)  # a Wednesday, 10:00 in New York

    assert not hours.inside(now)
    assert hours.window_opens_at(now) is None
    assert hours.seconds_until_open(now) == 0


@pytest.mark.parametrize(
    ("spec", "quoted"),
    [
        ("mon-fri 8-18", "'8-18'"),
        ("xyz 08:00-09:00", "'xyz'"),
        ("mon 25:00-26:00", "'25:00'"),
        ("mon 08:60-09:00", "'08:60'"),
        ("mon 24:00-09:00", "'24:00'"),
        ("mon 08:00-24:30", "'24:30'"),
        ("mon 08:00-08:00", "'08:00-08:00'"),
        ("mon-fri 08:00-18:00 tue", "'08:00-18:00 tue'"),
        ("mon-fri 08:00-12:00,", "''"),
        ("monday 08:00-09:00", "'monday'"),
        ("mon-tue-wed 08:00-09:00", "'mon-tue-wed'"),
        ("mon-mon 08:00-09:00", "'mon-mon'"),
        ("mon", "'mon'"),
        ("08:00-18:00", "'08:00-18:00'"),
        ("mon-fri 08:00-18:00; sat", "'sat'"),
        ("mon-fri 08:00-18:00;", "'mon-fri 08:00-18:00;'"),
    ],
)
def test_malformed_spec_is_refused_quoting_the_bad_part(spec: str, quoted: str) -> None:
    with pytest.raises(ValueError, match="office hours") as error:
        OfficeHours.parse(spec, "UTC")

    assert quoted in str(error.value)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "america/new_york", "", "/etc/localtime"])
def test_unknown_time_zone_is_refused_by_name(zone: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone") as error:
        OfficeHours.parse("mon-fri 08:00-18:00", zone)

    assert repr(zone) in str(error.value)


@pytest.mark.parametrize(
    "spec",
    [
        "mon-sun 00:00-24:00",
        "fri-thu 00:00-24:00",
        "mon-sun 08:00-18:00; mon-sun 18:00-08:00",
        "mon-sat 00:00-24:00; sun 00:00-12:00,12:00-24:00",
        "mon-sun 12:00-12:30; mon-sun 12:30-12:00",
    ],
)
def test_schedule_covering_the_whole_week_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="cover the whole week: archiving could never run"):
        OfficeHours.parse(spec, "UTC")


def test_schedule_with_one_free_minute_a_week_is_accepted() -> None:
    hours = OfficeHours.parse("mon-sat 00:00-24:00; sun 00:00-23:59", "UTC")

    assert hours.window_opens_at(utc(2026, 6, 1, 12)) == utc(2026, 6, 7, 23, 59)
    assert not hours.inside(utc(2026, 6, 7, 23, 59, 30))
    assert hours.inside(utc(2026, 6, 8, 0, 0))


def test_naive_now_is_refused() -> None:
    hours = OfficeHours.parse("mon-fri 08:00-18:00", "UTC")

    for method in (hours.inside, hours.window_opens_at, hours.seconds_until_open):
        with pytest.raises(ValueError, match="timezone-aware"):
            method(datetime(2026, 6, 1, 9))


# --- inside / outside, and when the window opens -------------------------------------------------


def test_start_is_inside_and_end_is_outside() -> None:
    hours = OfficeHours.parse("mon-fri 08:00-18:00", "UTC")

    assert not hours.inside(utc(2026, 6, 1, 7, 59, 59, 999_999))
    assert hours.inside(utc(2026, 6, 1, 8, 0))
    assert hours.inside(utc(2026, 6, 1, 17, 59, 59, 999_999))
    assert not hours.inside(utc(2026, 6, 1, 18, 0))
    assert not hours.inside(utc(2026, 6, 6, 12, 0))  # Saturday


def test_inside_reports_when_and_in_how_many_seconds_the_window_opens() -> None:
    hours = OfficeHours.parse("mon-fri 08:00-18:00", "UTC")

    assert hours.window_opens_at(utc(2026, 6, 1, 8)) == utc(2026, 6, 1, 18)
    assert hours.seconds_until_open(utc(2026, 6, 1, 8)) == 10 * 3600
    # Rounded up: a client told to retry after 0 seconds would be refused again.
    assert hours.seconds_until_open(utc(2026, 6, 1, 17, 59, 59, 500_000)) == 1


def test_outside_has_no_opening_time_and_no_wait() -> None:
    hours = OfficeHours.parse("mon-fri 08:00-18:00", "UTC")

    assert hours.window_opens_at(utc(2026, 6, 1, 18)) is None
    assert hours.seconds_until_open(utc(2026, 6, 1, 18)) == 0


def test_opening_time_is_utc_whatever_zone_now_is_given_in() -> None:
    hours = OfficeHours.parse("mon-fri 08:00-18:00", NEW_YORK)
    now = datetime(2026, 6, 1, 15, 0, tzinfo=timezone(timedelta(hours=2)))  # 09:00 in New York

    opens_at = hours.window_opens_at(now)

    assert opens_at == local(NEW_YORK, 2026, 6, 1, 18)
    assert opens_at is not None
    assert opens_at.utcoffset() == timedelta(0)


def test_range_past_midnight_runs_into_the_next_day() -> None:
    hours = OfficeHours.parse("fri 22:00-02:00", "UTC")

    assert not hours.inside(utc(2026, 6, 5, 21, 59))
    assert hours.inside(utc(2026, 6, 5, 22, 0))
    assert hours.inside(utc(2026, 6, 6, 1, 59))  # Saturday morning
    assert not hours.inside(utc(2026, 6, 6, 2, 0))
    assert not hours.inside(utc(2026, 6, 4, 23, 0))  # Thursday night is not Friday
    assert hours.window_opens_at(utc(2026, 6, 5, 23)) == utc(2026, 6, 6, 2)
    assert hours.window_opens_at(utc(2026, 6, 6, 1)) == utc(2026, 6, 6, 2)


@pytest.mark.parametrize("spec", ["sun 22:00-06:00", "sun 22:00-24:00; mon 00:00-06:00"])
def test_sunday_night_runs_into_monday_morning(spec: str) -> None:
    hours = OfficeHours.parse(spec, "UTC")

    assert hours.window_opens_at(utc(2026, 6, 7, 23)) == utc(2026, 6, 8, 6)
    assert hours.window_opens_at(utc(2026, 6, 8, 5)) == utc(2026, 6, 8, 6)
    assert not hours.inside(utc(2026, 6, 8, 6))
    assert not hours.inside(utc(2026, 6, 7, 21, 59))


def test_week_wrapping_day_range_opens_after_the_last_day() -> None:
    hours = OfficeHours.parse("fri-mon 00:00-24:00", "UTC")

    assert hours.window_opens_at(utc(2026, 6, 5, 12)) == utc(2026, 6, 9)  # Friday → Tuesday 00:00
    assert not hours.inside(utc(2026, 6, 9, 0))


@pytest.mark.parametrize(
    ("spec", "opens_hour"),
    [
        ("mon-fri 08:00-18:00; mon-fri 18:00-20:00", 20),
        ("mon-fri 08:00-18:00,18:00-19:00", 19),
        ("mon 08:00-12:00,11:00-14:00", 14),
        ("mon 08:00-18:00; mon 09:00-10:00", 18),
        ("mon 08:00-10:00; mon-fri 10:00-12:00; mon 12:00-13:00", 13),
    ],
)
def test_adjacent_and_overlapping_periods_open_at_the_end_of_the_last(
    spec: str, opens_hour: int
) -> None:
    hours = OfficeHours.parse(spec, "UTC")

    assert hours.window_opens_at(utc(2026, 6, 1, 9)) == utc(2026, 6, 1, opens_hour)


def test_overnight_periods_chain_across_several_days() -> None:
    hours = OfficeHours.parse("mon-wed 00:00-24:00; wed 22:00-06:00", "UTC")

    assert hours.window_opens_at(utc(2026, 6, 1, 3)) == utc(2026, 6, 4, 6)  # Mon → Thu 06:00


# --- daylight saving time (America/New_York, 2026) -----------------------------------------------


def test_day_hours_follow_local_time_in_winter_and_summer() -> None:
    hours = OfficeHours.parse("mon-fri 08:00-18:00", NEW_YORK)

    # Friday before the change (EST, UTC-5) and Monday after it (EDT, UTC-4).
    assert hours.inside(utc(2026, 3, 6, 13, 0))
    assert not hours.inside(utc(2026, 3, 6, 12, 59))
    assert hours.window_opens_at(utc(2026, 3, 6, 13)) == utc(2026, 3, 6, 23)
    assert hours.inside(utc(2026, 3, 9, 12, 0))
    assert not hours.inside(utc(2026, 3, 9, 11, 59))
    assert hours.window_opens_at(utc(2026, 3, 9, 12)) == utc(2026, 3, 9, 22)


def test_spring_forward_end_in_the_skipped_hour_opens_at_the_jump() -> None:
    # 2026-03-08 02:00 EST jumps to 03:00 EDT (07:00 UTC); 02:30 never shows on the clock.
    hours = OfficeHours.parse("sun 00:00-02:30", NEW_YORK)

    assert hours.window_opens_at(local(NEW_YORK, 2026, 3, 8, 1, 0)) == utc(2026, 3, 8, 7)
    assert hours.inside(utc(2026, 3, 8, 6, 59, 59))
    assert not hours.inside(utc(2026, 3, 8, 7, 0))


def test_spring_forward_start_in_the_skipped_hour_starts_at_the_jump() -> None:
    hours = OfficeHours.parse("sun 02:30-05:00", NEW_YORK)

    assert not hours.inside(utc(2026, 3, 8, 6, 59, 59))
    assert hours.inside(utc(2026, 3, 8, 7, 0))  # 03:00 EDT
    assert hours.window_opens_at(utc(2026, 3, 8, 7)) == local(NEW_YORK, 2026, 3, 8, 5)
    assert hours.seconds_until_open(utc(2026, 3, 8, 7)) == 2 * 3600


def test_spring_forward_period_wholly_in_the_skipped_hour_does_not_happen() -> None:
    hours = OfficeHours.parse("sun 02:10-02:40", NEW_YORK)

    for minute in range(0, 120, 5):
        assert not hours.inside(utc(2026, 3, 8, 6) + timedelta(minutes=minute))
    assert hours.inside(local(NEW_YORK, 2026, 3, 15, 2, 10))  # a week later it does


@pytest.mark.parametrize(
    ("spec", "instant"),
    [
        ("sun 01:01-03:00", "start"),  # London skips 01:00-02:00 GMT on 2026-03-29 (01:00 UTC)
        ("sun 00:00-01:17", "end"),
    ],
)
def test_skipped_time_is_read_as_the_exact_second_of_the_jump(spec: str, instant: str) -> None:
    hours = OfficeHours.parse(spec, "Europe/London")
    jump = utc(2026, 3, 29, 1)

    assert hours.inside(jump) is (instant == "start")
    assert hours.inside(jump - timedelta(microseconds=1)) is (instant == "end")


def test_overnight_period_is_an_hour_shorter_on_spring_forward_night() -> None:
    hours = OfficeHours.parse("sat 20:00-08:00", NEW_YORK)

    assert hours.seconds_until_open(local(NEW_YORK, 2026, 3, 7, 20)) == 11 * 3600


def test_overnight_period_is_an_hour_longer_on_fall_back_night() -> None:
    hours = OfficeHours.parse("sat 20:00-08:00", NEW_YORK)

    assert hours.seconds_until_open(local(NEW_YORK, 2026, 10, 31, 20)) == 13 * 3600
    assert hours.window_opens_at(local(NEW_YORK, 2026, 10, 31, 20)) == utc(2026, 11, 1, 13)


def test_fall_back_end_in_the_repeated_hour_is_its_second_occurrence() -> None:
    # 2026-11-01 02:00 EDT falls back to 01:00 EST (06:00 UTC); 01:30 shows twice.
    hours = OfficeHours.parse("sat 22:00-01:30", NEW_YORK)

    assert hours.inside(local(NEW_YORK, 2026, 11, 1, 1, 45, fold=0))  # 01:45 EDT
    assert hours.inside(local(NEW_YORK, 2026, 11, 1, 1, 15, fold=1))  # 01:15 EST
    assert hours.window_opens_at(local(NEW_YORK, 2026, 11, 1, 0)) == utc(2026, 11, 1, 6, 30)


def test_fall_back_start_in_the_repeated_hour_is_its_first_occurrence() -> None:
    hours = OfficeHours.parse("sun 01:30-03:00", NEW_YORK)

    assert not hours.inside(utc(2026, 11, 1, 5, 29))
    assert hours.inside(utc(2026, 11, 1, 5, 30))  # 01:30 EDT
    # The clock shows 01:00-01:30 again after the fall-back: still inside, one continuous period.
    assert hours.inside(local(NEW_YORK, 2026, 11, 1, 1, 10, fold=1))
    assert hours.window_opens_at(utc(2026, 11, 1, 5, 30)) == utc(2026, 11, 1, 8)  # 03:00 EST


# --- a zone far from UTC -------------------------------------------------------------------------


def test_kolkata_hours_are_local_with_a_half_hour_offset() -> None:
    hours = OfficeHours.parse("mon-fri 09:00-18:00", KOLKATA)

    assert not hours.inside(utc(2026, 6, 1, 3, 29, 59))
    assert hours.inside(utc(2026, 6, 1, 3, 30))  # 09:00 IST
    assert hours.window_opens_at(utc(2026, 6, 1, 3, 30)) == utc(2026, 6, 1, 12, 30)
    assert not hours.inside(utc(2026, 6, 1, 12, 30))


def test_kolkata_day_is_the_local_day_not_the_utc_day() -> None:
    hours = OfficeHours.parse("mon 00:00-06:00", KOLKATA)

    # Sunday 20:00 UTC is already Monday 01:30 in Kolkata; Monday 20:00 UTC is Tuesday there.
    assert hours.inside(utc(2026, 5, 31, 20, 0))
    assert hours.window_opens_at(utc(2026, 5, 31, 20, 0)) == utc(2026, 6, 1, 0, 30)
    assert not hours.inside(utc(2026, 6, 1, 20, 0))


# --- the clock -----------------------------------------------------------------------------------


def test_system_clock_is_aware_utc_now() -> None:
    before = datetime.now(UTC)
    now = system_clock()

    assert now.utcoffset() == timedelta(0)
    assert before <= now <= datetime.now(UTC)


def test_a_fixed_clock_can_stand_in_for_the_system_clock() -> None:
    clock: Clock = lambda: utc(2026, 6, 1, 9)  # noqa: E731
    hours = OfficeHours.parse("mon-fri 08:00-18:00", "UTC")

    assert hours.seconds_until_open(clock()) == 9 * 3600


# --- properties ----------------------------------------------------------------------------------

# Zones with whole-hour, half-hour and 45-minute offsets, a 30-minute DST shift (Lord Howe),
# negative DST (Dublin) and Ramadan transitions (Casablanca), with their 2026 clock changes.
TRANSITIONS = {
    "UTC": [],
    KOLKATA: [],
    NEW_YORK: [utc(2026, 3, 8, 7), utc(2026, 11, 1, 6)],
    "Europe/London": [utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)],
    "Europe/Dublin": [utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)],
    "Australia/Lord_Howe": [utc(2026, 4, 4, 15), utc(2026, 10, 3, 15, 30)],
    "America/St_Johns": [utc(2026, 3, 8, 5, 30), utc(2026, 11, 1, 4, 30)],
    "Pacific/Chatham": [utc(2026, 4, 4, 14), utc(2026, 9, 26, 14)],
    "Africa/Casablanca": [utc(2026, 2, 15, 2), utc(2026, 3, 22, 2)],
}

# Half-hour marks are where clocks change, so they are drawn more often than other minutes.
minutes_of_day = st.one_of(st.integers(0, 48).map(lambda half: half * 30), st.integers(0, 1440))
entries = st.tuples(
    st.sets(st.integers(0, 6), min_size=1),
    st.lists(st.tuples(minutes_of_day, minutes_of_day), min_size=1, max_size=3),
)


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def render(schedule: list[tuple[set[int], list[tuple[int, int]]]]) -> str:
    return "; ".join(
        ",".join(DAY_NAMES[day] for day in sorted(days))
        + " "
        + ",".join(f"{hhmm(start)}-{hhmm(end)}" for start, end in ranges)
        for days, ranges in schedule
    )


def listed(schedule: list[tuple[set[int], list[tuple[int, int]]]], wall: datetime) -> bool:
    """Whether the local wall-clock time ``wall`` falls in a listed range: the spec read naively."""
    minute, day = wall.hour * 60 + wall.minute, wall.weekday()
    for days, ranges in schedule:
        for start, end in ranges:
            if start < end and day in days and start <= minute < end:
                return True
            if end < start and (
                (day in days and minute >= start) or ((day - 1) % 7 in days and minute < end)
            ):
                return True
    return False


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[tuple[set[int], list[tuple[int, int]]]], str, datetime]:
    zone = draw(st.sampled_from(sorted(TRANSITIONS)))
    schedule = draw(st.lists(entries, min_size=1, max_size=4))
    # No 24:00 start and no empty range: those are refused by parse, tested above.
    schedule = [
        (days, [(s % 1440, e if e else 1440) for s, e in ranges if s % 1440 != (e or 1440)])
        for days, ranges in schedule
    ]
    assume(all(ranges for _, ranges in schedule))
    anywhere = st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC))
    near_change = st.tuples(
        st.sampled_from(TRANSITIONS[zone] or [utc(2026, 1, 1)]),
        st.integers(-3 * 86_400_000_000, 3 * 86_400_000_000),
    ).map(lambda base_offset: base_offset[0] + timedelta(microseconds=base_offset[1]))
    now = draw(st.one_of(anywhere, near_change))
    return schedule, zone, now


def parse_or_skip(schedule: list[tuple[set[int], list[tuple[int, int]]]], zone: str) -> OfficeHours:
    try:
        return OfficeHours.parse(render(schedule), zone)
    except ValueError as error:
        assert "whole week" in str(error)
        assume(False)
        raise


@settings(max_examples=500, deadline=None)
@given(cases())
def test_window_opens_at_the_first_instant_outside_office_hours(
    case: tuple[list[tuple[set[int], list[tuple[int, int]]]], str, datetime],
) -> None:
    schedule, zone, now = case
    hours = parse_or_skip(schedule, zone)

    opens_at = hours.window_opens_at(now)

    if opens_at is None:
        assert not hours.inside(now)
        assert hours.seconds_until_open(now) == 0
    else:
        assert hours.inside(now)
        assert opens_at > now
        assert opens_at.utcoffset() == timedelta(0)
        assert not hours.inside(opens_at)
        assert hours.inside(opens_at - timedelta(seconds=1))
        assert hours.seconds_until_open(now) >= (opens_at - now).total_seconds()
        assert hours.seconds_until_open(now) < (opens_at - now).total_seconds() + 1


@settings(max_examples=500, deadline=None)
@given(cases())
def test_office_hours_are_the_listed_wall_clock_times_and_only_grow_at_clock_changes(
    case: tuple[list[tuple[set[int], list[tuple[int, int]]]], str, datetime],
) -> None:
    schedule, zone, now = case
    hours = parse_or_skip(schedule, zone)
    tz = ZoneInfo(zone)

    wall = now.astimezone(tz)

    if listed(schedule, wall):
        assert hours.inside(now)
    elif hours.inside(now):
        # Only a fall-back's repeated hour may join periods the clock shows apart.
        offsets = {(now + timedelta(hours=h)).astimezone(tz).utcoffset() for h in (-2, 2)}
        assert len(offsets) == 2, f"{now.isoformat()} ({wall.isoformat()}) is not listed"
