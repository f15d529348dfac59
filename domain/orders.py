"""The order: one state machine, `decide(order, command) -> events` and `evolve(order, event)`.

pending_payment → paid → accepted → ready → picked_up → delivered, with cancelled
(by the customer before acceptance, or payment timeout) and rejected (by the merchant)
on the side. Rider assignment runs beside preparation. Every event raises the
version by one, so a terminal can drop anything older than what it has. A shop's
acceptance (`AcceptOrder.ready_on_accept`) is two events at once, accepted and ready.
An errand (`domain/errands.py`) is an order of kind `errand`: cancellable by its
customer until picked up, and picked up and delivered only with its proof codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from domain import commands as c
from domain import events as e
from domain import risk
from domain.errands import ERRAND, FOOD, Errand, check_proof
from domain.errors import DomainError, forbidden
from domain.geo import Point, distance_m
from domain.pricing import Amounts, Line
from domain.risk import Hold


class OrderStatus(StrEnum):
    PENDING_PAYMENT = "pending_payment"
    PAID = "paid"
    ACCEPTED = "accepted"
    READY = "ready"
    PICKED_UP = "picked_up"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


TERMINAL = frozenset({OrderStatus.DELIVERED, OrderStatus.CANCELLED, OrderStatus.REJECTED})


@dataclass(frozen=True)
class TimelineEntry:
    status: str
    at: datetime


@dataclass(frozen=True)
class Order:
    id: str
    customer_id: str
    merchant_id: str
    status: OrderStatus
    version: int
    lines: tuple[Line, ...]
    amounts: Amounts
    pickup: Point
    dropoff: Point
    address: str
    placed_at: datetime
    # How the rider reaches the customer at the door (may be empty).
    phone: str = ""
    coupon_code: str | None = None
    intent_id: str | None = None
    paid_fen: int = 0
    refund_due_fen: int = 0
    # Given back already because the customer moved the door somewhere cheaper.
    delivery_refunded_fen: int = 0
    # What its pay link asks, once a cheaper door moved the order before it was paid:
    # the placed total, above `amounts.total_fen` (None: the link asks the total).
    link_fen: int | None = None
    rider_id: str | None = None
    prep_minutes: int | None = None
    close_reason: str | None = None
    # Paid orders only: when the platform rejects it if its merchant has not answered.
    accept_deadline: datetime | None = None
    timeline: tuple[TimelineEntry, ...] = ()
    # An errand's own part (`domain/errands.py`); None for food.
    errand: Errand | None = None
    # Its latest hold for review (`domain/risk.py`), open or decided.
    hold: Hold | None = None
    # The attempt ids of the last requests that changed it (`replayed`).
    attempts: tuple[str, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.status not in TERMINAL

    @property
    def on_hold(self) -> bool:
        """Waiting for operations' review: nothing the hold stops may happen meanwhile."""
        return self.hold is not None and self.hold.open

    @property
    def pay_fen(self) -> int:
        """What the customer pays through the order's pay link (signed for the placed
        total); above the total by what goes back once it is captured."""
        return self.amounts.total_fen if self.link_fen is None else self.link_fen

    @property
    def held_fen(self) -> int:
        """What the customer paid and has not had back: what closing the order refunds."""
        return self.paid_fen - self.delivery_refunded_fen

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer_id": self.customer_id,
            "merchant_id": self.merchant_id,
            "status": self.status.value,
            "version": self.version,
            "items": [
                {"item_id": li.item_id, "name": li.name, "qty": li.qty, "price_fen": li.price_fen}
                for li in self.lines
            ],
            "amounts": self.amounts.as_dict(),
            "pickup": {"lat": self.pickup.lat, "lng": self.pickup.lng},
            "delivery": {
                "lat": self.dropoff.lat,
                "lng": self.dropoff.lng,
                "address": self.address,
                "phone": self.phone,
            },
            "placed_at": self.placed_at.isoformat(),
            "coupon_code": self.coupon_code,
            "intent_id": self.intent_id,
            "paid_fen": self.paid_fen,
            "refund_due_fen": self.refund_due_fen,
            "delivery_refunded_fen": self.delivery_refunded_fen,
            "rider_id": self.rider_id,
            "prep_minutes": self.prep_minutes,
            "close_reason": self.close_reason,
            "accept_deadline": self.accept_deadline.isoformat() if self.accept_deadline else None,
            "timeline": [{"status": t.status, "at": t.at.isoformat()} for t in self.timeline],
            "hold": self.hold.as_dict() if self.hold else None,
            "kind": ERRAND if self.errand else FOOD,
            **({"link_fen": self.link_fen} if self.link_fen is not None else {}),
            **({"attempts": list(self.attempts)} if self.attempts else {}),
            **({"errand": self.errand.as_dict(self.pickup)} if self.errand else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Order:
        return cls(
            id=d["id"],
            customer_id=d["customer_id"],
            merchant_id=d["merchant_id"],
            status=OrderStatus(d["status"]),
            version=d["version"],
            lines=tuple(
                Line(i["item_id"], i["name"], i["qty"], i["price_fen"]) for i in d["items"]
            ),
            amounts=Amounts(**d["amounts"]),
            pickup=Point(d["pickup"]["lat"], d["pickup"]["lng"]),
            dropoff=Point(d["delivery"]["lat"], d["delivery"]["lng"]),
            address=d["delivery"]["address"],
            phone=d["delivery"].get("phone", ""),
            placed_at=datetime.fromisoformat(d["placed_at"]),
            coupon_code=d.get("coupon_code"),
            intent_id=d.get("intent_id"),
            paid_fen=d.get("paid_fen", 0),
            refund_due_fen=d.get("refund_due_fen", 0),
            delivery_refunded_fen=d.get("delivery_refunded_fen", 0),
            link_fen=d.get("link_fen"),
            rider_id=d.get("rider_id"),
            prep_minutes=d.get("prep_minutes"),
            close_reason=d.get("close_reason"),
            accept_deadline=(
                datetime.fromisoformat(d["accept_deadline"]) if d.get("accept_deadline") else None
            ),
            timeline=tuple(
                TimelineEntry(t["status"], datetime.fromisoformat(t["at"])) for t in d["timeline"]
            ),
            errand=Errand.from_dict(d["errand"]) if d.get("errand") else None,
            hold=Hold.from_dict(d["hold"]) if d.get("hold") else None,
            attempts=tuple(d.get("attempts", ())),
        )


# Enough for the requests that can be in flight on one order at a time, several over.
ATTEMPTS_KEPT = 8


def replayed(order: Order, command: c.Command) -> bool:
    """The request was made before and changed the order: a front door that sends it
    again after its replica died, or a host reading again the letter its predecessor
    applied and died before answering. It is answered with the order as it is, not
    refused as the transition it already made."""
    return command.attempt is not None and command.attempt in order.attempts


def attempted(order: Order, command: c.Command) -> Order:
    """The order as a change a command made leaves it, the command's request named in
    it, so written in the same script as the change. Each of the command's events
    names it: the second of a shop's acceptance (ready) is also a follow-up of the
    first, so a request found after the first alone is answered, not refused."""
    if command.attempt is None or command.attempt in order.attempts[-1:]:
        return order
    return replace(order, attempts=(*order.attempts, command.attempt)[-ATTEMPTS_KEPT:])


def _wrong_state(order: Order, action: str) -> DomainError:
    return DomainError(
        "invalid_transition",
        f"cannot {action} an order that is {order.status.value}",
        status=order.status.value,
        action=action,
    )


def _require(order: Order, action: str, *allowed: OrderStatus) -> None:
    if order.status not in allowed:
        raise _wrong_state(order, action)


def _not_held(order: Order, action: str) -> None:
    if order.on_hold:
        assert order.hold is not None
        raise DomainError(
            "order_held",
            f"cannot {action} an order held for review",
            reason=order.hold.reason,
            review_id=order.hold.review_id,
        )


def _own_rider(order: Order, rider_id: str) -> None:
    if order.rider_id is None:
        raise DomainError("no_rider", "no rider is assigned to this order")
    if order.rider_id != rider_id:
        raise forbidden("this order is carried by another rider")


def decide(order: Order | None, command: c.Command) -> list[e.Event]:
    """The events a command produces, or a DomainError; an empty list means already done."""
    if isinstance(command, c.PlaceOrder):
        if order is not None:
            raise DomainError("order_exists", "order already exists", order_id=order.id)
        return [
            e.OrderPlaced(
                order_id=command.order_id,
                version=1,
                at=command.at,
                customer_id=command.customer_id,
                merchant_id=command.merchant_id,
                total_fen=command.amounts.total_fen,
                kind=ERRAND if command.errand else FOOD,
                hold=command.hold,
            )
        ]
    if order is None:
        raise DomainError("order_not_found", "no such order")
    if command.expected_version is not None and command.expected_version != order.version:
        raise DomainError(
            "stale_version",
            "the order changed since you saw it",
            expected_version=command.expected_version,
            version=order.version,
        )
    nxt = order.version + 1
    at = command.at
    oid = order.id
    match command:
        case c.MarkPaid():
            if order.intent_id == command.intent_id and order.status != OrderStatus.PENDING_PAYMENT:
                return []  # the same payment told twice
            _require(order, "pay", OrderStatus.PENDING_PAYMENT)
            if command.amount_fen != order.pay_fen:
                link = {} if order.link_fen is None else {"link_fen": order.link_fen}
                raise DomainError(
                    "amount_mismatch",
                    "paid amount differs from what the order's pay link asks",
                    paid_fen=command.amount_fen,
                    total_fen=order.amounts.total_fen,
                    **link,
                )
            return [
                e.OrderPaid(
                    order_id=oid,
                    version=nxt,
                    at=at,
                    intent_id=command.intent_id,
                    amount_fen=command.amount_fen,
                    # A held order's merchant has not seen it: its deadline runs from release.
                    accept_deadline=None if order.on_hold else command.accept_deadline,
                    # The link's amount above the total (a cheaper door chosen unpaid).
                    refund_fen=command.amount_fen - order.amounts.total_fen,
                )
            ]
        case c.AcceptOrder():
            if command.prep_minutes is None or not 0 <= command.prep_minutes <= 240:
                raise DomainError("invalid_request", "prep_minutes must be within 0..240")
            _require(order, "accept", OrderStatus.PAID)
            _not_held(order, "accept")
            if command.ready_on_accept:
                # A shop's order: nothing to prepare, so it is ready as it is accepted.
                # Two events, each one version, so the lifecycle and its versions are a
                # restaurant's (a delivered order is at version 7 either way).
                return [
                    e.OrderAccepted(order_id=oid, version=nxt, at=at, prep_minutes=0),
                    e.OrderReady(order_id=oid, version=nxt + 1, at=at),
                ]
            return [
                e.OrderAccepted(order_id=oid, version=nxt, at=at, prep_minutes=command.prep_minutes)
            ]
        case c.RejectOrder():
            _require(order, "reject", OrderStatus.PAID)
            _not_held(order, "reject")
            return [
                e.OrderRejected(
                    order_id=oid,
                    version=nxt,
                    at=at,
                    reason=command.reason,
                    refund_fen=order.held_fen,
                )
            ]
        case c.CancelOrder():
            # An errand has nothing cooked for it: it may be cancelled until picked up.
            before_pickup = (OrderStatus.ACCEPTED, OrderStatus.READY) if order.errand else ()
            _require(order, "cancel", OrderStatus.PENDING_PAYMENT, OrderStatus.PAID, *before_pickup)
            return [
                e.OrderCancelled(
                    order_id=oid,
                    version=nxt,
                    at=at,
                    reason=command.reason,
                    by=command.by,
                    refund_fen=order.held_fen,
                )
            ]
        case c.AssignRider():
            if order.rider_id == command.rider_id:
                return []
            _require(order, "assign a rider to", OrderStatus.ACCEPTED, OrderStatus.READY)
            if order.rider_id is not None:
                raise DomainError("rider_already_assigned", "the order already has a rider")
            return [e.RiderAssigned(order_id=oid, version=nxt, at=at, rider_id=command.rider_id)]
        case c.MarkReady():
            _require(order, "mark ready", OrderStatus.ACCEPTED)
            return [e.OrderReady(order_id=oid, version=nxt, at=at)]
        case c.PickUp():
            _own_rider(order, command.rider_id)
            _require(order, "pick up", OrderStatus.READY)
            check_proof(order.errand, "pickup", command.code)
            return [e.OrderPickedUp(order_id=oid, version=nxt, at=at, rider_id=command.rider_id)]
        case c.ChangeDelivery():
            return _change_delivery(order, command, nxt)
        case c.Deliver():
            _own_rider(order, command.rider_id)
            _require(order, "deliver", OrderStatus.PICKED_UP)
            check_proof(order.errand, "delivery", command.code)
            return [
                e.OrderDelivered(
                    order_id=oid, version=nxt, at=at, rider_id=command.rider_id, hold=command.hold
                )
            ]
        case c.HoldPayment():
            if order.hold is not None and order.hold.review_id == command.hold.review_id:
                return []  # the same capture told twice
            _require(order, "hold the payment of", OrderStatus.PENDING_PAYMENT)
            # It takes the place of a hold at placement (its review closes: this one
            # decides the order), and stays hidden from the merchant as that one was.
            return [
                e.OrderHeld(
                    order_id=oid,
                    version=nxt,
                    at=at,
                    hold=replace(command.hold, hidden=hidden_from_merchant(order)),
                    intent_id=command.intent_id,
                    paid_fen=command.amount_fen,
                )
            ]
        case c.Review():
            return _review(order, command, nxt)
    raise DomainError("invalid_request", f"unknown command {type(command).__name__}")


def _review(order: Order, command: c.Review, nxt: int) -> list[e.Event]:
    """Operations' decision on the order's open hold (`domain/risk.py` says what each
    hold stops). A decided or superseded review is 409 `review_decided`."""
    hold = order.hold
    if hold is None or not hold.open or hold.review_id != command.review_id:
        mine = hold is not None and hold.review_id == command.review_id
        raise DomainError(
            "review_decided",
            "this review is decided already",
            review_id=command.review_id,
            status=hold.status if mine and hold is not None else risk.CLOSED,
        )
    at = command.at
    if not command.approve and order.status in (OrderStatus.PENDING_PAYMENT, OrderStatus.PAID):
        # Before the merchant had it: the order is cancelled, what was paid goes back.
        return [
            e.OrderCancelled(
                order_id=order.id,
                version=nxt,
                at=at,
                reason=risk.REVIEW_REFUSED,
                by=command.by,
                refund_fen=order.held_fen,
            )
        ]
    paid = hold.reason == risk.AMOUNT_MISMATCH and command.approve
    total = order.amounts.total_fen
    if paid and order.paid_fen < total:
        raise DomainError(
            "payment_short",
            "the provider captured less than the order's total: refuse it (the money goes "
            "back) and let the customer order again",
            paid_fen=order.paid_fen,
            total_fen=total,
        )
    answered = paid or order.status == OrderStatus.PAID
    return [
        e.OrderReleased(
            order_id=order.id,
            version=nxt,
            at=at,
            review_id=hold.review_id,
            reason=hold.reason,
            outcome=risk.APPROVED if command.approve else risk.REFUSED,
            by=command.by,
            paid=paid,
            paid_fen=total if paid else 0,
            excess_fen=order.paid_fen - total if paid else 0,
            accept_deadline=command.accept_deadline if answered and command.approve else None,
        )
    ]


# Until the rider has the food, the door may move; after, the rider is on the way to it.
DOOR_MOVABLE = (
    OrderStatus.PENDING_PAYMENT,
    OrderStatus.PAID,
    OrderStatus.ACCEPTED,
    OrderStatus.READY,
)


def _change_delivery(order: Order, command: c.ChangeDelivery, nxt: int) -> list[e.Event]:
    """A new door for an order not yet picked up, at the fee the merchant's tariff gives.

    The fee never rises after placement: the customer paid (or holds a signed pay link
    for) the placed total, and the provider refuses a second link of another amount
    for an order once its intent is open, so an extra charge could not be collected
    honestly. A dearer door is refused (`fee_increase_not_supported`: cancel and
    order again). A cheaper one is taken at once, paid or not, and the order shows the
    new fee and total; `refund_fen` is the difference, which goes back to the customer:

    - paid: refunded now (`reactions`: a `Refund` by the change's number);
    - unpaid: for the same reason the link cannot be signed again for the lower total,
      so the customer still pays the link's amount (`link_fen`, the placed total,
      however many doors move), `MarkPaid` expects that amount, and what it holds above
      the total then (placed total less current total) is refunded once, right after
      the capture (`OrderPaid.refund_fen`). Cancelled or timed out unpaid, nothing was
      captured and nothing goes back. A capture held for review settles it at release
      (the excess above the total goes back) or refusal (all of it goes back).

    A door at the same fee moves at any status before pickup.
    """
    if order.status in (OrderStatus.PICKED_UP, OrderStatus.DELIVERED):
        raise DomainError(
            "already_picked_up",
            "the rider has the food: the delivery address can no longer change",
            status=order.status.value,
        )
    _require(order, "change the delivery of", *DOOR_MOVABLE)
    if order.errand is not None:
        # Its price is the distance from A to B by the errand tariff, and its recipient
        # was named for B: a new B is a new errand.
        raise DomainError(
            "delivery_change_not_supported", "an errand's drop-off is fixed at placement"
        )
    address = order.address if command.address is None else command.address
    phone = order.phone if command.phone is None else command.phone
    if (command.dropoff, address, phone) == (order.dropoff, order.address, order.phone):
        return []
    fee = command.delivery_fee_fen
    if fee is None:
        raise DomainError(
            "outside_delivery_range",
            "the merchant does not deliver to this point",
            merchant_id=order.merchant_id,
        )
    current = order.amounts.delivery_fee_fen
    if command.expected_delivery_fee_fen is not None and command.expected_delivery_fee_fen != fee:
        raise DomainError(
            "fee_changed",
            "the delivery fee to this address differs from what the customer saw",
            expected_delivery_fee_fen=command.expected_delivery_fee_fen,
            delivery_fee_fen=fee,
            current_delivery_fee_fen=current,
        )
    if fee > current:
        raise DomainError(
            "fee_increase_not_supported",
            "this address costs more to deliver to than the order paid for",
            delivery_fee_fen=fee,
            current_delivery_fee_fen=current,
        )
    amounts = order.amounts
    return [
        e.DeliveryChanged(
            order_id=order.id,
            version=nxt,
            at=command.at,
            lat=command.dropoff.lat,
            lng=command.dropoff.lng,
            address=address,
            phone=phone,
            delivery_fee_fen=fee,
            total_fen=amounts.subtotal_fen + fee - amounts.discount_fen,
            refund_fen=current - fee,
        )
    ]


def place(command: c.PlaceOrder) -> Order:
    """The new order a PlaceOrder makes (the state that `OrderPlaced` starts)."""
    return Order(
        id=command.order_id,
        customer_id=command.customer_id,
        merchant_id=command.merchant_id,
        status=OrderStatus.PENDING_PAYMENT,
        version=1,
        lines=command.lines,
        amounts=command.amounts,
        pickup=command.pickup,
        dropoff=command.dropoff,
        address=command.address,
        phone=command.phone,
        placed_at=command.at,
        coupon_code=command.coupon_code,
        timeline=(TimelineEntry(OrderStatus.PENDING_PAYMENT.value, command.at),),
        errand=command.errand,
        hold=command.hold,
    )


def evolve(order: Order, event: e.Event) -> Order:
    """Apply one event. Events are facts: no checks here, `decide` made them."""
    stamp = order.timeline
    changes: dict[str, Any] = {"version": event.version}
    match event:
        case e.OrderPaid():
            changes.update(
                status=OrderStatus.PAID,
                intent_id=event.intent_id,
                paid_fen=event.amount_fen,
                accept_deadline=event.accept_deadline,
                # A cheaper door chosen unpaid: its difference goes back with the payment.
                delivery_refunded_fen=order.delivery_refunded_fen + event.refund_fen,
            )
        case e.OrderAccepted():
            changes.update(status=OrderStatus.ACCEPTED, prep_minutes=event.prep_minutes)
        case e.OrderRejected():
            changes.update(
                status=OrderStatus.REJECTED,
                close_reason=event.reason,
                refund_due_fen=event.refund_fen,
            )
            if order.on_hold and order.hold is not None:
                changes.update(hold=order.hold.decided(risk.CLOSED))
        case e.OrderCancelled():
            changes.update(
                status=OrderStatus.CANCELLED,
                close_reason=event.reason,
                refund_due_fen=event.refund_fen,
            )
            if order.on_hold and order.hold is not None:
                refused = event.reason == risk.REVIEW_REFUSED
                changes.update(hold=order.hold.decided(risk.REFUSED if refused else risk.CLOSED))
        case e.OrderHeld():
            changes.update(hold=event.hold, intent_id=event.intent_id, paid_fen=event.paid_fen)
        case e.OrderReleased():
            if order.hold is not None:
                changes.update(hold=order.hold.decided(event.outcome))
            if event.paid:
                changes.update(status=OrderStatus.PAID, paid_fen=event.paid_fen)
            if event.accept_deadline is not None:
                changes.update(accept_deadline=event.accept_deadline)
        case e.RiderAssigned():
            changes.update(rider_id=event.rider_id)
        case e.OrderReady():
            changes.update(status=OrderStatus.READY)
        case e.OrderPickedUp():
            changes.update(status=OrderStatus.PICKED_UP)
        case e.OrderDelivered():
            changes.update(status=OrderStatus.DELIVERED)
            if event.hold is not None:
                changes.update(hold=event.hold)
        case e.DeliveryChanged():
            changes.update(
                dropoff=Point(event.lat, event.lng),
                address=event.address,
                phone=event.phone,
                amounts=replace(
                    order.amounts,
                    delivery_fee_fen=event.delivery_fee_fen,
                    total_fen=event.total_fen,
                ),
            )
            if order.status == OrderStatus.PENDING_PAYMENT:
                # Nothing is refunded yet: the link keeps asking the placed total.
                if event.refund_fen:
                    changes.update(link_fen=order.pay_fen)
            else:
                changes.update(delivery_refunded_fen=order.delivery_refunded_fen + event.refund_fen)
    label = changes["status"].value if "status" in changes else event.type
    changes["timeline"] = (*stamp, TimelineEntry(label, event.at))
    return replace(order, **changes)


def ready_at(order: Order) -> datetime | None:
    """When the food should be ready: acceptance plus the promised preparation time."""
    accepted = next((t.at for t in order.timeline if t.status == OrderStatus.ACCEPTED), None)
    if accepted is None or order.prep_minutes is None:
        return None
    return accepted + timedelta(minutes=order.prep_minutes)


def delivery_hold(order: Order, at: datetime, figures: risk.Figures) -> Hold | None:
    """The hold of a delivery at `at` faster than a bike rides from the counter to the
    door since the pickup, or None."""
    picked = next(
        (t.at for t in reversed(order.timeline) if t.status == OrderStatus.PICKED_UP), None
    )
    if picked is None:
        return None
    seconds = (at - picked).total_seconds()
    hit = risk.rider_too_fast(distance_m(order.pickup, order.dropoff), seconds, figures)
    return risk.hold_of(hit, risk.order_review_id(order.id, "delivered")) if hit else None


def pay_fen_of(stored: Mapping[str, Any]) -> int:
    """What the pay link of an order as stored (`Order.as_dict()`) asks: `Order.pay_fen`."""
    link = stored.get("link_fen")
    return int(link if link is not None else stored["amounts"]["total_fen"])


def hidden_from_merchant(order: Order) -> bool:
    """Held before its merchant had it, and not released: the merchant does not see it."""
    return risk.hides_from_merchant(order.hold)


def visible_to(
    role: str, who: str, *, customer_id: str, merchant_id: str, rider_id: str | None
) -> bool:
    """Whether a caller may read an order: its own customer, merchant or rider, or operations."""
    if role == "admin":
        return True
    party = {"customer": customer_id, "merchant": merchant_id, "rider": rider_id}.get(role)
    return party is not None and party == who


MERCHANT_ACCEPT_TIMEOUT = "merchant_accept_timeout"


def awaits_merchant(order: Order) -> bool:
    """Whether the order's accept deadline still runs: paid, and nobody answered yet."""
    return order.status == OrderStatus.PAID and order.accept_deadline is not None


def moves_stock(order: Order) -> bool:
    """Whether the order's lines are on a merchant's shelf: an errand's one line is not."""
    return order.errand is None


def releases_stock(event: e.Event) -> bool:
    """Whether an event gives the reserved items back to the merchant's shelf."""
    return isinstance(event, e.OrderCancelled | e.OrderRejected)


def audience(order: Order, event: e.Event) -> list[tuple[str, str]]:
    """The terminals that must see an event: (role, id) pairs, plus operations. An order
    held before its merchant had it is not told to the merchant (`hidden_from_merchant`)."""
    who = [("customer", order.customer_id)]
    if not hidden_from_merchant(order):
        who.append(("merchant", order.merchant_id))
    rider = event.rider_id if isinstance(event, e.RiderAssigned) else order.rider_id
    if rider is not None:
        who.append(("rider", rider))
    who.append(("ops", "all"))
    return who


def authorize(order: Order, command: c.Command, role: str, who: str) -> None:
    """Who may ask what of an order. Another party's order looks like no order at all."""
    if role == "system":
        return
    hidden = DomainError("order_not_found", "no such order", order_id=order.id)
    if isinstance(command, c.CancelOrder):
        if role == "admin":
            return
        if role != "customer":
            raise forbidden("only the customer cancels an order")
        if order.customer_id != who:
            raise hidden
        return
    if isinstance(command, c.AcceptOrder | c.RejectOrder | c.MarkReady):
        if role == "admin":
            return
        if role != "merchant":
            raise forbidden("only the merchant prepares an order")
        if order.merchant_id != who:
            raise hidden
        return
    if isinstance(command, c.Review):
        if role != "admin":
            raise forbidden("only operations decide a review")
        return
    if isinstance(command, c.ChangeDelivery):
        if role != "customer":
            raise forbidden("only the customer moves the door of an order")
        if order.customer_id != who:
            raise hidden
        return
    if isinstance(command, c.PickUp | c.Deliver):
        if role != "rider":
            raise forbidden("only the rider carries an order")
        if order.rider_id != who:
            raise hidden
        return
    raise forbidden("not allowed")
