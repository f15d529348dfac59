"""One greedy client or one slow merchant cannot slow the rest: rate limits per caller,
load shedding per replica, a circuit breaker per merchant; notifications always get in."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from cluster.launcher import Platform
from storage import keys
from storage.faults import slow_merchant_fault
from tests.e2e.conftest import Api, eventually, unique
from tests.e2e.world import World, make_world, pay, status_of

# A placement to the slow merchant takes this long on its host: past the replica's
# bound on waiting for a merchant (merchant_call_timeout_s, 2 s by default).
SLOW_S = 3.0


def refused(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert int(answer.headers["retry-after"]) >= 1
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == code, error
    assert set(error) == {"code", "message", "details"}
    return error


def slow(store: redis.Redis, world: World, seconds: float | None) -> None:
    name = keys.fault(slow_merchant_fault(world.merchant_id))
    if seconds is None:
        store.delete(name)
    else:
        store.set(name, str(seconds))


def placed(world: World, key: str | None = None) -> httpx.Response:
    return world.customer.post("/v1/orders", json=world.order_body(), key=key)


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def test_a_caller_past_its_limit_gets_429_and_nothing_changes(
    login: Callable[[str, str], Api],
) -> None:
    world = make_world(login)
    stock = world.stock()
    # Bodies refused before any merchant count against the caller's placements too;
    # bounded in count (two windows' worth) and in time.
    deadline = time.monotonic() + 90
    answer = None
    for _ in range(700):
        answer = world.customer.post("/v1/orders", json={})
        if answer.status_code == 429 or time.monotonic() > deadline:
            break
        assert answer.status_code == 422, answer.text
    assert answer is not None
    refused(answer, 429, "rate_limited")

    # A real placement inside the same window is refused the same way and places nothing.
    again = placed(world, key=unique("k"))
    refused(again, 429, "rate_limited")
    assert world.customer.get("/v1/orders").json()["orders"] == []
    assert world.stock() == stock

    # The limit is the caller's: another customer of the same merchant still places.
    other = login("customer", unique("c"))
    answer = other.post("/v1/orders", json=world.order_body())
    assert answer.status_code == 201, answer.text


def test_payment_notifications_are_never_limited(
    login: Callable[[str, str], Api], store: redis.Redis, platform: Platform
) -> None:
    """With anonymous changes from this address over their limit, the provider's
    notifications still get in and pay the order."""
    world = make_world(login)
    order = placed(world).json()
    anonymous = Api(platform.url)
    change = f"/v1/orders/{order['id']}/cancel"
    assert anonymous.post(change).status_code == 401  # counted: the caller's key exists
    exhausted = list(store.scan_iter(match="ratelimit:LIMITER/write/addr:*"))
    assert exhausted
    for key in exhausted:
        store.set(key, 10**9, ex=5)
    try:
        refused(anonymous.post(change), 429, "rate_limited")
        junk = anonymous.post("/v1/payments/callback", content=b"{}")
        assert junk.status_code == 400, junk.text
        pay(order)
        eventually(lambda: status_of(world.customer, order["id"]) == "paid", what="paid")
    finally:
        for key in exhausted:
            store.delete(key)
        # The replica remembers the refusal until the window's end (5 s above).
        eventually(
            lambda: anonymous.post(change).status_code == 401,
            timeout_s=15,
            what="anonymous changes let in again",
        )


def test_a_slow_merchants_breaker_opens_while_another_merchant_places(
    login: Callable[[str, str], Api], store: redis.Redis, platform: Platform
) -> None:
    bound_s = platform.settings.merchant_call_timeout_s
    failures = platform.settings.merchant_breaker_failures
    stuck, healthy = make_world(login, stock=200), make_world(login)
    slow(store, stuck, SLOW_S)
    try:
        # The first late answer sends the merchant apart; then each late one counts.
        first, waited = timed(lambda: placed(stuck))
        refused(first, 503, "merchant_unavailable")
        assert waited >= bound_s
        with ThreadPoolExecutor(failures) as pool:
            late = list(pool.map(lambda _: placed(stuck), range(failures)))
        for answer in late:
            refused(answer, 503, "merchant_unavailable")

        # Open: answered without waiting on the merchant, with when to come back.
        answer, waited = timed(lambda: placed(stuck))
        error = refused(answer, 503, "merchant_unavailable")
        assert waited < bound_s
        assert error["details"]["merchant_id"] == stuck.merchant_id
        assert 1 < int(answer.headers["retry-after"]) <= platform.settings.merchant_breaker_open_s

        for _ in range(3):
            answer = placed(healthy)
            assert answer.status_code == 201, answer.text
    finally:
        slow(store, stuck, None)
    # Once the breaker lets a call through again and it is answered, it closes; asked
    # once a second (each asking counts against the customer's placements).
    for _ in range(int(platform.settings.merchant_breaker_open_s) + 20):
        answer = placed(stuck)
        if answer.status_code == 201:
            break
        refused(answer, 503, "merchant_unavailable")
        time.sleep(1)
    assert answer.status_code == 201, answer.text


def test_a_replica_past_its_bound_sheds_at_once(
    login: Callable[[str, str], Api], store: redis.Redis, platform: Platform
) -> None:
    """Slow placements fill the replica's slots; the requests past them are answered 503
    at once instead of queueing, while notifications and probes still get in."""
    bound = platform.settings.shed_max_in_flight
    stuck, healthy = make_world(login, stock=500), make_world(login)
    burst = bound + 40
    # One connection per request, all at once (httpx keeps 100 by default).
    client = httpx.Client(
        base_url=platform.url,
        headers=stuck.customer.http.headers,
        limits=httpx.Limits(max_connections=burst),
        timeout=30,
    )

    def place() -> httpx.Response:
        return client.post("/v1/orders", json=stuck.order_body())

    slow(store, stuck, SLOW_S)
    try:
        with ThreadPoolExecutor(burst) as pool:
            answers = [pool.submit(timed, place) for _ in range(burst)]
            time.sleep(0.5)
            # While the slots are full: the provider and the probes are let in.
            anonymous = Api(platform.url)
            assert anonymous.post("/v1/payments/callback", content=b"{}").status_code == 400
            assert anonymous.get("/v1/health/live").status_code == 200
            results = [a.result() for a in answers]
    finally:
        slow(store, stuck, None)
        client.close()
    shed = [
        (a, t) for a, t in results if a.status_code == 503 and _code(a) == "service_unavailable"
    ]
    held = [(a, t) for a, t in results if _code(a) == "merchant_unavailable"]
    assert len(shed) >= burst - bound, [(a.status_code, _code(a)) for a, _ in results]
    assert len(shed) + len(held) == burst
    for answer, _ in shed:
        refused(answer, 503, "service_unavailable")
    # Shed at once: every one answered before any held request came back.
    assert max(t for _, t in shed) < min(t for _, t in held)
    eventually(
        lambda: placed(healthy).status_code == 201,
        timeout_s=SLOW_S + 20,
        what="placements answered again",
    )


def _code(answer: httpx.Response) -> str | None:
    try:
        code: str = answer.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code


def test_anonymous_callers_are_keyed_by_the_address_haproxy_forwards(
    platform: Platform, store: redis.Redis
) -> None:
    """Behind Serve's HAProxy every connection comes from HAProxy's address; HAProxy
    adds the client's to X-Forwarded-For (the launcher's wrapper), and the replica keys
    an anonymous caller by it, not by what the client wrote there itself."""
    if platform.settings.front_door != "haproxy":
        pytest.skip("Serve's own proxy: the replica sees the client's address itself")
    # Another loopback address than HAProxy's own (127.0.0.1) for this client.
    client = httpx.Client(
        base_url=platform.url,
        transport=httpx.HTTPTransport(local_address="127.0.0.2"),
        timeout=30,
    )
    with client:
        answer = client.post(
            f"/v1/orders/{unique('o')}/cancel", headers={"X-Forwarded-For": "203.0.113.9"}
        )
    assert answer.status_code == 401, answer.text  # anonymous: counted, then refused
    assert list(store.scan_iter(match="ratelimit:LIMITER/write/addr:127.0.0.2/*"))
    assert not list(store.scan_iter(match="ratelimit:*203.0.113.9*"))


def test_haproxy_gives_every_request_its_own_attempt_id(
    platform: Platform, login: Callable[[str, str], Api]
) -> None:
    """The attempt id names what a request without Idempotency-Key creates, so that
    HAProxy's replay of it, when its replica dies, creates nothing twice. HAProxy
    replaces a client's own: two placements that send the same one are two orders."""
    if platform.settings.front_door != "haproxy":
        pytest.skip("Serve's own proxy passes the client's header through")
    world = make_world(login)
    same = {"X-Attempt-Id": "client-chosen"}
    first, second = (
        world.customer.http.post("/v1/orders", json=world.order_body(), headers=same)
        for _ in range(2)
    )
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert first.json()["id"] != second.json()["id"]
