"""Every terminal sees its own changes live, resumes from its cursor, and nothing else."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest
import redis
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from cluster.launcher import Platform
from storage import keys
from tests.e2e.conftest import Api, eventually
from tests.e2e.world import (
    delivered_order,
    events_of,
    make_world,
    offer_for,
    pay,
    status_of,
)


def ws_url(platform: Platform, party: Api, **params: str) -> str:
    token = party.http.headers["authorization"][7:]
    query = "&".join(f"{k}={v}" for k, v in {"token": token, **params}.items())
    return f"ws://{platform.settings.http_host}:{platform.settings.http_port}/v1/sync/ws?{query}"


def frames(
    socket: ClientConnection, timeout_s: float, until: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not until(got):
        try:
            got.append(json.loads(socket.recv(timeout=max(0.01, deadline - time.monotonic()))))
        except TimeoutError:
            break
    return got


def all_events(party: Api) -> list[dict[str, Any]]:
    """The whole stream, page by page."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        page = events_of(party, cursor)
        if not page:
            return found
        found += page
        cursor = page[-1]["cursor"]
    raise AssertionError("the stream did not end")


def test_socket_sends_backlog_then_live_events(
    login: Callable[[str, str], Api], platform: Platform
) -> None:
    world = make_world(login)
    first = world.customer.post("/v1/orders", json=world.order_body()).json()
    with connect(ws_url(platform, world.customer), open_timeout=10) as socket:
        backlog = frames(socket, 5, lambda got: len(got) >= 1)
        assert [(e["type"], e["order_id"], e["version"]) for e in backlog] == [
            ("order_placed", first["id"], 1)
        ]
        started = time.monotonic()
        pay(first)
        live = frames(socket, 5, lambda got: any(e["type"] == "order_paid" for e in got))
        assert [e["type"] for e in live] == ["order_paid"]
        assert live[0]["version"] == 2
        assert live[0]["cursor"] > backlog[0]["cursor"]
        assert time.monotonic() - started < 5


def test_reconnecting_with_the_last_cursor_loses_nothing_and_repeats_nothing(
    login: Callable[[str, str], Api], platform: Platform
) -> None:
    world = make_world(login, stock=500)
    stop = threading.Event()
    delivered: list[str] = []

    def drive() -> None:
        for _ in range(20):  # bounded: at most 20 orders, stopped early by the reader
            if stop.is_set():
                return
            delivered.append(delivered_order(world)["id"])

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    rng = random.Random(2)
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    drops = 0
    deadline = time.monotonic() + 120
    while drops < 200 and time.monotonic() < deadline:
        params = {"cursor": cursor} if cursor else {}
        with connect(ws_url(platform, world.merchant, **params), open_timeout=10) as socket:
            for _ in range(rng.randint(0, 3)):
                try:
                    event = json.loads(socket.recv(timeout=rng.choice([0.01, 0.05, 0.2])))
                except (TimeoutError, ConnectionClosed):
                    break
                seen.append(event)
                cursor = event["cursor"]
        drops += 1
    stop.set()
    driver.join(timeout=60)
    assert drops == 200
    assert len(delivered) >= 2, "the order driver made too little progress"
    # Catch up once more after the last drop, then compare with the stream itself.
    with connect(
        ws_url(platform, world.merchant, **({"cursor": cursor} if cursor else {}))
    ) as socket:
        tail = frames(socket, 3, lambda got: False)
    seen += tail
    everything = all_events(world.merchant)
    cursors = [e["cursor"] for e in seen]
    assert len(cursors) == len(set(cursors)), "an event arrived twice"
    assert seen == everything, "the events seen over 200 reconnects differ from the stream"
    per_order: dict[str, list[int]] = {}
    for event in seen:
        per_order.setdefault(event["order_id"], []).append(event["version"])
    for versions in per_order.values():
        assert versions == sorted(versions)


