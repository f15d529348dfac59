"""A merchant that never answers: the platform rejects the paid order, refunds it in full,
gives back its stock and coupon, and tells every terminal."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from cluster.launcher import Platform
from tests.e2e.conftest import Api, eventually, unique
from tests.e2e.world import events_of, make_world, one_use_coupon, pay, status_of


def test_an_unanswered_paid_order_is_rejected_and_refunded_at_its_deadline(
    login: Callable[[str, str], Api], platform: Platform
) -> None:
    world = make_world(login, stock=5)
    code = one_use_coupon(world, discount_fen=500)
    order = world.customer.post("/v1/orders", json=world.order_body(qty=2, coupon_code=code)).json()
    assert world.stock() == 3
    pay(order)
    eventually(lambda: status_of(world.customer, order["id"]) == "paid", what="paid")

    # The back office sees by when it must answer.
    seen = world.merchant.get(f"/v1/orders/{order['id']}").json()
    assert seen["accept_deadline"] is not None
    timeout = platform.settings.merchant_accept_timeout_s
    started = time.monotonic()
    eventually(
        lambda: status_of(world.customer, order["id"]) == "rejected",
        timeout_s=timeout + 15,
        what="rejected at the deadline",
    )
    assert time.monotonic() - started >= timeout - 3  # not before its time
    view = world.customer.get(f"/v1/orders/{order['id']}").json()
    assert view["close_reason"] == "merchant_accept_timeout"
    total = order["amounts"]["total_fen"]
    eventually(
        lambda: (
            world.customer.get(f"/v1/orders/{order['id']}").json()["payment"]["refunded_fen"]
            == total
        ),
        what="refunded in full",
    )
    provider = httpx.get(f"{platform.settings.sandbox_url}/v1/orders/{order['id']}", timeout=10)
    assert provider.json()["refunded_fen"] == total
    assert world.stock() == 5
    # The coupon's one use is free again: another customer can take it.
    other = login("customer", unique("c"))
    again = other.post("/v1/orders", json=world.order_body(coupon_code=code))
    assert again.status_code == 201, again.text

    for party in (world.customer, world.merchant):
        kinds = [e["type"] for e in events_of(party) if e["order_id"] == order["id"]]
        assert "order_rejected" in kinds
    refunds = [e for e in events_of(world.customer) if e["type"] == "refunded"]
    assert [e["data"]["amount_fen"] for e in refunds] == [total]
    # Rejected once: a late answer is refused and changes nothing.
    late = world.merchant.post(f"/v1/merchant/orders/{order['id']}/accept")
    assert late.status_code == 409
