"""Small worlds for end-to-end tests: a merchant with a menu, a customer, a rider, far apart.

Each world sits 15 km north of the last, so riders of one test are never the
nearest riders of another.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tests.e2e.conftest import CITY, Api, eventually, unique

_spots = itertools.count()


def not_unavailable(answer: httpx.Response) -> httpx.Response | None:
    return None if answer.status_code == 503 else answer


@dataclass
class World:
    admin: Api
    merchant: Api
    customer: Api
    rider: Api
    merchant_id: str
    customer_id: str
    rider_id: str
    lat: float
    lng: float
    items: dict[str, int]  # item id -> price

    def order_body(self, qty: int = 1, item: str = "noodles", **extra: Any) -> dict[str, Any]:
        return {
            "merchant_id": self.merchant_id,
            "items": [{"item_id": item, "qty": qty}],
            "delivery": {"lat": self.lat + 0.01, "lng": self.lng, "address": "12 Lakeside Rd"},
            **extra,
        }

    def stock(self, item: str = "noodles") -> int:
        menu = self.customer.get(f"/v1/merchants/{self.merchant_id}/menu").json()
        return next(i["stock"] for i in menu["items"] if i["id"] == item)


def make_world(
    login: Callable[[str, str], Api],
    stock: int = 20,
    accept_mode: str = "manual",
    rider_online: bool = True,
    split_plan: dict[str, Any] | None = None,
    radius_m: int = 3000,
) -> World:
    spot = next(_spots)
    lat, lng = CITY[0] + 0.15 * (spot + 1), CITY[1]
    admin = login("admin", "ops")
    merchant_id = unique("m")
    profile = {
        "id": merchant_id,
        "name": "Lakeside Noodles",
        "lat": lat,
        "lng": lng,
        "delivery": {"radius_m": radius_m},
        "prep_minutes": 10,
        "accept_mode": accept_mode,
        **({"split_plan": split_plan} if split_plan else {}),
    }
    # A host an earlier test crashed may still be restarting: a client asks again after
    # a 503, with the same key.
    created = eventually(
        lambda: not_unavailable(admin.post("/v1/merchants", json=profile, key=merchant_id)),
        what="the merchant onboarded",
    )
    assert created.status_code == 201, created.text
    merchant = login("merchant", merchant_id)
    items = {"noodles": 1800, "dumplings": 1200}
    for item_id, price in items.items():
        put = merchant.put(
            f"/v1/merchants/{merchant_id}/menu/items/{item_id}",
            json={"name": item_id.title(), "price_fen": price, "stock": stock},
        )
        assert put.status_code == 200, put.text
    customer_id, rider_id = unique("c"), unique("r")
    rider = login("rider", rider_id)
    if rider_online:
        online = rider.post(
            "/v1/riders/me/status", json={"online": True, "lat": lat + 0.002, "lng": lng}
        )
        assert online.status_code == 200, online.text
    return World(
        admin=admin,
        merchant=merchant,
        customer=login("customer", customer_id),
        rider=rider,
        merchant_id=merchant_id,
        customer_id=customer_id,
        rider_id=rider_id,
        lat=lat,
        lng=lng,
        items=items,
    )


def events_of(party: Api, cursor: str | None = None) -> list[dict[str, Any]]:
    params = {"cursor": cursor} if cursor else {}
    answer = party.get("/v1/sync/events", params=params)
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


def pay(order: dict[str, Any]) -> None:
    paid = httpx.post(order["payment"]["pay_url"], timeout=10)
    assert paid.status_code == 200, paid.text


def status_of(party: Api, order_id: str) -> str:
    status: str = party.get(f"/v1/orders/{order_id}").json()["status"]
    return status


def offer_for(world: World, order_id: str) -> str:
    def find() -> str | None:
        for event in events_of(world.rider):
            if event["type"] == "offer" and event["order_id"] == order_id:
                offer_id: str = event["data"]["offer_id"]
                return offer_id
        return None

    return eventually(find, what=f"an offer of {order_id} to {world.rider_id}")


def paid_order(world: World, qty: int = 1) -> dict[str, Any]:
    order: dict[str, Any] = world.customer.post("/v1/orders", json=world.order_body(qty=qty)).json()
    pay(order)
    eventually(lambda: status_of(world.customer, order["id"]) == "paid", what="paid")
    return order


def accepted_order(world: World, qty: int = 1) -> dict[str, Any]:
    order = paid_order(world, qty)
    assert world.merchant.post(f"/v1/merchant/orders/{order['id']}/accept").status_code == 200
    return order


def delivered_order(world: World, qty: int = 1) -> dict[str, Any]:
    """Drive one order through its whole life."""
    order = accepted_order(world, qty)
    offer = offer_for(world, order["id"])
    assert world.rider.post(f"/v1/rider/offers/{offer}/accept").status_code == 200
    assert world.merchant.post(f"/v1/merchant/orders/{order['id']}/ready").status_code == 200
    for step in ("pickup", "deliver"):
        assert world.rider.post(f"/v1/rider/orders/{order['id']}/{step}").status_code == 200
    return order


def one_use_coupon(world: World, discount_fen: int) -> str:
    """A fresh platform coupon with a single use, so a test can see that use come back."""
    code = unique("ONCE").upper()
    made = world.admin.post(
        "/v1/admin/coupons",
        json={
            "code": code,
            "discount_fen": discount_fen,
            "min_spend_fen": 0,
            "total": 1,
            "per_customer_limit": 1,
            "starts_at": "2026-01-01T00:00:00Z",
            "ends_at": "2099-01-01T00:00:00Z",
        },
    )
    assert made.status_code == 201, made.text
    return code
