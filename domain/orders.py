"""The order: one state machine, `decide(order, command) -> events` and `evolve(order, event)`.

pending_payment → paid → accepted → ready → picked_up → delivered, with cancelled
(by the customer before acceptance, or payment timeout) and rejected (by the merchant)
on the side. Rider assignment runs beside preparation. Every event raises the
version by one, so a terminal can drop anything older than what it has.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from domain import commands as c
from domain import events as e
from domain.errors import DomainError, forbidden
from domain.geo import Point
from domain.pricing import Amounts, Line


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
    rider_id: str | None = None
    prep_minutes: int | None = None
    close_reason: str | None = None
    # Paid orders only: when the platform rejects it if its merchant has not answered.
    accept_deadline: datetime | None = None
    timeline: tuple[TimelineEntry, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.status not in TERMINAL

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
            "rider_id": self.rider_id,
            "prep_minutes": self.prep_minutes,
            "close_reason": self.close_reason,
            "accept_deadline": self.accept_deadline.isoformat() if self.accept_deadline else None,
            "timeline": [{"status": t.status, "at": t.at.isoformat()} for t in self.timeline],
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
            rider_id=d.get("rider_id"),
            prep_minutes=d.get("prep_minutes"),
            close_reason=d.get("close_reason"),
            accept_deadline=(
                datetime.fromisoformat(d["accept_deadline"]) if d.get("accept_deadline") else None
            ),
            timeline=tuple(
                TimelineEntry(t["status"], datetime.fromisoformat(t["at"])) for t in d["timeline"]
            ),
        )


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
            if command.amount_fen != order.amounts.total_fen:
                raise DomainError(
                    "amount_mismatch",
                    "paid amount differs from the order total",
                    paid_fen=command.amount_fen,
                    total_fen=order.amounts.total_fen,
                )
            return [
                e.OrderPaid(
                    order_id=oid,
                    version=nxt,
                    at=at,
                    intent_id=command.intent_id,
                    amount_fen=command.amount_fen,
                    accept_deadline=command.accept_deadline,
                )
            ]
        case c.AcceptOrder():
            if command.prep_minutes is None or not 0 <= command.prep_minutes <= 240:
                raise DomainError("invalid_request", "prep_minutes must be within 0..240")
            _require(order, "accept", OrderStatus.PAID)
            return [
                e.OrderAccepted(order_id=oid, version=nxt, at=at, prep_minutes=command.prep_minutes)
            ]
        case c.RejectOrder():
            _require(order, "reject", OrderStatus.PAID)
            return [
                e.OrderRejected(
                    order_id=oid,
                    version=nxt,
                    at=at,
                    reason=command.reason,
                    refund_fen=order.paid_fen,
                )
            ]
        case c.CancelOrder():
            _require(order, "cancel", OrderStatus.PENDING_PAYMENT, OrderStatus.PAID)
            return [
                e.OrderCancelled(
                    order_id=oid,
                    version=nxt,
                    at=at,
                    reason=command.reason,
                    by=command.by,
                    refund_fen=order.paid_fen,
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
            return [e.OrderPickedUp(order_id=oid, version=nxt, at=at, rider_id=command.rider_id)]
        case c.Deliver():
            _own_rider(order, command.rider_id)
            _require(order, "deliver", OrderStatus.PICKED_UP)
            return [e.OrderDelivered(order_id=oid, version=nxt, at=at, rider_id=command.rider_id)]
    raise DomainError("invalid_request", f"unknown command {type(command).__name__}")


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
            )
        case e.OrderAccepted():
            changes.update(status=OrderStatus.ACCEPTED, prep_minutes=event.prep_minutes)
        case e.OrderRejected():
            changes.update(
                status=OrderStatus.REJECTED,
                close_reason=event.reason,
                refund_due_fen=event.refund_fen,
            )
        case e.OrderCancelled():
            changes.update(
                status=OrderStatus.CANCELLED,
                close_reason=event.reason,
                refund_due_fen=event.refund_fen,
            )
        case e.RiderAssigned():
            changes.update(rider_id=event.rider_id)
        case e.OrderReady():
            changes.update(status=OrderStatus.READY)
        case e.OrderPickedUp():
            changes.update(status=OrderStatus.PICKED_UP)
        case e.OrderDelivered():
            changes.update(status=OrderStatus.DELIVERED)
    label = changes["status"].value if "status" in changes else event.type
    changes["timeline"] = (*stamp, TimelineEntry(label, event.at))
    return replace(order, **changes)


def ready_at(order: Order) -> datetime | None:
    """When the food should be ready: acceptance plus the promised preparation time."""
    accepted = next((t.at for t in order.timeline if t.status == OrderStatus.ACCEPTED), None)
    if accepted is None or order.prep_minutes is None:
        return None
    return accepted + timedelta(minutes=order.prep_minutes)


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


def releases_stock(event: e.Event) -> bool:
    """Whether an event gives the reserved items back to the merchant's shelf."""
    return isinstance(event, e.OrderCancelled | e.OrderRejected)


def audience(order: Order, event: e.Event) -> list[tuple[str, str]]:
    """The terminals that must see an event: (role, id) pairs, plus operations."""
    who = [("customer", order.customer_id), ("merchant", order.merchant_id)]
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
    if isinstance(command, c.PickUp | c.Deliver):
        if role != "rider":
            raise forbidden("only the rider carries an order")
        if order.rider_id != who:
            raise hidden
        return
    raise forbidden("not allowed")
