"""Bad input gets a clear 4xx in the error shape of API.md, and nothing in Redis changes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from cluster.launcher import Platform
from tests.e2e.conftest import Api
from tests.e2e.world import World, make_world, status_of

# Written in the background by the timers and follow-ups of earlier tests (dispatch,
# offer expiry, the payment poller's due times, accept deadlines, mailboxes, outboxes
# and their relay marks); none of
# the requests below can touch them, and each order they could make is checked itself.
BACKGROUND = (
    "offer:",
    "offers:expiries",
    "dispatch:",
    "inbox:rider:",
    "inbox:ops:",
    "rider:",
    "zone:",
    "payments:due",
    "orders:accept_deadlines",
    "mailbox:",
    # Letters to entities, deleted once answered: a refused request's letter leaves
    # only the stream's last id moved (what it did, or not, is in the keys checked).
    "commands:",
    "outbox:",
    "relayed:",
    # The per-minute figures: offers and deliveries of earlier tests' orders are counted
    # as they happen (an order the requests below made would show in its own keys).
    "metrics:m:",
    # The rate limiter counts every request, refused or not: that is not a change.
    "ratelimit:",
    # Each host marks the host layout it has handed its shards over under, a while
    # after an earlier test (`test_host_scaling.py`) changed the layout.
    "hosts:applied:",
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


def settled(store: redis.Redis, timeout_s: float = 45) -> None:
    """Wait for earlier tests' orders that the platform itself will still change: unpaid
    ones close at the session's 20 s payment timeout (their payment, failed-payment
    counts and events are written then), paid ones are rejected at the 10 s accept
    deadline. Their follow-ups (a rejected order's refund) land a moment after the
    status, so it then waits for the store to stay as it is for a second. Whatever
    changes after this is the bad input's doing."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        waiting = [
            key
            for key in store.scan_iter("order:*", count=1000)
            if store.type(key) == "hash"
            and store.hget(key, "status") in ("pending_payment", "paid")
        ]
        if not waiting:
            break
        time.sleep(0.5)
    seen = snapshot(store)
    while time.monotonic() < deadline:
        time.sleep(1)
        now = snapshot(store)
        if now == seen:
            return
        seen = now


@pytest.fixture(scope="module")
def world(login: Callable[[str, str], Api]) -> World:
    return make_world(login, stock=2)


def cases(w: World, login: Callable[[str, str], Api], oid: str) -> list[tuple[str, Any, int, str]]:
    other = login("customer", "nosy-neighbour")
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
    # The cases' unpaid order closes at the session's 20 s payment timeout: a run that
    # outlasts it (a loaded machine) saw the platform change state, not the bad input,
    # and is run again with a fresh order.
    settled(store)
    for _attempt in range(3):
        oid = world.customer.post("/v1/orders", json=world.order_body()).json()["id"]
        table = cases(world, login, oid)
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
                failures.append(
                    f"{name}: expected {status} {code}, got {answer.status_code} {error}"
                )
        assert not failures, "\n".join(failures)
        after = snapshot(store)
        if status_of(world.customer, oid) == "pending_payment":
            break
    assert after == before


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


BEYOND_INT64 = 10**20
PAST_LAST_STREAM_ID = "18446744073709551615-18446744073709551615"


