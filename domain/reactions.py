"""What must happen after an order's event, as one table: event -> follow-up intents.

The merchant host runs the intents after its commit; each is idempotent where it lands
(a refund by its refund number, a split once per order, an assignment by rider), so
running one again changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from domain import events as e
from domain.dispatch import Dispatch
from domain.merchants import Merchant
from domain.orders import Order, ready_at


@dataclass(frozen=True)
class Accept:
    """An auto-accepting merchant takes a paid order at its usual preparation time."""

    order_id: str
    merchant_id: str
    prep_minutes: int


@dataclass(frozen=True)
class FindRider:
    request: Dispatch


@dataclass(frozen=True)
class Refund:
    order_id: str
    amount_fen: int
    refund_no: str
    reason: str


@dataclass(frozen=True)
class ReturnCoupon:
    code: str
    customer_id: str
    order_id: str
    merchant_id: str


@dataclass(frozen=True)
class FreeRider:
    """The delivery is done: the rider carries one order less (its merchant's host does it)."""

    rider_id: str
    order_id: str
    placed_at: datetime
    merchant_id: str = ""


@dataclass(frozen=True)
class Settle:
    order_id: str


@dataclass(frozen=True)
class Cancel:
    """An unpaid order the provider closed at its payment timeout."""

    order_id: str
    merchant_id: str
    reason: str


Intent = Accept | FindRider | Refund | ReturnCoupon | FreeRider | Settle | Cancel
INTENTS: dict[str, type[Intent]] = {
    cls.__name__: cls
    for cls in (Accept, FindRider, Refund, ReturnCoupon, FreeRider, Settle, Cancel)
}


def to_wire(intent: Intent) -> dict[str, Any]:
    """An intent as a mailbox entry carries it (JSON-ready)."""
    match intent:
        case FindRider():
            return {"intent": "FindRider", "request": intent.request.as_dict()}
        case FreeRider():
            return {
                "intent": "FreeRider",
                "rider_id": intent.rider_id,
                "order_id": intent.order_id,
                "placed_at": intent.placed_at.isoformat(),
                "merchant_id": intent.merchant_id,
            }
    return {"intent": type(intent).__name__, **asdict(intent)}


def from_wire(d: dict[str, Any]) -> Intent:
    fields = {k: v for k, v in d.items() if k != "intent"}
    match d["intent"]:
        case "FindRider":
            return FindRider(Dispatch.from_dict(fields["request"]))
        case "FreeRider":
            return FreeRider(
                fields["rider_id"],
                fields["order_id"],
                datetime.fromisoformat(fields["placed_at"]),
                fields["merchant_id"],
            )
    return INTENTS[d["intent"]](**fields)  # type: ignore[arg-type]


def dispatch_of(order: Order) -> Dispatch:
    """What dispatch needs of an order to find it a rider."""
    return Dispatch(
        order_id=order.id,
        merchant_id=order.merchant_id,
        pickup=order.pickup,
        dropoff=order.dropoff,
        ready_at=ready_at(order),
        version=order.version,
    )


def refund_no(order: Order) -> str:
    """A closed order's refund number: one per closing, so a repeat refunds nothing more."""
    return f"{order.id}-r{order.version}"


def reactions(order: Order, event: e.Event, merchant: Merchant | None) -> list[Intent]:
    """The follow-ups of `event`, which made `order` what it is now."""
    match event:
        case e.OrderPaid() if merchant is not None and merchant.accept_mode == "auto":
            return [Accept(order.id, order.merchant_id, merchant.prep_minutes)]
        case e.OrderAccepted():
            return [FindRider(dispatch_of(order))]
        case e.OrderCancelled() | e.OrderRejected():
            intents: list[Intent] = []
            if event.refund_fen > 0:
                intents.append(
                    Refund(order.id, event.refund_fen, refund_no(order), order.close_reason or "")
                )
            if order.coupon_code:
                intents.append(
                    ReturnCoupon(order.coupon_code, order.customer_id, order.id, order.merchant_id)
                )
            return intents
        case e.OrderDelivered():
            return [
                FreeRider(event.rider_id, order.id, order.placed_at, order.merchant_id),
                Settle(order.id),
            ]
        case _:
            return []
