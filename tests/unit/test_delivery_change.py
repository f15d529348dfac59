"""Moving an order's door: who may, until when, at which fee, and what the money does."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from domain import commands as c
from domain import events as e
from domain import ledger, risk
from domain import payments as p
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


# -- a cheaper door before payment: the link keeps the placed total, the rest goes back --

# 4.45 km north: between NEAR's fee and FAR's.
MID = Point(30.2590 + 0.040, 120.1490)
AUTO = replace(MERCHANT, accept_mode="auto")


def pay_link(order: Order) -> Order:
    """Pay what the order's pay link asks, as the payment host tells it."""
    return apply(order, c.MarkPaid(at=at(6), intent_id="pi-1", amount_fen=order.pay_fen))


def test_a_cheaper_door_before_payment_is_taken_and_the_link_keeps_the_placed_total() -> None:
    order = placed()
    (event,) = decide(order, move(NEAR, address="1 Near Rd"))
    assert isinstance(event, e.DeliveryChanged)
    assert (event.version, event.delivery_fee_fen, event.total_fen) == (2, 300, 3900)
    assert event.refund_fen == 300  # what goes back, once the link's amount is paid
    after = evolve(order, event)
    assert after.status == OrderStatus.PENDING_PAYMENT
    assert after.amounts == Amounts(3600, 300, 0, 3900)
    assert (after.link_fen, after.pay_fen) == (4200, 4200)
    # Nothing was captured: nothing is refunded yet, nor held.
    assert (after.paid_fen, after.delivery_refunded_fen, after.held_fen) == (0, 0, 0)
    assert r.reactions(after, event, MERCHANT) == []
    # Told as today: the customer's devices, the merchant (the rider comes later).
    assert audience(after, event) == [("customer", "c-1"), ("merchant", "m-1"), ("ops", "all")]
    assert after.as_dict()["link_fen"] == 4200
    assert Order.from_dict(after.as_dict()) == after
    # An order no door moved cheaper shows no link amount of its own.
    assert "link_fen" not in placed().as_dict() and placed().pay_fen == 4200


def test_paying_the_link_after_a_cheaper_door_refunds_the_difference_once() -> None:
    order = apply(placed(), move(NEAR))
    # The capture of the link's amount is the expected one: no risk hold.
    assert risk.amount_mismatch(4200, order.pay_fen) is None
    # The lowered total is not what the link asks: a capture of it is no payment of it.
    short = refused(order, c.MarkPaid(at=at(6), intent_id="pi-1", amount_fen=3900))
    assert short.code == "amount_mismatch" and short.details["link_fen"] == 4200
    pay = c.MarkPaid(at=at(6), intent_id="pi-1", amount_fen=4200)
    (event,) = decide(order, pay)
    assert isinstance(event, e.OrderPaid)
    assert (event.version, event.amount_fen, event.refund_fen) == (3, 4200, 300)
    assert event.as_dict()["data"]["refund_fen"] == 300
    after = evolve(order, event)
    assert after.status == OrderStatus.PAID and after.amounts.total_fen == 3900
    assert (after.paid_fen, after.delivery_refunded_fen, after.held_fen) == (4200, 300, 3900)
    # The difference goes back through the payment host, once by its number, beside an
    # auto-accepting merchant's acceptance.
    refund = r.Refund(after.id, 300, "o1_x-d3", r.DELIVERY_CHANGED)
    assert r.reactions(after, event, MERCHANT) == [refund]
    assert r.reactions(after, event, AUTO) == [
        refund,
        r.Accept(after.id, "m-1", AUTO.prep_minutes),
    ]
    assert decide(after, pay) == []  # the same payment told twice: no second refund
    # A plain payment says nothing of a refund on the wire.
    (plain,) = decide(placed(), c.MarkPaid(at=at(6), intent_id="pi-1", amount_fen=4200))
    assert isinstance(plain, e.OrderPaid) and plain.refund_fen == 0
    assert "refund_fen" not in plain.as_dict()["data"]
    assert r.reactions(evolve(placed(), plain), plain, MERCHANT) == []