def past_limits(w: World) -> list[tuple[str, Callable[[], httpx.Response]]]:
    """Input that looks valid but no store could take (integers past 64 bits, points
    beyond the GEO index, cursors past the last stream id, ids no key may have): each a
    422 in the error shape, never a 500."""
    coupon = {
        "code": "HUGE",
        "total": 1,
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": "2030-01-01T00:00:00Z",
    }
    return [
        (
            "search beyond the GEO index",
            lambda: w.customer.get("/v1/merchants/nearby", params={"lat": 89.9, "lng": 10}),
        ),
        (
            "online beyond the GEO index",
            lambda: w.rider.post(
                "/v1/riders/me/status", json={"online": True, "lat": 89.5, "lng": 10}
            ),
        ),
        (
            "moving beyond the GEO index",
            lambda: w.rider.post("/v1/riders/me/location", json={"lat": 89.9, "lng": 10}),
        ),
        (
            "expected total past int64",
            lambda: w.customer.post(
                "/v1/orders", json=w.order_body(expected_total_fen=BEYOND_INT64)
            ),
        ),
        (
            "menu version past int64",
            lambda: w.customer.post("/v1/orders", json=w.order_body(menu_version=BEYOND_INT64)),
        ),
        (
            "coupon discount past int64",
            lambda: w.admin.post(
                "/v1/admin/coupons", json={**coupon, "discount_fen": BEYOND_INT64}
            ),
        ),
        (
            "coupon limit past int64",
            lambda: w.admin.post(
                "/v1/admin/coupons",
                json={**coupon, "percent": 10, "per_customer_limit": BEYOND_INT64},
            ),
        ),
        (
            "refund past int64",
            lambda: w.admin.post("/v1/admin/orders/o_x/refund", json={"amount_fen": BEYOND_INT64}),
        ),
        (
            "expected version past int64",
            lambda: w.customer.post(
                "/v1/orders/o_x/cancel", json={"expected_version": BEYOND_INT64}
            ),
        ),
        (
            "split plan with an integer past int64",
            lambda: w.admin.post(
                "/v1/merchants",
                json={
                    "name": "x",
                    "lat": 1,
                    "lng": 1,
                    "delivery": {"radius_m": 10},
                    "split_plan": {"levels": [{"rule": {"fixed_fen": BEYOND_INT64}}]},
                },
            ),
        ),
        (
            "orders cursor at int64's end",
            lambda: w.customer.get("/v1/orders", params={"cursor": 2**63 - 1}),
        ),
        (
            "sync cursor past 64 bits",
            lambda: w.customer.get(
                "/v1/sync/events", params={"cursor": "99999999999999999999999-0"}
            ),
        ),
        (
            "sync cursor in fullwidth digits",
            lambda: w.customer.get("/v1/sync/events", params={"cursor": "\uff11\uff12\uff13-0"}),
        ),
        (
            "sync cursor after the last stream id",
            lambda: w.customer.get("/v1/sync/events", params={"cursor": PAST_LAST_STREAM_ID}),
        ),
        ("order id too long", lambda: w.customer.get(f"/v1/orders/o_{'x' * 64}")),
        ("order id with a space", lambda: w.customer.get("/v1/orders/o%20x")),
    ]


def test_numbers_past_what_the_platform_holds_are_refused(world: World, store: redis.Redis) -> None:
    before = snapshot(store)
    failures = []
    for name, request in past_limits(world):
        answer = request()
        body = answer.json() if answer.headers.get("content-type") == "application/json" else {}
        error = body.get("error") or {}
        if answer.status_code != 422 or error.get("code") != "invalid_request":
            failures.append(f"{name}: {answer.status_code} {answer.text[:300]}")
    assert not failures, "\n".join(failures)
    assert snapshot(store) == before


def test_the_refusal_says_what_is_wrong(world: World) -> None:
    answer = world.customer.get("/v1/merchants/nearby", params={"lat": 89.9, "lng": 10})
    message = answer.json()["error"]["message"]
    assert "query.lat" in message and "85.05112878" in message, message


def test_an_empty_cursor_reads_from_the_start(world: World) -> None:
    for path in ("/v1/orders", "/v1/sync/events"):
        empty = world.customer.get(path, params={"cursor": ""})
        assert empty.status_code == 200, empty.text
        assert empty.json() == world.customer.get(path).json()


@pytest.mark.parametrize(
    "cursor",
    ["99999999999999999999999-0", "%EF%BC%91%EF%BC%92%EF%BC%93-0", PAST_LAST_STREAM_ID, "x"],
)
def test_a_socket_with_a_bad_cursor_gets_an_error_frame_and_4422(
    world: World, platform: Platform, cursor: str
) -> None:
    token = world.customer.http.headers["authorization"][7:]
    host, port = platform.settings.http_host, platform.settings.http_port
    url = f"ws://{host}:{port}/v1/sync/ws?token={token}&cursor={cursor}"
    with connect(url) as socket:
        frame = json.loads(socket.recv(timeout=5))
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=5)
    assert frame["error"]["code"] == "invalid_request", frame
    assert frame["error"]["message"].startswith("query.cursor"), frame
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4422
