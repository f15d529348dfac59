"""Errands: the tariff (monotone in distance and weight, integer fen), the split by the
tariff, and what an errand changes in the order's rules (ready on accept, proof codes,
cancellable until pickup, no stock, codes for the customer's eyes, sealed at rest)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import commands as c
from domain import errands, ledger
from domain import events as e
from domain import reactions as r
from domain.dispatch import Dispatch, Job, RiderPosition, Weights, batchable
from domain.errand_tariff import CATEGORIES, WEIGHT_CLASSES, ErrandTariff
from domain.errors import DomainError
from domain.geo import Point, distance_m
from domain.merchants import Merchant, accepting
from domain.orders import Order, OrderStatus, decide, evolve, moves_stock, place
from domain.pricing import Amounts
from storage.sealing import PREFIX, Sealer

T0 = datetime(2026, 5, 1, 11, 0, tzinfo=UTC)
A = Point(30.2590, 120.1490)
B = Point(30.2770, 120.1490)  # 2 km north
TARIFF = ErrandTariff()
S = OrderStatus

distances = st.floats(min_value=0, max_value=TARIFF.max_distance_m, allow_nan=False)
classes = st.sampled_from(WEIGHT_CLASSES)


# -- the tariff ---------------------------------------------------------------------


def test_the_first_kilometre_costs_the_base_and_each_started_one_beyond_adds_its_fee() -> None:
    assert TARIFF.distance_fen(0) == TARIFF.base_fen
    assert TARIFF.distance_fen(1000) == TARIFF.base_fen
    assert TARIFF.distance_fen(1001) == TARIFF.base_fen + TARIFF.per_km_fen
    assert TARIFF.distance_fen(3000) == TARIFF.base_fen + 2 * TARIFF.per_km_fen
    quote = TARIFF.quote(2500.4, "heavy")
    assert quote.as_dict() == {
        "distance_m": 2501,
        "distance_fen": 900 + 2 * 200,
        "weight_fen": 800,
        "total_fen": 900 + 2 * 200 + 800,
    }


@given(distances, distances, classes)
def test_the_price_never_falls_as_the_distance_grows(d1: float, d2: float, w: str) -> None:
    near, far = sorted((d1, d2))
    assert TARIFF.quote(near, w).total_fen <= TARIFF.quote(far, w).total_fen


@given(distances, classes, classes)
def test_the_price_never_falls_as_the_weight_class_grows(d: float, w1: str, w2: str) -> None:
    light, heavy = sorted((w1, w2), key=WEIGHT_CLASSES.index)
    assert TARIFF.quote(d, light).total_fen <= TARIFF.quote(d, heavy).total_fen


@given(distances, classes)
def test_a_price_is_whole_fen_and_its_parts_add_up(d: float, w: str) -> None:
    quote = TARIFF.quote(d, w)
    assert all(type(v) is int for v in quote.as_dict().values())
    assert quote.total_fen == quote.distance_fen + quote.weight_fen >= TARIFF.base_fen


def test_too_far_or_an_unknown_class_is_refused() -> None:
    with pytest.raises(DomainError) as far:
        TARIFF.quote(TARIFF.max_distance_m + 1, "light")
    assert far.value.code == "outside_delivery_range"
    with pytest.raises(DomainError) as unknown:
        TARIFF.quote(100, "enormous")
    assert unknown.value.code == "invalid_request"


def test_a_tariff_whose_surcharges_fall_with_the_weight_is_refused() -> None:
    with pytest.raises(DomainError):
        ErrandTariff(weight_surcharge_fen={"light": 500, "medium": 100, "heavy": 800, "bulky": 900})


@given(distances, classes, st.integers(min_value=0, max_value=500))
def test_the_split_gives_the_rider_its_share_and_the_platform_the_rest(
    d: float, w: str, fee: int
) -> None:
    quote = TARIFF.quote(d, w)
    amounts = Amounts(quote.weight_fen, quote.distance_fen, 0, quote.total_fen)
    total = amounts.total_fen
    fee = min(fee, total)
    txn = ledger.split_capture(
        "o1_x", "errands-1", "r-1", amounts, total, fee, 0, TARIFF.split_plan(), T0
    )
    rider = txn.amount_on(ledger.party_payable("rider", "r-1"))
    platform = txn.amount_on(ledger.platform_revenue())
    assert rider == min((total * TARIFF.rider_share_bp + 5000) // 10_000, total - fee)
    assert platform == total - fee - rider
    assert txn.amount_on(ledger.party_payable("merchant", "errands-1")) == 0
    assert txn.amount_on(ledger.provider_fees()) == fee


# -- the courier desks ----------------------------------------------------------------


def test_desks_spread_customers_and_no_other_id_is_one() -> None:
    desks = {errands.desk_of(f"c_{n}") for n in range(200)}
    assert desks == {f"errands-{n}" for n in range(errands.DESKS)}
    assert errands.desk_of("c_1") == errands.desk_of("c_1")
    for other in ("errands-8", "errands-01", "errands-", "errands-x", "m_1", "errands"):
        assert not errands.is_desk(other)


def test_a_desk_accepts_at_once_prepares_nothing_and_splits_by_the_tariff() -> None:
    desk = Merchant.from_dict(errands.desk_profile("errands-3", TARIFF))
    assert desk.accept_mode == "auto" and desk.prep_minutes == 0 and desk.ready_on_accept
    assert ledger.plan_or_default(desk.split_plan) == TARIFF.split_plan()


# -- an errand as an order --------------------------------------------------------------


def errand_placed() -> Order:
    lines, amounts = errands.price(A, B, "documents", "light", TARIFF)
    command = c.PlaceOrder(
        at=T0,
        order_id="o3_e",
        customer_id="c-1",
        merchant_id="errands-3",
        lines=lines,
        amounts=amounts,
        pickup=A,
        dropoff=B,
        address="9 Wensan Rd",
        phone="13800000002",
        errand=errands.Errand(
            category="documents",
            weight_class="light",
            pickup_address="1 Hubin Rd",
            pickup_contact_name="Li Lei",
            pickup_contact_phone="13800000001",
            pickup_note="front desk",
            dropoff_contact_name="Han Meimei",
            pickup_code="123456",
            delivery_code="654321",
        ),
    )
    (placed,) = decide(None, command)
    assert isinstance(placed, e.OrderPlaced) and placed.kind == "errand"
    return place(command)


def run(order: Order, command: c.Command) -> tuple[Order, list[e.Event]]:
    events = decide(order, command)
    for event in events:
        order = evolve(order, event)
    return order, events


def ready_errand() -> Order:
    desk = Merchant.from_dict(errands.desk_profile("errands-3", TARIFF))
    order = errand_placed()
    paid_with = c.MarkPaid(at=T0, intent_id="pi", amount_fen=order.amounts.total_fen)
    order, (paid,) = run(order, paid_with)
    (accept,) = r.reactions(order, paid, desk)
    assert isinstance(accept, r.Accept)
    command = accepting(desk, c.AcceptOrder(at=T0, prep_minutes=accept.prep_minutes))
    order, events = run(order, command)
    assert [ev.type for ev in events] == ["order_accepted", "order_ready"]
    finds = [i for i in r.reactions(order, events[0], desk) if isinstance(i, r.FindRider)]
    assert finds[0].request.kind == "errand" and finds[0].request.pickup == A
    return order


def test_an_errand_is_one_line_of_no_stock_priced_by_the_tariff() -> None:
    order = errand_placed()
    (line,) = order.lines
    quote = TARIFF.quote(distance_m(A, B), "light")
    assert line.item_id == "errand:documents:light" and line.qty == 1
    assert line.price_fen == order.amounts.subtotal_fen == quote.weight_fen
    assert order.amounts.delivery_fee_fen == quote.distance_fen == 900 + 2 * 200
    assert order.amounts.total_fen == quote.total_fen
    assert not moves_stock(order)
    stored = order.as_dict()
    assert stored["kind"] == "errand" and stored["errand"]["pickup"]["note"] == "front desk"
    assert Order.from_dict(json.loads(json.dumps(stored))) == order


def test_paid_it_is_accepted_and_ready_at_once() -> None:
    assert ready_errand().status == S.READY


def test_pickup_and_delivery_need_their_codes_and_a_wrong_one_changes_nothing() -> None:
    order, _ = run(ready_errand(), c.AssignRider(at=T0, rider_id="r-1"))
    for wrong in (None, "000000", "654321"):
        with pytest.raises(DomainError) as refused:
            decide(order, c.PickUp(at=T0, rider_id="r-1", code=wrong))
        assert refused.value.code == "wrong_code"
    order, _ = run(order, c.PickUp(at=T0, rider_id="r-1", code="123456"))
    assert order.status == S.PICKED_UP
    with pytest.raises(DomainError) as refused:
        decide(order, c.Deliver(at=T0, rider_id="r-1", code="123456"))
    assert refused.value.code == "wrong_code"
    order, (delivered,) = run(order, c.Deliver(at=T0, rider_id="r-1", code="654321"))
    assert order.status == S.DELIVERED and order.version == 7
    assert {type(i) for i in r.reactions(order, delivered, None)} == {r.FreeRider, r.Settle}


def test_cancelled_before_pickup_it_is_refunded_and_frees_its_rider_without_a_delivery() -> None:
    order, _ = run(ready_errand(), c.AssignRider(at=T0, rider_id="r-1"))
    cancel = c.CancelOrder(at=T0, reason="changed mind", by="customer")
    cancelled, (event,) = run(order, cancel)
    intents = r.reactions(cancelled, event, None)
    refund = next(i for i in intents if isinstance(i, r.Refund))
    assert refund.amount_fen == order.paid_fen > 0
    free = next(i for i in intents if isinstance(i, r.FreeRider))
    assert free.rider_id == "r-1" and not free.delivered
    assert r.from_wire(json.loads(json.dumps(r.to_wire(free)))) == free
    picked, _ = run(order, c.PickUp(at=T0, rider_id="r-1", code="123456"))
    with pytest.raises(DomainError) as late:
        decide(picked, cancel)
    assert late.value.code == "invalid_transition"


def test_a_food_order_is_cancelled_only_before_acceptance_and_asks_no_code() -> None:
    order = errand_placed()
    food = Order.from_dict({**order.as_dict(), "errand": None, "status": "ready"})
    assert food.errand is None and moves_stock(food)
    with pytest.raises(DomainError):
        decide(food, c.CancelOrder(at=T0, reason="x", by="customer"))
    food, _ = run(food, c.AssignRider(at=T0, rider_id="r-1"))
    food, _ = run(food, c.PickUp(at=T0, rider_id="r-1", code="999999"))
    assert food.status == S.PICKED_UP


def test_only_the_customer_reads_the_codes() -> None:
    stored = errand_placed().as_dict()
    assert errands.shown_to(stored, "customer")["errand"]["delivery_code"] == "654321"
    for role in ("rider", "merchant", "admin"):
        shown = errands.shown_to(stored, role)["errand"]
        assert "pickup_code" not in shown and "delivery_code" not in shown
        assert shown["pickup"]["contact_phone"] == "13800000001"
    assert "delivery_code" in stored["errand"]  # the stored form is left as it was


def test_contacts_note_and_codes_are_sealed_at_rest() -> None:
    sealer = Sealer(base64.b64encode(bytes(32)).decode())
    stored = errand_placed().as_dict()
    sealed = sealer.seal_order(stored)
    text = json.dumps(sealed)
    for secret in ("Li Lei", "13800000001", "front desk", "Han Meimei", "123456", "654321"):
        assert secret not in text
    assert sealed["errand"]["pickup"]["note"].startswith(PREFIX)
    assert sealed["errand"]["category"] == "documents"
    assert sealer.open_order(sealed) == stored


def test_categories_are_checked() -> None:
    assert "documents" in CATEGORIES
    with pytest.raises(DomainError):
        errands.price(A, B, "contraband", "light", TARIFF)


# -- dispatch -------------------------------------------------------------------------


def test_two_errands_of_one_desk_far_apart_are_not_one_counter() -> None:
    far_pickup = Point(A.lat + 0.05, A.lng)
    job = Job("o-1", "errands-3", far_pickup, Point(far_pickup.lat + 0.05, A.lng))
    carrying = RiderPosition("r-1", A, T0 - timedelta(seconds=5), jobs=(job,))
    errand = Dispatch("o-2", "errands-3", A, B, T0, kind="errand")
    assert not batchable(errand, carrying, Weights())
    same_place = Job("o-3", "errands-3", A, Point(A.lat - 0.05, A.lng))
    assert batchable(errand, RiderPosition("r-1", A, T0, jobs=(same_place,)), Weights())
    assert Dispatch.from_dict(errand.as_dict()) == errand
