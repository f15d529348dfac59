"""Commands: what somebody asks an order to do. Imperative names; they may be refused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.errands import Errand
from domain.geo import Point
from domain.pricing import Amounts, Line
from domain.risk import Hold


@dataclass(frozen=True, kw_only=True)
class Command:
    at: datetime
    # A client that saw the order at some version may insist on it (409 stale_version).
    expected_version: int | None = None
    # The request that asks it (`Order.attempts`): the same id on a request sent again,
    # by the front door after a replica died or by a host reading its letter again.
    attempt: str | None = None


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
    # An errand's own part (`domain/errands.py`); None for food.
    errand: Errand | None = None
    # Placed held for review: the placement's risk check tripped (`domain/risk.py`).
    hold: Hold | None = None


@dataclass(frozen=True, kw_only=True)
class MarkPaid(Command):
    intent_id: str
    # What was captured: what the order's pay link asks (`Order.pay_fen`), its placed
    # total even when a cheaper door lowered its total since (the rest goes back).
    amount_fen: int
    # By when the merchant must accept or reject; its host sets it from the settings.
    accept_deadline: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class AcceptOrder(Command):
    # None: the merchant's usual time, which its host fills in.
    prep_minutes: int | None = None
    # A shop's acceptance: the order is ready at once (`domain.merchants.accepting`).
    ready_on_accept: bool = False


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
    # An errand's pickup code, which whoever hands the item over gives the rider.
    code: str | None = None


@dataclass(frozen=True, kw_only=True)
class Deliver(Command):
    rider_id: str
    # An errand's delivery code, which the recipient gives the rider.
    code: str | None = None
    # Delivered implausibly fast: its host fills this in (`orders.delivery_hold`).
    hold: Hold | None = None


@dataclass(frozen=True, kw_only=True)
class HoldPayment(Command):
    """The provider captured another amount than the order's total (the payment host
    tells the order instead of `MarkPaid`): the order waits for review."""

    intent_id: str
    amount_fen: int
    hold: Hold


@dataclass(frozen=True, kw_only=True)
class Review(Command):
    """Operations decide the order's open hold (`GET /v1/admin/reviews`)."""

    review_id: str
    approve: bool
    # The operator's id (an order it refuses is cancelled `by` it).
    by: str
    # A paid order released to its merchant must be answered by then; its host fills it.
    accept_deadline: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ChangeDelivery(Command):
    """The customer moves the door of an order not yet picked up."""

    dropoff: Point
    # None keeps the order's address (or phone) as it is.
    address: str | None = None
    phone: str | None = None
    # What the customer was shown; a different re-quote is 409 `fee_changed`.
    expected_delivery_fee_fen: int | None = None
    # The fee to the new door by the merchant's tariff, which its host fills in; None
    # while unquoted, and when the merchant does not deliver there.
    delivery_fee_fen: int | None = None
