"""Local shops on the running platform: opening hours honoured by `nearby` and placement,
an order ready the moment it is accepted and offered to a rider at once, and a
stock-heavy menu read a page at a time and searched by name.

Hours are set relative to the present in the city's local time (the platform's
`city_utc_offset_min`), every weekday alike, so the tests hold whatever day and hour
they run at, midnight included.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from cluster.launcher import Platform
from domain.hours import WEEKDAYS
from storage import keys
from tests.e2e.conftest import Api, eventually, unique
from tests.e2e.test_bad_input import settled, snapshot
from tests.e2e.world import World, events_of, make_world, not_unavailable, offer_for, pay, status_of

Login = Callable[[str, str], Api]


def every_day(offset_min: int, start: datetime, end: datetime) -> dict[str, list[list[str]]]:
    """One span on each weekday, from `start` to `end` read in the city's local time."""
    shift = timedelta(minutes=offset_min)
    span = [f"{start + shift:%H:%M}", f"{end + shift:%H:%M}"]
    return {day: [span] for day in WEEKDAYS}


def onboard_shop(
    world: World,
    login: Login,
    hours: dict[str, list[list[str]]] | None,
    items: dict[str, tuple[str, int]] | None = None,
    accept_mode: str = "manual",
    stock: int = 10,
) -> str:
    """A shop beside the world's restaurant (its rider is the nearest), with a menu."""
    shop_id = unique("shop")
    profile: dict[str, Any] = {
        "id": shop_id,
        "name": "Corner Mart",
        "lat": world.lat + 0.001,
        "lng": world.lng,
        "delivery": {"radius_m": 3000},
        "kind": "shop",
        "accept_mode": accept_mode,
        # A shop prepares nothing, whatever it is onboarded with.
        "prep_minutes": 20,
        **({"opening_hours": hours} if hours is not None else {}),
    }
    created = eventually(
        lambda: not_unavailable(world.admin.post("/v1/merchants", json=profile, key=shop_id)),
        what="the shop onboarded",
    )
    assert created.status_code == 201, created.text
    assert created.json()["kind"] == "shop"
    assert created.json()["prep_minutes"] == 0
    owner = login("merchant", shop_id)
    for item_id, (name, price) in (items or {"water": ("Mineral Water", 200)}).items():
        put = owner.put(
            f"/v1/merchants/{shop_id}/menu/items/{item_id}",
            json={"name": name, "price_fen": price, "stock": stock},
        )
        assert put.status_code == 200, put.text
    return shop_id


def shop_order(world: World, shop_id: str, key: str | None = None) -> Any:
    body = {**world.order_body(item="water"), "merchant_id": shop_id}
    return world.customer.post("/v1/orders", json=body, key=key)


def stock_of(world: World, shop_id: str, item: str = "water") -> int:
    menu = world.customer.get(f"/v1/merchants/{shop_id}/menu").json()
    return int(next(i["stock"] for i in menu["items"] if i["id"] == item))


def unchanged(store: redis.Redis) -> dict[str, Any]:
    return {k: v for k, v in snapshot(store).items() if not k.startswith("risk:")}


def test_opening_hours_decide_nearby_and_placement(
    login: Login, platform: Platform, store: redis.Redis
) -> None:
    offset = platform.settings.city_utc_offset_min
    world = make_world(login)
    now = datetime.now(UTC)
    open_id = onboard_shop(
        world, login, every_day(offset, now - timedelta(hours=2), now + timedelta(hours=2))
    )
    closed_id = onboard_shop(
        world, login, every_day(offset, now + timedelta(hours=1), now + timedelta(hours=2))
    )
    # The next span starts on the minute an hour from now (whichever day that is).
    opens = (now + timedelta(hours=1)).replace(second=0, microsecond=0)
    door = {"lat": world.lat + 0.01, "lng": world.lng}

    # A closed shop takes no order: 409 with when it opens, and nothing changed (but the
    # risk checks' count of the customer's placement attempts, which counts refusals too).
    # Earlier tests' orders the platform still closes (and refunds) by itself would
    # change the store meanwhile: wait them out.
    settled(store)
    before = unchanged(store)
    refused = shop_order(world, closed_id, key="closed-shop")
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "merchant_closed"
    assert error["details"]["merchant_id"] == closed_id
    assert datetime.fromisoformat(error["details"]["next_opening_at"]) == opens
    again = shop_order(world, closed_id, key="closed-shop")  # a refusal is not replayed
    assert again.status_code == 409 and "Idempotent-Replayed" not in again.headers
    assert unchanged(store) == before
    assert stock_of(world, closed_id) == 10
    assert world.customer.get("/v1/orders").json()["orders"] == []

    # Nearby leaves it out, or shows it closed with its next opening when asked.
    listed = world.customer.get("/v1/merchants/nearby", params=door).json()["merchants"]
    by_id = {m["id"]: m for m in listed}
    assert open_id in by_id and world.merchant_id in by_id
    assert closed_id not in by_id
    assert by_id[open_id]["open_now"] is True and by_id[open_id]["next_opening_at"] is None
    assert by_id[open_id]["kind"] == "shop" and by_id[open_id]["opening_hours"]["mon"]
    assert by_id[world.merchant_id]["kind"] == "restaurant"
    assert by_id[world.merchant_id]["opening_hours"] is None
    assert by_id[world.merchant_id]["open_now"] is True
    everything = world.customer.get(
        "/v1/merchants/nearby", params={**door, "include_closed": "true"}
    ).json()["merchants"]
    closed = next(m for m in everything if m["id"] == closed_id)
    assert closed["open_now"] is False
    assert datetime.fromisoformat(closed["next_opening_at"]) == opens
    shops = world.customer.get(
        "/v1/merchants/nearby", params={**door, "kind": "shop", "include_closed": "true"}
    ).json()["merchants"]
    assert {open_id, closed_id} <= {m["id"] for m in shops}
    assert {m["kind"] for m in shops} == {"shop"}

    # The open one takes orders as any merchant does.
    placed = shop_order(world, open_id)
    assert placed.status_code == 201, placed.text
    assert stock_of(world, open_id) == 9


