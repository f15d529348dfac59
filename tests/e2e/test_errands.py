"""Errands end to end: a quote, an errand paid at the sandbox, dispatched at once to the
rider nearest its pickup, picked up and delivered with its codes, the events on the
customer's and the rider's streams, the money split by the errand tariff, and a cancel
before pickup refunded with the rider freed."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import redis

from cluster.launcher import Platform
from domain.errand_tariff import ErrandTariff
from domain.geo import Point, distance_m
from domain.ledger import Transaction, check_invariants, party_payable, platform_revenue
from domain.payments import provider_fee_fen
from storage import keys
from tests.e2e.conftest import CITY, Api, eventually, unique
from tests.e2e.world import events_of, pay, status_of

TARIFF = ErrandTariff()
# South-east of the test city, far from every world of world.py (they go north), one
# spot per test, so no other test's rider is ever the nearest.
_spots = itertools.count()


@dataclass
class Town:
    customer: Api
    customer_id: str
    near: Api  # a rider 250 m from the pickup
    far: Api  # a rider at the drop-off, 2.5 km from the pickup
    near_id: str
    far_id: str
    a: Point
    b: Point

    def body(self, **extra: Any) -> dict[str, Any]:
        return {
            "pickup": {
                "lat": self.a.lat,
                "lng": self.a.lng,
                "address": "1 Hubin Rd, lobby",
                "contact_name": "Li Lei",
                "contact_phone": "+86 138 0000 0001",
                "note": "ask the front desk for the blue envelope",
            },
            "dropoff": {
                "lat": self.b.lat,
                "lng": self.b.lng,
                "address": "9 Wensan Rd, room 402",
                "contact_name": "Han Meimei",
                "contact_phone": "13800000002",
            },
            "category": "documents",
            "weight_class": "medium",
            **extra,
        }


def ll(point: Point) -> dict[str, float]:
    return {"lat": point.lat, "lng": point.lng}


def make_town(login: Callable[[str, str], Api]) -> Town:
    spot = next(_spots)
    a = Point(CITY[0] - 0.45 - 0.15 * spot, CITY[1] + 0.4)
    b = Point(a.lat + 0.0225, a.lng)  # 2.5 km north
    near_id, far_id = unique("r_near"), unique("r_far")
    near, far = login("rider", near_id), login("rider", far_id)
    for rider, at in ((near, Point(a.lat - 0.00225, a.lng)), (far, b)):
        online = rider.post("/v1/riders/me/status", json={"online": True, **ll(at)})
        assert online.status_code == 200, online.text
    customer_id = unique("c_errand")
    customer = login("customer", customer_id)
    return Town(customer, customer_id, near, far, near_id, far_id, a, b)


def offer_to(rider: Api, order_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for event in events_of(rider):
            if event["type"] == "offer" and event["order_id"] == order_id:
                return event
        return None

    return eventually(find, what=f"an offer of {order_id}")


def ledger_of(store: redis.Redis, order_id: str) -> list[Transaction]:
    return [
        Transaction.from_dict(orjson.loads(raw))
        for raw in store.lrange(keys.ledger_of_order(order_id), 0, -1)
    ]


def placed_errand(town: Town, key: str | None = None) -> dict[str, Any]:
    answer = town.customer.post("/v1/errands", json=town.body(), key=key or unique("k"))
    assert answer.status_code == 201, answer.text
    errand: dict[str, Any] = answer.json()
    return errand


def test_an_errand_from_quote_to_its_door(
    login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    town = make_town(login)
    points = {"pickup": ll(town.a), "dropoff": ll(town.b)}
    quote = town.customer.post("/v1/errands/quote", json={**points, "weight_class": "medium"})
    assert quote.status_code == 200, quote.text
    expected = TARIFF.quote(distance_m(town.a, town.b), "medium")
    assert quote.json()["total_fen"] == expected.total_fen == 900 + 2 * 200 + 300
    assert quote.json()["amounts"]["total_fen"] == expected.total_fen

    # A price other than the quote's is refused; the quote's is taken, once per key.
    stale = town.customer.post("/v1/errands", json=town.body(expected_total_fen=1))
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "price_changed"
    body = town.body(expected_total_fen=expected.total_fen)
    placed = town.customer.post("/v1/errands", json=body, key="errand-1")
    assert placed.status_code == 201, placed.text
    errand = placed.json()
    again = town.customer.post("/v1/errands", json=body, key="errand-1")
    assert again.json() == errand and again.headers["idempotent-replayed"] == "true"
    oid = errand["id"]
    assert errand["kind"] == "errand" and errand["status"] == "pending_payment"
    assert errand["merchant_id"].startswith("errands-")
    assert errand["amounts"]["total_fen"] == expected.total_fen
    codes = errand["errand"]["pickup_code"], errand["errand"]["delivery_code"]
    assert all(len(code) == 6 and code.isdigit() for code in codes)
    assert errand["errand"]["pickup"]["note"] == "ask the front desk for the blue envelope"
    # At rest, none of the personal text or codes is readable: not in the order, not in
    # the first answer kept for the key, not on any stream.
    personal = ("Li Lei", "Han Meimei", "blue envelope", "0000 0001")
    for key in (keys.order(oid), keys.idempotency(f"customer:{town.customer_id}", "errand-1")):
        raw = str(store.hgetall(key) if store.type(key) == "hash" else store.get(key))
        assert "sealed:v1:" in raw
        for secret in (*personal, *codes):
            assert secret not in raw, key
    for key in store.scan_iter(count=1000):
        kind = store.type(key)
        dump = {"string": store.get, "hash": store.hgetall, "stream": store.xrange}.get(kind)
        if dump is not None:
            assert not any(secret in str(dump(key)) for secret in personal), key

    # Paid: accepted and ready at once, offered to the rider nearest the pickup.
    pay(errand)
    offer = offer_to(town.near, oid)
    assert offer["data"]["kind"] == "errand"
    assert offer["data"]["pickup"] == pytest.approx(ll(town.a))
    eventually(lambda: status_of(town.customer, oid) == "ready", what="ready on payment")
    assert not [e for e in events_of(town.far) if e.get("order_id") == oid]
    taken = town.near.post(f"/v1/rider/offers/{offer['data']['offer_id']}/accept")
    assert taken.status_code == 200, taken.text
    assert "delivery_code" not in taken.json()["order"]["errand"]

    # The rider reads the job, but not the codes: those come from the people it meets.
    seen = town.near.get(f"/v1/orders/{oid}").json()
    assert seen["errand"]["pickup"]["contact_phone"] == "+86 138 0000 0001"
    assert "pickup_code" not in seen["errand"] and "delivery_code" not in seen["errand"]
    listed = town.near.get("/v1/orders").json()["orders"]
    assert [o["kind"] for o in listed if o["id"] == oid] == ["errand"]
    assert all("delivery_code" not in o.get("errand", {}) for o in listed)

    # Without the right code nothing moves; with it, the pickup and the delivery.
    pickup_code, delivery_code = codes
    version = seen["version"]
    for proof in (None, {"code": delivery_code}, {"code": "0000"}):
        refused = town.near.post(f"/v1/rider/orders/{oid}/pickup", json=proof)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "wrong_code"
    assert town.customer.get(f"/v1/orders/{oid}").json()["version"] == version
    up = town.near.post(f"/v1/rider/orders/{oid}/pickup", json={"code": pickup_code})
    assert up.status_code == 200 and up.json()["status"] == "picked_up", up.text
    late = town.customer.post(f"/v1/orders/{oid}/cancel")
    assert late.status_code == 409 and late.json()["error"]["code"] == "invalid_transition"
    wrong = town.near.post(f"/v1/rider/orders/{oid}/deliver", json={"code": pickup_code})
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "wrong_code"
    assert status_of(town.customer, oid) == "picked_up"
    done = town.near.post(f"/v1/rider/orders/{oid}/deliver", json={"code": delivery_code})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "delivered" and done.json()["version"] == 7

    # Every step on the customer's stream and on the rider's.
    lifecycle = [
        "order_placed",
        "order_paid",
        "order_accepted",
        "order_ready",
        "rider_assigned",
        "order_picked_up",
        "order_delivered",
    ]
    mine = [e for e in events_of(town.customer) if e["order_id"] == oid]
    assert [e["type"] for e in mine if e["type"] in lifecycle] == lifecycle
    assert mine[0]["data"]["kind"] == "errand"
    carried = [e["type"] for e in events_of(town.near) if e.get("order_id") == oid]
    assert carried[0] == "offer"
    assert carried[-3:] == ["rider_assigned", "order_picked_up", "order_delivered"]
    mine_listed = town.customer.get("/v1/orders").json()["orders"]
    assert [(o["kind"], o["errand"]["delivery_code"]) for o in mine_listed] == [
        ("errand", delivery_code)
    ]

    # The money: the rider's share and the platform's by the errand tariff, to the fen.
    eventually(lambda: len(ledger_of(store, oid)) == 2, what="the split")
    txns = ledger_of(store, oid)
    check_invariants(txns)
    split = next(t for t in txns if t.kind == "split")
    total = expected.total_fen
    fee = provider_fee_fen(total, platform.settings.provider_fee_bp)
    rider_share = (total * TARIFF.rider_share_bp + 5000) // 10_000
    assert split.amount_on(party_payable("rider", town.near_id)) == rider_share
    assert split.amount_on(platform_revenue()) == total - fee - rider_share
    assert split.amount_on(party_payable("merchant", errand["merchant_id"])) == 0
    assert split.amount_on("provider:fees") == fee
    assert store.hget(keys.rider(town.near_id), "load") == "0"


def test_an_errand_cancelled_before_pickup_is_refunded_and_frees_its_rider(
    login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    town = make_town(login)
    errand = placed_errand(town)
    oid, total = errand["id"], errand["amounts"]["total_fen"]
    pay(errand)
    offer = offer_to(town.near, oid)
    assert town.near.post(f"/v1/rider/offers/{offer['data']['offer_id']}/accept").status_code == 200
    assert store.hget(keys.rider(town.near_id), "load") == "1"
    cancelled = town.customer.post(f"/v1/orders/{oid}/cancel", json={"reason": "not needed"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"

    def refunded() -> bool:
        view = httpx.get(f"{platform.settings.sandbox_url}/v1/orders/{oid}", timeout=10).json()
        return bool(view["refunded_fen"] == total)

    eventually(refunded, what="the refund at the provider")
    eventually(
        lambda: [e for e in events_of(town.customer) if e["type"] == "refunded"],
        what="the refunded event",
    )
    view = town.customer.get(f"/v1/orders/{oid}").json()
    assert view["payment"]["refunded_fen"] == total
    eventually(lambda: store.hget(keys.rider(town.near_id), "load") == "0", what="the rider freed")
    assert "order_cancelled" in [e["type"] for e in events_of(town.near)]
    # Once refunded in full, the split books the provider's fee against the platform.
    eventually(lambda: len(ledger_of(store, oid)) == 3, what="capture, refund and split")
    check_invariants(ledger_of(store, oid))
    # The rider's terminal can no longer act on it.
    gone = town.near.post(f"/v1/rider/orders/{oid}/pickup", json={"code": "123456"})
    assert gone.status_code == 409


def test_errands_are_refused_far_away_or_with_bad_input(login: Callable[[str, str], Api]) -> None:
    town = make_town(login)
    far = town.body()
    far["dropoff"] = {**far["dropoff"], "lat": town.a.lat + 0.3}  # 33 km
    refused = town.customer.post("/v1/errands", json=far)
    assert (
        refused.status_code == 422 and refused.json()["error"]["code"] == "outside_delivery_range"
    )
    no_contact = town.body()
    del no_contact["pickup"]["contact_phone"]
    assert town.customer.post("/v1/errands", json=no_contact).status_code == 422
    assert (
        town.customer.post("/v1/errands", json=town.body(weight_class="piano")).status_code == 422
    )
    assert town.near.post("/v1/errands", json=town.body()).status_code == 403
    assert town.customer.get("/v1/orders").json()["orders"] == []
