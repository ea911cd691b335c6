"""Office hours: when archiving must not run, read from ``LEADARCHIVE_OFFICE_HOURS``.

The format is ``<days> <HH:MM-HH:MM>[,<HH:MM-HH:MM>...]`` entries separated by ``;``, e.g.
``mon-fri 08:00-12:00,13:00-18:00; sat 09:00-13:00``. Days are 3-letter English names (any case),
alone (``mon``), as a range (``mon-fri``, or ``fri-mon`` wrapping the week) or as a comma list
(``mon,wed,fri``). Time ranges are half-open, ``[start, end)``; ``24:00`` may end one, and a range
whose end is before its start runs past midnight into the next day (``fri 22:00-02:00``). An empty
spec means no office hours at all.

Times are wall-clock times in the configured IANA zone, so ``08:00-18:00`` is 08:00 local in winter
and in summer. On the days the clocks change, every local time is turned into an instant so that
office hours never shrink (archiving on a live dialer is the risk; waiting an hour longer is not):

- a time skipped by a spring-forward jump is read as the instant of the jump (the clock passes it
  there), so a period lying wholly inside the skipped hour does not happen that day;
- a time repeated by a fall-back is read as its first occurrence when it starts a period and as its
  second when it ends one, so ``sat 22:00-01:30`` lasts until the second 01:30.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tasks.errors import OfficeHoursError, WholeWeekError

Clock: TypeAlias = Callable[[], datetime]
"""Where the current time comes from; tests pass their own."""


def system_clock() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MINUTES_PER_DAY = 24 * 60
_MINUTES_PER_WEEK = 7 * _MINUTES_PER_DAY
# A merged period cannot legitimately outlast this: every schedule that passes parse() leaves a gap
# each week, and only a clock change (at most a few a year) can swallow one week's gaps.
_LONGEST_PERIOD = timedelta(weeks=8)

_ENTRY = re.compile(r"(?P<days>[a-z]+(?:\s*[-,]\s*[a-z]+)*)\s+(?P<times>\S.*)", re.IGNORECASE)
_DAY_ITEM = re.compile(r"(?P<first>[a-z]+)(?:\s*-\s*(?P<last>[a-z]+))?", re.IGNORECASE)
_TIME_RANGE = re.compile(r"(?P<start>\d{2}:\d{2})\s*-\s*(?P<end>\d{2}:\d{2})")

# (start, end) in minutes from Monday 00:00 local, start < end; an entry's end may pass the week's.
_Span: TypeAlias = tuple[int, int]


@dataclass(frozen=True)
class OfficeHours:
    """A weekly office-hours schedule in one time zone; build it with ``OfficeHours.parse``."""

    spec: str
    zone: ZoneInfo
    # Merged, sorted, within one week; _periods() joins Sunday night to Monday morning.
    spans: tuple[_Span, ...]

    @classmethod
    def parse(cls, spec: str, timezone: str) -> OfficeHours:
        """Parse ``spec`` (see the module docstring) for the IANA zone ``timezone``."""
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise OfficeHoursError(
                f"unknown time zone {timezone!r}: expected an IANA name such as 'America/New_York'"
            ) from None
        spans: list[_Span] = []
        if spec.strip():
            for entry in spec.split(";"):
                spans.extend(_parse_entry(entry.strip(), spec))
        return cls(spec=spec, zone=zone, spans=_merge(spans))

    def inside(self, now: datetime) -> bool:
        """Whether ``now`` is inside office hours, i.e. archiving must not run."""
        return self._period_at(now) is not None

    def window_opens_at(self, now: datetime) -> datetime | None:
        """When the office-hours period holding ``now`` ends, in UTC; None when ``now`` is outside.

        Back-to-back or overlapping periods count as one, so this is the first instant archiving
        may run.
        """
        period = self._period_at(now)
        return None if period is None else period[1]

    def seconds_until_open(self, now: datetime) -> int:
        """Whole seconds, rounded up, until archiving may run; 0 when ``now`` is outside."""
        opens_at = self.window_opens_at(now)
        if opens_at is None:
            return 0
        wait = opens_at - now
        return wait.days * 86_400 + wait.seconds + (1 if wait.microseconds else 0)

    def _period_at(self, now: datetime) -> tuple[datetime, datetime] | None:
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
        local = now.astimezone(self.zone)
        # Start a week early: a period that began last week (Sunday night) may still be running.
        monday = local.date() - timedelta(days=local.weekday() + 7)
        for start, end in self._periods(monday):
            if start > now:
                return None
            if now < end:
                return start, end
        return None  # only reached when there are no office hours at all

    def _periods(self, monday: date) -> Iterator[tuple[datetime, datetime]]:
        """Every office-hours period from ``monday`` (local) on, as merged UTC instants."""
        if not self.spans:
            return
        current: tuple[datetime, datetime] | None = None
        week = datetime.combine(monday, time())
        while True:
            for first, last in self.spans:
                start = self._instant(week + timedelta(minutes=first), earliest=True)
                end = self._instant(week + timedelta(minutes=last), earliest=False)
                if end <= start:
                    continue  # wholly inside a spring-forward jump: it does not happen this time
                if current is not None and start <= current[1]:
                    current = current[0], max(current[1], end)
                    if current[1] - current[0] > _LONGEST_PERIOD:
                        raise RuntimeError(f"office hours {self.spec!r} never end")
                    continue
                if current is not None:
                    yield current
                current = start, end
            week += timedelta(weeks=1)

    def _instant(self, wall: datetime, *, earliest: bool) -> datetime:
        """The UTC instant of the local wall-clock time ``wall`` (see the module docstring)."""
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if first == second:
            return first
        if first.astimezone(self.zone).replace(tzinfo=None) == wall:
            return first if earliest else second  # a repeated time: fall-back
        # A skipped time: fold=1 reads it with the new offset (an instant before the jump),
        # fold=0 with the old one (after it). Find the jump between them, to the second.
        old_offset = second.astimezone(self.zone).utcoffset()
        # Offsets change on whole seconds: bisect over the whole seconds after ``second``.
        low, high = 0, (first - second) // timedelta(seconds=1)
        while high - low > 1:
            middle = (low + high) // 2
            if (second + timedelta(seconds=middle)).astimezone(self.zone).utcoffset() == old_offset:
                low = middle
            else:
                high = middle
        return second + timedelta(seconds=high)


def _parse_entry(entry: str, spec: str) -> list[_Span]:
    """The spans of one ``<days> <times>`` entry."""
    if not entry:
        raise OfficeHoursError(f"empty entry in office hours {spec!r}: remove the stray ';'")
    match = _ENTRY.fullmatch(entry)
    if match is None:
        raise OfficeHoursError(
            f"cannot read office hours entry {entry!r}: "
            "expected '<days> <HH:MM-HH:MM>[,<HH:MM-HH:MM>...]', e.g. 'mon-fri 08:00-18:00'"
        )
    days = _parse_days(match["days"], entry)
    spans: list[_Span] = []
    for item in match["times"].split(","):
        start, end = _parse_time_range(item.strip(), entry)
        spans.extend((day * _MINUTES_PER_DAY + start, day * _MINUTES_PER_DAY + end) for day in days)
    return spans


def _parse_days(text: str, entry: str) -> list[int]:
    """Day numbers (Monday = 0) of a day spec like ``mon``, ``fri-mon`` or ``mon,wed``."""
    days: list[int] = []
    for item in text.split(","):
        match = _DAY_ITEM.fullmatch(item.strip())
        if match is None:
            raise OfficeHoursError(
                f"cannot read days {item.strip()!r} in office hours entry {entry!r}"
            )
        first = _day(match["first"], entry)
        if match["last"] is None:
            days.append(first)
            continue
        last = _day(match["last"], entry)
        if first == last:
            raise OfficeHoursError(
                f"day range {item.strip()!r} in office hours entry {entry!r} starts and ends "
                f"on the same day: write {match['first']!r} for one day"
            )
        days.extend((first + offset) % 7 for offset in range((last - first) % 7 + 1))
    return days


def _day(name: str, entry: str) -> int:
    try:
        return DAY_NAMES.index(name.lower())
    except ValueError:
        raise OfficeHoursError(
            f"unknown day {name!r} in office hours entry {entry!r}: use {', '.join(DAY_NAMES)}"
        ) from None


def _parse_time_range(text: str, entry: str) -> tuple[int, int]:
    """(start, end) minutes after the day's midnight; end passes 24:00 when the range does."""
    match = _TIME_RANGE.fullmatch(text)
    if match is None:
        raise OfficeHoursError(
            f"cannot read time range {text!r} in office hours entry {entry!r}: "
            "expected HH:MM-HH:MM, e.g. 08:00-18:00"
        )
    start = _minutes(match["start"], entry, end=False)
    end = _minutes(match["end"], entry, end=True)
    if start == end:
        raise OfficeHoursError(
            f"time range {text!r} in office hours entry {entry!r} is empty: "
            "write 00:00-24:00 for a whole day"
        )
    # An end before the start runs past midnight into the next day.
    return start, end if end > start else end + _MINUTES_PER_DAY


