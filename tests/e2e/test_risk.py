"""Risk checks on the running platform: each hold, what it stops, and its review.

The session's figures (tests/e2e/conftest.py): a device is held past 3 orders an hour
or at 1 failed payment a day; a refund past the default share (30% of the merchant's
day, 200 yuan allowed); a delivery faster than 30 km/h over more than 8 km. Only this
file sends `X-Device-Id` or delivers that far, so no other test trips them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import orjson
import redis

from cluster.launcher import Platform
from domain.ledger import Transaction, check_invariants, party_payable, provider_clearing
from storage import keys
from storage.provider import Checkout
from tests.e2e.conftest import Api, eventually, unique
from tests.e2e.world import World, events_of, make_world, offer_for, pay, status_of


def place(world: World, device: str | None = None, qty: int = 1, **body: Any) -> dict[str, Any]:
    headers = {"X-Device-Id": device} if device else {}
    answer = world.customer.http.post(
        "/v1/orders", json={**world.order_body(qty=qty), **body}, headers=headers
    )
    assert answer.status_code == 201, answer.text
    order: dict[str, Any] = answer.json()
    return order


def view_of(world: World, order_id: str) -> dict[str, Any]:
    answer = world.customer.get(f"/v1/orders/{order_id}")
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def ledger_of(store: redis.Redis, order_id: str) -> list[Transaction]:
    return [
        Transaction.from_dict(orjson.loads(raw))
        for raw in store.lrange(keys.ledger_of_order(order_id), 0, -1)
    ]


def payment_of(store: redis.Redis, order_id: str) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(store.get(keys.payment(order_id)) or b"{}")
    return record


def queue(admin: Api, status: str = "open") -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    cursor: Any = ""
    while cursor is not None:
        answer = admin.get("/v1/admin/reviews", params={"status": status, "cursor": cursor})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        found |= {r["id"]: r for r in page["reviews"]}
        cursor = page["cursor"]
    return found


def types_for(party: Api, order_id: str) -> list[str]:
    """Every event of the order on the party's stream, page by page: operations' stream
    holds the whole session's events, so its first page ends long before this order."""
    found: list[str] = []
    cursor = ""
    for _ in range(1000):
        answer = party.get("/v1/sync/events", params={"cursor": cursor, "limit": 1000})
        assert answer.status_code == 200, answer.text
        page = answer.json()["events"]
        if not page:
            break
        found += [e["type"] for e in page if e.get("order_id") == order_id]
        cursor = page[-1]["cursor"]
    return found


def merchant_lists(world: World, order_id: str) -> bool:
    listed = world.merchant.get("/v1/orders", params={"limit": 100}).json()["orders"]
    return any(o["id"] == order_id for o in listed)


def deliver(world: World, order: dict[str, Any]) -> None:
    """A paid order through acceptance, a rider and the door, as fast as can be."""
    accepted = world.merchant.post(f"/v1/merchant/orders/{order['id']}/accept")
    assert accepted.status_code == 200, accepted.text
    offer = offer_for(world, order["id"])
    assert world.rider.post(f"/v1/rider/offers/{offer}/accept").status_code == 200
    assert world.merchant.post(f"/v1/merchant/orders/{order['id']}/ready").status_code == 200
    for step in ("pickup", "deliver"):
        done = world.rider.post(f"/v1/rider/orders/{order['id']}/{step}")
        assert done.status_code == 200, done.text


# -- placement ------------------------------------------------------------------------------


