"""A merchant as the order path sees it: where it is, where it delivers, what it sells.

Two kinds of merchant. A **restaurant** (the default, and every merchant onboarded
before kinds existed) cooks: it accepts an order with a preparation time and marks it
ready when the food is done. A **shop** (retail, 本地商城) sells what is on its shelf:
it has no preparation time, so accepting an order makes it ready at once (`accepting`,
and `domain.orders.decide`), and dispatch offers it to a rider as ready now. Either
kind may have opening hours (`domain/hours.py`); outside them placement is refused
with `merchant_closed` and the next opening time, and `nearby` leaves the merchant out
unless asked for closed ones too.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from domain import commands as c
from domain.errors import DomainError, invalid
from domain.geo import DeliveryRange, Point, delivery_range_from, distance_m
from domain.hours import OpeningHours, is_open, next_opening
from domain.pricing import Amounts, Coupon, DeliveryTariff, Line, quote

AcceptMode = Literal["manual", "auto"]
MerchantKind = Literal["restaurant", "shop"]
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
    # Taking orders at all (`merchant_unavailable` when not), whatever the hours say.
    open: bool = True
    kind: MerchantKind = "restaurant"
    # None: always open.
    opening_hours: OpeningHours | None = None

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
            "kind": self.kind,
            "opening_hours": self.opening_hours.as_dict() if self.opening_hours else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Merchant:
        """A profile as stored or onboarded; one stored before kinds and hours existed is a
        restaurant that is always open. A shop prepares nothing: its `prep_minutes` is 0."""
        kind: MerchantKind = d.get("kind") or "restaurant"
        if kind not in ("restaurant", "shop"):
            raise invalid("kind is restaurant or shop", kind=str(kind)[:32])
        hours = d.get("opening_hours")
        return cls(
            id=d["id"],
            name=d["name"],
            location=Point(d["lat"], d["lng"]),
            delivery=delivery_range_from(d["delivery"]),
            prep_minutes=0 if kind == "shop" else d.get("prep_minutes", DEFAULT_PREP_MINUTES),
            accept_mode=d.get("accept_mode", "manual"),
            split_plan=d.get("split_plan") or {},
            open=d.get("open", True),
            kind=kind,
            opening_hours=OpeningHours.from_dict(hours) if hours is not None else None,
        )

    def delivers_to(self, point: Point) -> bool:
        return self.delivery.covers(self.location, point)

    @property
    def ready_on_accept(self) -> bool:
        """A shop's order is ready the moment it is accepted: the goods are on the shelf."""
        return self.kind == "shop"

    def open_at(self, at: datetime, utc_offset_min: int) -> bool:
        """Within its opening hours at `at` (the `open` switch is apart)."""
        return is_open(self.opening_hours, at, utc_offset_min)

    def next_opening(self, at: datetime, utc_offset_min: int) -> datetime | None:
        return next_opening(self.opening_hours, at, utc_offset_min)


def accepting(merchant: Merchant, command: c.AcceptOrder) -> c.AcceptOrder:
    """An acceptance as this merchant means it: a shop's makes the order ready at once
    (no preparation time, whatever was sent); a restaurant's without a preparation time
    takes the merchant's usual one."""
    if merchant.ready_on_accept:
        return replace(command, prep_minutes=0, ready_on_accept=True)
    if command.prep_minutes is None:
        return replace(command, prep_minutes=merchant.prep_minutes)
    return command


def require_open(merchant: Merchant, at: datetime, utc_offset_min: int) -> None:
    """Refuse an order outside the merchant's opening hours (`merchant_closed`, 409),
    saying when it opens next (ISO 8601, UTC)."""
    if merchant.open_at(at, utc_offset_min):
        return
    opening = merchant.next_opening(at, utc_offset_min)
    raise DomainError(
        "merchant_closed",
        "the merchant is closed now",
        merchant_id=merchant.id,
        next_opening_at=opening.isoformat() if opening else None,
    )


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
    utc_offset_min: int,
) -> tuple[tuple[Line, ...], Amounts]:
    """Check an order against the merchant, its opening hours (in the city's local time,
    `utc_offset_min` east of UTC) and its menu, and price it."""
    if not merchant.open:
        raise DomainError("merchant_unavailable", "the merchant is not taking orders")
    require_open(merchant, at, utc_offset_min)
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


def delivery_fee_to(merchant: Merchant, dropoff: Point, tariff: DeliveryTariff) -> int | None:
    """The fee from the merchant to a door by the tariff, or None where the merchant does
    not deliver: the range check placement makes, for an order's door moved later."""
    if not merchant.delivers_to(dropoff):
        return None
    return tariff.fee_fen(distance_m(merchant.location, dropoff))


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


# -- a menu read a page at a time -------------------------------------------------------

# A page of a menu when the caller names no size; the most one page holds.
MENU_PAGE = 50
MENU_PAGE_MAX = 200


def folded(name: str) -> str:
    """An item's name as search compares it: case-insensitive in every script."""
    return name.casefold()


@dataclass(frozen=True)
class MenuPage:
    item_ids: list[str]
    # Items matching the search in the whole menu, this page's and the others.
    total: int
    # The last id of this page when more follow (the next page starts after it).
    cursor: str | None


def menu_page(
    index: Sequence[tuple[str, str]], q: str | None, after: str | None, limit: int
) -> MenuPage:
    """One page of a menu, in item id order: the items whose name contains `q` (any
    case; every item without one) whose id comes after `after`, at most `limit`.

    `index` is every item of the menu as `(id, folded(name))`, sorted by id. A cursor
    is an item id, so a page stays where it was when items are added before it."""
    if q:
        needle = folded(q)
        matching = [item_id for item_id, name in index if needle in name]
    else:
        matching = [item_id for item_id, _ in index]
    start = bisect.bisect_right(matching, after) if after is not None else 0
    page = matching[start : start + limit]
    more = start + limit < len(matching)
    return MenuPage(page, len(matching), page[-1] if more and page else None)
