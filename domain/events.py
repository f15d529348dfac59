"""Events: what happened to an order. Past tense; each carries the order's new version."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, ClassVar


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
