"""A customer's devices stay in step: the address book and an order's door, live on every
socket of one token, sealed at rest, refused where they must be, and the money right."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import redis
from websockets.sync.client import ClientConnection, connect

from cluster.launcher import Platform
from domain.ledger import Transaction, check_invariants, provider_clearing
from storage import keys
from tests.e2e.conftest import Api, eventually
from tests.e2e.world import (
    World,
    accepted_order,
    events_of,
    make_world,
    offer_for,
    paid_order,
    pay,
    status_of,
)

HOME = "7 Plum Blossom Lane, Flat 1204"
OFFICE = "88 Wensan Rd, 9th floor"
PHONE = "+86 139 0013 9000"


def ws_url(platform: Platform, party: Api, **params: str) -> str:
    token = party.http.headers["authorization"][7:]
    query = "&".join(f"{k}={v}" for k, v in {"token": token, **params}.items())
    return f"ws://{platform.settings.http_host}:{platform.settings.http_port}/v1/sync/ws?{query}"


def frames_until(
    socket: ClientConnection, timeout_s: float, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done(got):
        try:
            got.append(json.loads(socket.recv(timeout=max(0.01, deadline - time.monotonic()))))
        except TimeoutError:
            break
    return got


def of_type(kind: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda got: any(e["type"] == kind for e in got)


def stored_dump(store: redis.Redis, *names: str) -> str:
    """What Redis holds under these keys, streams included, as text."""
    parts = []
    for key in names:
        kind = store.type(key)
        if kind == "hash":
            parts.append(str(store.hgetall(key)))
        elif kind == "stream":
            parts.append(str(store.xrange(key)))
        elif kind == "string":
            parts.append(str(store.get(key)))
    return "\n".join(parts)


def test_every_socket_on_one_token_gets_each_address_change(
    login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    customer_id = f"c_devices_{int(time.time() * 1000)}"
    customer = login("customer", customer_id)
    with ExitStack() as stack:
        # The app, the mini-program and the web page: three sockets, one token.
        devices = [
            stack.enter_context(connect(ws_url(platform, customer), open_timeout=10))
            for _ in range(3)
        ]
        time.sleep(0.5)  # each is subscribed before the first write
        added = customer.post(
            "/v1/me/addresses",
            json={"lat": 30.27, "lng": 120.12, "address": HOME, "phone": PHONE, "label": "home"},
        )
        assert added.status_code == 201, added.text
        home = added.json()
        assert (home["address"], home["default"], home["version"]) == (HOME, True, 1)
        office = customer.post(
            "/v1/me/addresses", json={"lat": 30.25, "lng": 120.16, "address": OFFICE}
        ).json()
        changed = customer.http.patch(
            f"/v1/me/addresses/{office['id']}", json={"label": "office", "expected_version": 2}
        )
        assert changed.status_code == 200, changed.text
        default = customer.post(f"/v1/me/addresses/{office['id']}/default")
        assert default.status_code == 200 and default.json()["default"] is True
        removed = customer.http.delete(f"/v1/me/addresses/{home['id']}")
        assert removed.status_code == 204, removed.text
        wanted = [
            "address_added",
            "address_added",
            "address_changed",
            "default_address_changed",
            "address_removed",
        ]
        seen = []
        for device in devices:
            got = frames_until(device, 10, lambda g: len(g) >= len(wanted))
            assert [e["type"] for e in got] == wanted
            assert [e["version"] for e in got] == [1, 2, 3, 4, 5]
            seen.append(got)
        # The same events, in clear, on every device.
        assert seen[0] == seen[1] == seen[2]
        first = seen[0]
        assert first[0]["data"]["address"] == {
            "id": home["id"],
            "label": "home",
            "lat": 30.27,
            "lng": 120.12,
            "address": HOME,
            "phone": PHONE,
        }
        assert first[2]["data"]["address"]["label"] == "office"
        assert first[3]["data"]["default_address_id"] == office["id"]
        assert first[4]["data"] == {
            "customer_id": customer_id,
            "address_id": home["id"],
            "default_address_id": office["id"],
        }

    # A device that was away resumes from its cursor and gets exactly what it missed.
    missed = events_of(customer, first[1]["cursor"])
    assert [e["type"] for e in missed] == wanted[2:]
    book = customer.get("/v1/me/addresses").json()
    assert book["version"] == 5 and book["default_address_id"] == office["id"]
    assert [(x["id"], x["label"], x["default"]) for x in book["addresses"]] == [
        (office["id"], "office", True)
    ]
    # Sealed at rest: neither the book nor the customer's stream holds the text.
    dump = stored_dump(store, keys.address_book(customer_id), keys.inbox("customer", customer_id))
    assert "sealed:v1:" in dump
    for text in (HOME, OFFICE, PHONE):
        assert text not in dump
    # Another customer's address does not exist for anybody else; a stale write is refused.
    stranger = login("customer", f"{customer_id}_other")
    assert (
        stranger.http.patch(f"/v1/me/addresses/{office['id']}", json={"label": "mine"}).status_code
        == 404
    )
    assert stranger.http.delete(f"/v1/me/addresses/{office['id']}").status_code == 404
    stale = customer.http.patch(
        f"/v1/me/addresses/{office['id']}", json={"label": "x", "expected_version": 1}
    )
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_version"
    bad = customer.post("/v1/me/addresses", json={"lat": 91, "lng": 0, "address": "pole"})
    assert bad.status_code == 422
    assert customer.get("/v1/me/addresses").json()["version"] == 5


def door_events(party: Api, order_id: str) -> list[dict[str, Any]]:
    return [
        e for e in events_of(party) if e["type"] == "delivery_changed" and e["order_id"] == order_id
    ]


def test_the_door_moved_before_pickup_reaches_customer_merchant_and_rider(
    login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    world = make_world(login)
    order = accepted_order(world)
    oid = order["id"]
    offer = offer_for(world, oid)
    assert world.rider.post(f"/v1/rider/offers/{offer}/accept").status_code == 200
    door = {"lat": world.lat + 0.012, "lng": world.lng, "address": OFFICE, "phone": PHONE}
    with connect(ws_url(platform, world.customer), open_timeout=10) as app:
        frames_until(app, 3, lambda g: False)  # the backlog
        moved = world.customer.http.patch(f"/v1/orders/{oid}/delivery", json=door)
        assert moved.status_code == 200, moved.text
        live = frames_until(app, 10, of_type("delivery_changed"))
    view = moved.json()
    assert view["delivery"] == {**door}
    assert view["amounts"] == order["amounts"]  # the same fee: nothing to pay or refund
    assert view["version"] == 5
    assert [e["data"]["address"] for e in live if e["type"] == "delivery_changed"] == [OFFICE]
    for party in (world.customer, world.merchant, world.rider):
        (event,) = door_events(party, oid)
        assert event["version"] == 5
        assert (event["data"]["address"], event["data"]["phone"]) == (OFFICE, PHONE)
        assert (event["data"]["lat"], event["data"]["refund_fen"]) == (door["lat"], 0)
        seen = party.get(f"/v1/orders/{oid}").json()["delivery"]
        assert seen["address"] == OFFICE
    dump = stored_dump(
        store,
        keys.order(oid),
        keys.inbox("customer", world.customer_id),
        keys.inbox("merchant", world.merchant_id),
        keys.inbox("rider", world.rider_id),
    )
    assert OFFICE not in dump and PHONE not in dump
    # Only its customer may: another customer is told there is no such order.
    stranger = login("customer", f"{world.customer_id}_x")
    assert stranger.http.patch(f"/v1/orders/{oid}/delivery", json=door).status_code == 404
    assert world.merchant.http.patch(f"/v1/orders/{oid}/delivery", json=door).status_code == 403

    assert world.merchant.post(f"/v1/merchant/orders/{oid}/ready").status_code == 200
    assert world.rider.post(f"/v1/rider/orders/{oid}/pickup").status_code == 200
    before = store.hgetall(keys.order(oid))
    late = world.customer.http.patch(f"/v1/orders/{oid}/delivery", json={**door, "address": HOME})
    assert late.status_code == 409, late.text
    assert late.json()["error"]["code"] == "already_picked_up"
    assert store.hgetall(keys.order(oid)) == before
    assert len(door_events(world.customer, oid)) == 1


def test_a_door_outside_the_range_is_refused_and_changes_nothing(
    login: Callable[[str, str], Api], store: redis.Redis
) -> None:
    world = make_world(login)
    order = paid_order(world)
    oid = order["id"]
    before = store.hgetall(keys.order(oid))
    stream_before = store.xlen(keys.inbox("customer", world.customer_id))
    far = {"lat": world.lat + 0.2, "lng": world.lng, "address": HOME}
    refused = world.customer.http.patch(f"/v1/orders/{oid}/delivery", json=far)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "outside_delivery_range"
    assert store.hgetall(keys.order(oid)) == before
    assert store.xlen(keys.inbox("customer", world.customer_id)) == stream_before
    assert world.customer.get(f"/v1/orders/{oid}").json()["delivery"]["address"] != HOME


def settled_payable(world: World, order_id: str) -> int | None:
    today = datetime.now(UTC).date().isoformat()
    report = world.merchant.get("/v1/merchant/settlement", params={"date": today}).json()
    rows = [p["amount_fen"] for p in report["postings"] if p["order_id"] == order_id]
    return sum(rows) if rows else None


def test_a_cheaper_door_refunds_the_difference_and_the_split_shares_the_new_price(
    login: Callable[[str, str], Api],
) -> None:
    world = make_world(login, radius_m=8000)
    far = {"lat": world.lat + 0.050, "lng": world.lng, "address": HOME}  # 5.6 km: 600 fen
    near = {"lat": world.lat + 0.010, "lng": world.lng, "address": OFFICE}  # 1.1 km: 300
    body = {**world.order_body(), "delivery": far}
    order = world.customer.post("/v1/orders", json=body).json()
    oid = order["id"]
    assert order["amounts"]["delivery_fee_fen"] == 600
    pay(order)
    eventually(lambda: status_of(world.customer, oid) == "paid", what="paid")
    # A fee the customer did not see is refused with the fee, and nothing moves.
    unseen = world.customer.http.patch(
        f"/v1/orders/{oid}/delivery", json={**near, "expected_delivery_fee_fen": 600}
    )
    assert unseen.status_code == 409
    assert unseen.json()["error"]["code"] == "fee_changed"
    assert unseen.json()["error"]["details"]["delivery_fee_fen"] == 300
    moved = world.customer.http.patch(
        f"/v1/orders/{oid}/delivery", json={**near, "expected_delivery_fee_fen": 300}
    )
    assert moved.status_code == 200, moved.text
    view = moved.json()
    assert view["amounts"] == {
        "subtotal_fen": 1800,
        "delivery_fee_fen": 300,
        "discount_fen": 0,
        "total_fen": 2100,
    }
    assert (view["paid_fen"], view["delivery_refunded_fen"]) == (2400, 300)
    # The difference goes back through the provider, once, and the customer hears of it.
    refunded = eventually(
        lambda: (
            (p := world.customer.get(f"/v1/orders/{oid}").json()["payment"])["refunded_fen"] and p
        ),
        what="the difference refunded",
    )
    assert refunded["refunded_fen"] == 300
    refunds = [e for e in events_of(world.customer) if e["type"] == "refunded"]
    assert [(e["order_id"], e["data"]["amount_fen"]) for e in refunds] == [(oid, 300)]
    # Back to the dearer door: refused, the fee never rises after placement.
    dearer = world.customer.http.patch(f"/v1/orders/{oid}/delivery", json=far)
    assert dearer.status_code == 409
    assert dearer.json()["error"]["code"] == "fee_increase_not_supported"

    # Delivered, the split shares the price as it is now: the rider the new fee, the
    # merchant what the order would have left it at this door.
    assert world.merchant.post(f"/v1/merchant/orders/{oid}/accept").status_code == 200
    offer = offer_for(world, oid)
    assert world.rider.post(f"/v1/rider/offers/{offer}/accept").status_code == 200
    assert world.merchant.post(f"/v1/merchant/orders/{oid}/ready").status_code == 200
    for step in ("pickup", "deliver"):
        assert world.rider.post(f"/v1/rider/orders/{oid}/{step}").status_code == 200
    provider_fee = (2400 * 60 + 5000) // 10000
    platform_share = 1800 * 18 // 100
    merchant_share = 2100 - provider_fee - platform_share - 300
    assert eventually(lambda: settled_payable(world, oid), what="split") == merchant_share


def ledger_of(store: redis.Redis, order_id: str) -> list[Transaction]:
    return [
        Transaction.from_dict(orjson.loads(r))
        for r in store.lrange(keys.ledger_of_order(order_id), 0, -1)
    ]


def test_a_cheaper_door_before_payment_is_taken_and_the_difference_refunded_once_paid(
    login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    world = make_world(login, radius_m=8000)
    far = {"lat": world.lat + 0.050, "lng": world.lng, "address": HOME}  # 5.6 km: 600 fen
    mid = {"lat": world.lat + 0.030, "lng": world.lng, "address": OFFICE}  # 3.3 km: 400
    near = {"lat": world.lat + 0.010, "lng": world.lng, "address": OFFICE}  # 1.1 km: 300
    order = world.customer.post("/v1/orders", json={**world.order_body(), "delivery": far}).json()
    oid, link = order["id"], order["payment"]
    assert order["amounts"]["total_fen"] == 2400
    # Unpaid, a cheaper door is taken at once, twice: the order shows the new fee and
    # total, and its pay link stays the one the customer holds, for the placed total.
    for door, fee, total in ((mid, 400, 2200), (near, 300, 2100)):
        moved = world.customer.http.patch(
            f"/v1/orders/{oid}/delivery", json={**door, "expected_delivery_fee_fen": fee}
        )
        assert moved.status_code == 200, moved.text
        view = moved.json()
        assert view["status"] == "pending_payment"
        assert (view["amounts"]["delivery_fee_fen"], view["amounts"]["total_fen"]) == (fee, total)
        assert view["link_fen"] == 2400 and view["payment"]["pay_url"] == link["pay_url"]
    dearer = world.customer.http.patch(f"/v1/orders/{oid}/delivery", json=mid)
    assert dearer.status_code == 409
    assert dearer.json()["error"]["code"] == "fee_increase_not_supported"
    seen = world.customer.get(f"/v1/orders/{oid}").json()
    assert seen["payment"]["pay_url"] == link["pay_url"] and seen["payment"]["status"] == "created"
    for party in (world.customer, world.merchant):
        assert [e["data"]["refund_fen"] for e in door_events(party, oid)] == [200, 100]

    # The customer pays through the link they hold: the order is paid (not held for
    # review), and the difference goes back once, right after the capture.
    pay(order)
    eventually(lambda: status_of(world.customer, oid) == "paid", what="paid")
    refunded = eventually(
        lambda: (
            (p := world.customer.get(f"/v1/orders/{oid}").json()["payment"])["refunded_fen"] and p
        ),
        what="the difference refunded",
    )
    assert refunded["refunded_fen"] == 300
    view = world.customer.get(f"/v1/orders/{oid}").json()
    assert view["hold"] is None
    assert view["amounts"] == {
        "subtotal_fen": 1800,
        "delivery_fee_fen": 300,
        "discount_fen": 0,
        "total_fen": 2100,
    }
    assert (view["paid_fen"], view["delivery_refunded_fen"]) == (2400, 300)
    time.sleep(2)  # a second refund would have come by now
    refunds = [e for e in events_of(world.customer) if e["type"] == "refunded"]
    assert [(e["order_id"], e["data"]["amount_fen"]) for e in refunds] == [(oid, 300)]
    record = orjson.loads(store.get(keys.payment(oid)) or b"{}")
    assert (record["amount_fen"], record["captured_fen"], record["refunded_fen"]) == (
        2400,
        2400,
        300,
    )
    assert [(r["amount_fen"], r["status"]) for r in record["refunds"].values()] == [
        (300, "succeeded")
    ]
    provider = httpx.get(f"{platform.settings.sandbox_url}/v1/orders/{oid}", timeout=10).json()
    assert (provider["amount_fen"], provider["refunded_fen"]) == (2400, 300)
    # The ledger: the capture of the link's amount and the one refund, balanced, with
    # the order's total left in clearing for its split.
    txns = ledger_of(store, oid)
    check_invariants(txns)
    assert sorted(t.kind for t in txns) == ["capture", "refund"]
    assert sum(t.amount_on(provider_clearing()) for t in txns) == 2100
