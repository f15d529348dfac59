"""Local shops: a merchant kind with no preparation time, opening hours honoured by
placement, and menus read a page at a time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import commands as c
from domain import events as e
from domain import reactions as r
from domain.errors import DomainError
from domain.geo import Point, RadiusRange
from domain.hours import OpeningHours
from domain.merchants import (
    MenuItem,
    Merchant,
    Requested,
    accepting,
    folded,
    menu_page,
    price_order,
)
from domain.orders import Order, OrderStatus, decide, evolve, place, ready_at
from domain.pricing import Amounts, DeliveryTariff, Line

CHINA = 480
# Monday 2025-03-03 10:00 in China.
MONDAY_10 = datetime(2025, 3, 3, 2, 0, tzinfo=UTC)
HERE = Point(30.2590, 120.1490)
DOOR = Point(30.2650, 120.1490)
DAYTIME = OpeningHours.from_dict({day: [["09:00", "21:00"]] for day in ("mon", "tue")})
SHOP = Merchant(
    id="m-shop",
    name="Corner Mart",
    location=HERE,
    delivery=RadiusRange(3000),
    prep_minutes=0,
    kind="shop",
    opening_hours=DAYTIME,
)
RESTAURANT = Merchant(id="m-food", name="Noodles", location=HERE, delivery=RadiusRange(3000))
MENU = {"water": MenuItem("water", "Mineral Water", 200)}


def priced(merchant: Merchant, at: datetime) -> tuple[tuple[Line, ...], Amounts]:
    return price_order(
        merchant, MENU, [Requested("water", 2)], DOOR, DeliveryTariff(), None, at, CHINA
    )


# ---------------------------------------------------------------- the profile


def test_a_profile_from_before_kinds_is_an_always_open_restaurant() -> None:
    old = {"id": "m-1", "name": "Tea", "lat": 30.0, "lng": 120.0, "delivery": {"radius_m": 2000}}
    merchant = Merchant.from_dict(old)
    assert merchant.kind == "restaurant"
    assert merchant.opening_hours is None
    assert not merchant.ready_on_accept
    assert merchant.open_at(MONDAY_10 + timedelta(hours=14), CHINA)


def test_a_shop_round_trips_and_prepares_nothing() -> None:
    wire = SHOP.as_dict()
    assert wire["kind"] == "shop"
    assert wire["opening_hours"] == {"mon": [["09:00", "21:00"]], "tue": [["09:00", "21:00"]]}
    assert Merchant.from_dict(wire) == SHOP
    # Onboarded with a preparation time, a shop still has none.
    assert Merchant.from_dict({**wire, "prep_minutes": 25}).prep_minutes == 0
    assert SHOP.ready_on_accept


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(DomainError) as refused:
        Merchant.from_dict({**SHOP.as_dict(), "kind": "florist"})
    assert refused.value.code == "invalid_request"


# ---------------------------------------------------------------- placement and hours


def test_placement_inside_the_hours_is_priced() -> None:
    lines, amounts = priced(SHOP, MONDAY_10)
    assert lines == (Line("water", "Mineral Water", 2, 200),)
    assert amounts.subtotal_fen == 400


def test_placement_outside_the_hours_is_merchant_closed_with_the_next_opening() -> None:
    evening = MONDAY_10 + timedelta(hours=11, minutes=30)  # Monday 21:30 in China
    with pytest.raises(DomainError) as refused:
        priced(SHOP, evening)
    assert refused.value.code == "merchant_closed"
    # Tuesday 09:00 in China is Tuesday 01:00 UTC.
    assert refused.value.details == {
        "merchant_id": "m-shop",
        "next_opening_at": "2025-03-04T01:00:00+00:00",
    }


def test_a_merchant_switched_off_is_unavailable_before_its_hours_are_asked() -> None:
    with pytest.raises(DomainError) as refused:
        priced(replace(SHOP, open=False), MONDAY_10 + timedelta(hours=12))
    assert refused.value.code == "merchant_unavailable"


def test_a_restaurant_without_hours_takes_orders_at_any_hour() -> None:
    for hour in range(0, 24 * 7, 5):
        priced(RESTAURANT, MONDAY_10 + timedelta(hours=hour))


# ---------------------------------------------------------------- ready on accept


def paid_order() -> Order:
    command = c.PlaceOrder(
        at=MONDAY_10,
        order_id="o1_shop",
        customer_id="c-1",
        merchant_id=SHOP.id,
        lines=(Line("water", "Mineral Water", 2, 200),),
        amounts=Amounts(subtotal_fen=400, delivery_fee_fen=300, discount_fen=0, total_fen=700),
        pickup=HERE,
        dropoff=DOOR,
        address="1 Lakeside Rd",
    )
    order = place(command)
    for event in decide(order, c.MarkPaid(at=MONDAY_10, intent_id="pi", amount_fen=700)):
        order = evolve(order, event)
    return order


def test_a_shop_accepts_with_no_preparation_time_whatever_it_sends() -> None:
    sent = c.AcceptOrder(at=MONDAY_10, prep_minutes=30)
    assert accepting(SHOP, sent) == replace(sent, prep_minutes=0, ready_on_accept=True)
    assert accepting(SHOP, c.AcceptOrder(at=MONDAY_10)).ready_on_accept


def test_a_restaurant_accepts_at_its_usual_time_unless_told() -> None:
    assert accepting(RESTAURANT, c.AcceptOrder(at=MONDAY_10)).prep_minutes == 15
    told = c.AcceptOrder(at=MONDAY_10, prep_minutes=7)
    assert accepting(RESTAURANT, told) == told


def test_accepting_a_shop_order_makes_it_ready_one_version_each() -> None:
    order = paid_order()
    assert order.status == OrderStatus.PAID
    at = MONDAY_10 + timedelta(minutes=1)
    events = decide(order, accepting(SHOP, c.AcceptOrder(at=at)))
    assert [type(ev) for ev in events] == [e.OrderAccepted, e.OrderReady]
    assert [ev.version for ev in events] == [3, 4]
    accepted = evolve(order, events[0])
    assert accepted.prep_minutes == 0
    # Dispatch is asked with the acceptance, the goods ready as it is.
    (find, ready_net) = r.reactions(accepted, events[0], SHOP)
    assert isinstance(find, r.FindRider)
    assert find.request.ready_at == at == ready_at(accepted)
    assert ready_net == r.ReadyOnAccept(accepted.id, SHOP.id)
    ready = evolve(accepted, events[1])
    assert ready.status == OrderStatus.READY
    assert [t.status for t in ready.timeline] == ["pending_payment", "paid", "accepted", "ready"]
    assert r.reactions(ready, events[1], SHOP) == []
    # Accepted again (a retry), it is refused like any order no longer paid.
    with pytest.raises(DomainError) as refused:
        decide(ready, accepting(SHOP, c.AcceptOrder(at=at)))
    assert refused.value.code == "invalid_transition"


def test_a_restaurant_order_is_accepted_alone() -> None:
    order = paid_order()
    events = decide(order, accepting(RESTAURANT, c.AcceptOrder(at=MONDAY_10)))
    assert [type(ev) for ev in events] == [e.OrderAccepted]
    accepted = evolve(order, events[0])
    assert [type(i) for i in r.reactions(accepted, events[0], RESTAURANT)] == [r.FindRider]


def test_the_ready_follow_up_crosses_the_mailbox() -> None:
    intent = r.ReadyOnAccept("o1_shop", "m-shop")
    assert r.from_wire(r.to_wire(intent)) == intent


# ---------------------------------------------------------------- menu pages


INDEX = sorted(
    (f"sku{n:04d}", folded(name))
    for n, name in enumerate(
        ["Mineral Water", "Sparkling WATER", "Green Tea", "Beer", "Watermelon", "Rice"] * 50
    )
)


def test_a_menu_is_paged_in_id_order_to_its_end() -> None:
    seen: list[str] = []
    cursor = None
    while True:
        page = menu_page(INDEX, None, cursor, 120)
        assert page.total == 300
        seen += page.item_ids
        cursor = page.cursor
        if cursor is None:
            break
        assert cursor == page.item_ids[-1]
    assert seen == [item_id for item_id, _ in INDEX]


def test_search_is_a_substring_of_the_name_in_any_case() -> None:
    page = menu_page(INDEX, "wAtEr", None, 1000)
    # Mineral Water, Sparkling WATER and Watermelon, 50 of each.
    assert page.total == 150 and len(page.item_ids) == 150 and page.cursor is None
    assert menu_page(INDEX, "MELON", None, 10).total == 50
    assert menu_page(INDEX, "coffee", None, 10) == menu_page(INDEX, "coffee", "sku0001", 10)
    assert menu_page(INDEX, "coffee", None, 10).item_ids == []


def test_a_cursor_past_the_end_is_an_empty_last_page() -> None:
    page = menu_page(INDEX, None, "zzz", 10)
    assert (page.item_ids, page.total, page.cursor) == ([], 300, None)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.text("ab", min_size=1, max_size=3), st.text("aAbB ", max_size=6)),
        unique_by=lambda t: t[0],
    ),
    st.one_of(st.none(), st.text("aAbB", max_size=2)),
    st.integers(1, 5),
)
def test_pages_cover_every_match_once(
    items: list[tuple[str, str]], q: str | None, limit: int
) -> None:
    index = sorted((item_id, folded(name)) for item_id, name in items)
    expected = [i for i, name in index if not q or folded(q) in name]
    seen: list[str] = []
    cursor = None
    for _ in range(len(index) + 1):
        page = menu_page(index, q, cursor, limit)
        assert page.total == len(expected)
        assert len(page.item_ids) <= limit
        seen += page.item_ids
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == expected
