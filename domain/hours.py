"""Opening hours: a weekly schedule in the city's local time, and whether a shop is open.

A schedule names, per weekday (`mon` … `sun`), the spans a merchant is open, each
`["HH:MM", "HH:MM"]` in the city's local time. A span whose end is not after its
start crosses midnight: `["22:00", "02:00"]` on Friday is open from Friday 22:00 to
Saturday 02:00, whatever Saturday's own spans say. `"24:00"` ends a span at midnight,
so `["00:00", "24:00"]` is the whole day. A weekday left out has no span of its own
(the day is closed, apart from the night before's span running into it); spans may
overlap (they add up). A merchant without a schedule is always open.

The city's local time is a fixed offset from UTC (`O2O_CITY_UTC_OFFSET_MIN`, 480 for
China, which has no daylight saving time): a fixed offset cannot skip or repeat an
hour, so every local time of a schedule exists exactly once a week. A city with
daylight saving time would need its zone here instead of an offset.

Seconds count: a shop with `["09:00", "21:00"]` is open at 20:59:59.9 and closed at
21:00:00 sharp.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from domain.errors import invalid

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_MIN = 24 * 60
# Spans one weekday may hold: a split shift or two is plenty; the bound keeps a profile,
# which `nearby` reads by the hundred, small.
MAX_SPANS_PER_DAY = 6
HHMM = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")


def minute_of(text: str) -> int:
    """`"HH:MM"` as minutes after midnight (`"24:00"` is 1440, the end of the day)."""
    found = HHMM.match(text) if isinstance(text, str) else None
    if found is None:
        raise invalid("a time of day is HH:MM, 00:00 to 24:00", time=str(text)[:16])
    minute = int(found[1]) * 60 + int(found[2])
    if minute > DAY_MIN:
        raise invalid("a time of day is HH:MM, 00:00 to 24:00", time=text)
    return minute


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@dataclass(frozen=True)
class Span:
    """Open from `start` to `end`, minutes after the local midnight of its weekday; an
    `end` not after `start` is on the next day (the span crosses midnight)."""

    start: int
    end: int

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def as_list(self) -> list[str]:
        return [hhmm(self.start), hhmm(self.end)]


@dataclass(frozen=True)
class OpeningHours:
    """Seven tuples of spans, Monday first (Python's `weekday()`)."""

    days: tuple[tuple[Span, ...], ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OpeningHours:
        """Read a schedule (`{"mon": [["09:00", "21:00"]], ...}`); `invalid_request` when
        it is not one."""
        if not isinstance(d, Mapping):
            raise invalid("opening_hours maps weekdays to spans")
        unknown = sorted(str(k) for k in d if k not in WEEKDAYS)
        if unknown:
            raise invalid("opening_hours has weekdays mon..sun only", unknown=unknown[:7])
        days: list[tuple[Span, ...]] = []
        for name in WEEKDAYS:
            raw = d.get(name) or []
            if not isinstance(raw, list | tuple) or len(raw) > MAX_SPANS_PER_DAY:
                raise invalid(
                    f"a weekday has a list of at most {MAX_SPANS_PER_DAY} spans", weekday=name
                )
            spans = []
            for pair in raw:
                if not isinstance(pair, list | tuple) or len(pair) != 2:
                    raise invalid('a span is ["HH:MM", "HH:MM"]', weekday=name)
                start, end = minute_of(pair[0]), minute_of(pair[1])
                if start == DAY_MIN:
                    raise invalid("a span starts before 24:00", weekday=name)
                if start == end:
                    raise invalid("a span ends at another time than it starts", weekday=name)
                spans.append(Span(start, end))
            days.append(tuple(sorted(spans, key=lambda s: (s.start, s.end))))
        if not any(days):
            raise invalid("opening_hours needs at least one span (leave it out: always open)")
        return cls(tuple(days))

    def as_dict(self) -> dict[str, list[list[str]]]:
        return {
            name: [span.as_list() for span in spans]
            for name, spans in zip(WEEKDAYS, self.days, strict=True)
            if spans
        }


def city_zone(utc_offset_min: int) -> timezone:
    return timezone(timedelta(minutes=utc_offset_min))


def _local(at: datetime, utc_offset_min: int) -> tuple[datetime, float]:
    """The local midnight that began `at`'s day, and the minutes since it (fractional)."""
    local = at.astimezone(city_zone(utc_offset_min))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight, (local - midnight).total_seconds() / 60


def is_open(hours: OpeningHours | None, at: datetime, utc_offset_min: int) -> bool:
    """Whether a merchant with these hours is open at `at` (an aware datetime)."""
    if hours is None:
        return True
    midnight, minute = _local(at, utc_offset_min)
    today = midnight.weekday()
    for span in hours.days[today]:
        end = DAY_MIN if span.crosses_midnight else span.end
        if span.start <= minute < end:
            return True
    # Yesterday's spans that run past midnight into today.
    return any(span.crosses_midnight and minute < span.end for span in hours.days[(today - 1) % 7])


def next_opening(hours: OpeningHours | None, at: datetime, utc_offset_min: int) -> datetime | None:
    """When a merchant with these hours is next open: `at` itself while it is open, else
    the start of its next span (in UTC). A schedule has a span every week, so a closed
    merchant opens again within seven days."""
    if is_open(hours, at, utc_offset_min):
        return at
    assert hours is not None
    midnight, minute = _local(at, utc_offset_min)
    today = midnight.weekday()
    for ahead in range(8):
        starts = [
            span.start
            for span in hours.days[(today + ahead) % 7]
            if ahead > 0 or span.start > minute
        ]
        if starts:
            opening = midnight + timedelta(days=ahead, minutes=min(starts))
            return opening.astimezone(at.tzinfo or city_zone(0))
    return None  # pragma: no cover - a valid schedule has a span in every week
