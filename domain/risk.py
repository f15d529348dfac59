"""Risk checks: pure rules over facts, each a `Hit` with a reason code, or None.

The facts are counted elsewhere (orders and failed payments per customer and per
device in a window, a merchant's money of the day: `storage/risk.py`; the order's own
times and points), the figures come from the settings (`O2O_RISK_*`, passed in as
`Figures`), and a hit never refuses anything: it **holds** the order or the refund for
review by operations (`GET /v1/admin/reviews`, approve or refuse), and every party it
concerns is told, so nothing is stopped silently.

What a hold stops, by rule:

- at placement (`too_many_orders`, `too_many_failed_payments`): the order is placed and
  the customer sees it held; its merchant does not see it (no event, no index, no
  auto-accept, no accept deadline) until it is approved. Refused: cancelled, refunded
  if it was paid, its stock and coupon given back.
- at payment (`amount_mismatch`): the provider's money is booked, but the order is not
  paid (its merchant, which saw it placed, sees it held). Approved: paid, and what was
  captured above the total refunded at once (a short payment cannot be approved: the
  merchant would cook for less than the order). Refused: cancelled and refunded in full.
  It takes the place of an open hold at placement, hidden from the merchant as that was.
- a refund above the merchant's daily share (`refund_over_daily_share`): the refund is
  recorded and not sent to the provider. Approved by another operator than the one
  who asked: sent. Refused: dropped, the money stays where it is.
- a rider faster than a bike between the counter and the door (`rider_too_fast`): the
  delivery stands (the rider is freed), the order's split waits. Approved: split as
  always. Refused: split with the rider's share kept by the platform.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from domain.ledger import SplitPlan

TOO_MANY_ORDERS = "too_many_orders"
TOO_MANY_FAILED_PAYMENTS = "too_many_failed_payments"
AMOUNT_MISMATCH = "amount_mismatch"
REFUND_OVER_SHARE = "refund_over_daily_share"
RIDER_TOO_FAST = "rider_too_fast"

# A review's life: open until decided; "closed" when the order closed first (the
# customer cancelled it, its payment timed out) and nothing was left to decide.
OPEN, APPROVED, REFUSED, CLOSED = "open", "approved", "refused", "closed"
REVIEW_STATUSES = (OPEN, APPROVED, REFUSED, CLOSED)
# The close reason of an order whose review was refused.
REVIEW_REFUSED = "review_refused"
# The refund of what a payment approved by review captured above the order's total.
EXCESS = "excess_payment"

BP_WHOLE = 10_000


@dataclass(frozen=True)
class Figures:
    """The rules' figures, from the settings (`storage.risk.figures_of`). A maximum count
    or speed of 0 turns its rule off; a large allowance turns the refund rule off."""

    orders_window_s: int = 3600
    max_orders_per_customer: int = 20
    max_orders_per_device: int = 30
    failures_window_s: int = 86_400
    max_failures_per_customer: int = 5
    max_failures_per_device: int = 5
    refund_share_bp: int = 3000
    refund_allowance_fen: int = 20_000
    rider_max_speed_kmh: float = 30.0
    rider_min_distance_m: float = 300.0


@dataclass(frozen=True)
class Hit:
    """A rule tripped: why (a stable code), for people, and the facts it weighed."""

    reason: str
    message: str
    facts: Mapping[str, float] = field(default_factory=dict)


# -- the rules ---------------------------------------------------------------------


def too_many_orders(
    customer_orders: int, device_orders: int | None, figures: Figures
) -> Hit | None:
    """Orders placed in the window, the one being placed included; a device's only when
    the client named one (`X-Device-Id`)."""
    facts: dict[str, float] = {
        "customer_orders": customer_orders,
        "max_orders_per_customer": figures.max_orders_per_customer,
        "window_s": figures.orders_window_s,
    }
    if device_orders is not None:
        facts.update(
            device_orders=device_orders, max_orders_per_device=figures.max_orders_per_device
        )
    over_customer = 0 < figures.max_orders_per_customer < customer_orders
    over_device = device_orders is not None and 0 < figures.max_orders_per_device < device_orders
    if not (over_customer or over_device):
        return None
    who = "this customer" if over_customer else "this device"
    return Hit(TOO_MANY_ORDERS, f"{who} placed more orders than a person does in the window", facts)


def too_many_failed_payments(
    customer_failures: int, device_failures: int | None, figures: Figures
) -> Hit | None:
    """Payments that failed in the window before this order (orders left unpaid until
    the payment timeout closed them): the next order is held once they reach the
    maximum."""
    facts: dict[str, float] = {
        "customer_failures": customer_failures,
        "max_failures_per_customer": figures.max_failures_per_customer,
        "window_s": figures.failures_window_s,
    }
    if device_failures is not None:
        facts.update(
            device_failures=device_failures,
            max_failures_per_device=figures.max_failures_per_device,
        )
    over_customer = 0 < figures.max_failures_per_customer <= customer_failures
    over_device = (
        device_failures is not None and 0 < figures.max_failures_per_device <= device_failures
    )
    if not (over_customer or over_device):
        return None
    who = "this customer" if over_customer else "this device"
    return Hit(TOO_MANY_FAILED_PAYMENTS, f"{who} left too many payments unfinished", facts)


@dataclass(frozen=True)
class PlacementCounts:
    """What `storage/risk.py` counted for one placement (None: no device was named)."""

    customer_orders: int
    customer_failures: int
    device_orders: int | None = None
    device_failures: int | None = None


def placement(counts: PlacementCounts, figures: Figures) -> Hit | None:
    """The first rule a new order trips: too many orders, then too many failures."""
    return too_many_orders(
        counts.customer_orders, counts.device_orders, figures
    ) or too_many_failed_payments(counts.customer_failures, counts.device_failures, figures)


def amount_mismatch(captured_fen: int, total_fen: int) -> Hit | None:
    """The provider captured another amount than the order's total (a tampered link, a
    provider's error): the money is real, the order is not paid until somebody looks.

    `total_fen` is what the order's pay link asks (`Order.pay_fen`): its placed total,
    which stays above the order's total once a cheaper door moved it unpaid (that
    difference is refunded with the payment, `orders._change_delivery`), so a capture
    of the link's amount is never held."""
    if captured_fen == total_fen:
        return None
    return Hit(
        AMOUNT_MISMATCH,
        "the provider captured another amount than the order's total",
        {"captured_fen": captured_fen, "total_fen": total_fen},
    )


