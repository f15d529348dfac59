"""A host killed right after it commits an event, before any follow-up ran: the follow-up
still happens, once, after the restart, with the money exact to the fen.

The crash is placed on purpose (`fault_injection`: a test arms `fault:<name>` in Redis
and the host that commits the named event exits at once, as a killed process would);
Ray starts the host again and it reads what was left in its mailboxes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import httpx
import orjson
import pytest
import redis

from cluster.launcher import Platform
from domain.geo import Point, zone_of
from domain.ledger import Transaction, check_invariants, party_payable, provider_clearing
from domain.payments import provider_fee_fen
from storage import keys
from tests.e2e.conftest import Api, eventually, unique
from tests.e2e.world import (
    World,
    accepted_order,
    events_of,
    make_world,
    offer_for,
    one_use_coupon,
    paid_order,
    pay,
    status_of,
)


@pytest.fixture(autouse=True)
def no_fault_left(store: redis.Redis) -> Iterator[None]:
    yield
    for key in store.scan_iter(match=keys.fault("*")):
        store.delete(key)


def arm(store: redis.Redis, event: str, world: World) -> str:
    name = keys.fault(f"crash_after_commit:{event}:{world.merchant_id}")
    store.set(name, 1)
    return name


def fired(store: redis.Redis, name: str) -> bool:
    return not store.exists(name)


def ledger_of(store: redis.Redis, order_id: str) -> list[Transaction]:
    return [
        Transaction.from_dict(orjson.loads(raw))
        for raw in store.lrange(keys.ledger_of_order(order_id), 0, -1)
    ]


def provider_refunded(platform: Platform, order_id: str) -> int:
    view = httpx.get(f"{platform.settings.sandbox_url}/v1/orders/{order_id}", timeout=10).json()
    return int(view["refunded_fen"])


def retried(call: Callable[[], httpx.Response], ok: int = 200) -> httpx.Response:
    """The request that hit the crash answers 503; a client asks again."""

    def attempt() -> httpx.Response | None:
        answer = call()
        if answer.status_code in (502, 503, 504):
            time.sleep(0.5)
            return None
        return answer

    answer = eventually(attempt, timeout_s=60, what="an answer after the restart")
    assert answer.status_code == ok, answer.text
    return answer


def coupon_is_free_again(world: World, login: Callable[[str, str], Api], code: str) -> bool:
    other = login("customer", unique("c"))
    return other.post("/v1/orders", json=world.order_body(coupon_code=code)).status_code == 201


def count(events: list[dict[str, Any]], order_id: str, kind: str) -> int:
    return sum(1 for e in events if e["order_id"] == order_id and e["type"] == kind)


def test_paid_at_an_auto_accepting_merchant(
    login: Callable[[str, str], Api], store: redis.Redis
) -> None:
    world = make_world(login, accept_mode="auto")
    fault = arm(store, "order_paid", world)
    order = world.customer.post("/v1/orders", json=world.order_body()).json()
    pay(order)  # the provider retries its notification until the restarted host answers
    eventually(lambda: fired(store, fault), what="the crash")
    eventually(
        lambda: status_of(world.customer, order["id"]) == "accepted",
        timeout_s=60,
        what="auto-accepted after the restart",
    )
    assert count(events_of(world.merchant), order["id"], "order_accepted") == 1
    # Accepted, the order is offered to the rider, once.
    offer_for(world, order["id"])
    assert count(events_of(world.rider), order["id"], "offer") == 1


def test_a_new_order_is_counted_though_its_host_died_before_answering(
    login: Callable[[str, str], Api], store: redis.Redis
) -> None:
    world = make_world(login)
    fault = arm(store, "order_placed", world)
    key = unique("k")
    placed = retried(
        lambda: world.customer.post("/v1/orders", json=world.order_body(), key=key), ok=201
    )
    assert fired(store, fault)
    assert status_of(world.customer, placed.json()["id"]) == "pending_payment"

    def counted() -> int:
        return int(store.hget(keys.METRICS_CUSTOMER_ORDERS, world.customer_id) or 0)

    # The count is a follow-up written with the order, so the restarted host makes it.
    eventually(lambda: counted() >= 1, timeout_s=30, what="the new order counted")
    # At least once: the dead host may have counted it and died before acknowledging,
    # and the figures are operations', not money; the placement's retry adds nothing.
    time.sleep(1.5)
    assert counted() in (1, 2)


def test_a_waiting_order_is_not_stranded_by_a_crash_as_it_is_offered_again(
    login: Callable[[str, str], Api], store: redis.Redis, platform: Platform
) -> None:
    world = make_world(login, rider_online=False)
    order = accepted_order(world)  # nobody near: it waits in its zone's queue
    waiting = keys.dispatch_waiting(zone_of(Point(world.lat, world.lng), 7))
    eventually(
        lambda: any(order["id"] in member for member in store.zrange(waiting, 0, -1)),
        what="the order waiting for a rider",
    )
    fault = keys.fault(f"crash_before_offer:{world.merchant_id}")
    store.set(fault, 1)
    # A rider comes online: the zone's host takes the waiting order up and dies there.
    here = {"online": True, "lat": world.lat + 0.002, "lng": world.lng}
    retried(lambda: world.rider.post("/v1/riders/me/status", json=here))
    eventually(lambda: fired(store, fault), timeout_s=30, what="the crash")
    # Still in the queue, so the restarted host offers it, one offer at a time (an
    # unanswered one expires and is made again), and the rider can take it.
    offer_for(world, order["id"])

    def offers() -> list[dict[str, Any]]:
        found = events_of(world.rider)
        return [e for e in found if e["type"] == "offer" and e["order_id"] == order["id"]]

    def taken() -> bool:
        latest = offers()[-1]["data"]["offer_id"]
        return world.rider.post(f"/v1/rider/offers/{latest}/accept").status_code == 200

    eventually(taken, timeout_s=30, what="the rider takes the order")
    assert store.hget(keys.order(order["id"]), "rider_id") == world.rider_id
    made_ms = [int(e["cursor"].split("-")[0]) for e in offers()]
    ttl_ms = platform.settings.offer_ttl_s * 1000
    assert all(later - earlier >= ttl_ms * 0.9 for earlier, later in pairwise(made_ms))


def test_accepted_is_dispatched(login: Callable[[str, str], Api], store: redis.Redis) -> None:
    world = make_world(login)
    order = paid_order(world)
    fault = arm(store, "order_accepted", world)
    world.merchant.post(f"/v1/merchant/orders/{order['id']}/accept")  # the host dies here
    assert fired(store, fault)
    offer_for(world, order["id"])
    view = retried(lambda: world.merchant.get(f"/v1/orders/{order['id']}")).json()
    assert (view["status"], view["version"]) == ("accepted", 3)
    assert count(events_of(world.rider), order["id"], "offer") == 1


def test_an_offer_expires_though_its_zone_host_died(
    login: Callable[[str, str], Api], store: redis.Redis
) -> None:
    world = make_world(login)
    second = login("rider", unique("r"))
    online = second.post(
        "/v1/riders/me/status", json={"online": True, "lat": world.lat + 0.004, "lng": world.lng}
    )
    assert online.status_code == 200, online.text
    order = paid_order(world)
    fault = arm(store, "offer", world)
    assert world.merchant.post(f"/v1/merchant/orders/{order['id']}/accept").status_code == 200
    eventually(lambda: fired(store, fault), what="the crash after the offer")

    def offered_to() -> list[str]:
        found = []
        for party in (world.rider, second):
            found += [
                e["data"]["offer_id"]
                for e in events_of(party)
                if e["type"] == "offer" and e["order_id"] == order["id"]
            ]
        return found

    first = eventually(offered_to, what="the first offer")
    # Nobody answers: after the restart the expiry still comes, and the other rider is asked.
    both = eventually(
        lambda: offered_to() if len(offered_to()) >= 2 else None,
        timeout_s=60,
        what="the next offer after the expiry",
    )
    assert both[0] == first[0] and len(set(both)) == 2
    closed = orjson.loads(store.get(keys.offer(first[0])))
    assert closed["status"] == "expired"


@pytest.mark.parametrize("how", ["order_cancelled", "order_rejected"])
def test_a_closed_order_is_refunded_and_its_coupon_given_back(
    how: str, login: Callable[[str, str], Api], store: redis.Redis, platform: Platform
) -> None:
    world = make_world(login, stock=5)
    code = one_use_coupon(world, discount_fen=300)
    order = world.customer.post("/v1/orders", json=world.order_body(qty=2, coupon_code=code)).json()
    pay(order)
    eventually(lambda: status_of(world.customer, order["id"]) == "paid", what="paid")
    fault = arm(store, how, world)
    if how == "order_cancelled":
        world.customer.post(f"/v1/orders/{order['id']}/cancel")
    else:
        world.merchant.post(f"/v1/merchant/orders/{order['id']}/reject", json={"reason": "closed"})
    assert fired(store, fault)
    total = order["amounts"]["total_fen"]
    eventually(lambda: provider_refunded(platform, order["id"]) == total, what="refunded")
    eventually(lambda: coupon_is_free_again(world, login, code), timeout_s=60, what="coupon back")
    time.sleep(1)  # anything applied twice would show by now
    assert provider_refunded(platform, order["id"]) == total
    refunds = [t for t in ledger_of(store, order["id"]) if t.kind == "refund"]
    assert sum(t.amount_on(f"customer:{world.customer_id}:refunds") for t in refunds) == total
    assert count(events_of(world.customer), order["id"], "refunded") == 1
    assert world.stock() == 5 - 1  # two back from this order, one held by the coupon's new order
    check_invariants(ledger_of(store, order["id"]))


def test_delivered_frees_the_rider_and_splits_once(
    login: Callable[[str, str], Api], store: redis.Redis
) -> None:
    world = make_world(login)
    order = paid_order(world)
    assert world.merchant.post(f"/v1/merchant/orders/{order['id']}/accept").status_code == 200
    offer = offer_for(world, order["id"])
    assert world.rider.post(f"/v1/rider/offers/{offer}/accept").status_code == 200
    assert world.merchant.post(f"/v1/merchant/orders/{order['id']}/ready").status_code == 200
    assert world.rider.post(f"/v1/rider/orders/{order['id']}/pickup").status_code == 200
    fault = arm(store, "order_delivered", world)
    world.rider.post(f"/v1/rider/orders/{order['id']}/deliver")
    assert fired(store, fault)
    eventually(
        lambda: store.hget(keys.rider(world.rider_id), "load") == "0",
        timeout_s=60,
        what="the rider freed after the restart",
    )
    assert store.smembers(keys.rider_orders(world.rider_id)) == set()
    eventually(
        lambda: [t for t in ledger_of(store, order["id"]) if t.kind == "split"], what="split"
    )
    time.sleep(1)
    splits = [t for t in ledger_of(store, order["id"]) if t.kind == "split"]
    assert len(splits) == 1
    total = order["amounts"]["total_fen"]
    (split,) = splits
    assert split.amount_on(provider_clearing()) == -total
    paid_out = sum(p.amount_fen for p in split.postings if p.amount_fen > 0)
    assert paid_out == total
    assert split.amount_on("provider:fees") == provider_fee_fen(total)
    assert split.amount_on(party_payable("rider", world.rider_id)) > 0
    assert (
        store.hget(
            keys.rider(world.rider_id), f"delivered:{time.strftime('%Y%m%d', time.gmtime())}"
        )
        == "1"
    )
    assert status_of(world.customer, order["id"]) == "delivered"


def test_a_merchant_that_never_answers_is_timed_out_and_refunded(
    login: Callable[[str, str], Api], store: redis.Redis, platform: Platform
) -> None:
    world = make_world(login, stock=4)
    code = one_use_coupon(world, discount_fen=300)
    order = world.customer.post("/v1/orders", json=world.order_body(coupon_code=code)).json()
    fault = arm(store, "order_rejected", world)
    pay(order)
    eventually(lambda: fired(store, fault), timeout_s=60, what="the crash at the deadline")
    total = order["amounts"]["total_fen"]
    eventually(lambda: provider_refunded(platform, order["id"]) == total, what="refunded")
    eventually(lambda: coupon_is_free_again(world, login, code), timeout_s=60, what="coupon back")
    view = retried(lambda: world.customer.get(f"/v1/orders/{order['id']}")).json()
    assert (view["status"], view["close_reason"]) == ("rejected", "merchant_accept_timeout")
    time.sleep(1)
    assert provider_refunded(platform, order["id"]) == total
    assert count(events_of(world.customer), order["id"], "refunded") == 1
