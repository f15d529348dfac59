"""One order from menu to doorstep, through the running Serve app, the actors and the sandbox."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.conftest import Api, eventually
from tests.e2e.world import events_of, make_world, offer_for, pay, status_of


def test_one_order_from_menu_to_doorstep(login: Callable[[str, str], Api]) -> None:
    world = make_world(login, stock=5)

    nearby = world.customer.get(
        "/v1/merchants/nearby", params={"lat": world.lat + 0.01, "lng": world.lng}
    )
    assert nearby.status_code == 200
    assert world.merchant_id in [m["id"] for m in nearby.json()["merchants"]]

    placed = world.customer.post("/v1/orders", json=world.order_body(qty=2), key="first-order")
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["status"] == "pending_payment"
    assert order["version"] == 1
    assert order["amounts"] == {
        "subtotal_fen": 3600,
        "delivery_fee_fen": 300,
        "discount_fen": 0,
        "total_fen": 3900,
    }
    assert order["payment"]["intent_id"].startswith("pi_")
    assert world.stock() == 3  # reserved at placement

    pay(order)
    eventually(lambda: status_of(world.customer, order["id"]) == "paid", what="paid")

    accepted = world.merchant.post(
        f"/v1/merchant/orders/{order['id']}/accept", json={"prep_minutes": 12}
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted"

    offer_id = offer_for(world, order["id"])
    taken = world.rider.post(f"/v1/rider/offers/{offer_id}/accept")
    assert taken.status_code == 200, taken.text
    assert taken.json()["status"] == "accepted"

    assert world.merchant.post(f"/v1/merchant/orders/{order['id']}/ready").status_code == 200
    picked = world.rider.post(f"/v1/rider/orders/{order['id']}/pickup")
    assert picked.status_code == 200, picked.text
    delivered = world.rider.post(f"/v1/rider/orders/{order['id']}/deliver")
    assert delivered.status_code == 200, delivered.text

    final = world.customer.get(f"/v1/orders/{order['id']}").json()
    assert final["status"] == "delivered"
    assert final["version"] >= 6
    assert [t["status"] for t in final["timeline"]] == [
        "pending_payment",
        "paid",
        "accepted",
        "rider_assigned",
        "ready",
        "picked_up",
        "delivered",
    ]
    assert final["rider"]["id"] == world.rider_id
    assert final["payment"]["status"] == "captured"

    lifecycle = [
        "order_placed",
        "order_paid",
        "order_accepted",
        "rider_assigned",
        "order_ready",
        "order_picked_up",
        "order_delivered",
    ]
    for party in (world.customer, world.merchant):
        seen = [e for e in events_of(party) if e["order_id"] == order["id"]]
        assert [e["type"] for e in seen] == lifecycle
        assert [e["version"] for e in seen] == list(range(1, 8))
        cursors = [e["cursor"] for e in seen]
        assert cursors == sorted(cursors, key=lambda c: tuple(map(int, c.split("-"))))
    rider_seen = [e["type"] for e in events_of(world.rider) if e["order_id"] == order["id"]]
    assert rider_seen == [
        "offer",
        "rider_assigned",
        "order_ready",
        "order_picked_up",
        "order_delivered",
    ]

    # A cursor resumes exactly after what the terminal has already seen.
    customer_events = events_of(world.customer)
    middle = customer_events[2]["cursor"]
    assert events_of(world.customer, middle) == customer_events[3:]
    last = customer_events[-1]["cursor"]
    assert events_of(world.customer, last) == []


def test_every_party_reads_the_order_others_do_not(login: Callable[[str, str], Api]) -> None:
    world = make_world(login)
    order = world.customer.post("/v1/orders", json=world.order_body()).json()
    assert world.merchant.get(f"/v1/orders/{order['id']}").status_code == 200
    assert world.admin.get(f"/v1/orders/{order['id']}").status_code == 200
    stranger = login("customer", "someone-else")
    hidden = stranger.get(f"/v1/orders/{order['id']}")
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "order_not_found"
    listed = world.customer.get("/v1/orders").json()["orders"]
    assert [o["id"] for o in listed] == [order["id"]]
    assert stranger.get("/v1/orders").json()["orders"] == []


def test_nearby_lists_only_merchants_that_deliver_here_nearest_first(
    login: Callable[[str, str], Api],
) -> None:
    world = make_world(login)
    polygon_id = f"{world.merchant_id}-poly"
    shop = world.admin.post(
        "/v1/merchants",
        json={
            "id": polygon_id,
            "name": "Corner Shop",
            "lat": world.lat + 0.004,
            "lng": world.lng,
            "delivery": {
                "polygon": [
                    [world.lat - 0.01, world.lng - 0.01],
                    [world.lat + 0.02, world.lng - 0.01],
                    [world.lat + 0.02, world.lng + 0.01],
                    [world.lat - 0.01, world.lng + 0.01],
                ]
            },
        },
    )
    assert shop.status_code == 201, shop.text
    here = world.customer.get(
        "/v1/merchants/nearby", params={"lat": world.lat + 0.01, "lng": world.lng}
    ).json()["merchants"]
    ids = [m["id"] for m in here]
    assert ids[:2] == [polygon_id, world.merchant_id]
    assert here[0]["distance_m"] < here[1]["distance_m"]
    # 2.5 km east: inside the radius of the first merchant, outside the shop's polygon.
    east = world.customer.get(
        "/v1/merchants/nearby", params={"lat": world.lat, "lng": world.lng + 0.026}
    ).json()["merchants"]
    east_ids = [m["id"] for m in east]
    assert world.merchant_id in east_ids
    assert polygon_id not in east_ids


def test_auto_accept_merchant_and_coupon(login: Callable[[str, str], Api]) -> None:
    world = make_world(login, accept_mode="auto")
    code = f"LUNCH-{world.merchant_id}"
    coupon = world.admin.post(
        "/v1/admin/coupons",
        json={
            "code": code,
            "discount_fen": 500,
            "min_spend_fen": 2000,
            "total": 1,
            "per_customer_limit": 1,
            "starts_at": "2020-01-01T00:00:00Z",
            "ends_at": "2099-01-01T00:00:00Z",
        },
    )
    assert coupon.status_code == 201, coupon.text
    too_small = world.customer.post("/v1/orders", json=world.order_body(qty=1, coupon_code=code))
    assert too_small.status_code == 409
    assert too_small.json()["error"]["code"] == "coupon_unavailable"

    placed = world.customer.post("/v1/orders", json=world.order_body(qty=2, coupon_code=code))
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["amounts"]["discount_fen"] == 500
    assert order["amounts"]["total_fen"] == 3600 + 300 - 500
    again = world.customer.post("/v1/orders", json=world.order_body(qty=2, coupon_code=code))
    assert again.status_code == 409  # the only use is taken

    pay(order)
    eventually(lambda: status_of(world.customer, order["id"]) == "accepted", what="auto-accept")
    offer_for(world, order["id"])
