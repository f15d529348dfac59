"""Money in integer fen: what an order costs.

No floats touch an amount; percentages round half up to the fen, once, at the end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from domain.errors import DomainError, invalid


@dataclass(frozen=True)
class Line:
    """One menu item on an order, priced when the order was placed."""

    item_id: str
    name: str
    qty: int
    price_fen: int

    def __post_init__(self) -> None:
        if self.qty <= 0:
            raise invalid("qty must be positive", item_id=self.item_id)
        if self.price_fen < 0:
            raise invalid("price_fen must not be negative", item_id=self.item_id)

    @property
    def total_fen(self) -> int:
        return self.qty * self.price_fen


@dataclass(frozen=True)
class DeliveryTariff:
    """A base fee covers the first `base_m`; each started kilometre beyond adds `per_km_fen`."""

    base_fen: int = 300
    base_m: int = 3000
    per_km_fen: int = 100

    def fee_fen(self, distance_m: float) -> int:
        if distance_m <= self.base_m:
            return self.base_fen
        started_km = math.ceil((distance_m - self.base_m) / 1000)
        return self.base_fen + started_km * self.per_km_fen


@dataclass(frozen=True)
class Coupon:
    """A platform coupon: fixed `discount_fen` or `percent` off the subtotal."""

    code: str
    min_spend_fen: int
    starts_at: datetime
    ends_at: datetime
    discount_fen: int = 0
    percent: int = 0

    def __post_init__(self) -> None:
        if (self.discount_fen > 0) == (self.percent > 0):
            raise invalid("a coupon takes either discount_fen or percent", code=self.code)
        if self.discount_fen < 0 or not 0 <= self.percent <= 100 or self.min_spend_fen < 0:
            raise invalid("coupon amounts must not be negative", code=self.code)
        if self.ends_at <= self.starts_at:
            raise invalid("a coupon must end after it starts", code=self.code)

    def discount_on(self, subtotal_fen: int, at: datetime) -> int:
        if not self.starts_at <= at < self.ends_at:
            raise DomainError("coupon_unavailable", "coupon is not valid now", code=self.code)
        if subtotal_fen < self.min_spend_fen:
            raise DomainError(
                "coupon_unavailable",
                "order is below the coupon's minimum spend",
                code=self.code,
                min_spend_fen=self.min_spend_fen,
            )
        if self.discount_fen:
            return min(self.discount_fen, subtotal_fen)
        return (subtotal_fen * self.percent + 50) // 100


@dataclass(frozen=True)
class Amounts:
    subtotal_fen: int
    delivery_fee_fen: int
    discount_fen: int
    total_fen: int

    def as_dict(self) -> dict[str, int]:
        return {
            "subtotal_fen": self.subtotal_fen,
            "delivery_fee_fen": self.delivery_fee_fen,
            "discount_fen": self.discount_fen,
            "total_fen": self.total_fen,
        }


def quote(
    lines: Iterable[Line],
    distance_m: float,
    tariff: DeliveryTariff,
    coupon: Coupon | None = None,
    at: datetime | None = None,
) -> Amounts:
    """The price of an order. The discount applies to the goods, never to the delivery fee."""
    subtotal = sum(line.total_fen for line in lines)
    if subtotal <= 0:
        raise invalid("an order needs at least one priced item")
    fee = tariff.fee_fen(distance_m)
    discount = 0
    if coupon is not None:
        if at is None:
            raise invalid("a coupon needs the time of the order")
        discount = coupon.discount_on(subtotal, at)
    return Amounts(subtotal, fee, discount, subtotal + fee - discount)