def test_a_bad_schedule_is_refused_at_onboarding(login: Login) -> None:
    admin = login("admin", "ops")
    shop_id = unique("shop")
    for hours in (
        {"mon": [["09:00", "09:00"]]},
        {"mon": [["24:00", "02:00"]]},
        {"mon": [["9:00", "17:00"]]},
        {"someday": [["09:00", "17:00"]]},
        {},
    ):
        answer = admin.post(
            "/v1/merchants",
            json={
                "id": shop_id,
                "name": "Corner Mart",
                "lat": 22.0,
                "lng": 114.0,
                "delivery": {"radius_m": 1000},
                "kind": "shop",
                "opening_hours": hours,
            },
        )
        assert answer.status_code == 422, (hours, answer.text)
        assert answer.json()["error"]["code"] == "invalid_request"
    assert admin.get(f"/v1/merchants/{shop_id}/menu").status_code == 404


def test_a_shop_order_is_ready_on_accept_and_offered_to_a_rider_at_once(login: Login) -> None:
    world = make_world(login)
    shop_id = onboard_shop(world, login, hours=None)  # always open
    shop = login("merchant", shop_id)
    order = shop_order(world, shop_id).json()
    pay(order)
    eventually(lambda: status_of(world.customer, order["id"]) == "paid", what="paid")

    accepted_at = time.monotonic()
    accepted = shop.post(f"/v1/merchant/orders/{order['id']}/accept", json={"prep_minutes": 15})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "ready"
    assert accepted.json()["version"] == 4
    assert accepted.json()["prep_minutes"] == 0
    offer = offer_for(world, order["id"])
    assert time.monotonic() - accepted_at < 10
    # Nothing is left to mark ready.
    again = shop.post(f"/v1/merchant/orders/{order['id']}/ready")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_transition"

    taken = world.rider.post(f"/v1/rider/offers/{offer}/accept")
    assert taken.status_code == 200, taken.text
    # The rider takes the goods as soon as it is there: nobody waits for a kitchen.
    for step in ("pickup", "deliver"):
        moved = world.rider.post(f"/v1/rider/orders/{order['id']}/{step}")
        assert moved.status_code == 200, moved.text

    final = world.customer.get(f"/v1/orders/{order['id']}").json()
    assert final["status"] == "delivered" and final["version"] == 7
    assert [t["status"] for t in final["timeline"]] == [
        "pending_payment",
        "paid",
        "accepted",
        "ready",
        "rider_assigned",
        "picked_up",
        "delivered",
    ]
    for party in (world.customer, shop):
        seen = [e for e in events_of(party) if e["order_id"] == order["id"]]
        assert [e["type"] for e in seen] == [
            "order_placed",
            "order_paid",
            "order_accepted",
            "order_ready",
            "rider_assigned",
            "order_picked_up",
            "order_delivered",
        ]
        assert [e["version"] for e in seen] == list(range(1, 8))
    rider_seen = [e["type"] for e in events_of(world.rider) if e["order_id"] == order["id"]]
    assert rider_seen == ["offer", "rider_assigned", "order_picked_up", "order_delivered"]


def test_a_host_dead_between_accepted_and_ready_still_makes_it_ready(
    login: Login, store: redis.Redis, platform: Platform
) -> None:
    """The acceptance's own script posted the follow-up that makes the order ready: the
    restarted host reads it and does what its predecessor could not."""
    world = make_world(login)
    shop_id = onboard_shop(world, login, hours=None)
    shop = login("merchant", shop_id)
    order = shop_order(world, shop_id).json()
    pay(order)
    eventually(lambda: status_of(world.customer, order["id"]) == "paid", what="paid")
    fault = keys.fault(f"crash_after_commit:order_accepted:{shop_id}")
    store.set(fault, 1)
    try:
        died = shop.post(f"/v1/merchant/orders/{order['id']}/accept")  # the host dies here
        if platform.settings.entity_transport == "mailbox" and died.status_code == 200:
            # The accept's letter stayed in the shard's mailbox: the restarted host read
            # it again while the merchant still waited, found the order already changed
            # by that very request, and answered the order (accepted, maybe made ready).
            assert died.json()["status"] in ("accepted", "ready"), died.text
        else:
            assert died.status_code == 503, died.text
        assert not store.exists(fault)
        eventually(
            lambda: status_of(world.customer, order["id"]) == "ready",
            timeout_s=60,
            what="ready after the restart",
        )
    finally:
        store.delete(fault)
    offer_for(world, order["id"])
    seen = [e for e in events_of(world.customer) if e["order_id"] == order["id"]]
    assert [e["type"] for e in seen] == [
        "order_placed",
        "order_paid",
        "order_accepted",
        "order_ready",
    ]
    assert [e["version"] for e in seen] == [1, 2, 3, 4]