def test_orders_past_a_devices_limit_are_placed_held_until_approved(
    login: Callable[[str, str], Api],
) -> None:
    world = make_world(login, accept_mode="auto")
    device = unique("phone")
    first = [place(world, device) for _ in range(3)]
    assert all(o["hold"] is None for o in first)  # three an hour are a person's
    held = place(world, device)
    hold = held["hold"]
    assert (hold["reason"], hold["status"]) == ("too_many_orders", "open")
    assert hold["facts"]["device_orders"] == 4
    oid = held["id"]

    # The customer sees it held; its merchant neither hears of it nor lists it.
    placed = next(e for e in events_of(world.customer) if e.get("order_id") == oid)
    assert placed["type"] == "order_placed" and placed["data"]["hold"]["reason"] == hold["reason"]
    assert types_for(world.merchant, oid) == []
    assert not merchant_lists(world, oid)

    # Paid while held: paid, and not accepted even by an auto-accepting merchant.
    pay(held)
    eventually(lambda: status_of(world.customer, oid) == "paid", what="paid while held")
    time.sleep(1.5)
    assert status_of(world.customer, oid) == "paid"
    assert view_of(world, oid)["accept_deadline"] is None
    refused = world.merchant.post(f"/v1/merchant/orders/{oid}/accept")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "order_held"

    review = queue(world.admin)[hold["review_id"]]
    assert (review["kind"], review["order_id"], review["reason"]) == ("order", oid, hold["reason"])
    assert world.customer.get("/v1/admin/reviews").status_code == 403
    approved = world.admin.post(f"/v1/admin/reviews/{hold['review_id']}/approve", key=unique("k"))
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["decided_by"]) == ("approved", "ops")
    assert hold["review_id"] not in queue(world.admin)

    # Released: the merchant hears of it and lists it, and its auto-accept runs.
    eventually(lambda: status_of(world.customer, oid) == "accepted", what="auto-accepted")
    assert "order_released" in types_for(world.merchant, oid)
    assert merchant_lists(world, oid)
    again = world.admin.post(f"/v1/admin/reviews/{hold['review_id']}/refuse")
    assert again.status_code == 409 and again.json()["error"]["code"] == "review_decided"

    # Refused: cancelled, its stock back, the money back to the customer.
    stock = world.stock()
    other = place(world, device, qty=2)
    assert other["hold"]["status"] == "open" and world.stock() == stock - 2
    pay(other)
    eventually(lambda: status_of(world.customer, other["id"]) == "paid", what="paid")
    no = world.admin.post(f"/v1/admin/reviews/{other['hold']['review_id']}/refuse")
    assert no.status_code == 200 and no.json()["status"] == "refused", no.text
    view = view_of(world, other["id"])
    assert (view["status"], view["close_reason"]) == ("cancelled", "review_refused")
    assert view["hold"]["status"] == "refused" and world.stock() == stock
    total = other["amounts"]["total_fen"]
    eventually(
        lambda: view_of(world, other["id"])["payment"]["refunded_fen"] == total, what="refund"
    )
    assert types_for(world.merchant, other["id"]) == []  # it never saw that order
    for order in first:
        world.customer.post(f"/v1/orders/{order['id']}/cancel")


