"""Opening hours: open or closed at a moment, when a closed merchant opens next, in the
city's fixed offset from UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import DomainError
from domain.hours import DAY_MIN, WEEKDAYS, OpeningHours, is_open, next_opening

CHINA = 480  # UTC+8
WEEK_MIN = 7 * DAY_MIN
# Monday 2025-03-03, 00:00 in China.
MONDAY = datetime(2025, 3, 2, 16, 0, tzinfo=UTC)


def local(day: int, hhmm: str, seconds: float = 0) -> datetime:
    """A moment `day` days after Monday (0: Monday) at `hhmm` China time, in UTC."""
    h, m = map(int, hhmm.split(":"))
    return MONDAY + timedelta(days=day, hours=h, minutes=m, seconds=seconds)


def hours(**days: list[list[str]]) -> OpeningHours:
    return OpeningHours.from_dict(days)


SHOP = hours(
    mon=[["09:00", "21:00"]],
    tue=[["09:00", "12:00"], ["14:00", "21:00"]],
    fri=[["09:00", "12:00"], ["22:00", "02:00"]],  # a late night into Saturday
    sun=[["20:00", "03:00"]],  # into Monday: the week wraps
)


@pytest.mark.parametrize(
    ("day", "at", "seconds", "expected"),
    [
        (0, "08:59", 59.9, False),
        (0, "09:00", 0, True),
        (0, "20:59", 59.9, True),
        (0, "21:00", 0, False),
        (1, "12:30", 0, False),  # between Tuesday's two spans
        (1, "14:00", 0, True),
        (2, "10:00", 0, False),  # Wednesday: no span at all
        (4, "23:59", 0, True),
        (5, "00:00", 0, True),  # Friday's span runs into Saturday
        (5, "01:59", 59, True),
        (5, "02:00", 0, False),
        (5, "22:30", 0, False),  # Saturday has no span of its own
        (0, "02:59", 0, True),  # Sunday's span runs into Monday
        (0, "03:00", 0, False),
    ],
)
def test_open_within_its_spans_only(day: int, at: str, seconds: float, expected: bool) -> None:
    assert is_open(SHOP, local(day, at, seconds), CHINA) is expected


def test_no_hours_is_always_open() -> None:
    assert is_open(None, local(2, "03:00"), CHINA)
    assert next_opening(None, local(2, "03:00"), CHINA) == local(2, "03:00")


@pytest.mark.parametrize(
    ("day", "at", "opens"),
    [
        (0, "07:00", (0, "09:00")),  # later today
        (0, "21:00", (1, "09:00")),  # tomorrow
        (1, "12:00", (1, "14:00")),  # after the lunch break
        (1, "22:00", (4, "09:00")),  # Wednesday and Thursday closed
        (5, "02:00", (6, "20:00")),
        (0, "03:00", (0, "09:00")),
    ],
)
def test_a_closed_merchant_opens_at_its_next_span(
    day: int, at: str, opens: tuple[int, str]
) -> None:
    opening = next_opening(SHOP, local(day, at), CHINA)
    assert opening == local(*opens)
    assert opening is not None and opening.tzinfo is not None
    assert opening.utcoffset() == timedelta(0)  # answered in UTC


def test_an_open_merchant_is_open_now() -> None:
    at = local(0, "10:00")
    assert next_opening(SHOP, at, CHINA) == at


def test_only_monday_opens_again_a_week_later() -> None:
    mondays = hours(mon=[["09:00", "10:00"]])
    assert next_opening(mondays, local(0, "10:00"), CHINA) == local(7, "09:00")


def test_the_city_offset_decides_the_local_time() -> None:
    # Monday 12:00 in China is Monday 04:00 UTC: open in China, closed in a UTC city.
    at = local(0, "12:00")
    assert is_open(SHOP, at, CHINA)
    assert not is_open(SHOP, at, 0)
    assert next_opening(SHOP, at, 0) == datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def test_a_whole_day_and_a_span_to_midnight() -> None:
    always_monday = hours(mon=[["00:00", "24:00"]], tue=[["22:00", "00:00"]])
    assert is_open(always_monday, local(0, "00:00"), CHINA)
    assert is_open(always_monday, local(0, "23:59", 59.9), CHINA)
    assert not is_open(always_monday, local(1, "00:00"), CHINA)
    assert is_open(always_monday, local(1, "23:00"), CHINA)
    assert not is_open(always_monday, local(2, "00:00"), CHINA)


def test_the_schedule_round_trips_through_its_dict() -> None:
    wire = SHOP.as_dict()
    assert wire["fri"] == [["09:00", "12:00"], ["22:00", "02:00"]]
    assert "wed" not in wire
    assert OpeningHours.from_dict(wire) == SHOP


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"mon": []},
        {"monday": [["09:00", "10:00"]]},
        {"mon": [["9:00", "10:00"]]},
        {"mon": [["09:00", "25:00"]]},
        {"mon": [["09:00", "24:01"]]},
        {"mon": [["24:00", "02:00"]]},
        {"mon": [["09:00", "09:00"]]},
        {"mon": [["09:00"]]},
        {"mon": "09:00-10:00"},
        {"mon": [["09:00", "10:00"]] * 7},
        [["09:00", "10:00"]],
    ],
)
def test_a_bad_schedule_is_an_invalid_request(bad: Any) -> None:
    with pytest.raises(DomainError) as refused:
        OpeningHours.from_dict(bad)
    assert refused.value.code == "invalid_request"


# ---------------------------------------------------------------- against a model


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@st.composite
def schedules(draw: st.DrawFn) -> OpeningHours:
    days: dict[str, list[list[str]]] = {}
    for name in WEEKDAYS:
        spans = []
        for _ in range(draw(st.integers(0, 3))):
            start = draw(st.integers(0, DAY_MIN - 1))
            end = draw(st.integers(0, DAY_MIN).filter(start.__ne__))
            spans.append([_clock(start), _clock(end)])
        if spans:
            days[name] = spans
    if not days:
        days["wed"] = [["10:00", "11:00"]]
    return OpeningHours.from_dict(days)


def open_in_model(schedule: OpeningHours, at: datetime, offset_min: int) -> bool:
    """The week as one ring of minutes: a span is open for its length from its start."""
    shifted = at + timedelta(minutes=offset_min)
    week_minute = (
        shifted.weekday() * DAY_MIN
        + (shifted - shifted.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
        / 60
    )
    for day, spans in enumerate(schedule.days):
        for span in spans:
            length = (
                span.end - span.start if span.end > span.start else DAY_MIN - span.start + span.end
            )
            if (week_minute - (day * DAY_MIN + span.start)) % WEEK_MIN < length:
                return True
    return False


moments = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)
offsets = st.integers(-720, 840)


@settings(max_examples=400, deadline=None)
@given(schedules(), moments, offsets)
def test_open_as_the_ring_of_minutes_says(
    schedule: OpeningHours, at: datetime, offset_min: int
) -> None:
    assert is_open(schedule, at, offset_min) is open_in_model(schedule, at, offset_min)


@settings(max_examples=300, deadline=None)
@given(schedules(), moments, offsets, st.lists(st.floats(0, 1, exclude_max=True), max_size=8))
def test_the_next_opening_is_the_first_open_moment(
    schedule: OpeningHours, at: datetime, offset_min: int, shares: list[float]
) -> None:
    opening = next_opening(schedule, at, offset_min)
    assert opening is not None
    assert at <= opening <= at + timedelta(days=7)
    assert is_open(schedule, opening, offset_min)
    # Nothing before it is open: it is when the merchant opens, not some later time.
    for share in shares:
        before = at + (opening - at) * share
        if before < opening:
            assert not is_open(schedule, before, offset_min)


@settings(max_examples=200, deadline=None)
@given(schedules(), moments, offsets)
def test_the_offset_is_a_shift_of_the_clock(
    schedule: OpeningHours, at: datetime, offset_min: int
) -> None:
    assert is_open(schedule, at, offset_min) is is_open(
        schedule, at + timedelta(minutes=offset_min), 0
    )
    assert OpeningHours.from_dict(schedule.as_dict()) == schedule
