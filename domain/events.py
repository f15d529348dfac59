"""Events: what happened. Past tense; each carries its entity's id and the order's version.

Every event a terminal receives is one of these types, the order's own transitions and
the wire events beside them (a rider's position, an offer, an order waiting for a
rider, a refund, a menu change); `as_dict` is the wire form of API.md's sync events.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, ClassVar

from domain.geo import Point


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


@dataclass(frozen=True, kw_only=True)
class OrderPaid(Event):
    type: ClassVar[str] = "order_paid"
    intent_id: str
    amount_fen: int
    accept_deadline: datetime | None = None


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