def test_an_auto_accepting_shop_readies_a_paid_order_by_itself(login: Login) -> None:
    world = make_world(login)
    shop_id = onboard_shop(world, login, hours=None, accept_mode="auto")
    order = shop_order(world, shop_id).json()
    pay(order)
    eventually(lambda: status_of(world.customer, order["id"]) == "ready", what="ready")
    assert offer_for(world, order["id"])


def test_a_stock_heavy_menu_pages_and_searches_by_name(login: Login) -> None:
    world = make_world(login, rider_online=False)
    kinds = ["Mineral Water", "Green Tea", "Rice Crackers"]
    items = {f"sku{n:03d}": (f"{kinds[n % 3]} {n}", 100 + n) for n in range(300)}
    shop_id = onboard_shop(world, login, hours=None, items=items, stock=5)
    menu = f"/v1/merchants/{shop_id}/menu"

    # Without paging the menu is what it always was: every item, no cursor.
    whole = world.customer.get(menu).json()
    assert set(whole) == {"merchant_id", "menu_version", "items"}
    assert [i["id"] for i in whole["items"]] == sorted(items)

    pages = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 120, **({"cursor": cursor} if cursor else {})}
        page = world.customer.get(menu, params=params)
        assert page.status_code == 200, page.text
        pages.append(page.json())
        cursor = page.json()["cursor"]
        if cursor is None:
            break
    assert [len(p["items"]) for p in pages] == [120, 120, 60]
    assert [i["id"] for p in pages for i in p["items"]] == sorted(items)
    assert {p["total"] for p in pages} == {300}
    assert {p["menu_version"] for p in pages} == {whole["menu_version"]}
    first = pages[0]["items"][0]
    assert first == {
        "id": "sku000",
        "name": "Mineral Water 0",
        "price_fen": 100,
        "available": True,
        "stock": 5,
    }

    # Search: a case-insensitive part of the name, paged the same way.
    water = world.customer.get(menu, params={"q": "WATER"}).json()
    assert water["total"] == 100
    assert len(water["items"]) == 50 and water["cursor"] == water["items"][-1]["id"]
    rest = world.customer.get(menu, params={"q": "WATER", "cursor": water["cursor"]}).json()
    assert len(rest["items"]) == 50 and rest["cursor"] is None
    found = water["items"] + rest["items"]
    assert all("water" in i["name"].lower() for i in found)
    assert len({i["id"] for i in found}) == 100
    tea = world.customer.get(menu, params={"q": "tea 29"}).json()
    assert [i["name"] for i in tea["items"]] == ["Green Tea 292", "Green Tea 295", "Green Tea 298"]
    assert world.customer.get(menu, params={"q": "coffee"}).json() == {
        "merchant_id": shop_id,
        "menu_version": whole["menu_version"],
        "items": [],
        "total": 0,
        "cursor": None,
    }

    # A change to the menu is in the next page read (the index follows the version).
    shop = login("merchant", shop_id)
    renamed = shop.put(
        f"{menu}/items/sku001",
        json={"name": "Sparkling Water", "price_fen": 300, "stock": 2},
    )
    assert renamed.status_code == 200, renamed.text
    sparkling = world.customer.get(menu, params={"q": "sparkling"}).json()
    assert [(i["id"], i["stock"]) for i in sparkling["items"]] == [("sku001", 2)]
    assert sparkling["menu_version"] == whole["menu_version"] + 1
    assert world.customer.get(menu, params={"q": "water"}).json()["total"] == 101

    # Stock taken by an order shows on the page at once (stock is read with every page).
    placed = world.customer.post(
        "/v1/orders",
        json={**world.order_body(item="sku000", qty=3), "merchant_id": shop_id},
    )
    assert placed.status_code == 201, placed.text
    assert world.customer.get(menu, params={"limit": 1}).json()["items"][0]["stock"] == 2

    for bad in ({"limit": 0}, {"limit": 201}, {"cursor": "not a cursor"}, {"q": "x" * 101}):
        refused = world.customer.get(menu, params=bad)
        assert refused.status_code == 422, (bad, refused.text)
    unknown = world.customer.get("/v1/merchants/m_nobody_here/menu", params={"limit": 5})
    assert unknown.status_code == 404
