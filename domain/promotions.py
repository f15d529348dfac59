"""Regional promotions: what operations publish to h3 cells, who it is for, how fast it goes.

A promotion is a coupon (an existing platform coupon, by code) or a banner, with a
validity window, published to h3 cells. It reaches the customers **registered to**
those cells (their home cell, `PUT /v1/me/home`) and those **connected in** them (the
cell a customer's sync socket reports, counted for a while after it was reported):
each gets one `promotion` event on its own inbox stream, so every device of the
customer sees it through the sync it already has, and a device that was offline reads
the active promotions of its cells (`GET /v1/me/promotions`).

Cells are h3 cells at the rider zones' resolution or coarser; a coarser cell stands
for all its children at the zones' resolution (a resolution-5 cell for its 49
resolution-7 cells), which is what customers' homes and positions are indexed by.

The push is paced (`Pace`): at most a configured number of customers a second, taken
in small slices, so a promotion to a whole district does not crowd out order events
on the same inboxes and the same Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

import h3

from domain.errors import invalid

Kind = Literal["coupon", "banner"]
KINDS: tuple[str, ...] = ("coupon", "banner")
# What one request may name, and what its cells may stand for at the zones' resolution:
# a resolution-5 cell is 49 zones, a resolution-4 cell 343.
MAX_REQUEST_CELLS = 100
MAX_TARGET_CELLS = 1_000
MAX_TITLE = 100
MAX_BODY = 1_000
# h3 cells have 7 children a resolution (pentagons 6): the most a cell can stand for.
CHILDREN_PER_RESOLUTION = 7


def canonical_cell(cell: object) -> str:
    """An h3 cell id as h3 writes it (lower-case hex), or a refusal naming it."""
    if not isinstance(cell, str) or not h3.is_valid_cell(cell):
        raise invalid("not an h3 cell id", cell=cell if isinstance(cell, str) else repr(cell))
    return str(h3.int_to_str(h3.str_to_int(cell)))


def target_cells(cells: Sequence[object], resolution: int) -> tuple[str, ...]:
    """The cells at the zones' `resolution` that the given cells cover, sorted, once each.

    Refused (422): no cell, more than `MAX_REQUEST_CELLS`, anything that is not an h3
    cell, a cell finer than the zones (customers are indexed at the zones' resolution,
    so a finer cell would match nobody), or more than `MAX_TARGET_CELLS` zones in all."""
    if not cells:
        raise invalid("a promotion needs at least one cell")
    if len(cells) > MAX_REQUEST_CELLS:
        raise invalid(f"at most {MAX_REQUEST_CELLS} cells a promotion", cells=len(cells))
    reach: set[str] = set()
    for given in cells:
        cell = canonical_cell(given)
        level = int(h3.get_resolution(cell))
        if level > resolution:
            raise invalid(
                f"cells must be at resolution {resolution} or coarser",
                cell=cell,
                resolution=level,
            )
        # Refused before its children are made: a resolution-0 cell has 98 million.
        if CHILDREN_PER_RESOLUTION ** (resolution - level) > MAX_TARGET_CELLS:
            raise invalid(
                f"a cell stands for at most {MAX_TARGET_CELLS} cells at resolution {resolution}",
                cell=cell,
                resolution=level,
            )
        reach.update(str(c) for c in h3.cell_to_children(cell, resolution))
        if len(reach) > MAX_TARGET_CELLS:
            raise invalid(
                f"the cells stand for more than {MAX_TARGET_CELLS} cells at resolution {resolution}"
            )
    return tuple(sorted(reach))


@dataclass(frozen=True)
class Promotion:
    """A published promotion: `cells` are the zones it reaches (`target_cells`),
    `given_cells` what operations named."""

    id: str
    kind: str
    title: str
    body: str
    coupon_code: str | None
    starts_at: datetime
    ends_at: datetime
    published_at: datetime
    given_cells: tuple[str, ...]
    cells: tuple[str, ...] = field(repr=False)

    def active(self, at: datetime) -> bool:
        """Within its validity window: from `starts_at`, until (not at) `ends_at`."""
        return self.starts_at <= at < self.ends_at

    def as_dict(self) -> dict[str, Any]:
        """The stored form (every field)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "body": self.body,
            "coupon_code": self.coupon_code,
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "published_at": self.published_at.isoformat(),
            "given_cells": list(self.given_cells),
            "cells": list(self.cells),
        }

    def public(self) -> dict[str, Any]:
        """What a customer is shown: the offer, not whom else it was sent to."""
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "body": self.body,
            "coupon_code": self.coupon_code,
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Promotion:
        return cls(
            id=d["id"],
            kind=d["kind"],
            title=d["title"],
            body=d.get("body", ""),
            coupon_code=d.get("coupon_code"),
            starts_at=datetime.fromisoformat(d["starts_at"]),
            ends_at=datetime.fromisoformat(d["ends_at"]),
            published_at=datetime.fromisoformat(d["published_at"]),
            given_cells=tuple(d.get("given_cells", d["cells"])),
            cells=tuple(d["cells"]),
        )


