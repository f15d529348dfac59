"""Small worlds for end-to-end tests: a merchant with a menu, a customer, a rider, far apart.

Each world sits 15 km north of the last, so riders of one test are never the
nearest riders of another.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.e2e.conftest import CITY, Api, unique

_spots = itertools.count()


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
) -> World:
    spot = next(_spots)
    lat, lng = CITY[0] + 0.15 * (spot + 1), CITY[1]
    admin = login("admin", "ops")
    merchant_id = unique("m")
    created = admin.post(
        "/v1/merchants",
        json={
            "id": merchant_id,
            "name": "Lakeside Noodles",
            "lat": lat,
            "lng": lng,
            "delivery": {"radius_m": 3000},
            "prep_minutes": 10,
            "accept_mode": accept_mode,
            **({"split_plan": split_plan} if split_plan else {}),
        },
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
