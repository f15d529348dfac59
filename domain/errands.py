"""Errands (跑腿): a courier job with no merchant, as an order of kind `errand`.

A customer asks for an item to be picked up at A (an address, a contact and a note
for the rider) and dropped off at B (an address and a contact), names its category and
weight class, and pays the errand tariff's price (`domain/errand_tariff.py`) like any
order. Everything after placement is an order's: the same state machine
(`domain/orders.py`), version guards, events on the same streams, payment, refunds,
dispatch, the ledger. What differs is said here, once:

- **The courier desk owns errands.** An order belongs to a merchant entity, whose
  shard holds it and whose host runs its lifecycle. An errand belongs to one of
  `DESKS` built-in pseudo-merchants (`errands-0` ... `errands-7`), the desk chosen by
  the customer's id, so errands spread over eight entities (and their shards) rather
  than queue behind one lock, and one customer's errands stay together. A desk is
  never listed (it has no place in the city's GEO index), accepts automatically, has
  nothing to prepare (a `shop` in `domain/merchants.py`'s terms: ready on accept), and
  splits the money by the errand tariff (`desk_profile`). Its id may not be onboarded.
- **One line, no stock.** The items are one line, `errand:<category>:<weight class>`,
  priced at the weight surcharge; the distance part is the delivery fee. No stock
  moves (`domain.orders.moves_stock`).
- **Ready once paid.** The desk accepts a paid errand at once and accepting makes it
  ready, so dispatch offers it straight away, weighing the rider's way to A (the
  order's pickup) as for food that is ready now.
- **Proof at both ends.** At placement two 6-digit codes are drawn: the pickup code,
  which whoever hands the item over at A gives the rider, and the delivery code, which
  the recipient at B gives the rider. The customer alone sees them (`shown_to`) and
  passes them on. The rider's pickup and delivery of an errand carry the code
  (`check_proof`); a wrong or missing one is refused (422 `wrong_code`) and changes
  nothing. The codes, like the contacts, addresses and note, are sealed at rest
  (`storage/sealing.py`).
- **Cancellable until picked up.** The customer may cancel an errand until the rider
  has picked it up (a food order only until its merchant accepts it, since food is
  cooked for it); it is refunded in full, and a rider already on the way is free again.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from domain.errand_tariff import CATEGORIES, ErrandTariff
from domain.errors import DomainError, invalid
from domain.geo import Point, distance_m
from domain.pricing import Amounts, Line

ERRAND = "errand"
FOOD = "food"
OrderKind = Literal["food", "errand"]

DESKS = 8
DESK_PREFIX = "errands-"
CODE_DIGITS = 6
CODE_FIELDS = ("pickup_code", "delivery_code")
Step = Literal["pickup", "delivery"]


def desk_of(customer_id: str) -> str:
    """The courier desk that holds a customer's errands."""
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8).digest()
    return f"{DESK_PREFIX}{int.from_bytes(digest, 'big') % DESKS}"


def is_desk(merchant_id: str) -> bool:
    digits = merchant_id.removeprefix(DESK_PREFIX)
    return (
        merchant_id.startswith(DESK_PREFIX)
        and digits.isascii()
        and digits.isdigit()
        and str(int(digits)) == digits
        and int(digits) < DESKS
    )


def desk_profile(desk_id: str, tariff: ErrandTariff) -> dict[str, Any]:
    """A courier desk as a merchant profile (`Merchant.from_dict`): it accepts at once,
    prepares nothing and splits by the errand tariff. Its place is nowhere in
    particular: an errand's pickup is the customer's A, never the desk's."""
    return {
        "id": desk_id,
        "name": "Courier desk",
        "lat": 0.0,
        "lng": 0.0,
        "delivery": {"radius_m": 1},
        "prep_minutes": 0,
        "accept_mode": "auto",
        "split_plan": tariff.split_plan().as_dict(),
        "kind": "shop",
    }


@dataclass(frozen=True)
class Errand:
    """What an errand adds to its order: what is carried, who is met, and the proofs.

    The order itself holds the rest: its pickup point (A), its drop-off point, address
    and phone (B's, the recipient's phone), its one line and its amounts."""

    category: str
    weight_class: str
    pickup_address: str
    pickup_contact_name: str
    pickup_contact_phone: str
    pickup_note: str
    dropoff_contact_name: str
    pickup_code: str
    delivery_code: str

    def as_dict(self, pickup: Point) -> dict[str, Any]:
        return {
            "category": self.category,
            "weight_class": self.weight_class,
            "pickup": {
                "lat": pickup.lat,
                "lng": pickup.lng,
                "address": self.pickup_address,
                "contact_name": self.pickup_contact_name,
                "contact_phone": self.pickup_contact_phone,
                "note": self.pickup_note,
            },
            "dropoff": {"contact_name": self.dropoff_contact_name},
            "pickup_code": self.pickup_code,
            "delivery_code": self.delivery_code,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Errand:
        pickup, dropoff = d.get("pickup") or {}, d.get("dropoff") or {}
        return cls(
            category=d["category"],
            weight_class=d["weight_class"],
            pickup_address=pickup.get("address", ""),
            pickup_contact_name=pickup.get("contact_name", ""),
            pickup_contact_phone=pickup.get("contact_phone", ""),
            pickup_note=pickup.get("note", ""),
            dropoff_contact_name=dropoff.get("contact_name", ""),
            pickup_code=d["pickup_code"],
            delivery_code=d["delivery_code"],
        )


def new_code(randbelow: Callable[[int], int]) -> str:
    """A proof code of `CODE_DIGITS` digits; `randbelow` is `secrets.randbelow`."""
    return f"{randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def price(
    pickup: Point, dropoff: Point, category: str, weight_class: str, tariff: ErrandTariff
) -> tuple[tuple[Line, ...], Amounts]:
    """An errand's one line and its amounts: the weight surcharge is the line's price
    (the subtotal), the distance part the delivery fee; errands take no coupon."""
    if category not in CATEGORIES:
        raise invalid("unknown category", category=category[:32])
    quote = tariff.quote(distance_m(pickup, dropoff), weight_class)
    line = Line(
        f"errand:{category}:{weight_class}",
        f"Errand ({category}, {weight_class})",
        1,
        quote.weight_fen,
    )
    return (line,), Amounts(quote.weight_fen, quote.distance_fen, 0, quote.total_fen)


def check_proof(errand: Errand | None, step: Step, code: str | None) -> None:
    """Refuse a pickup or delivery of an errand without its code (`wrong_code`, 422).

    A food order asks for no proof; a code sent with one is not looked at."""
    if errand is None:
        return
    expected = errand.pickup_code if step == "pickup" else errand.delivery_code
    if code is None or not hmac.compare_digest(code.encode(), expected.encode()):
        raise DomainError(
            "wrong_code",
            f"this errand's {step} needs the code the customer was given"
            if code is None
            else f"that is not this errand's {step} code",
            step=step,
        )


def shown_to(stored: dict[str, Any], role: str) -> dict[str, Any]:
    """An order as `role` may read it: an errand's proof codes are its customer's only
    (the rider must be told them at the door, not read them), and the ids of the
    requests that changed it (`Order.attempts`) are nobody's."""
    if "attempts" in stored:
        stored = {k: v for k, v in stored.items() if k != "attempts"}
    errand = stored.get("errand")
    if not errand or role == "customer":
        return stored
    return {**stored, "errand": {k: v for k, v in errand.items() if k not in CODE_FIELDS}}
