from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.dispatch import STALE_AFTER, RiderPosition, rank_riders
from domain.geo import Point

NOW = datetime(2025, 3, 1, 11, 30, tzinfo=UTC)
PICKUP = Point(39.9087, 116.3975)


def north(metres: float) -> Point:
    return Point(PICKUP.lat + metres / 111_195, PICKUP.lng)


def rider(rider_id: str, metres: float, seen_s_ago: float = 5, busy: bool = False) -> RiderPosition:
    return RiderPosition(rider_id, north(metres), NOW - timedelta(seconds=seen_s_ago), busy)


def ids(riders: list[RiderPosition]) -> list[str]:
    return [r.rider_id for r in riders]


def test_nearest_first() -> None:
    riders = [rider("r-far", 2500), rider("r-near", 100), rider("r-mid", 900)]
    assert ids(rank_riders(PICKUP, riders, NOW)) == ["r-near", "r-mid", "r-far"]


def test_stale_riders_are_left_out() -> None:
    riders = [rider("r-stale", 10, seen_s_ago=61), rider("r-fresh", 2000, seen_s_ago=59)]
    assert ids(rank_riders(PICKUP, riders, NOW)) == ["r-fresh"]


def test_a_rider_seen_exactly_sixty_seconds_ago_is_still_fresh() -> None:
    assert timedelta(seconds=60) == STALE_AFTER
    assert ids(rank_riders(PICKUP, [rider("r-1", 10, seen_s_ago=60)], NOW)) == ["r-1"]
    assert rank_riders(PICKUP, [rider("r-1", 10, seen_s_ago=60.001)], NOW) == []


def test_stale_after_can_be_tightened() -> None:
    riders = [rider("r-1", 10, seen_s_ago=20), rider("r-2", 20, seen_s_ago=5)]
    assert ids(rank_riders(PICKUP, riders, NOW, stale_after=timedelta(seconds=10))) == ["r-2"]


def test_busy_riders_are_left_out() -> None:
    riders = [rider("r-busy", 10, busy=True), rider("r-free", 2000)]
    assert ids(rank_riders(PICKUP, riders, NOW)) == ["r-free"]


def test_excluded_riders_are_left_out() -> None:
    riders = [rider("r-declined", 10), rider("r-timed-out", 20), rider("r-3", 3000)]
    ranked = rank_riders(PICKUP, riders, NOW, exclude=frozenset({"r-declined", "r-timed-out"}))
    assert ids(ranked) == ["r-3"]


@pytest.mark.parametrize("order", [["r-b", "r-a", "r-c"], ["r-c", "r-b", "r-a"]])
def test_equal_distances_are_broken_by_rider_id(order: list[str]) -> None:
    riders = [rider(rider_id, 500) for rider_id in order] + [rider("r-0", 800)]
    assert ids(rank_riders(PICKUP, riders, NOW)) == ["r-a", "r-b", "r-c", "r-0"]


def test_no_riders_no_ranking() -> None:
    assert rank_riders(PICKUP, [], NOW) == []


def test_riders_may_come_from_any_iterable() -> None:
    ranked = rank_riders(PICKUP, (rider(f"r-{i}", 100 * (3 - i)) for i in range(3)), NOW)
    assert ids(ranked) == ["r-2", "r-1", "r-0"]


def test_ranking_keeps_the_positions_as_given() -> None:
    position = rider("r-1", 10)
    assert rank_riders(PICKUP, [position], NOW) == [position]
