"""A payment: what the provider captured and refunded for one order, and what follows.

The record is the payment's state; `decide` turns what happened at the provider (or a
refund the platform asks for) into events, `evolve` applies them. Amounts are integer fen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from domain.errors import DomainError

FEE_BP = 60  # the provider's fee in basis points (0.6%, like WeChat Pay)


def provider_fee_fen(amount_fen: int, fee_bp: int = FEE_BP) -> int:
    """The provider's fee on a payment, rounded half up to the fen (its statement agrees)."""
    return (amount_fen * fee_bp + 5000) // 10000


def next_check_in(age_s: float, poll_s: float, timeout_s: float) -> float:
    """Seconds until the provider is asked again about an order still unpaid at `age_s`.

    The wait about doubles with the order's age, as providers advise for payment
    queries: an abandoned order costs ten queries over a 15-minute timeout, not 29, and
    a lunch peak's thousands of abandoned orders do not starve the fresh ones of the
    poll rounds, which are capped. Never sooner than `poll_s`, and never past the
    deadline, so that the order is closed (and its stock given back) on time.
    """
    return max(poll_s, min(age_s, timeout_s - age_s))


# Refund lines that hold their amount out of what may still be refunded.
PENDING = frozenset({"pending", "held"})


class PaymentStatus(StrEnum):
    CREATED = "created"  # only its pay link exists
    CAPTURED = "captured"
    CLOSED = "closed"  # never paid; the provider closed it


@dataclass(frozen=True)
class RefundLine:
    refund_no: str
    amount_fen: int
    reason: str
    # pending until the provider confirms: succeeded. A refund a risk check held is
    # "held" (not sent to the provider) until review: then pending, or "refused".
    status: str = "pending"
    refunded_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "refund_no": self.refund_no,
            "amount_fen": self.amount_fen,
            "reason": self.reason,
            "status": self.status,
        }
        if self.refunded_at is not None:
            d["refunded_at"] = self.refunded_at
        return d


@dataclass(frozen=True)
class Payment:
    """One order's payment as the platform books it."""

    order_id: str
    merchant_id: str
    customer_id: str
    intent_id: str
    pay_url: str
    amount_fen: int
    created_at: float
    status: PaymentStatus = PaymentStatus.CREATED
    captured_fen: int = 0
    refunded_fen: int = 0
    paid_at: str | None = None
    # The order was told it is paid (or refused it: then the money goes back).
    order_paid: bool = False
    # The split (or, for a fully refunded order, the provider's fee) is booked.
    split: bool = False
    refunds: Mapping[str, RefundLine] = field(default_factory=dict)

    @property
    def pending_refunds_fen(self) -> int:
        """Refunds asked and not confirmed: sent, or held for review (`domain/risk.py`)."""
        return sum(r.amount_fen for r in self.refunds.values() if r.status in PENDING)

    @property
    def refundable_fen(self) -> int:
        """What may still be refunded: captured, less what was or is being refunded."""
        return self.captured_fen - self.refunded_fen - self.pending_refunds_fen

    @property
    def fully_refunded(self) -> bool:
        return self.status == PaymentStatus.CAPTURED and self.refunded_fen == self.captured_fen

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "order_id": self.order_id,
            "merchant_id": self.merchant_id,
            "customer_id": self.customer_id,
            "intent_id": self.intent_id,
            "pay_url": self.pay_url,
            "amount_fen": self.amount_fen,
            "status": self.status.value,
            "created_at": self.created_at,
            "captured_fen": self.captured_fen,
            "refunded_fen": self.refunded_fen,
            "order_paid": self.order_paid,
            "split": self.split,
            "refunds": {no: r.as_dict() for no, r in self.refunds.items()},
        }
        if self.paid_at is not None:
            d["paid_at"] = self.paid_at
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Payment:
        return cls(
            order_id=d["order_id"],
            merchant_id=d["merchant_id"],
            customer_id=d["customer_id"],
            intent_id=d["intent_id"],
            pay_url=d["pay_url"],
            amount_fen=d["amount_fen"],
            created_at=d["created_at"],
            status=PaymentStatus(d["status"]),
            captured_fen=d.get("captured_fen", 0),
            refunded_fen=d.get("refunded_fen", 0),
            paid_at=d.get("paid_at"),
            order_paid=d.get("order_paid", False),
            split=d.get("split", False),
            refunds={no: RefundLine(**r) for no, r in d.get("refunds", {}).items()},
        )


def opened(
    order_id: str,
    merchant_id: str,
    customer_id: str,
    intent_id: str,
    pay_url: str,
    amount_fen: int,
    placed_at: float,
) -> Payment:
    """The payment of an order that has only its pay link yet."""
    return Payment(order_id, merchant_id, customer_id, intent_id, pay_url, amount_fen, placed_at)


# -- commands: what the provider told us, or what the platform asks ------------------


@dataclass(frozen=True)
class Capture:
    """The provider says the customer paid (a notification or an answer to a query)."""

    intent_id: str
    amount_fen: int
    at: datetime
    # Another amount than the order's is taken only when the provider's own order
    # query says so (a notification alone could be a replay or a forgery): then it is
    # booked and the order held for review (`domain/risk.py`).
    confirmed: bool = False


