from __future__ import annotations

import copy
import json
import pickle
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import commands as c
from domain import events as e
from domain.errands import shown_to
from domain.errors import DomainError, forbidden, invalid, not_found
from domain.geo import Point
from domain.orders import (
    ATTEMPTS_KEPT,
    TERMINAL,
    Order,
    OrderStatus,
    attempted,
    audience,
    authorize,
    decide,
    evolve,
    place,
    releases_stock,
    replayed,
)
from domain.pricing import Amounts, Line

T0 = datetime(2025, 3, 1, 11, 30, tzinfo=UTC)
LINES = (Line("i-noodles", "Beef noodles", 2, 1200), Line("i-tea", "Milk tea", 1, 600))
AMOUNTS = Amounts(subtotal_fen=3000, delivery_fee_fen=400, discount_fen=500, total_fen=2900)
PICKUP = Point(39.9087, 116.3975)
DROPOFF = Point(39.9150, 116.4040)

S = OrderStatus


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def place_cmd(**overrides: object) -> c.PlaceOrder:
    fields: dict[str, object] = {
        "at": T0,
        "order_id": "o-1",
        "customer_id": "c-1",
        "merchant_id": "m-1",
        "lines": LINES,
        "amounts": AMOUNTS,
        "pickup": PICKUP,
        "dropoff": DROPOFF,
        "address": "1 Chang'an Ave, Room 101",
        "coupon_code": "LUNCH5",
    }
    fields.update(overrides)
    return c.PlaceOrder(**fields)  # type: ignore[arg-type]


def pay(intent: str = "pi-1", amount: int = AMOUNTS.total_fen) -> c.MarkPaid:
    return c.MarkPaid(at=at(1), intent_id=intent, amount_fen=amount)


def accept(prep: int = 12) -> c.AcceptOrder:
    return c.AcceptOrder(at=at(2), prep_minutes=prep)


def reject() -> c.RejectOrder:
    return c.RejectOrder(at=at(2), reason="sold out")


def cancel(by: str = "customer") -> c.CancelOrder:
    return c.CancelOrder(at=at(3), reason="changed my mind", by=by)


def assign(rider: str = "r-1") -> c.AssignRider:
    return c.AssignRider(at=at(4), rider_id=rider)


def ready() -> c.MarkReady:
    return c.MarkReady(at=at(14))


def pickup(rider: str = "r-1") -> c.PickUp:
    return c.PickUp(at=at(16), rider_id=rider)


def deliver(rider: str = "r-1") -> c.Deliver:
    return c.Deliver(at=at(30), rider_id=rider)


def new_order() -> Order:
    return place(place_cmd())


def apply(order: Order, command: c.Command) -> Order:
    for event in decide(order, command):
        order = evolve(order, event)
    return order


def reach(*commands: c.Command) -> Order:
    order = new_order()
    for command in commands:
        order = apply(order, command)
    return order


# Every state an order can be in, with and without a rider where both can happen.
STATES: dict[str, tuple[c.Command, ...]] = {
    "pending_payment": (),
    "paid": (pay(),),
    "accepted": (pay(), accept()),
    "accepted+rider": (pay(), accept(), assign()),
    "ready": (pay(), accept(), ready()),
    "ready+rider": (pay(), accept(), assign(), ready()),
    "picked_up": (pay(), accept(), assign(), ready(), pickup()),
    "delivered": (pay(), accept(), assign(), ready(), pickup(), deliver()),
    "cancelled": (cancel(),),
    "cancelled+paid": (pay(), cancel()),
    "rejected": (pay(), reject()),
}

# "pay" uses a second intent, so on an order already paid it is a new payment, not a replay;
# "assign" names a second rider, so it is never the idempotent re-assignment.
TABLE_COMMANDS: dict[str, c.Command] = {
    "pay": pay(intent="pi-2"),
    "accept": accept(),
    "reject": reject(),
    "cancel": cancel(),
    "assign": assign("r-2"),
    "ready": ready(),
    "pickup": pickup("r-1"),
    "deliver": deliver("r-1"),
    "place": place_cmd(),
}

