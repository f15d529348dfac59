"""Customers' addresses and phone numbers are sealed at rest: Redis holds ciphertext,
the API gives them back to the order's parties only."""

from __future__ import annotations

from collections.abc import Callable

import redis

from storage import keys
from tests.e2e.conftest import Api, eventually, unique
from tests.e2e.world import make_world, offer_for, pay, status_of

ADDRESS = "7 Plum Blossom Lane, Flat 1204"
PHONE = "+86 138 0013 8000"


def test_an_address_and_phone_are_stored_sealed_and_read_back_by_the_parties_only(
    login: Callable[[str, str], Api], store: redis.Redis
) -> None:
    world = make_world(login)
    body = world.order_body()
    body["delivery"] |= {"address": ADDRESS, "phone": PHONE}
    placed = world.customer.post("/v1/orders", json=body)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["delivery"]["address"] == ADDRESS
    assert order["delivery"]["phone"] == PHONE

    # Nothing in Redis holds them in clear: not the order, not any stream or index.
    raw = store.hgetall(keys.order(order["id"]))
    assert raw and ADDRESS not in str(raw) and PHONE not in str(raw)
    assert "sealed:v1:" in raw["json"]
    for key in store.scan_iter(count=1000):
        kind = store.type(key)
        if kind == "string":
            dump = str(store.get(key))
        elif kind == "hash":
            dump = str(store.hgetall(key))
        elif kind == "stream":
            dump = str(store.xrange(key))
        else:
            continue
        assert ADDRESS not in dump and PHONE not in dump, key

    pay(order)
    eventually(lambda: status_of(world.customer, order["id"]) == "paid", what="paid")
    assert world.merchant.post(f"/v1/merchant/orders/{order['id']}/accept").status_code == 200
    offer_id = offer_for(world, order["id"])
    assert world.rider.post(f"/v1/rider/offers/{offer_id}/accept").status_code == 200
    assert world.customer.get(f"/v1/orders/{order['id']}").json()["rider"]["id"] == world.rider_id
    # The customer, the merchant and the rider of the order read them in clear.
    for party in (world.customer, world.merchant, world.rider):
        seen = party.get(f"/v1/orders/{order['id']}").json()["delivery"]
        assert (seen["address"], seen["phone"]) == (ADDRESS, PHONE)
    # Anybody else does not even learn that the order exists.
    stranger = login("customer", unique("c"))
    assert stranger.get(f"/v1/orders/{order['id']}").status_code == 404


def test_a_phone_number_that_is_not_one_is_refused(login: Callable[[str, str], Api]) -> None:
    world = make_world(login)
    body = world.order_body()
    body["delivery"]["phone"] = "call me maybe"
    refused = world.customer.post("/v1/orders", json=body)
    assert refused.status_code == 422, refused.text