def test_a_devices_failed_payment_holds_its_next_order(
    login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    world = make_world(login)
    device = unique("tablet")
    unpaid = place(world, device)
    assert unpaid["hold"] is None
    eventually(
        lambda: view_of(world, unpaid["id"])["close_reason"] == "payment_timeout",
        timeout_s=platform.settings.payment_timeout_s + 25,
        what="the payment timeout",
    )
    # Counted by the payment shard as it closed the payment.
    eventually(lambda: store.zcard(keys.risk_failures("d", device)) == 1, what="the failure")
    # The next order of that device is held, even from another customer.
    other = login("customer", unique("c"))
    answer = other.http.post("/v1/orders", json=world.order_body(), headers={"X-Device-Id": device})
    assert answer.status_code == 201, answer.text
    hold = answer.json()["hold"]
    assert hold["reason"] == "too_many_failed_payments" and hold["facts"]["device_failures"] == 1
    # Another device of the first customer is not.
    assert place(world, unique("phone"))["hold"] is None


# -- a capture of another amount --------------------------------------------------------------


def pay_another_amount(platform: Platform, order: dict[str, Any], amount_fen: int) -> None:
    """The provider captures another amount for the order than its total: a pay link
    signed for that amount (as a leaked secret or a provider's error would make)."""
    s = platform.settings
    checkout = Checkout(s.payment_secret, s.sandbox_url, s.notify_url, s.payment_timeout_s)
    placed_at = datetime.fromisoformat(order["placed_at"]).timestamp()
    link = checkout.link(order["id"], amount_fen, placed_at)
    assert link["intent_id"] == order["payment"]["intent_id"]
    paid = httpx.post(link["pay_url"], timeout=10)
    assert paid.status_code == 200, paid.text


def test_a_capture_of_another_amount_holds_the_order_until_review(
    login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    world = make_world(login)
    order = place(world)
    oid, total = order["id"], order["amounts"]["total_fen"]
    pay_another_amount(platform, order, total + 100)
    view = eventually(lambda: (v := view_of(world, oid))["hold"] and v, what="held for the amount")
    assert view["status"] == "pending_payment" and view["hold"]["reason"] == "amount_mismatch"
    assert view["hold"]["facts"] == {"captured_fen": total + 100, "total_fen": total}
    assert view["payment"]["status"] == "captured"
    assert [t.kind for t in ledger_of(store, oid)] == ["capture"]
    assert "order_held" in types_for(world.customer, oid)
    # Its merchant saw it placed, and sees it held: not paid, it cannot be accepted.
    assert types_for(world.merchant, oid) == ["order_placed", "order_held"]
    refused = world.merchant.post(f"/v1/merchant/orders/{oid}/accept")
    assert refused.status_code == 409, refused.text

    approved = world.admin.post(f"/v1/admin/reviews/{view['hold']['review_id']}/approve")
    assert approved.status_code == 200, approved.text
    paid = view_of(world, oid)
    assert (paid["status"], paid["paid_fen"]) == ("paid", total)
    # What was captured above the total goes back at once.
    eventually(lambda: view_of(world, oid)["payment"]["refunded_fen"] == 100, what="excess")
    assert "order_released" in types_for(world.merchant, oid)

    # The order then lives as any: delivered, split at its own price, clearing empty.
    deliver(world, order)
    eventually(lambda: len(ledger_of(store, oid)) == 3, what="split")
    txns = ledger_of(store, oid)
    check_invariants(txns)
    assert sorted(t.kind for t in txns) == ["capture", "refund", "split"]
    assert sum(t.amount_on(provider_clearing()) for t in txns) == 0
    split = next(t for t in txns if t.kind == "split")
    rider_share = split.amount_on(party_payable("rider", world.rider_id))
    assert rider_share == order["amounts"]["delivery_fee_fen"]

    # Another amount refused: the order is cancelled and all the money goes back.
    short = place(world)
    pay_another_amount(platform, short, short["amounts"]["total_fen"] - 500)
    held = eventually(lambda: view_of(world, short["id"])["hold"], what="held")
    no = world.admin.post(f"/v1/admin/reviews/{held['review_id']}/approve")
    assert no.status_code == 409 and no.json()["error"]["code"] == "payment_short"
    refused = world.admin.post(f"/v1/admin/reviews/{held['review_id']}/refuse")
    assert refused.status_code == 200, refused.text
    captured = short["amounts"]["total_fen"] - 500
    eventually(
        lambda: view_of(world, short["id"])["payment"]["refunded_fen"] == captured, what="refund"
    )
    assert view_of(world, short["id"])["status"] == "cancelled"
    eventually(lambda: payment_of(store, short["id"]).get("split"), what="the fee booked")
    check_invariants(ledger_of(store, short["id"]))


# -- a refund past the merchant's share ----------------------------------------------------


def test_a_refund_past_the_merchants_daily_share_waits_for_another_operator(
    login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    world = make_world(login)
    order = place(world, qty=12)  # 21,600 of noodles and 300 of delivery
    pay(order)
    oid = order["id"]
    eventually(lambda: status_of(world.customer, oid) == "paid", what="paid")
    small = world.admin.post(f"/v1/admin/orders/{oid}/refund", json={"amount_fen": 500}, key="s")
    assert small.status_code == 200 and small.json()["status"] == "succeeded", small.text

    big = world.admin.post(
        f"/v1/admin/orders/{oid}/refund", json={"amount_fen": 20_000}, key=unique("big")
    )
    assert big.status_code == 200, big.text
    line = big.json()
    assert line["status"] == "held" and line["review_id"].startswith("rv-")
    refund_no = line["refund_no"]
    provider = f"{platform.settings.sandbox_url}/v1/refunds/{refund_no}"
    assert httpx.get(provider, timeout=10).status_code == 404  # nothing sent
    assert payment_of(store, oid)["refunds"][refund_no]["status"] == "held"
    for party in (world.customer, world.merchant, world.admin):
        # The parties' inboxes are other slots: the event reaches them by the outbox.
        eventually(lambda p=party: "refund_held" in types_for(p, oid), what="refund_held")
    review = queue(world.admin)[line["review_id"]]
    assert (review["kind"], review["requested_by"], review["amount_fen"]) == (
        "refund",
        "ops",
        20_000,
    )
    assert review["facts"]["refunded_today_fen"] == 500

    # Not by the operator who asked; by another, and then it goes through.
    mine = world.admin.post(f"/v1/admin/reviews/{line['review_id']}/approve")
    assert mine.status_code == 403, mine.text
    second = login("admin", unique("ops"))
    approved = second.post(f"/v1/admin/reviews/{line['review_id']}/approve")
    assert approved.status_code == 200 and approved.json()["status"] == "approved", approved.text
    assert httpx.get(provider, timeout=10).json()["status"] == "succeeded"
    assert view_of(world, oid)["payment"]["refunded_fen"] == 20_500

    # Past the share again: held, and refused it leaves the money where it is.
    more = world.admin.post(f"/v1/admin/orders/{oid}/refund", json={"amount_fen": 1000})
    assert more.json()["status"] == "held", more.text
    no = second.post(f"/v1/admin/reviews/{more.json()['review_id']}/refuse")
    assert no.status_code == 200 and no.json()["status"] == "refused", no.text
    assert payment_of(store, oid)["refunds"][more.json()["refund_no"]]["status"] == "refused"
    assert "refund_refused" in types_for(world.customer, oid)
    assert view_of(world, oid)["payment"]["refunded_fen"] == 20_500
    check_invariants(ledger_of(store, oid))


# -- a rider faster than a bike -----------------------------------------------------------------


def fast_delivery(
    world: World, store: redis.Redis, door: dict[str, Any], decision: str
) -> tuple[dict[str, Any], Transaction]:
    """An order delivered far away at once, held, then decided; and its split."""
    order = place(world, delivery=door)
    oid = order["id"]
    pay(order)
    eventually(lambda: status_of(world.customer, oid) == "paid", what="paid")
    deliver(world, order)
    view = view_of(world, oid)
    assert view["status"] == "delivered"
    hold = view["hold"]
    assert (hold["reason"], hold["status"]) == ("rider_too_fast", "open")
    assert hold["facts"]["distance_m"] > 9_000
    delivered = next(
        e for e in events_of(world.rider) if e["type"] == "order_delivered" and e["order_id"] == oid
    )
    assert delivered["data"]["hold"]["reason"] == "rider_too_fast"  # the rider is told
    time.sleep(1.0)
    assert [t.kind for t in ledger_of(store, oid)] == ["capture"]  # no split yet
    decided = world.admin.post(f"/v1/admin/reviews/{hold['review_id']}/{decision}")
    assert decided.status_code == 200, decided.text
    eventually(lambda: len(ledger_of(store, oid)) == 2, what="split")
    wanted = {"approve": "approved", "refuse": "refused"}[decision]
    assert view_of(world, oid)["hold"]["status"] == wanted
    split = next(t for t in ledger_of(store, oid) if t.kind == "split")
    check_invariants(ledger_of(store, oid))
    return order, split


def test_a_delivery_faster_than_a_bike_has_its_split_held_for_review(
    login: Callable[[str, str], Api], store: redis.Redis
) -> None:
    world = make_world(login, radius_m=12_000)
    door = {"lat": world.lat + 0.09, "lng": world.lng, "address": "10 km north"}
    rider = party_payable("rider", world.rider_id)
    # Approved, the rider is paid its delivery share; refused, the platform keeps it.
    order, split = fast_delivery(world, store, door, "approve")
    assert split.amount_on(rider) == order["amounts"]["delivery_fee_fen"] > 0
    _, split = fast_delivery(world, store, door, "refuse")
    assert split.amount_on(rider) == 0
    # A short trip is not judged, however quick.
    near = place(world)
    pay(near)
    eventually(lambda: status_of(world.customer, near["id"]) == "paid", what="paid")
    deliver(world, near)
    assert view_of(world, near["id"])["hold"] is None
    eventually(lambda: len(ledger_of(store, near["id"])) == 2, what="split at once")
