"""The scoring policy: cost in minutes, batching, fairness, and the ETA it implies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.dispatch import (
    Dispatch,
    Job,
    RiderPosition,
    Weights,
    batchable,
    cost_minutes,
    eta,
    rank,
    score_riders,
)
from domain.geo import Point

NOW = datetime(2026, 11, 29, 11, 45, tzinfo=UTC)
SHOP = Point(30.2590, 120.1490)
DOOR = Point(30.2680, 120.1490)  # 1 km north


def at(metres_north: float, metres_east: float = 0) -> Point:
    return Point(SHOP.lat + metres_north / 111_195, SHOP.lng + metres_east / 96_000)


def rider(rid: str, where: Point, jobs: tuple[Job, ...] = (), delivered: int = 0) -> RiderPosition:
    return RiderPosition(
        rid, where, NOW - timedelta(seconds=5), jobs=jobs, delivered_today=delivered
    )


def order(
    ready_in_min: float | None = None, merchant: str = "m1", pickup: Point = SHOP
) -> Dispatch:
    ready = NOW + timedelta(minutes=ready_in_min) if ready_in_min is not None else None
    return Dispatch("o-new", merchant, pickup, DOOR, ready)


def test_a_rider_who_would_wait_long_for_the_food_loses_to_one_arriving_just_in_time() -> None:
    # Food ready in 10 minutes: 300 m away means 9 idle minutes, 2.7 km means none.
    near, timely = rider("r-near", at(300)), rider("r-timely", at(2700))
    scored = score_riders(order(ready_in_min=10), [near, timely], NOW)
    assert [r.rider_id for r in scored] == ["r-near", "r-timely"]  # idle time is cheap
    # Food ready now: every minute of travel makes it wait, nearest wins by far.
    scored_now = score_riders(order(ready_in_min=0), [timely, near], NOW)
    assert scored_now[0].rider_id == "r-near"
    w = Weights()
    late_cost = cost_minutes(order(0), timely, NOW, 0, w) - cost_minutes(order(0), near, NOW, 0, w)
    assert late_cost > (2700 - 300) / w.speed_m_per_min  # the food's wait weighs extra


def test_fairness_prefers_the_rider_with_fewer_deliveries_when_all_else_is_equal() -> None:
    busy_day, quiet_day = rider("r-a", at(500), delivered=12), rider("r-b", at(500, 1), delivered=2)
    assert score_riders(order(), [busy_day, quiet_day], NOW)[0].rider_id == "r-b"


def test_a_rider_at_the_same_counter_takes_a_second_order_as_a_batch() -> None:
    waiting_job = Job("o-1", "m1", SHOP, at(900, 300))
    carrying = rider("r-batch", at(20), jobs=(waiting_job,))
    free_far = rider("r-free", at(1500))
    ranked = score_riders(order(ready_in_min=5), [carrying, free_far], NOW)
    assert ranked[0].rider_id == "r-batch"


def test_batches_stop_at_capacity_and_after_pickup_elsewhere() -> None:
    w = Weights(capacity=2)
    full = rider(
        "r-full", at(10), jobs=(Job("o-1", "m1", SHOP, DOOR), Job("o-2", "m1", SHOP, DOOR))
    )
    assert not batchable(order(), full, w)
    gone = rider("r-gone", at(10), jobs=(Job("o-3", "m9", at(5000), at(6000), picked_up=True),))
    assert not batchable(order(), gone, w)
    along = rider("r-along", at(10), jobs=(Job("o-4", "m2", at(800), at(-200, 700)),))
    assert batchable(order(), along, w)


def test_the_nearest_policy_never_batches() -> None:
    carrying = rider("r-batch", at(20), jobs=(Job("o-1", "m1", SHOP, DOOR),))
    free_far = rider("r-free", at(1500))
    assert [r.rider_id for r in rank("nearest", order(), [carrying, free_far], NOW)] == ["r-free"]
    assert rank("score", order(), [carrying, free_far], NOW)[0].rider_id == "r-batch"


def test_eta_waits_for_the_food_and_then_rides_to_the_door() -> None:
    w = Weights()
    job = Job("o-1", "m1", SHOP, DOOR)
    ready = NOW + timedelta(minutes=10)
    expected = eta(at(600), job, NOW, ready, w)
    assert expected.pickup_at == ready  # 2 minutes away, food in 10
    ride = timedelta(minutes=1000 / w.speed_m_per_min)
    assert abs((expected.delivery_at - expected.pickup_at) - ride) < timedelta(seconds=5)
    late = eta(at(6000), job, NOW, NOW, w)
    travel = timedelta(minutes=6000 / w.speed_m_per_min)
    assert abs(late.pickup_at - (NOW + travel)) < timedelta(seconds=1)  # the food waits
    carried = eta(at(500), Job("o-1", "m1", SHOP, DOOR, picked_up=True), NOW, None, w)
    assert carried.pickup_at == NOW
    assert carried.delivery_at < NOW + timedelta(minutes=2)


def test_a_rider_with_an_unanswered_offer_is_not_asked_again() -> None:
    asked = RiderPosition("r-asked", at(10), NOW, offered=True)
    free = rider("r-free", at(2000))
    for policy in ("score", "nearest"):
        assert [r.rider_id for r in rank(policy, order(), [asked, free], NOW)] == ["r-free"]