def test_long_poll_waits_for_the_next_event(login: Callable[[str, str], Api]) -> None:
    world = make_world(login)
    order = world.customer.post("/v1/orders", json=world.order_body()).json()
    cursor = events_of(world.customer)[-1]["cursor"]
    timer = threading.Timer(0.5, pay, args=(order,))
    timer.start()
    started = time.monotonic()
    answer = world.customer.get("/v1/sync/events", params={"cursor": cursor, "wait_s": 10})
    timer.join()
    assert answer.status_code == 200
    body = answer.json()
    assert [e["type"] for e in body["events"]] == ["order_paid"]
    assert body["cursor"] == body["events"][-1]["cursor"]
    assert time.monotonic() - started < 8
    idle = world.customer.get("/v1/sync/events", params={"cursor": body["cursor"], "wait_s": 0.3})
    assert idle.json() == {"events": [], "cursor": body["cursor"]}


def test_a_write_from_an_older_version_is_refused(login: Callable[[str, str], Api]) -> None:
    world = make_world(login)
    order = world.customer.post("/v1/orders", json=world.order_body()).json()
    pay(order)
    eventually(lambda: status_of(world.merchant, order["id"]) == "paid", what="paid")
    # The merchant saw version 2 (paid); the customer cancels first (version 3).
    assert world.customer.post(f"/v1/orders/{order['id']}/cancel").status_code == 200
    late = world.merchant.post(
        f"/v1/merchant/orders/{order['id']}/accept", json={"expected_version": 2}
    )
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "stale_version"
    assert late.json()["error"]["details"]["version"] == 3


def test_menu_changes_reach_viewers_and_old_prices_need_confirmation(
    login: Callable[[str, str], Api], platform: Platform
) -> None:
    world = make_world(login)
    seen_menu = world.customer.get(f"/v1/merchants/{world.merchant_id}/menu").json()
    bystander = login("customer", f"{world.customer_id}-bystander")
    with (
        connect(ws_url(platform, world.customer, viewing=world.merchant_id)) as viewing,
        connect(ws_url(platform, bystander)) as elsewhere,
    ):
        frames(viewing, 0.5, lambda got: False)  # let both sockets settle
        started = time.monotonic()
        changed = world.merchant.put(
            f"/v1/merchants/{world.merchant_id}/menu/items/noodles",
            json={"name": "Noodles", "price_fen": 2000, "stock": 20},
        )
        assert changed.status_code == 200
        pushed = frames(viewing, 3, lambda got: any(e["type"] == "menu_changed" for e in got))
        assert time.monotonic() - started < 3
        (event,) = [e for e in pushed if e["type"] == "menu_changed"]
        assert event["data"]["merchant_id"] == world.merchant_id
        assert event["data"]["item"]["price_fen"] == 2000
        assert event["data"]["menu_version"] == seen_menu["menu_version"] + 1
        assert frames(elsewhere, 0.5, lambda got: False) == []

    stale = world.order_body(menu_version=seen_menu["menu_version"])
    refused = world.customer.post("/v1/orders", json=stale)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "price_changed"
    new_total = refused.json()["error"]["details"]["total_fen"]
    assert new_total == 2000 + 300
    confirmed = world.customer.post("/v1/orders", json={**stale, "expected_total_fen": new_total})
    assert confirmed.status_code == 201, confirmed.text


def test_rider_location_reaches_only_the_customer_of_the_order(
    login: Callable[[str, str], Api],
) -> None:
    world = make_world(login)
    order = world.customer.post("/v1/orders", json=world.order_body()).json()
    pay(order)
    eventually(lambda: status_of(world.merchant, order["id"]) == "paid", what="paid")
    world.merchant.post(f"/v1/merchant/orders/{order['id']}/accept")
    offer = offer_for(world, order["id"])
    world.rider.post(f"/v1/rider/offers/{offer}/accept")
    for step in range(10):  # ten reports in about a second: rate-limited to one or two
        moved = world.rider.post(
            "/v1/riders/me/location", json={"lat": world.lat + 0.001 * step, "lng": world.lng}
        )
        assert moved.status_code == 200
        time.sleep(0.1)
    told = [e for e in events_of(world.customer) if e["type"] == "rider_location"]
    assert 1 <= len(told) <= 2
    assert told[0]["order_id"] == order["id"]
    assert told[0]["data"]["rider_id"] == world.rider_id
    for other in (world.merchant, world.rider):
        assert not [e for e in events_of(other) if e["type"] == "rider_location"]