CODES = {
    "IT": "invalid_transition",
    "NR": "no_rider",
    "RA": "rider_already_assigned",
    "OE": "order_exists",
}

TRANSITIONS = """
                 pay  accept reject cancel assign ready pickup deliver place
pending_payment  ok   IT     IT     ok     IT     IT    NR     NR      OE
paid             IT   ok     ok     ok     IT     IT    NR     NR      OE
accepted         IT   IT     IT     IT     ok     ok    NR     NR      OE
accepted+rider   IT   IT     IT     IT     RA     ok    IT     IT      OE
ready            IT   IT     IT     IT     ok     IT    NR     NR      OE
ready+rider      IT   IT     IT     IT     RA     IT    ok     IT      OE
picked_up        IT   IT     IT     IT     IT     IT    IT     ok      OE
delivered        IT   IT     IT     IT     IT     IT    IT     IT      OE
cancelled        IT   IT     IT     IT     IT     IT    NR     NR      OE
cancelled+paid   IT   IT     IT     IT     IT     IT    NR     NR      OE
rejected         IT   IT     IT     IT     IT     IT    NR     NR      OE
"""


def _parse_table() -> list[tuple[str, str, str]]:
    header, *rows = [line.split() for line in TRANSITIONS.strip().splitlines()]
    cells: list[tuple[str, str, str]] = []
    for state, *outcomes in rows:
        assert len(outcomes) == len(header), state
        cells.extend((state, name, outcome) for name, outcome in zip(header, outcomes, strict=True))
    return cells


CELLS = _parse_table()
ALLOWED = [(s, name) for s, name, outcome in CELLS if outcome == "ok"]
REFUSED = [(s, name, CODES[outcome]) for s, name, outcome in CELLS if outcome != "ok"]

STATUS_AFTER = {
    "pay": S.PAID,
    "accept": S.ACCEPTED,
    "reject": S.REJECTED,
    "cancel": S.CANCELLED,
    "ready": S.READY,
    "pickup": S.PICKED_UP,
    "deliver": S.DELIVERED,
}


def test_the_table_covers_every_state_and_command() -> None:
    assert {s for s, _, _ in CELLS} == set(STATES)
    assert {name for _, name, _ in CELLS} == set(TABLE_COMMANDS)
    assert len(CELLS) == len(STATES) * len(TABLE_COMMANDS)


@pytest.mark.parametrize("state", list(STATES))
def test_state_fixtures_are_what_they_claim(state: str) -> None:
    order = reach(*STATES[state])
    assert order.status == S(state.split("+")[0])
    assert (order.rider_id is not None) == (
        "+rider" in state or order.status in {S.PICKED_UP, S.DELIVERED}
    )
    assert order.version == len(STATES[state]) + 1


# ---------------------------------------------------------------- placing


def test_place_order_yields_order_placed_at_version_one() -> None:
    cmd = place_cmd()
    events = decide(None, cmd)
    assert events == [
        e.OrderPlaced(
            order_id="o-1", version=1, at=T0, customer_id="c-1", merchant_id="m-1", total_fen=2900
        )
    ]


def test_place_builds_the_pending_order() -> None:
    order = new_order()
    assert order.status is S.PENDING_PAYMENT
    assert order.version == 1
    assert order.lines == LINES
    assert order.amounts == AMOUNTS
    assert order.coupon_code == "LUNCH5"
    assert order.rider_id is None
    assert order.intent_id is None
    assert order.paid_fen == 0
    assert order.is_open
    assert [(t.status, t.at) for t in order.timeline] == [("pending_payment", T0)]


def test_placing_an_existing_order_is_refused() -> None:
    with pytest.raises(DomainError) as err:
        decide(new_order(), place_cmd())
    assert err.value.code == "order_exists"
    assert err.value.details == {"order_id": "o-1"}


def test_commands_on_a_missing_order_are_order_not_found() -> None:
    with pytest.raises(DomainError) as err:
        decide(None, pay())
    assert err.value.code == "order_not_found"


def test_an_unknown_command_is_an_invalid_request() -> None:
    with pytest.raises(DomainError) as err:
        decide(new_order(), c.Command(at=T0))
    assert err.value.code == "invalid_request"


