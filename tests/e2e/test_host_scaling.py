"""Hosts added at run time on the running platform (`o2o hosts scale` / `dedicate`, real
Ray actors): orders placed and paid while the layout changes all go on, and each
entity is served by the host the new layout names."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray
import redis

from actors.directory import NAMESPACE, host_name
from actors.registry import add_host, dedicate_host
from domain.orders import MERCHANT_ACCEPT_TIMEOUT
from storage import keys
from tests.e2e.conftest import Api, eventually, owner_of
from tests.e2e.world import World, make_world, pay, status_of


def placement(kind: str, index: int) -> dict[str, Any]:
    handle = ray.get_actor(host_name(kind, index), namespace=NAMESPACE)
    where: dict[str, Any] = ray.get(handle.placement.remote(), timeout=30)
    return where


@pytest.fixture
def back_to_one_host() -> Iterator[None]:
    # The rest of the session runs on one host per kind, as it started.
    yield
    asyncio.run(add_host("merchant", 1))


def paid_and_going_on(customer: Api, order_id: str) -> bool:
    order = customer.get(f"/v1/orders/{order_id}").json()
    if order["status"] == "rejected":
        return bool(
            order["close_reason"] == MERCHANT_ACCEPT_TIMEOUT
            and order["payment"]["refunded_fen"] == order["paid_fen"] > 0
        )
    return order["status"] == "paid"


def test_adding_and_dedicating_merchant_hosts_under_load(
    login: Callable[[str, str], Api], store: redis.Redis, back_to_one_host: None
) -> None:
    worlds: list[World] = [make_world(login, stock=500) for _ in range(4)]
    placed: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def customers(world: World) -> None:
        # Bounded: at most 60 orders per world, and no longer than the test's stop.
        for n in range(60):
            if stop.is_set():
                return
            answer = world.customer.post(
                "/v1/orders",
                json=world.order_body(),
                key=f"scale-{world.merchant_id}-{n}",
            )
            if answer.status_code == 201:
                order = answer.json()
                pay(order)
                placed.append(order["id"])
            else:
                refused.append(f"{answer.status_code} {answer.text[:120]}")

    threads = [threading.Thread(target=customers, args=(w,), daemon=True) for w in worlds]
    for thread in threads:
        thread.start()
    try:
        two = asyncio.run(add_host("merchant", 2))
        assert two.count == 2
        hot = worlds[0].merchant_id
        dedicated = asyncio.run(dedicate_host("merchant", hot))
        assert dedicated.pins == {keys.shard_of(hot): 2}
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)

    # No 5xx and no refusal while hosts were added: at most a 503 to retry is allowed.
    assert [r for r in refused if not r.startswith("503")] == []
    assert placed, "orders were placed while the layout changed"
    assert len(placed) == len(set(placed))

    # Each host serves what the layout gives it; the dedicated host only the hot shard.
    eventually(lambda: placement("merchant", 2)["epoch"] == dedicated.epoch, what="adopted")
    assert placement("merchant", 2)["shards"] == [keys.shard_of(worlds[0].merchant_id)]
    owners = {w.merchant_id: owner_of(store, "merchant", w.merchant_id) for w in worlds}
    assert owners[worlds[0].merchant_id] == 2
    for index in range(3):
        assert placement("merchant", index)["epoch"] == dedicated.epoch

    # Every order placed during the change is paid and goes on under its new host: its
    # merchant may accept it, or, one that waited past the session's accept deadline
    # while the layout changed on a slow machine, its host rejected and refunded it.
    by_world = {w.merchant_id: w for w in worlds}
    for order_id in placed:
        merchant_id = str(store.hget(keys.order(order_id), "merchant_id"))
        world = by_world[merchant_id]
        eventually(
            lambda w=world, o=order_id: paid_and_going_on(w.customer, o),
            what=f"{order_id} paid (it is {store.hgetall(keys.order(order_id)).get('status')}, "
            f"owner {owner_of(store, 'merchant', merchant_id)})",
        )
    accepted = 0
    for world in worlds:
        merchant_of = {o: str(store.hget(keys.order(o), "merchant_id")) for o in placed}
        mine = [o for o in placed if merchant_of[o] == world.merchant_id]
        waiting = [o for o in mine if status_of(world.customer, o) == "paid"]
        if not waiting:
            continue
        answer = world.merchant.post(f"/v1/merchant/orders/{waiting[-1]}/accept")
        assert answer.status_code == 200, answer.text
        assert status_of(world.customer, waiting[-1]) == "accepted"
        accepted += 1
    assert accepted, "a merchant accepted an order placed during the change"
