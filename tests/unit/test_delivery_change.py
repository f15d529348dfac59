"""Moving an order's door: who may, until when, at which fee, and what the money does."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from domain import commands as c
from domain import events as e
from domain import ledger
from domain import reactions as r
from domain.errors import DomainError
from domain.geo import Point, RadiusRange
from domain.merchants import Merchant, delivery_fee_to
from domain.orders import Order, OrderStatus, audience, authorize, decide, evolve, place
from domain.payments import provider_fee_fen
from domain.pricing import Amounts, DeliveryTariff, Line

T0 = datetime(2025, 3, 1, 11, 30, tzinfo=UTC)
SHOP = Point(30.2590, 120.1490)
# 5.6 km north of the shop: the tariff's base 300 covers 3 km, then 100 a started km.
FAR = Point(30.2590 + 0.050, 120.1490)
NEAR = Point(30.2590 + 0.009, 120.1490)
NEAR_TOO = Point(30.2590 + 0.010, 120.1490)
TARIFF = DeliveryTariff()
MERCHANT = Merchant("m-1", "Lakeside Noodles", SHOP, RadiusRange(8000))
LINES = (Line("noodles", "Noodles", 2, 1800),)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def fee(point: Point) -> int:
    quoted = delivery_fee_to(MERCHANT, point, TARIFF)
    assert quoted is not None
    return quoted


def placed(dropoff: Point = FAR, discount: int = 0) -> Order:
    delivery = fee(dropoff)
    amounts = Amounts(3600, delivery, discount, 3600 + delivery - discount)
    return place(
        c.PlaceOrder(
            at=T0,
            order_id="o1_x",
            customer_id="c-1",
            merchant_id="m-1",
            lines=LINES,
            amounts=amounts,
            pickup=SHOP,
            dropoff=dropoff,
            address="9 Far Lane",
            phone="+86 138 0000 0000",
        )
    )


def apply(order: Order, command: c.Command) -> Order:
    for event in decide(order, command):
        order = evolve(order, event)
    return order


def paid(order: Order) -> Order:
    return apply(order, c.MarkPaid(at=at(1), intent_id="pi-1", amount_fen=order.amounts.total_fen))


def move(to: Point, **extra: object) -> c.ChangeDelivery:
    quoted = delivery_fee_to(MERCHANT, to, TARIFF)
    return c.ChangeDelivery(at=at(5), dropoff=to, delivery_fee_fen=quoted, **extra)  # type: ignore[arg-type]


def refused(order: Order, command: c.Command) -> DomainError:
    with pytest.raises(DomainError) as err:
        decide(order, command)
    return err.value


def test_the_fee_is_placements_quote_and_none_outside_the_range() -> None:
    assert fee(NEAR) == 300
    assert fee(FAR) == 600
    assert delivery_fee_to(MERCHANT, Point(30.2590 + 0.09, 120.1490), TARIFF) is None


def test_a_cheaper_door_of_a_paid_order_is_refunded_the_difference() -> None:
    order = paid(placed())
    (event,) = decide(order, move(NEAR, address="1 Near Rd"))
    assert isinstance(event, e.DeliveryChanged)
    assert (event.version, event.delivery_fee_fen, event.refund_fen) == (3, 300, 300)
    assert event.total_fen == 3900
    after = evolve(order, event)
    assert (after.dropoff, after.address, after.phone) == (NEAR, "1 Near Rd", order.phone)
    assert after.amounts == Amounts(3600, 300, 0, 3900)
    assert (after.paid_fen, after.delivery_refunded_fen, after.held_fen) == (4200, 300, 3900)
    assert after.timeline[-1].status == "delivery_changed"
    assert after.status == OrderStatus.PAID
    # Its refund goes through the payment host, once by its number.
    assert r.reactions(after, event, MERCHANT) == [
        r.Refund(after.id, 300, "o1_x-d3", r.DELIVERY_CHANGED)
    ]
    assert Order.from_dict(after.as_dict()) == after


def test_a_door_at_the_same_fee_moves_at_any_status_before_pickup_and_refunds_nothing() -> None:
    order = placed(NEAR)
    for step in (
        None,
        c.MarkPaid(at=at(1), intent_id="pi-1", amount_fen=order.amounts.total_fen),
        c.AcceptOrder(at=at(2), prep_minutes=10),
        c.AssignRider(at=at(3), rider_id="r-1"),
        c.MarkReady(at=at(4)),
    ):
        if step is not None:
            order = apply(order, step)
        (event,) = decide(order, move(NEAR_TOO if order.dropoff == NEAR else NEAR))
        assert isinstance(event, e.DeliveryChanged) and event.refund_fen == 0
        assert r.reactions(evolve(order, event), event, MERCHANT) == []
        order = evolve(order, event)


def test_the_customer_merchant_and_rider_all_hear_of_it() -> None:
    order = paid(placed())
    order = apply(order, c.AcceptOrder(at=at(2), prep_minutes=10))
    order = apply(order, c.AssignRider(at=at(3), rider_id="r-1"))
    (event,) = decide(order, move(NEAR))
    assert audience(evolve(order, event), event) == [
        ("customer", "c-1"),
        ("merchant", "m-1"),
        ("rider", "r-1"),
        ("ops", "all"),
    ]


@pytest.mark.parametrize("status", ["picked_up", "delivered"])
def test_after_pickup_the_door_is_fixed(status: str) -> None:
    order = paid(placed())
    for step in (
        c.AcceptOrder(at=at(2), prep_minutes=10),
        c.AssignRider(at=at(3), rider_id="r-1"),
        c.MarkReady(at=at(4)),
        c.PickUp(at=at(5), rider_id="r-1"),
        c.Deliver(at=at(6), rider_id="r-1"),
    ):
        order = apply(order, step)
        if order.status == status:
            break
    assert refused(order, move(NEAR)).code == "already_picked_up"


def test_a_closed_order_cannot_move() -> None:
    order = apply(placed(), c.CancelOrder(at=at(1), reason="no", by="customer"))
    assert refused(order, move(NEAR)).code == "invalid_transition"


def test_outside_the_merchants_range_is_refused() -> None:
    order = paid(placed())
    command = c.ChangeDelivery(at=at(5), dropoff=Point(31.0, 120.1490), delivery_fee_fen=None)
    err = refused(order, command)
    assert err.code == "outside_delivery_range"


def test_a_dearer_door_is_refused_paid_or_not() -> None:
    for order in (placed(NEAR), paid(placed(NEAR))):
        err = refused(order, move(FAR))
        assert err.code == "fee_increase_not_supported"
        assert err.details == {"delivery_fee_fen": 600, "current_delivery_fee_fen": 300}


def test_a_cheaper_door_before_payment_is_refused_the_pay_link_is_for_the_placed_total() -> None:
    err = refused(placed(), move(NEAR))
    assert err.code == "fee_change_before_payment"


def test_a_fee_other_than_the_one_the_customer_saw_is_fee_changed() -> None:
    order = paid(placed())
    err = refused(order, move(NEAR, expected_delivery_fee_fen=600))
    assert err.code == "fee_changed"
    assert err.details["delivery_fee_fen"] == 300
    (event,) = decide(order, move(NEAR, expected_delivery_fee_fen=300))
    assert isinstance(event, e.DeliveryChanged)


def test_the_same_door_again_changes_nothing_and_a_stale_version_is_refused() -> None:
    order = paid(placed())
    order = apply(order, move(NEAR, address="1 Near Rd"))
    assert decide(order, move(NEAR, address="1 Near Rd")) == []
    assert decide(order, move(NEAR)) == []  # the address left out stays
    assert refused(order, move(NEAR_TOO, expected_version=2)).code == "stale_version"


def test_only_its_customer_moves_the_door() -> None:
    order = paid(placed())
    command = move(NEAR)
    authorize(order, command, "customer", "c-1")
    with pytest.raises(DomainError) as hidden:
        authorize(order, command, "customer", "c-2")
    assert hidden.value.code == "order_not_found"
    for role, who in (("merchant", "m-1"), ("rider", "r-1"), ("admin", "ops")):
        with pytest.raises(DomainError) as wrong:
            authorize(order, command, role, who)
        assert wrong.value.code == "forbidden"


def test_closing_after_a_cheaper_door_refunds_only_what_is_still_held() -> None:
    order = apply(paid(placed()), move(NEAR))
    (cancelled,) = decide(order, c.CancelOrder(at=at(6), reason="no", by="customer"))
    assert isinstance(cancelled, e.OrderCancelled) and cancelled.refund_fen == 3900
    (rejected,) = decide(order, c.RejectOrder(at=at(6), reason="closed"))
    assert isinstance(rejected, e.OrderRejected) and rejected.refund_fen == 3900


# -- the money: the split shares the price as it is now ---------------------------------

FEE = provider_fee_fen(4200)
RIDER = ledger.party_payable("rider", "r-1")
MERCHANT_PAYABLE = ledger.party_payable("merchant", "m-1")


def split(refunded: int) -> ledger.Transaction:
    return ledger.split_capture(
        "o1_x",
        "m-1",
        "r-1",
        Amounts(3600, 300, 0, 3900),
        4200,
        FEE,
        0,
        ledger.DEFAULT_PLAN,
        T0,
        refunded_fen=refunded,
    )


def test_after_a_cheaper_door_the_rider_gets_the_new_fee_and_the_merchant_its_full_share() -> None:
    txn = split(refunded=300)
    assert txn.amount_on(RIDER) == 300
    assert txn.amount_on(ledger.platform_revenue()) == 648  # 18% of the goods
    assert txn.amount_on(MERCHANT_PAYABLE) == 3900 - FEE - 648 - 300
    assert txn.amount_on(ledger.provider_clearing()) == -(4200 - 300)
    capture = ledger.capture("o1_x", "c-1", 4200, T0)
    cut = ledger.refund("o1_x-d3", "o1_x", "c-1", 300, 4200, 0, None, T0)
    ledger.check_invariants([capture, cut, txn])
    assert ledger.left_in_clearing([capture, cut, txn], "o1_x") == 0


def test_a_cut_whose_refund_lands_after_the_split_comes_out_of_clearing() -> None:
    capture = ledger.capture("o1_x", "c-1", 4200, T0)
    txn = split(refunded=0)
    assert txn.amount_on(ledger.provider_clearing()) == -(4200 - 300)
    assert txn.amount_on(RIDER) == 300
    history = [capture, txn]
    assert ledger.left_in_clearing(history, "o1_x") == 300
    held = ledger.order_holdings(history, "o1_x")
    late = ledger.refund(
        "o1_x-d3", "o1_x", "c-1", 300, 4200, 0, held, T0, ledger.left_in_clearing(history, "o1_x")
    )
    assert late.amount_on(ledger.provider_clearing()) == -300
    assert late.amount_on(RIDER) == 0 and late.amount_on(MERCHANT_PAYABLE) == 0
    ledger.check_invariants([*history, late])
    assert ledger.balances([*history, late]).get(ledger.provider_clearing(), 0) == 0


def test_a_further_refund_after_the_cut_is_taken_back_from_the_parties() -> None:
    capture = ledger.capture("o1_x", "c-1", 4200, T0)
    cut = ledger.refund("o1_x-d3", "o1_x", "c-1", 300, 4200, 0, None, T0)
    txn = split(refunded=300)
    history = [capture, cut, txn]
    held = ledger.order_holdings(history, "o1_x")
    more = ledger.refund("o1_x-a1", "o1_x", "c-1", 1000, 4200, 300, held, T0, 0)
    assert more.amount_on(ledger.provider_clearing()) == 0
    assert sum(p.amount_fen for p in more.postings if ledger.is_party_account(p.account)) < 0
    ledger.check_invariants([*history, more])


def test_a_cancelled_order_after_a_cut_still_books_only_the_fee() -> None:
    # Refunded in full (the cut, then what was still held): the split books the fee only.
    txn = split(refunded=4200)
    assert txn.amount_on(ledger.provider_clearing()) == 0
    assert txn.amount_on(ledger.provider_fees()) == FEE
    assert txn.amount_on(ledger.platform_revenue()) == -FEE


def test_an_underpaid_order_is_still_refused() -> None:
    with pytest.raises(DomainError) as err:
        ledger.split_capture(
            "o1_x", "m-1", "r-1", Amounts(3600, 600, 0, 4200), 3900, 0, 0, ledger.DEFAULT_PLAN, T0
        )
    assert err.value.code == "amount_mismatch"


def test_the_event_carries_what_a_device_needs_to_show_the_new_door() -> None:
    order = paid(placed())
    (event,) = decide(order, move(NEAR, address="1 Near Rd", phone="+86 139 0000 0000"))
    wire = event.as_dict()
    assert wire["type"] == "delivery_changed" and wire["order_id"] == "o1_x"
    assert wire["data"] == {
        "lat": NEAR.lat,
        "lng": NEAR.lng,
        "address": "1 Near Rd",
        "phone": "+86 139 0000 0000",
        "delivery_fee_fen": 300,
        "total_fen": 3900,
        "refund_fen": 300,
    }
    assert replace(event, version=9).version == 9