# ---------------------------------------------------------------- the happy path


def test_the_whole_lifecycle_one_version_per_event() -> None:
    order = new_order()
    steps: list[tuple[c.Command, type[e.Event], OrderStatus, str]] = [
        (pay(), e.OrderPaid, S.PAID, "paid"),
        (accept(prep=12), e.OrderAccepted, S.ACCEPTED, "accepted"),
        (assign("r-1"), e.RiderAssigned, S.ACCEPTED, "rider_assigned"),
        (ready(), e.OrderReady, S.READY, "ready"),
        (pickup("r-1"), e.OrderPickedUp, S.PICKED_UP, "picked_up"),
        (deliver("r-1"), e.OrderDelivered, S.DELIVERED, "delivered"),
    ]
    for command, event_type, status, label in steps:
        before = order
        events = decide(order, command)
        assert [type(ev) for ev in events] == [event_type]
        (event,) = events
        assert event.order_id == "o-1"
        assert event.version == before.version + 1
        assert event.at == command.at
        order = evolve(order, event)
        assert order.status is status
        assert order.version == before.version + 1
        assert order.timeline[:-1] == before.timeline
        assert (order.timeline[-1].status, order.timeline[-1].at) == (label, command.at)

    assert order.version == 7
    assert [t.status for t in order.timeline] == [
        "pending_payment",
        "paid",
        "accepted",
        "rider_assigned",
        "ready",
        "picked_up",
        "delivered",
    ]
    assert order.intent_id == "pi-1"
    assert order.paid_fen == 2900
    assert order.prep_minutes == 12
    assert order.rider_id == "r-1"
    assert order.refund_due_fen == 0
    assert not order.is_open
    assert order.status in TERMINAL


def test_a_rider_can_be_assigned_after_the_food_is_ready() -> None:
    order = reach(pay(), accept(), ready())
    order = apply(order, assign("r-9"))
    assert order.status is S.READY
    assert order.rider_id == "r-9"
    assert order.timeline[-1].status == "rider_assigned"
    assert apply(order, pickup("r-9")).status is S.PICKED_UP


def test_paid_event_carries_the_payment() -> None:
    (event,) = decide(new_order(), pay(intent="pi-7"))
    assert isinstance(event, e.OrderPaid)
    assert event.as_dict() == {
        "type": "order_paid",
        "order_id": "o-1",
        "version": 2,
        "at": at(1).isoformat(),
        "data": {"intent_id": "pi-7", "amount_fen": 2900, "accept_deadline": None},
    }
    deadline = at(1) + timedelta(minutes=5)
    (event,) = decide(new_order(), replace(pay(intent="pi-7"), accept_deadline=deadline))
    assert event.as_dict()["data"]["accept_deadline"] == deadline.isoformat()
    assert evolve(new_order(), event).accept_deadline == deadline


@pytest.mark.parametrize("by", ["customer", "system"])
def test_cancel_before_payment_refunds_nothing(by: str) -> None:
    order = new_order()
    (event,) = decide(order, cancel(by=by))
    assert isinstance(event, e.OrderCancelled)
    assert (event.by, event.refund_fen, event.version) == (by, 0, 2)
    order = evolve(order, event)
    assert order.status is S.CANCELLED
    assert order.refund_due_fen == 0
    assert order.close_reason == "changed my mind"
    assert releases_stock(event)


def test_cancel_after_payment_refunds_what_was_paid() -> None:
    order = reach(pay())
    (event,) = decide(order, cancel())
    assert isinstance(event, e.OrderCancelled)
    assert event.refund_fen == 2900
    order = evolve(order, event)
    assert (order.status, order.version, order.refund_due_fen) == (S.CANCELLED, 3, 2900)


def test_reject_refunds_what_was_paid() -> None:
    order = reach(pay())
    (event,) = decide(order, reject())
    assert isinstance(event, e.OrderRejected)
    assert (event.refund_fen, event.reason) == (2900, "sold out")
    order = evolve(order, event)
    assert (order.status, order.version, order.refund_due_fen) == (S.REJECTED, 3, 2900)
    assert order.close_reason == "sold out"
    assert releases_stock(event)