def test_the_difference_is_refunded_once_and_the_ledger_balances() -> None:
    order = apply(placed(), move(NEAR))
    (event,) = decide(order, c.MarkPaid(at=at(6), intent_id="pi-1", amount_fen=4200))
    (refund,) = r.reactions(evolve(order, event), event, MERCHANT)
    assert isinstance(refund, r.Refund) and refund.amount_fen == 300
    payment = p.opened("o1_x", "m-1", "c-1", "pi-1", "url", order.pay_fen, T0.timestamp())
    (captured,) = p.decide(payment, p.Capture("pi-1", 4200, at(6)))
    payment = p.evolve(payment, captured)
    ask = p.RequestRefund(refund.refund_no, refund.amount_fen, refund.reason)
    (requested,) = p.decide(payment, ask)
    payment = p.evolve(payment, requested)
    assert p.decide(payment, ask) == []  # asked again (a mailbox retry): once in effect
    (confirmed,) = p.decide(payment, p.ConfirmRefund(refund.refund_no, 300, at(7)))
    payment = p.evolve(payment, confirmed)
    assert (payment.captured_fen, payment.refunded_fen, payment.refundable_fen) == (4200, 300, 3900)
    # Refunds never exceed the capture: what the order still holds is all there is.
    with pytest.raises(DomainError) as over:
        p.decide(payment, p.RequestRefund("o1_x-a1", 3901, "admin"))
    assert over.value.code == "refund_exceeds_payment"
    capture = ledger.capture("o1_x", "c-1", 4200, at(6))
    cut = ledger.refund(refund.refund_no, "o1_x", "c-1", 300, 4200, 0, None, at(7))
    history = [capture, cut, split(refunded=300)]
    ledger.check_invariants(history)
    assert ledger.left_in_clearing(history, "o1_x") == 0
    assert ledger.balances(history).get(ledger.provider_clearing(), 0) == 0


def test_several_cheaper_doors_before_payment_add_up_to_one_refund() -> None:
    assert fee(NEAR) < fee(MID) < fee(FAR)
    order = apply(placed(), move(MID))
    assert (order.amounts.delivery_fee_fen, order.pay_fen) == (fee(MID), 4200)
    # Back to a dearer door than now: refused as ever, even below the placed fee.
    assert refused(order, move(FAR)).code == "fee_increase_not_supported"
    order = apply(order, move(NEAR))
    order = apply(order, move(NEAR_TOO))  # the same fee: nothing more
    assert (order.amounts.total_fen, order.link_fen) == (3900, 4200)
    (event,) = decide(order, c.MarkPaid(at=at(6), intent_id="pi-1", amount_fen=4200))
    assert isinstance(event, e.OrderPaid) and event.refund_fen == 4200 - 3900
    after = evolve(order, event)
    (refund,) = r.reactions(after, event, MERCHANT)
    assert refund == r.Refund("o1_x", 300, f"o1_x-d{after.version}", r.DELIVERY_CHANGED)
    assert after.held_fen == 3900


def test_a_cheaper_door_after_paying_the_link_is_refunded_at_once_by_its_own_number() -> None:
    order = pay_link(apply(placed(), move(MID)))
    assert (order.delivery_refunded_fen, order.held_fen) == (100, 4100)
    (event,) = decide(order, move(NEAR))
    assert isinstance(event, e.DeliveryChanged) and event.refund_fen == fee(MID) - 300
    after = evolve(order, event)
    assert (after.delivery_refunded_fen, after.held_fen) == (300, 3900)
    assert r.reactions(after, event, MERCHANT) == [
        r.Refund("o1_x", 200, f"o1_x-d{after.version}", r.DELIVERY_CHANGED)
    ]
    # Closed now, what is still held goes back: all of it comes to the capture.
    (cancelled,) = decide(after, c.CancelOrder(at=at(8), reason="no", by="customer"))
    assert isinstance(cancelled, e.OrderCancelled) and cancelled.refund_fen == 3900
    assert 100 + 200 + cancelled.refund_fen == 4200


@pytest.mark.parametrize(("reason", "by"), [("no", "customer"), ("payment_timeout", "system")])
def test_cancelled_or_timed_out_unpaid_after_a_cheaper_door_refunds_nothing(
    reason: str, by: str
) -> None:
    order = apply(apply(placed(), move(MID)), move(NEAR))
    (event,) = decide(order, c.CancelOrder(at=at(8), reason=reason, by=by))
    assert isinstance(event, e.OrderCancelled) and event.refund_fen == 0
    after = evolve(order, event)
    assert r.reactions(after, event, MERCHANT) == []
    assert (after.paid_fen, after.delivery_refunded_fen, after.held_fen) == (0, 0, 0)


def test_a_capture_held_for_review_after_a_cheaper_door_gives_back_all_above_the_total() -> None:
    order = apply(placed(), move(NEAR))
    hit = risk.amount_mismatch(5000, order.pay_fen)
    assert hit is not None
    review_id = risk.order_review_id("o1_x", "paid")
    hold = c.HoldPayment(
        at=at(6), intent_id="pi-1", amount_fen=5000, hold=risk.hold_of(hit, review_id)
    )
    held = apply(order, hold)
    approve = c.Review(at=at(7), review_id=review_id, approve=True, by="ops-1")
    (released,) = decide(held, approve)
    assert isinstance(released, e.OrderReleased)
    assert (released.paid_fen, released.excess_fen) == (3900, 1100)
    refuse = c.Review(at=at(7), review_id=review_id, approve=False, by="ops-1")
    (cancelled,) = decide(held, refuse)
    assert isinstance(cancelled, e.OrderCancelled) and cancelled.refund_fen == 5000


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
