"""The risk checks (`domain/risk.py`): each rule trips on a case and not on its neighbour,
and what a hold stops in the order, the payment and the split, until review decides."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from domain import commands as c
from domain import events as e
from domain import payments as p
from domain import reactions as r
from domain import risk
from domain.errors import DomainError
from domain.geo import Point, RadiusRange, distance_m
from domain.ledger import DEFAULT_PLAN, party_payable, platform_revenue, split_capture
from domain.merchants import Merchant
from domain.orders import (
    Order,
    OrderStatus,
    TimelineEntry,
    audience,
    authorize,
    decide,
    delivery_hold,
    evolve,
    hidden_from_merchant,
    place,
)
from domain.pricing import Amounts, Line

T0 = datetime(2025, 3, 1, 11, 30, tzinfo=UTC)
F = risk.Figures(
    orders_window_s=3600,
    max_orders_per_customer=20,
    max_orders_per_device=30,
    failures_window_s=86_400,
    max_failures_per_customer=5,
    max_failures_per_device=5,
    refund_share_bp=3000,
    refund_allowance_fen=20_000,
    rider_max_speed_kmh=30.0,
    rider_min_distance_m=300.0,
)
AMOUNTS = Amounts(subtotal_fen=3600, delivery_fee_fen=300, discount_fen=0, total_fen=3900)
PICKUP = Point(30.2590, 120.1490)
DOOR = Point(30.2770, 120.1490)  # 2 km north
AUTO = Merchant("m-1", "Lakeside", PICKUP, RadiusRange(3000), accept_mode="auto")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the rules: each trips, and its neighbour does not ----------------------------------


def test_too_many_orders_of_a_customer_trips_past_the_maximum() -> None:
    hit = risk.too_many_orders(21, None, F)
    assert hit is not None and hit.reason == risk.TOO_MANY_ORDERS
    assert hit.facts["customer_orders"] == 21
    assert risk.too_many_orders(20, None, F) is None  # the 20th order is still fine


def test_too_many_orders_of_a_device_trips_whoever_the_customer() -> None:
    hit = risk.too_many_orders(1, 31, F)
    assert hit is not None and hit.facts["device_orders"] == 31
    assert risk.too_many_orders(1, 30, F) is None


def test_too_many_failed_payments_trips_at_the_maximum() -> None:
    hit = risk.too_many_failed_payments(5, None, F)
    assert hit is not None and hit.reason == risk.TOO_MANY_FAILED_PAYMENTS
    assert risk.too_many_failed_payments(4, None, F) is None
    assert risk.too_many_failed_payments(0, 5, F) is not None
    assert risk.too_many_failed_payments(0, 4, F) is None


def test_placement_weighs_orders_first_then_failures() -> None:
    both = risk.PlacementCounts(25, 9, 2, 0)
    assert (hit := risk.placement(both, F)) is not None and hit.reason == risk.TOO_MANY_ORDERS
    failures = risk.PlacementCounts(3, 5)
    assert (hit := risk.placement(failures, F)) is not None
    assert hit.reason == risk.TOO_MANY_FAILED_PAYMENTS
    assert risk.placement(risk.PlacementCounts(3, 1, 3, 1), F) is None


def test_a_maximum_of_zero_turns_its_rule_off() -> None:
    off = replace(F, max_orders_per_customer=0, max_failures_per_device=0, rider_max_speed_kmh=0)
    assert risk.too_many_orders(10_000, None, off) is None
    assert risk.too_many_failed_payments(0, 10_000, off) is None
    assert risk.rider_too_fast(5000, 1, off) is None


def test_a_payment_of_another_amount_trips() -> None:
    hit = risk.amount_mismatch(4000, 3900)
    assert hit is not None and hit.reason == risk.AMOUNT_MISMATCH
    assert hit.facts == {"captured_fen": 4000, "total_fen": 3900}
    assert risk.amount_mismatch(3900, 3900) is None


def test_a_refund_past_the_share_and_the_allowance_trips() -> None:
    # 100,000 captured today: the share is 30,000, above the 20,000 allowance.
    hit = risk.refund_over_share(5_000, 26_000, 100_000, F)
    assert hit is not None and hit.reason == risk.REFUND_OVER_SHARE
    assert risk.refund_over_share(4_000, 26_000, 100_000, F) is None  # exactly at the share


def test_a_small_merchants_refund_within_the_allowance_does_not_trip() -> None:
    # All of a small day refunded, but within the allowance.
    assert risk.refund_over_share(3_900, 0, 3_900, F) is None
    assert risk.refund_over_share(21_000, 500, 21_900, F) is not None


def test_a_rider_faster_than_a_bike_trips() -> None:
    # 2 km at 30 km/h is 240 s at least.
    hit = risk.rider_too_fast(2000, 60, F)
    assert hit is not None and hit.reason == risk.RIDER_TOO_FAST
    assert hit.facts["fastest_plausible_s"] == 240.0
    assert risk.rider_too_fast(2000, 300, F) is None


def test_a_short_trip_is_not_judged() -> None:
    assert risk.rider_too_fast(250, 1, F) is None
    assert risk.rider_too_fast(350, 1, F) is not None


# -- an order held at placement -----------------------------------------------------------


def placed(hold: risk.Hold | None = None) -> Order:
    command = c.PlaceOrder(
        at=T0,
        order_id="o1_a",
        customer_id="c-1",
        merchant_id="m-1",
        lines=(Line("noodles", "Noodles", 2, 1800),),
        amounts=AMOUNTS,
        pickup=PICKUP,
        dropoff=DOOR,
        address="12 Lakeside Rd",
        hold=hold,
    )
    (event,) = decide(None, command)
    order = place(command)
    assert isinstance(event, e.OrderPlaced) and event.hold == hold
    return order


def run(order: Order, command: c.Command) -> tuple[Order, list[e.Event]]:
    events = decide(order, command)
    for event in events:
        order = evolve(order, event)
    return order, events


HIT = risk.too_many_orders(21, None, F)
assert HIT is not None
PLACEMENT_HOLD = risk.hold_of(HIT, risk.order_review_id("o1_a", "placed"), hidden=True)


def test_an_order_held_at_placement_is_hidden_from_its_merchant() -> None:
    order = placed(PLACEMENT_HOLD)
    assert order.on_hold and hidden_from_merchant(order)
    (event,) = decide(None, replace(place_cmd_of(order), hold=PLACEMENT_HOLD))
    assert ("merchant", "m-1") not in audience(order, event)
    assert ("customer", "c-1") in audience(order, event)
    assert event.as_dict()["data"]["hold"]["reason"] == risk.TOO_MANY_ORDERS
    plain = placed()
    assert ("merchant", "m-1") in audience(plain, event)
    (unheld,) = decide(None, place_cmd_of(plain))
    assert "hold" not in unheld.as_dict()["data"]


def place_cmd_of(order: Order) -> c.PlaceOrder:
    return c.PlaceOrder(
        at=T0,
        order_id=order.id,
        customer_id=order.customer_id,
        merchant_id=order.merchant_id,
        lines=order.lines,
        amounts=order.amounts,
        pickup=order.pickup,
        dropoff=order.dropoff,
        address=order.address,
    )


def test_a_held_order_may_be_paid_but_its_merchant_neither_sees_nor_answers_it() -> None:
    deadline = at(300)
    paid, (event,) = run(
        placed(PLACEMENT_HOLD),
        c.MarkPaid(at=at(1), intent_id="pi_o1_a", amount_fen=3900, accept_deadline=deadline),
    )
    assert paid.status == OrderStatus.PAID and paid.accept_deadline is None
    assert r.reactions(paid, event, AUTO) == []  # no auto-accept while held
    for command in (
        c.AcceptOrder(at=at(2), prep_minutes=10),
        c.RejectOrder(at=at(2), reason="sold out"),
    ):
        with pytest.raises(DomainError) as refused:
            decide(paid, command)
        assert refused.value.code == "order_held"


def test_approving_a_placement_hold_hands_the_order_to_its_merchant() -> None:
    paid, _ = run(placed(PLACEMENT_HOLD), c.MarkPaid(at=at(1), intent_id="pi", amount_fen=3900))
    review = c.Review(
        at=at(60),
        review_id=PLACEMENT_HOLD.review_id,
        approve=True,
        by="ops",
        accept_deadline=at(360),
    )
    with pytest.raises(DomainError):
        authorize(paid, review, "merchant", "m-1")
    authorize(paid, review, "admin", "ops")
    released, (event,) = run(paid, review)
    assert isinstance(event, e.OrderReleased) and event.outcome == risk.APPROVED
    assert released.status == OrderStatus.PAID and released.accept_deadline == at(360)
    assert not released.on_hold and not hidden_from_merchant(released)
    assert released.hold is not None and released.hold.status == risk.APPROVED
    assert ("merchant", "m-1") in audience(released, event)
    assert r.reactions(released, event, AUTO) == [r.Accept("o1_a", "m-1", AUTO.prep_minutes)]
    # Decided once: a second decision finds nothing held.
    with pytest.raises(DomainError) as again:
        decide(released, replace(review, approve=False))
    assert again.value.code == "review_decided"
    assert again.value.details["status"] == risk.APPROVED


def test_refusing_a_placement_hold_cancels_and_refunds_the_order() -> None:
    paid, _ = run(placed(PLACEMENT_HOLD), c.MarkPaid(at=at(1), intent_id="pi", amount_fen=3900))
    review = c.Review(at=at(60), review_id=PLACEMENT_HOLD.review_id, approve=False, by="ops")
    refused, (event,) = run(paid, review)
    assert isinstance(event, e.OrderCancelled) and event.reason == risk.REVIEW_REFUSED
    assert refused.status == OrderStatus.CANCELLED and event.refund_fen == 3900
    assert refused.hold is not None and refused.hold.status == risk.REFUSED
    assert hidden_from_merchant(refused)  # it never saw the order
    assert any(
        isinstance(i, r.Refund) and i.amount_fen == 3900 for i in r.reactions(refused, event, AUTO)
    )


def test_the_customer_may_cancel_a_held_order_and_its_review_closes() -> None:
    order, _ = run(
        placed(PLACEMENT_HOLD), c.CancelOrder(at=at(5), reason="changed my mind", by="customer")
    )
    assert order.hold is not None and order.hold.status == risk.CLOSED
    with pytest.raises(DomainError):
        decide(order, c.Review(at=at(6), review_id=PLACEMENT_HOLD.review_id, approve=True, by="x"))


# -- a capture of another amount ------------------------------------------------------------


MISMATCH_HOLD = risk.hold_of(
    risk.Hit(risk.AMOUNT_MISMATCH, "another amount", {"captured_fen": 4000, "total_fen": 3900}),
    risk.order_review_id("o1_a", "paid"),
)


def held_payment(amount: int) -> Order:
    order, (event,) = run(
        placed(),
        c.HoldPayment(at=at(1), intent_id="pi_o1_a", amount_fen=amount, hold=MISMATCH_HOLD),
    )
    assert isinstance(event, e.OrderHeld)
    assert order.status == OrderStatus.PENDING_PAYMENT and order.paid_fen == amount
    assert not hidden_from_merchant(order)  # its merchant saw it placed
    # Told twice (the provider's retries), it holds once.
    assert (
        decide(
            order, c.HoldPayment(at=at(2), intent_id="pi", amount_fen=amount, hold=MISMATCH_HOLD)
        )
        == []
    )
    return order


def test_a_capture_of_another_amount_takes_the_place_of_a_placement_hold() -> None:
    order, (event,) = run(
        placed(PLACEMENT_HOLD),
        c.HoldPayment(at=at(1), intent_id="pi_o1_a", amount_fen=4000, hold=MISMATCH_HOLD),
    )
    assert order.hold is not None and order.hold.review_id == MISMATCH_HOLD.review_id
    assert order.hold.hidden and hidden_from_merchant(order)
    assert ("merchant", "m-1") not in audience(order, event)


def test_approving_an_overpayment_pays_the_order_and_refunds_the_excess() -> None:
    order = held_payment(4000)
    review = c.Review(
        at=at(60), review_id=MISMATCH_HOLD.review_id, approve=True, by="ops", accept_deadline=at(9)
    )
    paid, (event,) = run(order, review)
    assert isinstance(event, e.OrderReleased) and event.paid and event.excess_fen == 100
    assert paid.status == OrderStatus.PAID and paid.paid_fen == 3900
    assert paid.accept_deadline == at(9)
    excess = r.Refund("o1_a", 100, risk.excess_refund_no("o1_a"), risk.EXCESS)
    assert r.reactions(paid, event, AUTO) == [excess, r.Accept("o1_a", "m-1", AUTO.prep_minutes)]


def test_a_short_payment_cannot_be_approved_only_refused_in_full() -> None:
    order = held_payment(3000)
    approve = c.Review(at=at(60), review_id=MISMATCH_HOLD.review_id, approve=True, by="ops")
    with pytest.raises(DomainError) as short:
        decide(order, approve)
    assert short.value.code == "payment_short"
    refused, (event,) = run(order, replace(approve, approve=False))
    assert isinstance(event, e.OrderCancelled) and event.refund_fen == 3000
    assert refused.status == OrderStatus.CANCELLED


def test_a_capture_of_another_amount_is_booked_only_when_the_provider_confirms_it() -> None:
    payment = p.opened("o1_a", "m-1", "c-1", "pi_o1_a", "url", 3900, 0.0)
    with pytest.raises(DomainError) as mismatch:
        p.decide(payment, p.Capture("pi_o1_a", 4000, T0))
    assert mismatch.value.code == "amount_mismatch"
    (captured,) = p.decide(payment, p.Capture("pi_o1_a", 4000, T0, confirmed=True))
    payment = p.evolve(payment, captured)
    assert payment.captured_fen == 4000
    assert p.decide(payment, p.Capture("pi_o1_a", 4000, T0)) == []  # a copy: nothing more
    with pytest.raises(DomainError):
        p.decide(payment, p.Capture("pi_o1_a", 3900, T0))


# -- a refund held for review --------------------------------------------------------------


def test_a_held_refund_reserves_its_amount_until_review() -> None:
    payment = p.evolve(p.opened("o1_a", "m-1", "c-1", "pi", "url", 3900, 0.0), p.Captured(3900, T0))
    (held,) = p.decide(payment, p.RequestRefund("o1_a-a1", 3000, "admin", held=True))
    payment = p.evolve(payment, held)
    assert payment.refunds["o1_a-a1"].status == "held" and payment.refundable_fen == 900
    with pytest.raises(DomainError) as too_much:
        p.decide(payment, p.RequestRefund("o1_a-a2", 1000, "admin"))
    assert too_much.value.code == "refund_exceeds_payment"
    (approved,) = p.decide(payment, p.ReleaseRefund("o1_a-a1", approve=True))
    sent = p.evolve(payment, approved)
    assert sent.refunds["o1_a-a1"].status == "pending"
    with pytest.raises(DomainError) as again:
        p.decide(sent, p.ReleaseRefund("o1_a-a1", approve=False))
    assert again.value.code == "review_decided"
    (refused,) = p.decide(payment, p.ReleaseRefund("o1_a-a1", approve=False))
    dropped = p.evolve(payment, refused)
    assert dropped.refunds["o1_a-a1"].status == "refused" and dropped.refundable_fen == 3900


# -- a delivery too fast ----------------------------------------------------------------------


def on_the_way(picked_at: datetime) -> Order:
    order = placed()
    stamp = TimelineEntry(OrderStatus.PICKED_UP.value, picked_at)
    return replace(
        order,
        status=OrderStatus.PICKED_UP,
        version=6,
        rider_id="r-1",
        timeline=(*order.timeline, stamp),
    )


def test_a_delivery_faster_than_a_bike_is_held_and_its_split_waits() -> None:
    assert distance_m(PICKUP, DOOR) > 1900
    order = on_the_way(at(0))
    hold = delivery_hold(order, at(30), F)
    assert hold is not None and hold.reason == risk.RIDER_TOO_FAST
    assert delivery_hold(order, at(600), F) is None  # ten minutes for 2 km is a ride
    delivered, (event,) = run(order, c.Deliver(at=at(30), rider_id="r-1", hold=hold))
    assert delivered.status == OrderStatus.DELIVERED and delivered.on_hold
    assert not hidden_from_merchant(delivered)  # the merchant had the order all along
    assert r.reactions(delivered, event, AUTO) == [r.FreeRider("r-1", "o1_a", T0, "m-1")]
    review = c.Review(at=at(90), review_id=hold.review_id, approve=True, by="ops")
    approved, (released,) = run(delivered, review)
    assert r.reactions(approved, released, AUTO) == [r.Settle("o1_a")]
    refused, (released,) = run(delivered, replace(review, approve=False))
    assert isinstance(released, e.OrderReleased) and released.outcome == risk.REFUSED
    assert refused.status == OrderStatus.DELIVERED
    assert r.reactions(refused, released, AUTO) == [r.Settle("o1_a", withhold_rider=True)]


def test_a_plain_delivery_settles_at_once() -> None:
    delivered, (event,) = run(on_the_way(at(0)), c.Deliver(at=at(600), rider_id="r-1"))
    assert r.reactions(delivered, event, AUTO)[-1] == r.Settle("o1_a")


def test_a_withheld_split_gives_the_riders_share_to_the_platform() -> None:
    plain = split_capture("o1", "m1", "r1", AMOUNTS, 3900, 23, 0, DEFAULT_PLAN, T0)
    kept = split_capture(
        "o1", "m1", "r1", AMOUNTS, 3900, 23, 0, risk.rider_withheld(DEFAULT_PLAN), T0
    )
    rider = party_payable("rider", "r1")
    assert plain.amount_on(rider) == 300 and kept.amount_on(rider) == 0
    assert kept.amount_on(platform_revenue()) == plain.amount_on(platform_revenue()) + 300
    merchant = party_payable("merchant", "m1")
    assert kept.amount_on(merchant) == plain.amount_on(merchant)


def test_holds_survive_their_stored_form() -> None:
    order = placed(PLACEMENT_HOLD)
    assert Order.from_dict(order.as_dict()) == order
    assert order.as_dict()["hold"]["facts"]["customer_orders"] == 21
    assert placed().as_dict()["hold"] is None