def test_only_cancel_and_reject_release_stock() -> None:
    assert not any(releases_stock(ev) for ev in _lifecycle_events())


# ---------------------------------------------------------------- the table


@pytest.mark.parametrize(("state", "name"), ALLOWED)
def test_allowed_transition(state: str, name: str) -> None:
    order = reach(*STATES[state])
    snapshot = copy.deepcopy(order)
    command = TABLE_COMMANDS[name]

    events = decide(order, command)

    assert order == snapshot
    assert len(events) == 1
    assert events[0].version == order.version + 1
    after = evolve(order, events[0])
    assert after.version == order.version + 1
    assert len(after.timeline) == len(order.timeline) + 1
    if name == "assign":
        assert after.status is order.status
        assert after.rider_id == "r-2"
    else:
        assert after.status is STATUS_AFTER[name]


@pytest.mark.parametrize(("state", "name", "code"), REFUSED)
def test_forbidden_transition(state: str, name: str, code: str) -> None:
    order = reach(*STATES[state])
    snapshot = copy.deepcopy(order)

    with pytest.raises(DomainError) as err:
        decide(order, TABLE_COMMANDS[name])

    assert err.value.code == code
    assert order == snapshot
    assert order.as_dict() == snapshot.as_dict()
    if code == "invalid_transition":
        assert err.value.details["status"] == order.status.value
        assert isinstance(err.value.details["action"], str)


# ---------------------------------------------------------------- idempotency and guards


def test_the_same_payment_told_twice_changes_nothing() -> None:
    order = reach(pay(intent="pi-1"))
    assert decide(order, pay(intent="pi-1")) == []


@pytest.mark.parametrize("state", ["accepted", "ready+rider", "delivered", "cancelled+paid"])
def test_a_late_replay_of_the_payment_changes_nothing(state: str) -> None:
    order = reach(*STATES[state])
    assert decide(order, pay(intent="pi-1")) == []


def test_assigning_the_same_rider_again_changes_nothing() -> None:
    order = reach(pay(), accept(), assign("r-1"))
    assert decide(order, assign("r-1")) == []


def test_a_wrong_amount_is_refused() -> None:
    order = new_order()
    with pytest.raises(DomainError) as err:
        decide(order, pay(amount=2899))
    assert err.value.code == "amount_mismatch"
    assert err.value.details == {"paid_fen": 2899, "total_fen": 2900}


def test_a_stale_expected_version_is_refused() -> None:
    order = reach(pay())
    with pytest.raises(DomainError) as err:
        decide(order, replace(accept(), expected_version=1))
    assert err.value.code == "stale_version"
    assert err.value.details == {"expected_version": 1, "version": 2}


def test_a_future_expected_version_is_refused() -> None:
    order = reach(pay())
    with pytest.raises(DomainError) as err:
        decide(order, replace(cancel(), expected_version=3))
    assert err.value.code == "stale_version"


def test_the_current_expected_version_is_accepted() -> None:
    order = reach(pay())
    (event,) = decide(order, replace(accept(), expected_version=2))
    assert event.version == 3


@pytest.mark.parametrize("prep", [-1, 241])
def test_prep_minutes_out_of_range_is_invalid(prep: int) -> None:
    with pytest.raises(DomainError) as err:
        decide(reach(pay()), accept(prep=prep))
    assert err.value.code == "invalid_request"


@pytest.mark.parametrize("prep", [0, 240])
def test_prep_minutes_bounds_are_accepted(prep: int) -> None:
    assert apply(reach(pay()), accept(prep=prep)).prep_minutes == prep


def test_pick_up_by_another_rider_is_forbidden() -> None:
    order = reach(pay(), accept(), assign("r-1"), ready())
    with pytest.raises(DomainError) as err:
        decide(order, pickup("r-2"))
    assert err.value.code == "forbidden"


def test_deliver_by_another_rider_is_forbidden() -> None:
    order = reach(pay(), accept(), assign("r-1"), ready(), pickup("r-1"))
    with pytest.raises(DomainError) as err:
        decide(order, deliver("r-2"))
    assert err.value.code == "forbidden"


