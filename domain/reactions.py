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
from domain import risk
from domain.dispatch import Dispatch
from domain.errands import ERRAND, FOOD
from domain.merchants import Merchant
from domain.orders import Order, OrderStatus, ready_at


@dataclass(frozen=True)
class Accept:
    """An auto-accepting merchant takes a paid order at its usual preparation time."""

    order_id: str
    merchant_id: str
    prep_minutes: int


@dataclass(frozen=True)
class ReadyOnAccept:
    """A shop's accepted order must be ready. `decide` makes it ready in the same command
    (the two events are committed back to back, before the reply), so this finds it ready
    and does nothing; it is there for a host that died between the two commits: written
    with the acceptance, it makes the order ready once the shard's next host reads it."""

    order_id: str
    merchant_id: str


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
    """The delivery is done: the rider carries one order less (its merchant's host does it).

    Not `delivered`: an errand cancelled while its rider was on the way to the pickup;
    the rider is free again without a delivery counted."""

    rider_id: str
    order_id: str
    placed_at: datetime
    merchant_id: str = ""
    delivered: bool = True


@dataclass(frozen=True)
class Settle:
    order_id: str
    # The delivery was refused by review (`domain/risk.py`): the rider's share is kept.
    withhold_rider: bool = False


@dataclass(frozen=True)
class Cancel:
    """An unpaid order the provider closed at its payment timeout."""

    order_id: str
    merchant_id: str
    reason: str


@dataclass(frozen=True)
class CountOrder:
    """A new order counted for operations' figures (orders a minute, per zone, new and
    repeat customers) by its merchant's host: written with the order, so a crash can
    neither lose the count nor make one without the order. At least once, as every
    follow-up: a host that dies after counting and before acknowledging counts it again
    when it comes back (figures, not money). `placed_at_s` is the epoch second of the
    placement; the zone is the door's, at the platform's resolution."""

    order_id: str
    merchant_id: str
    customer_id: str
    placed_at_s: float
    lat: float
    lng: float


@dataclass(frozen=True)
class OfferWaiting:
    """A rider of the zone may have become free (a delivery, an answered offer, going
    online): the zone's waiting orders are offered now rather than at the next retry
    round; riders who declined are not asked again here."""

    zone: str


@dataclass(frozen=True)
class ForgetRider:
    """A rider crossed into another zone: the zone it left drops it from its riders."""

    zone: str
    rider_id: str


Intent = (
    Accept
    | ReadyOnAccept
    | FindRider
    | Refund
    | ReturnCoupon
    | FreeRider
    | Settle
    | Cancel
    | CountOrder
    | OfferWaiting
    | ForgetRider
)
INTENTS: dict[str, type[Intent]] = {
    cls.__name__: cls
    for cls in (
        CountOrder,
        OfferWaiting,
        ForgetRider,
        Accept,
        ReadyOnAccept,
        FindRider,
        Refund,
        ReturnCoupon,
        FreeRider,
        Settle,
        Cancel,
    )
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
                "delivered": intent.delivered,
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
                fields.get("delivered", True),
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
        kind=ERRAND if order.errand else FOOD,
    )


def refund_no(order: Order) -> str:
    """A closed order's refund number: one per closing, so a repeat refunds nothing more."""
    return f"{order.id}-r{order.version}"


DELIVERY_CHANGED = "delivery_changed"
# Not paid yet (or its capture held for review): a cheaper door's money is not in.
UNPAID = OrderStatus.PENDING_PAYMENT


def delivery_refund_no(order: Order) -> str:
    """The refund number of a cheaper door: one per change of a paid order (the version
    it made), and one for all the changes before payment (the payment's version)."""
    return f"{order.id}-d{order.version}"


def reactions(order: Order, event: e.Event, merchant: Merchant | None) -> list[Intent]:
    """The follow-ups of `event`, which made `order` what it is now."""
    match event:
        case e.OrderPlaced():
            at = order.placed_at.timestamp()
            lat, lng = order.dropoff.lat, order.dropoff.lng
            return [CountOrder(order.id, order.merchant_id, order.customer_id, at, lat, lng)]
        case e.OrderPaid():
            return _paid(order, event, merchant)
        case e.OrderReleased():
            return _released(order, event, merchant)
        case e.OrderAccepted() if merchant is not None and merchant.ready_on_accept:
            # Ready now (prep 0): dispatch weighs the rider's way to the shop only.
            return [FindRider(dispatch_of(order)), ReadyOnAccept(order.id, order.merchant_id)]
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
            if order.rider_id is not None:
                # An errand cancelled on its rider's way to the pickup (`domain/errands.py`).
                intents.append(
                    FreeRider(order.rider_id, order.id, order.placed_at, order.merchant_id, False)
                )
            return intents
        case e.DeliveryChanged() if event.refund_fen > 0 and order.status != UNPAID:
            # Through the payment host like any partial refund, once by its number. An
            # unpaid order's goes back with its payment (`_paid`), a held capture's at
            # its review (`_released`).
            return [Refund(order.id, event.refund_fen, delivery_refund_no(order), DELIVERY_CHANGED)]
        case e.OrderDelivered() if order.on_hold:
            # Delivered too fast: the rider is free, its split waits for review.
            return [FreeRider(event.rider_id, order.id, order.placed_at, order.merchant_id)]
        case e.OrderDelivered():
            return [
                FreeRider(event.rider_id, order.id, order.placed_at, order.merchant_id),
                Settle(order.id),
            ]
        case _:
            return []


def _paid(order: Order, event: e.OrderPaid, merchant: Merchant | None) -> list[Intent]:
    """A payment: the difference of a cheaper door chosen before it goes back now, held
    or not (the capture is the link's amount, `orders._change_delivery`); an
    auto-accepting merchant takes the order unless it is held (review releases it)."""
    intents: list[Intent] = []
    if event.refund_fen > 0:
        intents.append(
            Refund(order.id, event.refund_fen, delivery_refund_no(order), DELIVERY_CHANGED)
        )
    if not order.on_hold and merchant is not None and merchant.accept_mode == "auto":
        intents.append(Accept(order.id, order.merchant_id, merchant.prep_minutes))
    return intents


def _released(order: Order, event: e.OrderReleased, merchant: Merchant | None) -> list[Intent]:
    """What a hold stopped, now that review decided it (`domain/risk.py`)."""
    if order.status == OrderStatus.DELIVERED:
        return [Settle(order.id, withhold_rider=event.outcome == risk.REFUSED)]
    intents: list[Intent] = []
    if event.excess_fen > 0:
        excess = risk.excess_refund_no(order.id)
        intents.append(Refund(order.id, event.excess_fen, excess, risk.EXCESS))
    if order.status == OrderStatus.PAID and merchant is not None and merchant.accept_mode == "auto":
        intents.append(Accept(order.id, order.merchant_id, merchant.prep_minutes))
    return intents
