"""A merchant as the order path sees it: where it is, where it delivers, what it sells."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from domain.errors import DomainError, invalid
from domain.geo import DeliveryRange, Point, delivery_range_from, distance_m
from domain.pricing import Amounts, Coupon, DeliveryTariff, Line, quote

AcceptMode = Literal["manual", "auto"]
# A merchant that says nothing else needs this long to prepare an order.
DEFAULT_PREP_MINUTES = 15


@dataclass(frozen=True)
class MenuItem:
    id: str
    name: str
    price_fen: int
    available: bool = True

    def __post_init__(self) -> None:
        if self.price_fen < 0:
            raise invalid("price_fen must not be negative", item_id=self.id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "price_fen": self.price_fen,
            "available": self.available,
        }


@dataclass(frozen=True)
class Merchant:
    id: str
    name: str
    location: Point
    delivery: DeliveryRange
    prep_minutes: int = DEFAULT_PREP_MINUTES
    accept_mode: AcceptMode = "manual"
    split_plan: Mapping[str, Any] = field(default_factory=dict)
    open: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "lat": self.location.lat,
            "lng": self.location.lng,
            "delivery": self.delivery.as_dict(),
            "prep_minutes": self.prep_minutes,
            "accept_mode": self.accept_mode,
            "split_plan": dict(self.split_plan),
            "open": self.open,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Merchant:
        return cls(
            id=d["id"],
            name=d["name"],
            location=Point(d["lat"], d["lng"]),
            delivery=delivery_range_from(d["delivery"]),
            prep_minutes=d.get("prep_minutes", DEFAULT_PREP_MINUTES),
            accept_mode=d.get("accept_mode", "manual"),
            split_plan=d.get("split_plan") or {},
            open=d.get("open", True),
        )

    def delivers_to(self, point: Point) -> bool:
        return self.delivery.covers(self.location, point)


@dataclass(frozen=True)
class Requested:
    item_id: str
    qty: int


def price_order(
    merchant: Merchant,
    menu: Mapping[str, MenuItem],
    requested: Sequence[Requested],
    dropoff: Point,
    tariff: DeliveryTariff,
    coupon: Coupon | None,
    at: datetime,
) -> tuple[tuple[Line, ...], Amounts]:
    """Check an order against the merchant and its menu and price it."""
    if not merchant.open:
        raise DomainError("merchant_unavailable", "the merchant is not taking orders")
    if not requested:
        raise invalid("an order needs at least one item")
    if not merchant.delivers_to(dropoff):
        raise DomainError(
            "outside_delivery_range",
            "the merchant does not deliver to this point",
            merchant_id=merchant.id,
        )
    qty_by_item: dict[str, int] = {}
    for r in requested:
        if r.qty <= 0:
            raise invalid("qty must be positive", item_id=r.item_id)
        qty_by_item[r.item_id] = qty_by_item.get(r.item_id, 0) + r.qty
    lines = []
    for item_id, qty in qty_by_item.items():
        item = menu.get(item_id)
        if item is None:
            raise DomainError("item_not_found", "no such item on the menu", item_id=item_id)
        if not item.available:
            raise DomainError("item_unavailable", "the item is not available", item_id=item_id)
        lines.append(Line(item.id, item.name, qty, item.price_fen))
    amounts = quote(lines, distance_m(merchant.location, dropoff), tariff, coupon, at)
    return tuple(lines), amounts


def confirm_total(
    amounts: Amounts,
    expected_total_fen: int | None,
    seen_menu_version: int | None,
    menu_version: int,
) -> None:
    """Refuse an order whose total is not what the customer saw.

    A customer who names the total it expects gets exactly that or `price_changed`; one
    who ordered from an older menu must name it, since prices may have moved since.
    """
    stale_menu = seen_menu_version is not None and seen_menu_version != menu_version
    if (expected_total_fen is not None and expected_total_fen != amounts.total_fen) or (
        stale_menu and expected_total_fen is None
    ):
        raise DomainError(
            "price_changed",
            "the total differs from what the customer saw",
            expected_total_fen=expected_total_fen,
            total_fen=amounts.total_fen,
            menu_version=menu_version,
        )