@pytest.mark.parametrize("command", [pickup("r-1"), deliver("r-1")], ids=["pickup", "deliver"])
def test_carrying_an_order_without_a_rider_is_no_rider(command: c.Command) -> None:
    order = reach(pay(), accept(), ready())
    with pytest.raises(DomainError) as err:
        decide(order, command)
    assert err.value.code == "no_rider"


def test_a_second_rider_is_refused() -> None:
    order = reach(pay(), accept(), assign("r-1"))
    with pytest.raises(DomainError) as err:
        decide(order, assign("r-2"))
    assert err.value.code == "rider_already_assigned"


# ---------------------------------------------------------------- authorize


CUSTOMER_CMDS = [cancel()]
MERCHANT_CMDS = [accept(), reject(), ready()]
RIDER_CMDS = [pickup(), deliver()]
SYSTEM_CMDS = [pay(), assign()]
ALL_CMDS = CUSTOMER_CMDS + MERCHANT_CMDS + RIDER_CMDS + SYSTEM_CMDS


def _name(cmd: object) -> str:
    return type(cmd).__name__


def _refusal(order: Order, command: c.Command, role: str, who: str) -> str | None:
    try:
        authorize(order, command, role, who)
    except DomainError as err:
        return err.code
    return None


@pytest.fixture
def carried() -> Order:
    return reach(pay(), accept(), assign("r-1"), ready())


@pytest.mark.parametrize("command", ALL_CMDS, ids=_name)
def test_the_system_may_do_anything(carried: Order, command: c.Command) -> None:
    assert _refusal(carried, command, "system", "payments") is None


def test_a_customer_cancels_their_own_order(carried: Order) -> None:
    assert _refusal(carried, cancel(), "customer", "c-1") is None


def test_another_customers_order_looks_like_no_order(carried: Order) -> None:
    with pytest.raises(DomainError) as err:
        authorize(carried, cancel(), "customer", "c-2")
    assert err.value.code == "order_not_found"


@pytest.mark.parametrize("role", ["merchant", "rider"])
def test_only_a_customer_or_admin_cancels(carried: Order, role: str) -> None:
    who = {"merchant": "m-1", "rider": "r-1"}[role]
    assert _refusal(carried, cancel(), role, who) == "forbidden"
    assert _refusal(carried, cancel(), "admin", "ops-1") is None


@pytest.mark.parametrize("command", MERCHANT_CMDS, ids=_name)
def test_the_merchant_prepares_its_own_orders(carried: Order, command: c.Command) -> None:
    assert _refusal(carried, command, "merchant", "m-1") is None
    assert _refusal(carried, command, "merchant", "m-2") == "order_not_found"
    assert _refusal(carried, command, "admin", "ops-1") is None
    assert _refusal(carried, command, "customer", "c-1") == "forbidden"
    assert _refusal(carried, command, "rider", "r-1") == "forbidden"


@pytest.mark.parametrize("command", RIDER_CMDS, ids=_name)
def test_the_assigned_rider_carries_the_order(carried: Order, command: c.Command) -> None:
    assert _refusal(carried, command, "rider", "r-1") is None
    assert _refusal(carried, command, "rider", "r-2") == "order_not_found"
    assert _refusal(carried, command, "customer", "c-1") == "forbidden"
    assert _refusal(carried, command, "merchant", "m-1") == "forbidden"
    assert _refusal(carried, command, "admin", "ops-1") == "forbidden"


@pytest.mark.parametrize("command", RIDER_CMDS, ids=_name)
def test_a_rider_sees_no_order_before_assignment(command: c.Command) -> None:
    order = reach(pay(), accept())
    assert _refusal(order, command, "rider", "r-1") == "order_not_found"


@pytest.mark.parametrize("command", SYSTEM_CMDS, ids=_name)
@pytest.mark.parametrize("role", ["customer", "merchant", "rider", "admin"])
def test_payment_and_assignment_are_for_the_system_only(
    carried: Order, command: c.Command, role: str
) -> None:
    who = {"customer": "c-1", "merchant": "m-1", "rider": "r-1", "admin": "ops-1"}[role]
    assert _refusal(carried, command, role, who) == "forbidden"