def refund_over_share(
    refund_fen: int, refunded_today_fen: int, captured_today_fen: int, figures: Figures
) -> Hit | None:
    """A refund that takes the merchant's refunds of the day (UTC) above both the
    allowance and the share of what its customers paid that day."""
    after = refunded_today_fen + refund_fen
    share_fen = captured_today_fen * figures.refund_share_bp // BP_WHOLE
    limit = max(figures.refund_allowance_fen, share_fen)
    if after <= limit:
        return None
    return Hit(
        REFUND_OVER_SHARE,
        "this refund takes the merchant's refunds of the day above its share",
        {
            "refund_fen": refund_fen,
            "refunded_today_fen": refunded_today_fen,
            "captured_today_fen": captured_today_fen,
            "share_bp": figures.refund_share_bp,
            "allowance_fen": figures.refund_allowance_fen,
        },
    )


def rider_too_fast(distance_m: float, seconds: float, figures: Figures) -> Hit | None:
    """From pickup to delivery faster than a bike could ride the straight line from the
    counter to the door. Short trips are not judged: there the door's position is as
    uncertain as the way."""
    if figures.rider_max_speed_kmh <= 0 or distance_m < figures.rider_min_distance_m:
        return None
    fastest_s = distance_m / (figures.rider_max_speed_kmh / 3.6)
    if seconds >= fastest_s:
        return None
    return Hit(
        RIDER_TOO_FAST,
        "delivered faster than a bike rides from the counter to the door",
        {
            "distance_m": round(distance_m, 1),
            "seconds": round(max(seconds, 0.0), 3),
            "fastest_plausible_s": round(fastest_s, 1),
            "max_speed_kmh": figures.rider_max_speed_kmh,
        },
    )


# -- holds and reviews ----------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    """An order held for review: by which rule, under which review, and how it stands."""

    reason: str
    review_id: str
    status: str = OPEN
    facts: Mapping[str, float] = field(default_factory=dict)
    message: str = ""
    # Held before its merchant had the order (at placement, or a payment's hold of an
    # order held so): the merchant is told nothing of it until it is approved.
    hidden: bool = False

    @property
    def open(self) -> bool:
        return self.status == OPEN

    def decided(self, status: str) -> Hold:
        return replace(self, status=status)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "review_id": self.review_id,
            "status": self.status,
            "facts": dict(self.facts),
            "message": self.message,
            "hidden": self.hidden,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Hold:
        return cls(
            reason=d["reason"],
            review_id=d["review_id"],
            status=d.get("status", OPEN),
            facts=dict(d.get("facts", {})),
            message=d.get("message", ""),
            hidden=d.get("hidden", False),
        )


def hides_from_merchant(hold: Hold | None) -> bool:
    """Held before its merchant had the order, and not released: the merchant is told
    nothing of it (no event of the order, nor of its payment)."""
    return hold is not None and hold.hidden and hold.status != APPROVED


def hold_of(hit: Hit, review_id: str, hidden: bool = False) -> Hold:
    return Hold(hit.reason, review_id, OPEN, dict(hit.facts), hit.message, hidden)


# Review ids name what they hold, so a retry that holds again holds under the same id.
# Each stage of an order holds at most once; a refund by its number.


def order_review_id(order_id: str, stage: str) -> str:
    """`stage`: "placed", "paid" or "delivered"."""
    return f"rv-{order_id}-{stage}"


def refund_review_id(refund_no: str) -> str:
    return f"rv-{refund_no}"


def excess_refund_no(order_id: str) -> str:
    return f"{order_id}-excess"


def rider_withheld(plan: SplitPlan) -> SplitPlan:
    """A split plan whose rider levels go to the platform: the split of a delivery that
    review refused (the merchant is paid as always, the rider's share is kept)."""
    return SplitPlan(
        tuple(
            replace(level, party="platform") if level.party == "rider" else level
            for level in plan.levels
        )
    )
