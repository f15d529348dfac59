"""Cancel before acceptance and merchant reject refund through the sandbox and restore stock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from cluster.launcher import Platform
from tests.e2e.conftest import Api, eventually
from tests.e2e.world import events_of, make_world, pay, status_of


def provider_view(platform: Platform, order_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{platform.settings.sandbox_url}/v1/orders/{order_id}", timeout=10)
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def test_cancel_before_payment_restores_stock(login: Callable[[str, str], Api]) -> None:
    world = make_world(login, stock=4)
    order = world.customer.post("/v1/orders", json=world.order_body(qty=3)).json()
    assert world.stock() == 1
    cancelled = world.customer.post(
        f"/v1/orders/{order['id']}/cancel", json={"reason": "changed mind"}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert world.stock() == 4
    again = world.customer.post(f"/v1/orders/{order['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_transition"


def test_cancel_after_payment_refunds_in_full(
    login: Callable[[str, str], Api], platform: Platform
) -> None:
    world = make_world(login, stock=4)
    order = world.customer.post("/v1/orders", json=world.order_body(qty=2)).json()
    pay(order)
    eventually(lambda: status_of(world.customer, order["id"]) == "paid", what="paid")
    cancelled = world.customer.post(f"/v1/orders/{order['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert world.stock() == 4
    total = order["amounts"]["total_fen"]
    eventually(lambda: provider_view(platform, order["id"])["refunded_fen"] == total, what="refund")
    refunds = eventually(
        lambda: [e for e in events_of(world.customer) if e["type"] == "refunded"], what="event"
    )
    assert refunds[0]["order_id"] == order["id"]
    assert refunds[0]["data"]["amount_fen"] == total
    view = world.customer.get(f"/v1/orders/{order['id']}").json()
    assert view["payment"]["refunded_fen"] == total


def test_merchant_reject_refunds_and_restores_stock(
    login: Callable[[str, str], Api], platform: Platform
) -> None:
    world = make_world(login, stock=3)
    order = world.customer.post("/v1/orders", json=world.order_body(qty=3)).json()
    assert world.stock() == 0
    sold_out = world.customer.post("/v1/orders", json=world.order_body(qty=1))
    assert sold_out.status_code == 409
    assert sold_out.json()["error"]["code"] == "out_of_stock"
    pay(order)
    eventually(lambda: status_of(world.merchant, order["id"]) == "paid", what="paid")
    rejected = world.merchant.post(
        f"/v1/merchant/orders/{order['id']}/reject", json={"reason": "kitchen closed"}
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert world.stock() == 3
    total = order["amounts"]["total_fen"]
    eventually(lambda: provider_view(platform, order["id"])["refunded_fen"] == total, what="refund")
    types = [e["type"] for e in events_of(world.customer) if e["order_id"] == order["id"]]
    assert types[:3] == ["order_placed", "order_paid", "order_rejected"]


def test_no_cancel_once_the_merchant_accepted(login: Callable[[str, str], Api]) -> None:
    world = make_world(login)
    order = world.customer.post("/v1/orders", json=world.order_body()).json()
    pay(order)
    eventually(lambda: status_of(world.customer, order["id"]) == "paid", what="paid")
    assert world.merchant.post(f"/v1/merchant/orders/{order['id']}/accept").status_code == 200
    late = world.customer.post(f"/v1/orders/{order['id']}/cancel")
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "invalid_transition"
    stale = world.merchant.post(
        f"/v1/merchant/orders/{order['id']}/ready", json={"expected_version": 2}
    )
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "stale_version"