def publish(
    *,
    promotion_id: str,
    kind: str,
    cells: Sequence[object],
    title: str,
    body: str,
    coupon_code: str | None,
    starts_at: datetime,
    ends_at: datetime,
    now: datetime,
    resolution: int,
) -> Promotion:
    """A promotion as operations publish it, or the refusal (422) of what is wrong.

    A coupon promotion names a coupon (whether it exists is the store's to say); a
    banner names none. The window has a timezone, ends after it starts and has not
    ended yet; it may start later (the push then waits until it starts)."""
    if kind not in KINDS:
        raise invalid(f"kind is one of {', '.join(KINDS)}", kind=kind)
    if kind == "coupon" and not coupon_code:
        raise invalid("a coupon promotion names its coupon_code")
    if kind == "banner" and coupon_code:
        raise invalid("a banner carries no coupon_code")
    if not title.strip() or len(title) > MAX_TITLE:
        raise invalid(f"title is 1 to {MAX_TITLE} characters")
    if len(body) > MAX_BODY:
        raise invalid(f"body is at most {MAX_BODY} characters")
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise invalid("times need a timezone (RFC 3339)")
    if ends_at <= starts_at:
        raise invalid("ends_at must be after starts_at")
    if ends_at <= now:
        raise invalid("ends_at is in the past: the promotion would reach nobody")
    reach = target_cells(cells, resolution)
    return Promotion(
        id=promotion_id,
        kind=kind,
        title=title,
        body=body,
        coupon_code=coupon_code if kind == "coupon" else None,
        starts_at=starts_at,
        ends_at=ends_at,
        published_at=now,
        given_cells=tuple(canonical_cell(c) for c in cells),
        cells=reach,
    )


@dataclass(frozen=True, kw_only=True)
class PromotionPushed:
    """The `promotion` event on a customer's inbox stream: one per promotion and customer.

    Not an order's event: no order id goes with it, and its version is always 1 (a
    promotion does not change once published)."""

    type: ClassVar[str] = "promotion"
    promotion: Promotion

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "order_id": None,
            "version": 1,
            "at": self.promotion.published_at.isoformat(),
            "data": {"promotion_id": self.promotion.id, **self.promotion.public()},
        }


def job_status(promotion: Promotion, finished: str | None, now: datetime) -> str:
    """Where a promotion's push stands: `scheduled` before its window opens, `pushing`,
    then `done` (every cell worked through) or `expired` (its window closed first)."""
    if finished:
        return finished
    if now < promotion.starts_at:
        return "scheduled"
    if now >= promotion.ends_at:
        return "expired"
    return "pushing"


def customer_cells(
    home: str | None, here: str | None, here_until_ms: int, now_ms: int
) -> list[str]:
    """The cells a customer counts in now: its home, and where its socket last said it
    was while that report lasts."""
    cells = [home] if home else []
    if here and here_until_ms >= now_ms and here not in cells:
        cells.append(here)
    return cells


@dataclass
class Pace:
    """At most `per_s` customers a second, for a loop that takes them in slices.

    A token bucket: `allowance(now)` is how many may go now, `spend(n)` takes what went
    (a page bigger than asked runs the bucket into debt, paid by the next slices). It
    holds at most `burst_s` seconds' worth, so a loop that stalled does not make up for
    it in one burst, and it starts empty: the first slice waits its share of a second.
    """

    per_s: int
    burst_s: float = 0.2
    tokens: float = 0.0
    at: float | None = None

    def __post_init__(self) -> None:
        if self.per_s < 1:
            raise invalid("a push goes at one customer a second or more", per_s=self.per_s)

    def allowance(self, now: float) -> int:
        if self.at is not None and now > self.at:
            cap = max(1.0, self.per_s * self.burst_s)
            self.tokens = min(cap, self.tokens + (now - self.at) * self.per_s)
        if self.at is None or now > self.at:
            self.at = now
        return max(0, int(self.tokens))

    def spend(self, n: int) -> None:
        self.tokens -= n

    def idle(self) -> None:
        """Nothing to push: the bucket does not fill while nobody waits for it."""
        self.tokens = min(self.tokens, 0.0)
