"""Dispatch through the running platform: widening, waiting, expiry, batching, ETA, metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from domain.geo import Point, zone_of
from storage import keys
from tests.e2e.conftest import Api, eventually, unique
from tests.e2e.world import accepted_order, events_of, make_world


def offers(party: Api, order_id: str) -> list[dict[str, Any]]:
    return [e for e in events_of(party) if e["type"] == "offer" and e["order_id"] == order_id]


def online(login: Callable[[str, str], Api], lat: float, lng: float) -> tuple[str, Api]:
    rider_id = unique("r")
    rider = login("rider", rider_id)
    answer = rider.post("/v1/riders/me/status", json={"online": True, "lat": lat, "lng": lng})
    assert answer.status_code == 200, answer.text
    return rider_id, rider


def test_no_rider_in_the_zone_asks_the_neighbouring_cells(
    login: Callable[[str, str], Api],
) -> None:
    world = make_world(login, rider_online=False)
    # 2.5 km east: another resolution-7 cell, within two rings.
    _, far = online(login, world.lat, world.lng + 0.026)
    here = zone_of(Point(world.lat, world.lng), 7)
    assert zone_of(Point(world.lat, world.lng + 0.026), 7) != here
    order = accepted_order(world)
    eventually(lambda: offers(far, order["id"]), what="an offer from a neighbouring cell")


def test_an_order_nobody_can_take_waits_is_shown_to_operations_and_is_retried(
    login: Callable[[str, str], Api],
) -> None:
    world = make_world(login, rider_online=False)
    order = accepted_order(world)
    here = zone_of(Point(world.lat, world.lng), 7)

    def shown() -> dict[str, Any] | None:
        figures = world.admin.get("/v1/admin/metrics").json()
        waiting: dict[str, Any] | None = figures["waiting"].get(here)
        return waiting

    waiting = eventually(shown, what="the waiting order on the dashboard")
    assert waiting["orders"] >= 1
    assert any(e["order_id"] == order["id"] for e in _all_ops(world.admin))
    world.rider.post(
        "/v1/riders/me/status", json={"online": True, "lat": world.lat, "lng": world.lng}
    )
    eventually(lambda: offers(world.rider, order["id"]), timeout_s=20, what="the retried offer")


def _all_ops(admin: Api) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    for _ in range(200):
        page = events_of(admin, cursor)
        if not page:
            break
        found += page
        cursor = page[-1]["cursor"]
    return [e for e in found if e["type"] == "dispatch_waiting"]


def test_an_expired_offer_goes_to_the_next_rider(login: Callable[[str, str], Api]) -> None:
    world = make_world(login)
    second_id, second = online(login, world.lat + 0.004, world.lng)
    order = accepted_order(world)
    first_offer = eventually(lambda: offers(world.rider, order["id"]), what="first offer")[0]
    assert not offers(second, order["id"])
    # The first rider lets the offer lapse (6 s in these tests).
    taken = eventually(lambda: offers(second, order["id"]), timeout_s=20, what="second offer")
    late = world.rider.post(f"/v1/rider/offers/{first_offer['data']['offer_id']}/accept")
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "offer_closed"
    accept = second.post(f"/v1/rider/offers/{taken[0]['data']['offer_id']}/accept")
    assert accept.status_code == 200, accept.text
    assert world.customer.get(f"/v1/orders/{order['id']}").json()["rider"]["id"] == second_id


def test_stale_riders_are_not_offered_orders(
    login: Callable[[str, str], Api], store: redis.Redis
) -> None:
    world = make_world(login)
    _, fresh = online(login, world.lat + 0.01, world.lng)
    store.hset(keys.rider(world.rider_id), "seen_at", time.time() - 120)  # silent for 2 minutes
    order = accepted_order(world)
    eventually(lambda: offers(fresh, order["id"]), what="an offer to the fresh rider")
    assert not offers(world.rider, order["id"])


def test_two_orders_at_one_counter_go_to_one_rider_with_an_eta(
    login: Callable[[str, str], Api],
) -> None:
    world = make_world(login)
    first = accepted_order(world)
    offer = eventually(lambda: offers(world.rider, first["id"]), what="first offer")[0]
    assert (
        world.rider.post(f"/v1/rider/offers/{offer['data']['offer_id']}/accept").status_code == 200
    )
    # Another rider 1.5 km away is free, but the first is already at this counter.
    online(login, world.lat - 0.0135, world.lng)
    second = accepted_order(world)
    eventually(lambda: offers(world.rider, second["id"]), what="the batched offer")

    view = world.customer.get(f"/v1/orders/{first['id']}").json()
    assert view["eta"]["pickup_at"] <= view["eta"]["delivery_at"]
    before = view["eta"]["delivery_at"]
    time.sleep(3.1)  # past the customer's location rate limit
    world.rider.post("/v1/riders/me/location", json={"lat": world.lat + 0.03, "lng": world.lng})
    after = eventually(
        lambda: (
            (world.customer.get(f"/v1/orders/{first['id']}").json()["eta"] or {}).get("delivery_at")
            != before
            and world.customer.get(f"/v1/orders/{first['id']}").json()["eta"]
        ),
        what="a new ETA",
    )
    assert after["delivery_at"] > before  # the rider rode away: later
    # The customer's read shows the rider where the rider last said it was.
    rider = world.customer.get(f"/v1/orders/{first['id']}").json()["rider"]
    assert rider == {"id": world.rider_id, "lat": world.lat + 0.03, "lng": world.lng}


def test_a_rider_crossing_into_another_cell_moves_to_that_zone(
    login: Callable[[str, str], Api], store: redis.Redis
) -> None:
    world = make_world(login)
    here = zone_of(Point(world.lat + 0.002, world.lng), 7)
    there_point = Point(world.lat + 0.002, world.lng + 0.03)
    there = zone_of(there_point, 7)
    assert here != there
    assert store.zscore(keys.zone_riders(here), world.rider_id) is not None
    moved = world.rider.post(
        "/v1/riders/me/location", json={"lat": there_point.lat, "lng": there_point.lng}
    )
    assert moved.json()["zone"] == there
    assert store.zscore(keys.zone_riders(here), world.rider_id) is None
    assert store.zscore(keys.zone_riders(there), world.rider_id) is not None


def test_metrics_show_the_figures_operations_watch(login: Callable[[str, str], Api]) -> None:
    world = make_world(login)
    accepted_order(world)
    figures = world.admin.get("/v1/admin/metrics", params={"window_min": 60}).json()
    for name in (
        "orders_per_min",
        "gmv_fen",
        "avg_delivery_minutes",
        "dispatch_success_rate",
        "merchant_onboarding_per_hour",
        "repeat_purchase_rate",
        "hot_zones",
    ):
        assert name in figures
    assert figures["orders"] >= 1
    assert figures["gmv_fen"] > 0
    assert figures["merchants_onboarded_24h"] >= 1
    assert figures["hot_zones"], "no zone listed"
    assert world.customer.get("/v1/admin/metrics").status_code == 403


def test_two_orders_at_once_go_to_two_riders_one_offer_each(
    login: Callable[[str, str], Api],
) -> None:
    world = make_world(login)
    _, second = online(login, world.lat + 0.006, world.lng)
    one, two = accepted_order(world), accepted_order(world)
    eventually(
        lambda: offers(world.rider, one["id"]) or offers(world.rider, two["id"]), what="offer"
    )
    eventually(
        lambda: offers(second, one["id"]) or offers(second, two["id"]), what="second rider's offer"
    )
    to_first = offers(world.rider, one["id"]) + offers(world.rider, two["id"])
    assert len(to_first) == 1  # one question at a time