def test_terminals_see_only_their_own_events(login: Callable[[str, str], Api]) -> None:
    one, two = make_world(login), make_world(login)
    for world in (one, two):
        order = world.customer.post("/v1/orders", json=world.order_body()).json()
        pay(order)
        eventually(lambda w=world, o=order: status_of(w.merchant, o["id"]) == "paid", what="paid")
        world.merchant.post(f"/v1/merchant/orders/{order['id']}/accept")
        offer_for(world, order["id"])
    for mine, theirs in ((one, two), (two, one)):
        their_orders = {e["order_id"] for e in events_of(theirs.customer)}
        for party in (mine.customer, mine.merchant, mine.rider):
            assert not their_orders & {e["order_id"] for e in events_of(party)}
        offers = [e for e in events_of(mine.rider) if e["type"] == "offer"]
        assert offers and all(e["order_id"] not in their_orders for e in offers)


def test_a_cursor_older_than_the_retained_events_gets_a_resync(
    login: Callable[[str, str], Api], platform: Platform, store: redis.Redis
) -> None:
    world = make_world(login)
    order = world.customer.post("/v1/orders", json=world.order_body()).json()
    old_cursor = events_of(world.customer)[0]["cursor"]
    pay(order)
    eventually(lambda: status_of(world.customer, order["id"]) == "paid", what="paid")
    # Age-based trimming of this terminal's stream, as if it had been away for days.
    inbox = keys.inbox("customer", world.customer_id)
    store.xtrim(inbox, maxlen=0)
    answer = world.customer.get("/v1/sync/events", params={"cursor": old_cursor}).json()
    (resync,) = answer["events"]
    assert resync["type"] == "resync_required"
    assert [o["id"] for o in resync["data"]["orders"]] == [order["id"]]
    assert resync["data"]["orders"][0]["status"] == "paid"
    assert answer["cursor"] == resync["cursor"]
    with connect(ws_url(platform, world.customer, cursor=old_cursor)) as socket:
        (first,) = frames(socket, 3, lambda got: len(got) >= 1)
    assert first["type"] == "resync_required"
    # The fresh cursor works from then on.
    after = world.customer.get("/v1/sync/events", params={"cursor": answer["cursor"]}).json()
    assert after["events"] == []


@pytest.mark.parametrize("bad", ["?token=nonsense", ""])
def test_socket_without_a_valid_token_is_refused(platform: Platform, bad: str) -> None:
    url = f"ws://{platform.settings.http_host}:{platform.settings.http_port}/v1/sync/ws{bad}"
    # A refusal before the handshake completes is an HTTP 403; after it, close code 4401.
    with pytest.raises((InvalidStatus, ConnectionClosed)) as refused, connect(url) as socket:
        socket.recv(timeout=5)
    assert "4401" in str(refused.value) or "403" in str(refused.value)


WAVE = 1000


async def test_waves_of_sockets_leave_the_replica_flat(
    platform: Platform, login: Callable[[str, str], Api]
) -> None:
    """Closed sockets give their memory back: a replica serving terminals that come and
    go all day must not grow with every one it ever served (an open socket holds about
    100 KiB; freezing them out of the garbage collector once kept all of it)."""

    customer = login("customer", f"c_churn_{random.randint(0, 10**9)}")
    url = ws_url(platform, customer)
    replica = next(
        p
        for p in psutil.Process().children(recursive=True)
        if "ServeReplica:o2o:api" in " ".join(p.cmdline())
    )
    resident: list[float] = []
    for _ in range(5):
        sockets = await asyncio.gather(*(connect_async(url) for _ in range(WAVE)))
        await asyncio.gather(*(s.close() for s in sockets))
        await asyncio.sleep(1.0)
        resident.append(replica.memory_info().rss / 2**20)
    # The first wave grows the allocator's pools; after it, what stays per closed
    # socket is noise (about 6 KiB measured), far below a socket's 100 KiB.
    kept_kib = (resident[-1] - resident[1]) * 1024 / (3 * WAVE)
    assert kept_kib < 20, resident