@dataclass(frozen=True)
class RequestRefund:
    refund_no: str
    amount_fen: int
    reason: str
    # A risk check held it: recorded, not sent to the provider until review.
    held: bool = False


@dataclass(frozen=True)
class ReleaseRefund:
    """Review decided a held refund: sent (approve) or dropped."""

    refund_no: str
    approve: bool


@dataclass(frozen=True)
class ConfirmRefund:
    """The provider says a refund went through."""

    refund_no: str
    amount_fen: int
    at: datetime


@dataclass(frozen=True)
class TellOrderPaid:
    """The order has heard of its payment (it took it, or refused it)."""


@dataclass(frozen=True)
class BookSplit:
    pass


@dataclass(frozen=True)
class Close:
    """The customer never paid and the provider closed the intent."""


PaymentCommand = (
    Capture | RequestRefund | ReleaseRefund | ConfirmRefund | TellOrderPaid | BookSplit | Close
)


@dataclass(frozen=True)
class Captured:
    amount_fen: int
    at: datetime


@dataclass(frozen=True)
class RefundRequested:
    refund: RefundLine


@dataclass(frozen=True)
class RefundReleased:
    refund_no: str
    approve: bool


@dataclass(frozen=True)
class RefundConfirmed:
    refund_no: str
    amount_fen: int
    at: datetime


@dataclass(frozen=True)
class OrderToldPaid:
    pass


@dataclass(frozen=True)
class SplitBooked:
    pass


@dataclass(frozen=True)
class PaymentClosed:
    pass


PaymentEvent = (
    Captured
    | RefundRequested
    | RefundReleased
    | RefundConfirmed
    | OrderToldPaid
    | SplitBooked
    | PaymentClosed
)


def decide(payment: Payment, command: PaymentCommand) -> list[PaymentEvent]:
    """The events a command produces, or a DomainError; an empty list means already done."""
    match command:
        case Capture():
            if command.intent_id != payment.intent_id:
                raise DomainError("amount_mismatch", "intent does not match the order")
            if payment.status == PaymentStatus.CAPTURED:
                if command.amount_fen != payment.captured_fen:
                    raise DomainError("amount_mismatch", "amount does not match the capture")
                return []
            if command.amount_fen != payment.amount_fen and not command.confirmed:
                raise DomainError("amount_mismatch", "amount does not match the order")
            return [Captured(command.amount_fen, command.at)]
        case RequestRefund():
            if payment.status != PaymentStatus.CAPTURED:
                raise DomainError("not_paid", "nothing was captured for this order")
            existing = payment.refunds.get(command.refund_no)
            if existing is not None:
                if existing.amount_fen != command.amount_fen:
                    raise DomainError("refund_no_conflict", "this refund number has another amount")
                return []
            if command.amount_fen <= 0 or command.amount_fen > payment.refundable_fen:
                raise DomainError(
                    "refund_exceeds_payment",
                    "refunds may not exceed what was captured",
                    captured_fen=payment.captured_fen,
                    refunded_fen=payment.refunded_fen,
                    refundable_fen=max(payment.refundable_fen, 0),
                )
            status = "held" if command.held else "pending"
            line = RefundLine(command.refund_no, command.amount_fen, command.reason, status)
            return [RefundRequested(line)]
        case ReleaseRefund():
            held = payment.refunds.get(command.refund_no)
            if held is None:
                raise DomainError("refund_not_found", "unknown refund number")
            if held.status != "held":
                raise DomainError("review_decided", "this refund is not held", status=held.status)
            return [RefundReleased(command.refund_no, command.approve)]
        case ConfirmRefund():
            refund = payment.refunds.get(command.refund_no)
            if refund is None:
                raise DomainError("refund_not_found", "unknown refund number")
            if refund.amount_fen != command.amount_fen:
                raise DomainError("amount_mismatch", "amount does not match the refund")
            if refund.status == "succeeded":
                return []
            return [RefundConfirmed(command.refund_no, command.amount_fen, command.at)]
        case TellOrderPaid():
            return [] if payment.order_paid else [OrderToldPaid()]
        case BookSplit():
            return [] if payment.split else [SplitBooked()]
        case Close():
            return [] if payment.status == PaymentStatus.CLOSED else [PaymentClosed()]


def evolve(payment: Payment, event: PaymentEvent) -> Payment:
    match event:
        case Captured():
            return replace(
                payment,
                status=PaymentStatus.CAPTURED,
                captured_fen=event.amount_fen,
                paid_at=event.at.isoformat(),
            )
        case RefundRequested():
            return replace(
                payment, refunds={**payment.refunds, event.refund.refund_no: event.refund}
            )
        case RefundReleased():
            released = replace(
                payment.refunds[event.refund_no],
                status="pending" if event.approve else "refused",
            )
            return replace(payment, refunds={**payment.refunds, event.refund_no: released})
        case RefundConfirmed():
            line = replace(
                payment.refunds[event.refund_no],
                status="succeeded",
                refunded_at=event.at.isoformat(),
            )
            return replace(
                payment,
                refunded_fen=payment.refunded_fen + event.amount_fen,
                refunds={**payment.refunds, event.refund_no: line},
            )
        case OrderToldPaid():
            return replace(payment, order_paid=True)
        case SplitBooked():
            return replace(payment, split=True)
        case PaymentClosed():
            return replace(payment, status=PaymentStatus.CLOSED)