@pytest.mark.parametrize("command", ALL_CMDS, ids=_name)
def test_an_unknown_role_is_never_allowed(carried: Order, command: c.Command) -> None:
    assert _refusal(carried, command, "guest", "c-1") is not None


# ---------------------------------------------------------------- audience


def _lifecycle_events() -> list[e.Event]:
    order = new_order()
    events: list[e.Event] = []
    for command in (pay(), accept(), assign("r-1"), ready(), pickup(), deliver()):
        for event in decide(order, command):
            events.append(event)
            order = evolve(order, event)
    return events


def test_audience_adds_the_rider_once_assigned() -> None:
    order = new_order()
    base = {("customer", "c-1"), ("merchant", "m-1"), ("ops", "all")}
    for event in _lifecycle_events():
        before = audience(order, event)
        order = evolve(order, event)
        after = audience(order, event)
        for who in (before, after):
            assert len(who) == len(set(who))
            if isinstance(event, e.RiderAssigned) or order.rider_id is not None:
                assert set(who) == base | {("rider", "r-1")}
            else:
                assert set(who) == base


def test_audience_before_assignment_has_no_rider() -> None:
    order = reach(pay())
    (event,) = decide(order, accept())
    assert all(role != "rider" for role, _ in audience(order, event))


def test_audience_of_a_cancellation_has_no_rider() -> None:
    order = new_order()
    (event,) = decide(order, cancel(by="system"))
    assert sorted(audience(order, event)) == [
        ("customer", "c-1"),
        ("merchant", "m-1"),
        ("ops", "all"),
    ]


# ---------------------------------------------------------------- serialisation


@pytest.mark.parametrize("state", list(STATES))
def test_order_round_trips_through_its_dict(state: str) -> None:
    order = reach(*STATES[state])
    assert Order.from_dict(order.as_dict()) == order
    assert Order.from_dict(json.loads(json.dumps(order.as_dict()))) == order


def test_order_without_coupon_round_trips() -> None:
    order = place(place_cmd(coupon_code=None))
    assert Order.from_dict(order.as_dict()) == order


def test_order_dict_has_the_api_fields() -> None:
    d = reach(pay(), accept(), assign("r-1")).as_dict()
    assert d["status"] == "accepted"
    assert d["version"] == 4
    assert d["amounts"] == {
        "subtotal_fen": 3000,
        "delivery_fee_fen": 400,
        "discount_fen": 500,
        "total_fen": 2900,
    }
    assert d["items"][0] == {
        "item_id": "i-noodles",
        "name": "Beef noodles",
        "qty": 2,
        "price_fen": 1200,
    }
    assert d["timeline"][0] == {"status": "pending_payment", "at": T0.isoformat()}
    assert d["rider_id"] == "r-1"


@pytest.mark.parametrize(
    "error",
    [
        DomainError("out_of_stock", "not enough", item_id="i-1", left=0),
        DomainError("plain", "no details"),
        not_found("merchant", "m-404"),
        forbidden("nope"),
        invalid("bad", field="qty", value=-1),
        # Coupon refusals carry the coupon's own code as a detail.
        DomainError("coupon_unavailable", "expired", code="LUNCH5", message="detail"),
    ],
    ids=lambda err: err.code,
)
def test_domain_error_pickles_with_its_details(error: DomainError) -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(error, protocol=protocol))
        assert back == error
        assert isinstance(back, DomainError)
        assert (back.code, back.message, back.details) == (
            error.code,
            error.message,
            error.details,
        )
        assert str(back) == str(error)
        assert back.as_dict() == error.as_dict()


def test_a_refusal_from_decide_pickles_with_its_details() -> None:
    with pytest.raises(DomainError) as err:
        decide(new_order(), ready())
    back = pickle.loads(pickle.dumps(err.value))
    assert back == err.value
    assert back.details == {"status": "pending_payment", "action": "mark ready"}


# ---------------------------------------------------------------- random walks

