"""Events: what happened. Past tense; each carries its entity's id and the order's version.

Every event a terminal receives is one of these types, the order's own transitions and
the wire events beside them (a rider's position, an offer, an order waiting for a
rider, a refund, a menu change); `as_dict` is the wire form of API.md's sync events.
The customer's own address book has its events beside its rules (`domain/addresses.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, ClassVar

from domain.geo import Point
from domain.risk import Hold


@dataclass(frozen=True, kw_only=True)
class Event:
    type: ClassVar[str] = "event"
    order_id: str
    version: int
    at: datetime

    def data(self) -> dict[str, Any]:
        base = {"order_id", "version", "at"}
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in base}

    def as_dict(self) -> dict[str, Any]:
        """The wire form of API.md's sync events (the cursor is added by the stream)."""
        return {
            "type": self.type,
            "order_id": self.order_id,
            "version": self.version,
            "at": self.at.isoformat(),
            "data": self.data(),
        }


def _without_hold(data: dict[str, Any]) -> dict[str, Any]:
    """An event that may carry a hold (`domain/risk.py`) says so only when it does."""
    if data.get("hold") is None:
        data.pop("hold", None)
    return data


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@dataclass(frozen=True, kw_only=True)
class OrderPlaced(Event):
    type: ClassVar[str] = "order_placed"
    customer_id: str
    merchant_id: str
    total_fen: int
    # `food` or `errand` (`domain/errands.py`): what the terminals show it as.
    kind: str = "food"
    # Placed held for review (`domain/risk.py`): its merchant does not see it yet.
    hold: Hold | None = None

    def data(self) -> dict[str, Any]:
        return _without_hold(super().data())


@dataclass(frozen=True, kw_only=True)
class OrderPaid(Event):
    """The customer paid what the order's pay link asks. `refund_fen`: what of it goes
    back at once, the difference of a cheaper door chosen before payment (the link asks
    the placed total, `orders._change_delivery`); on the wire only when there is one."""

    type: ClassVar[str] = "order_paid"
    intent_id: str
    amount_fen: int
    accept_deadline: datetime | None = None
    refund_fen: int = 0

    def data(self) -> dict[str, Any]:
        data = super().data()
        if not data["refund_fen"]:
            data.pop("refund_fen")
        return data


@dataclass(frozen=True, kw_only=True)
class OrderAccepted(Event):
    type: ClassVar[str] = "order_accepted"
    prep_minutes: int


@dataclass(frozen=True, kw_only=True)
class OrderRejected(Event):
    type: ClassVar[str] = "order_rejected"
    reason: str
    refund_fen: int


@dataclass(frozen=True, kw_only=True)
class OrderCancelled(Event):
    type: ClassVar[str] = "order_cancelled"
    reason: str
    by: str
    refund_fen: int


@dataclass(frozen=True, kw_only=True)
class RiderAssigned(Event):
    type: ClassVar[str] = "rider_assigned"
    rider_id: str


@dataclass(frozen=True, kw_only=True)
class OrderReady(Event):
    type: ClassVar[str] = "order_ready"


@dataclass(frozen=True, kw_only=True)
class OrderPickedUp(Event):
    type: ClassVar[str] = "order_picked_up"
    rider_id: str


@dataclass(frozen=True, kw_only=True)
class OrderDelivered(Event):
    type: ClassVar[str] = "order_delivered"
    rider_id: str
    # Delivered implausibly fast (`domain/risk.py`): the split waits for review.
    hold: Hold | None = None

    def data(self) -> dict[str, Any]:
        return _without_hold(super().data())


@dataclass(frozen=True, kw_only=True)
class DeliveryChanged(Event):
    """The customer moved the door of an order not yet picked up (`orders.decide`).

    Carries the new door and the re-quoted fee, so the customer's devices, the merchant
    and the rider show it without reading the order again; `refund_fen` is what goes
    back to the customer for a cheaper fee: at once if the order is paid, else right
    after its payment is captured (`OrderPaid.refund_fen`: the pay link asks the placed
    total). The address and phone are sealed at rest on the streams like the order's
    own (`storage/sealing.py`)."""

    type: ClassVar[str] = "delivery_changed"
    lat: float
    lng: float
    address: str
    phone: str
    delivery_fee_fen: int
    total_fen: int
    refund_fen: int


@dataclass(frozen=True, kw_only=True)
class OrderHeld(Event):
    """The provider captured another amount than the order's total: the money is booked,
    the order is not paid, and it waits for review (`domain/risk.py`)."""

    type: ClassVar[str] = "order_held"
    hold: Hold
    intent_id: str
    paid_fen: int


@dataclass(frozen=True, kw_only=True)
class OrderReleased(Event):
    """Operations decided a hold (`domain/risk.py`): approved, or for a delivered order
    refused (an order refused before its merchant had it is cancelled instead).

    `paid`: the release pays the order (a captured amount the review approved), with
    `paid_fen` the order's own money and `excess_fen` what goes back to the customer.
    `accept_deadline`: a paid order's merchant must answer by then."""

    type: ClassVar[str] = "order_released"
    review_id: str
    reason: str
    outcome: str
    by: str
    paid: bool = False
    paid_fen: int = 0
    excess_fen: int = 0
    accept_deadline: datetime | None = None


# -- wire events beside the order's transitions: they carry its current version --------


@dataclass(frozen=True, kw_only=True)
class RiderLocated(Event):
    """Where the rider of the order is now, and when it should arrive (customer only)."""

    type: ClassVar[str] = "rider_location"
    rider_id: str
    lat: float
    lng: float
    eta: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class OfferMade(Event):
    """An order offered to one rider (that rider only), open until `expires_at`."""

    type: ClassVar[str] = "offer"
    offer_id: str
    expires_at: datetime
    pickup: Point
    dropoff: Point
    # An errand's rider will need the pickup and delivery codes at the two doors.
    kind: str = "food"

    def data(self) -> dict[str, Any]:
        return {"offer_id": self.offer_id, "order_id": self.order_id, **super().data()}


@dataclass(frozen=True, kw_only=True)
class DispatchWaiting(Event):
    """No rider could be found near the order's pickup: operations are told once."""

    type: ClassVar[str] = "dispatch_waiting"
    zone: str


@dataclass(frozen=True, kw_only=True)
class Refunded(Event):
    """The provider gave money back for the order."""

    type: ClassVar[str] = "refunded"
    refund_no: str
    amount_fen: int


@dataclass(frozen=True, kw_only=True)
class RefundHeld(Event):
    """A refund waits for review before it goes to the provider (`domain/risk.py`)."""

    type: ClassVar[str] = "refund_held"
    refund_no: str
    amount_fen: int
    review_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class RefundRefused(Event):
    """Operations refused a held refund: nothing goes back."""

    type: ClassVar[str] = "refund_refused"
    refund_no: str
    amount_fen: int
    review_id: str


@dataclass(frozen=True, kw_only=True)
class MenuChanged:
    """A menu item was created or changed; told to the terminals viewing the merchant.

    Not an order's event: its version is the menu's, and no order id goes with it."""

    type: ClassVar[str] = "menu_changed"
    merchant_id: str
    menu_version: int
    item: dict[str, Any]
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "cursor": None,
            "type": self.type,
            "order_id": None,
            "version": self.menu_version,
            "at": self.at.isoformat(),
            "data": {
                "merchant_id": self.merchant_id,
                "menu_version": self.menu_version,
                "item": self.item,
            },
        }
