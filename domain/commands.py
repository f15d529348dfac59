"""Commands: what somebody asks an order to do. Imperative names; they may be refused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.geo import Point
from domain.pricing import Amounts, Line


@dataclass(frozen=True, kw_only=True)
class Command:
    at: datetime
    # A client that saw the order at some version may insist on it (409 stale_version).
    expected_version: int | None = None


@dataclass(frozen=True, kw_only=True)
class PlaceOrder(Command):
    order_id: str
    customer_id: str
    merchant_id: str
    lines: tuple[Line, ...]
    amounts: Amounts
    pickup: Point
    dropoff: Point
    address: str
    phone: str = ""
    coupon_code: str | None = None


@dataclass(frozen=True, kw_only=True)
class MarkPaid(Command):
    intent_id: str
    amount_fen: int
    # By when the merchant must accept or reject; its host sets it from the settings.
    accept_deadline: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class AcceptOrder(Command):
    # None: the merchant's usual time, which its host fills in.
    prep_minutes: int | None = None


@dataclass(frozen=True, kw_only=True)
class RejectOrder(Command):
    reason: str


@dataclass(frozen=True, kw_only=True)
class CancelOrder(Command):
    reason: str
    by: str  # "customer" or "system" (payment timeout)


@dataclass(frozen=True, kw_only=True)
class AssignRider(Command):
    rider_id: str


@dataclass(frozen=True, kw_only=True)
class MarkReady(Command):
    pass


@dataclass(frozen=True, kw_only=True)
class PickUp(Command):
    rider_id: str


@dataclass(frozen=True, kw_only=True)
class Deliver(Command):
    rider_id: str
