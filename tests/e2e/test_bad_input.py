"""Bad input gets a clear 4xx in the error shape of API.md, and nothing in Redis changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from cluster.launcher import Platform
from tests.e2e.conftest import Api
from tests.e2e.world import World, make_world

# Written in the background by the timers and follow-ups of earlier tests (dispatch,
# offer expiry, the payment poller's due times, accept deadlines, mailboxes); none of
# the requests below can touch them, and each order they could make is checked itself.
BACKGROUND = (
    "offer:",
    "offers:expiries",
    "dispatch:",
    "inbox:rider:",
    "inbox:ops:",
    "rider:",
    "zone:",
    "payments:pending",
    "orders:accept_deadlines",
    "mailbox:",
)


def snapshot(store: redis.Redis) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for key in store.scan_iter(count=1000):
        if key.startswith(BACKGROUND):
            continue
        kind = store.type(key)
        if kind == "string":
            state[key] = store.get(key)
        elif kind == "hash":
            state[key] = store.hgetall(key)
        elif kind == "zset":
            state[key] = store.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            state[key] = sorted(store.smembers(key))
        elif kind == "stream":
            state[key] = (store.xlen(key), store.xinfo_stream(key)["last-generated-id"])
        else:
            state[key] = kind
    return state


@pytest.fixture(scope="module")
def world(login: Callable[[str, str], Api]) -> World:
    return make_world(login, stock=2)


def cases(w: World, login: Callable[[str, str], Api]) -> list[tuple[str, Any, int, str]]:
    other = login("customer", "nosy-neighbour")
    placed = w.customer.post("/v1/orders", json=w.order_body()).json()
    oid = placed["id"]
    body = w.order_body
    return [
        (
            "malformed json",
            lambda: w.customer.http.post(
                "/v1/orders", content=b"{not json", headers={"content-type": "application/json"}
            ),
            400,
            "malformed_json",
        ),
        (
            "missing items",
            lambda: w.customer.post(
                "/v1/orders", json={"merchant_id": w.merchant_id, "delivery": {"lat": 1, "lng": 1}}
            ),
            422,
            "invalid_request",
        ),
        (
            "negative qty",
            lambda: w.customer.post("/v1/orders", json=body(qty=-1)),
            422,
            "invalid_request",
        ),
        (
            "zero qty",
            lambda: w.customer.post("/v1/orders", json=body(qty=0)),
            422,
            "invalid_request",
        ),
        (
            "latitude out of range",
            lambda: w.customer.post(
                "/v1/orders", json={**body(), "delivery": {"lat": 123.0, "lng": 1.0}}
            ),
            422,
            "invalid_request",
        ),
        (
            "unknown merchant",
            lambda: w.customer.post("/v1/orders", json={**body(), "merchant_id": "m_nobody"}),
            404,
            "merchant_not_found",
        ),
        (
            "unknown item",
            lambda: w.customer.post("/v1/orders", json=body(item="caviar")),
            404,
            "item_not_found",
        ),
        (
            "outside range",
            lambda: w.customer.post(
                "/v1/orders", json={**body(), "delivery": {"lat": w.lat + 0.2, "lng": w.lng}}
            ),
            422,
            "outside_delivery_range",
        ),
        (
            "more than stock",
            lambda: w.customer.post("/v1/orders", json=body(qty=5)),
            409,
            "out_of_stock",
        ),
        (
            "price changed",
            lambda: w.customer.post("/v1/orders", json=body(expected_total_fen=1)),
            409,
            "price_changed",
        ),
        (
            "unknown coupon",
            lambda: w.customer.post("/v1/orders", json=body(coupon_code="NOPE")),
            409,
            "coupon_unavailable",
        ),
        (
            "no token",
            lambda: Api(w.customer.http.base_url.__str__()).post("/v1/orders", json=body()),
            401,
            "unauthorized",
        ),
        (
            "forged token",
            lambda: Api(str(w.customer.http.base_url), "e30.e30.bad").post(
                "/v1/orders", json=body()
            ),
            401,
            "unauthorized",
        ),
        (
            "wrong role places order",
            lambda: w.merchant.post("/v1/orders", json=body()),
            403,
            "forbidden",
        ),
        (
            "wrong role onboards",
            lambda: w.customer.post(
                "/v1/merchants",
                json={"name": "x", "lat": 1, "lng": 1, "delivery": {"radius_m": 10}},
            ),
            403,
            "forbidden",
        ),
        (
            "another merchant's menu",
            lambda: login("merchant", "m_other").put(
                f"/v1/merchants/{w.merchant_id}/menu/items/noodles",
                json={"name": "x", "price_fen": 1, "stock": 1},
            ),
            403,
            "forbidden",
        ),
        (
            "negative price",
            lambda: w.merchant.put(
                f"/v1/merchants/{w.merchant_id}/menu/items/noodles",
                json={"name": "x", "price_fen": -1, "stock": 1},
            ),
            422,
            "invalid_request",
        ),
        (
            "another customer's order",
            lambda: other.get(f"/v1/orders/{oid}"),
            404,
            "order_not_found",
        ),
        (
            "another customer cancels",
            lambda: other.post(f"/v1/orders/{oid}/cancel"),
            404,
            "order_not_found",
        ),
        ("rider cancels", lambda: w.rider.post(f"/v1/orders/{oid}/cancel"), 403, "forbidden"),
        (
            "merchant accepts unpaid",
            lambda: w.merchant.post(f"/v1/merchant/orders/{oid}/accept"),
            409,
            "invalid_transition",
        ),
        (
            "other merchant accepts",
            lambda: login("merchant", "m_other").post(f"/v1/merchant/orders/{oid}/accept"),
            404,
            "order_not_found",
        ),
        ("unknown order", lambda: w.customer.get("/v1/orders/o_missing"), 404, "order_not_found"),
        (
            "unknown offer",
            lambda: w.rider.post("/v1/rider/offers/of_missing/accept"),
            404,
            "offer_not_found",
        ),
        (
            "pickup not assigned",
            lambda: w.rider.post(f"/v1/rider/orders/{oid}/pickup"),
            404,
            "order_not_found",
        ),
        (
            "bad polygon",
            lambda: w.admin.post(
                "/v1/merchants",
                json={"name": "x", "lat": 1, "lng": 1, "delivery": {"polygon": [[1, 1]]}},
            ),
            422,
            "invalid_request",
        ),
        (
            "bad cursor",
            lambda: w.customer.get("/v1/sync/events", params={"cursor": "yesterday"}),
            422,
            "invalid_request",
        ),
        (
            "forged payment callback",
            lambda: w.customer.http.post(
                "/v1/payments/callback",
                content=b'{"out_trade_no": "%s", "type": "payment.succeeded", "amount_fen": 1}'
                % oid.encode(),
                headers={"X-Sandbox-Signature": "t=1,v1=00"},
            ),
            401,
            "bad_signature",
        ),
    ]


def test_bad_input_is_refused_and_changes_nothing(
    world: World, login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    table = cases(world, login)
    before = snapshot(store)
    failures = []
    for name, request, status, code in table:
        answer = request()
        try:
            error = answer.json()["error"]
        except Exception:
            failures.append(f"{name}: {answer.status_code} {answer.text[:200]}")
            continue
        if answer.status_code != status or error["code"] != code or not error["message"]:
            failures.append(f"{name}: expected {status} {code}, got {answer.status_code} {error}")
    assert not failures, "\n".join(failures)
    assert snapshot(store) == before


def test_idempotency_key_replays_and_refuses_a_different_body(world: World) -> None:
    first = world.customer.post("/v1/orders", json=world.order_body(), key="lunch-1")
    assert first.status_code == 201, first.text
    stock_after_first = world.stock()
    replay = world.customer.post("/v1/orders", json=world.order_body(), key="lunch-1")
    assert replay.status_code == 201
    assert replay.json() == first.json()
    assert world.stock() == stock_after_first
    other = world.customer.post(
        "/v1/orders", json=world.order_body(item="dumplings"), key="lunch-1"
    )
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert world.stock("dumplings") == 2