ALLOWED_EDGES = {
    (S.PENDING_PAYMENT, S.PAID),
    (S.PENDING_PAYMENT, S.CANCELLED),
    (S.PAID, S.ACCEPTED),
    (S.PAID, S.CANCELLED),
    (S.PAID, S.REJECTED),
    (S.ACCEPTED, S.READY),
    (S.READY, S.PICKED_UP),
    (S.PICKED_UP, S.DELIVERED),
}

_commands = st.sampled_from(
    [
        pay("pi-1"),
        pay("pi-2"),
        pay(amount=AMOUNTS.total_fen - 1),
        accept(12),
        accept(-1),
        accept(241),
        # A shop's acceptance: accepted and ready at once.
        c.AcceptOrder(at=at(2), prep_minutes=0, ready_on_accept=True),
        reject(),
        cancel("customer"),
        cancel("system"),
        assign("r-1"),
        assign("r-2"),
        ready(),
        pickup("r-1"),
        pickup("r-2"),
        deliver("r-1"),
        deliver("r-2"),
        place_cmd(),
    ]
)
# Drawn blindly an expected version is almost always wrong and every command would be
# stale, so it is drawn relative to the order when the command arrives.
_version_offsets = st.sampled_from([None, None, None, 0, -1, 1])


def _next_step(order: Order) -> c.Command:
    """The command that moves an order along the happy path from where it is."""
    match order.status:
        case S.PENDING_PAYMENT:
            return pay("pi-1")
        case S.PAID:
            return accept(12)
        case S.ACCEPTED | S.READY if order.rider_id is None:
            return assign("r-1")
        case S.ACCEPTED:
            return ready()
        case S.READY:
            return pickup(order.rider_id or "r-1")
        case _:
            return deliver(order.rider_id or "r-1")


# Half the steps move the order along: with uniformly random commands nearly every walk
# is cancelled or stuck before a rider ever picks the order up.
@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_commands_never_skip_a_version_or_leave_a_terminal_state(
    data: st.DataObject,
) -> None:
    order = new_order()
    for _ in range(data.draw(st.integers(0, 40), label="steps")):
        nudge = data.draw(st.booleans(), label="nudge")
        command = _next_step(order) if nudge else data.draw(_commands, label="command")
        offset = data.draw(_version_offsets, label="expected version offset")
        if offset is not None:
            command = replace(command, expected_version=order.version + offset)
        before = order
        try:
            events = decide(order, command)
        except DomainError:
            assert order == before
            continue
        # One event per command, but a shop's acceptance, which is two (accepted, ready).
        assert len(events) <= (2 if isinstance(command, c.AcceptOrder) else 1)
        for event in events:
            assert event.order_id == order.id
            assert event.version == order.version + 1
            step_from = order.status
            order = evolve(order, event)
            assert order.version == event.version
            if order.status != step_from:
                assert (step_from, order.status) in ALLOWED_EDGES
        if before.status in TERMINAL:
            assert events == []
            assert order == before
        if before.rider_id is not None:
            assert order.rider_id == before.rider_id
        assert len(order.timeline) == order.version
        assert Order.from_dict(order.as_dict()) == order


def test_a_change_names_its_request_and_only_that_request_is_a_replay() -> None:
    order = reach(pay())
    command = replace(accept(), attempt="a-1")
    after = attempted(apply(order, command), command)
    assert after.attempts == ("a-1",)
    assert replayed(after, command)
    assert not replayed(after, accept())  # a request without an id is never a replay
    assert not replayed(after, replace(ready(), attempt="a-2"))
    # Kept with the order where it is stored, and bounded.
    assert Order.from_dict(after.as_dict()).attempts == ("a-1",)
    for n in range(ATTEMPTS_KEPT + 3):
        after = attempted(after, replace(ready(), attempt=f"b-{n}"))
    assert len(after.attempts) == ATTEMPTS_KEPT and after.attempts[-1] == f"b-{ATTEMPTS_KEPT + 2}"
    assert not replayed(after, command)
    # Nobody reads them: they name requests, not anything of the order.
    for role in ("customer", "merchant", "rider", "admin"):
        assert "attempts" not in shown_to(after.as_dict(), role)
    # An order no request named has no such field where it is stored.
    assert "attempts" not in order.as_dict()