def _minutes(text: str, entry: str, *, end: bool) -> int:
    hours, minutes = int(text[:2]), int(text[3:])
    if (hours, minutes) == (24, 0) and end:
        return _MINUTES_PER_DAY
    if hours > 23 or minutes > 59:
        allowed = "00:00 to 24:00" if end else "00:00 to 23:59"
        raise OfficeHoursError(
            f"invalid time {text!r} in office hours entry {entry!r}: use {allowed}"
        )
    return hours * 60 + minutes


def _merge(spans: list[_Span]) -> tuple[_Span, ...]:
    """Sorted, merged spans; raises WholeWeekError when they leave no gap in the week."""
    pieces: list[_Span] = []
    for start, end in spans:
        # Cut at the week's end so that sorting sees Monday-morning pieces in their place.
        if end > _MINUTES_PER_WEEK:
            pieces += [(start, _MINUTES_PER_WEEK), (0, end - _MINUTES_PER_WEEK)]
        else:
            pieces.append((start, end))
    merged: list[_Span] = []
    for start, end in sorted(pieces):
        if merged and start <= merged[-1][1]:
            merged[-1] = merged[-1][0], max(merged[-1][1], end)
        else:
            merged.append((start, end))
    if merged == [(0, _MINUTES_PER_WEEK)]:
        raise WholeWeekError("office hours cover the whole week: archiving could never run")
    return tuple(merged)
