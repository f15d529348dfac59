"""What an errand costs, and how its money divides: the errand tariff, in integer fen.

An errand (跑腿, `domain/errands.py`) is priced from two things only, the straight-line
distance from its pickup to its drop-off and the weight class of what is carried:

- a base fee covers the first `base_m` (1 km); each started kilometre beyond it adds
  `per_km_fen`, the way the food delivery fee grows (`domain/pricing.py`);
- each weight class adds its surcharge, which never falls as the class gets heavier;
- the category of the item (documents, flowers, ...) is for the rider's care, not
  for the price;
- an errand longer than `max_distance_m` is refused (`outside_delivery_range`): a
  bike courier's job ends somewhere within the city.

So the price never falls when the distance or the weight class grows (the unit tests
check both with Hypothesis). No float touches an amount: the distance is rounded up
to whole started kilometres before anything is multiplied.

**The split.** An errand has no merchant, so its money goes to two parties: the rider
takes `rider_share_bp` of the whole price (80%, rounded half up to the fen) and the
platform the rest, less the provider's fee, which comes off the top as for every
order (`domain/ledger.py`). That is a split plan like a merchant's (`split_plan`):
the rider's level by ratio on the total, then the platform's level taking all that is
left, so the courier desk that holds the errands (`domain/errands.py`) keeps nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from domain.errors import DomainError, invalid
from domain.ledger import BP_WHOLE, Ratio, SplitLevel, SplitPlan

WeightClass = Literal["light", "medium", "heavy", "bulky"]
Category = Literal[
    "documents", "food", "flowers", "keys", "electronics", "clothing", "parcel", "other"
]
# Lightest first: the order in which surcharges must not fall.
WEIGHT_CLASSES: tuple[WeightClass, ...] = get_args(WeightClass)
CATEGORIES: tuple[Category, ...] = get_args(Category)
# What each class may weigh at most, for people (kg).
WEIGHT_LIMIT_KG: dict[str, int] = {"light": 1, "medium": 5, "heavy": 10, "bulky": 20}


def _surcharges() -> dict[str, int]:
    return {"light": 0, "medium": 300, "heavy": 800, "bulky": 1500}


@dataclass(frozen=True)
class ErrandQuote:
    """An errand's price and what it is made of (all fen except the distance)."""

    distance_m: int
    distance_fen: int
    weight_fen: int

    @property
    def total_fen(self) -> int:
        return self.distance_fen + self.weight_fen

    def as_dict(self) -> dict[str, int]:
        return {
            "distance_m": self.distance_m,
            "distance_fen": self.distance_fen,
            "weight_fen": self.weight_fen,
            "total_fen": self.total_fen,
        }


@dataclass(frozen=True)
class ErrandTariff:
    base_fen: int = 900
    base_m: int = 1000
    per_km_fen: int = 200
    weight_surcharge_fen: dict[str, int] = field(default_factory=_surcharges)
    max_distance_m: int = 20_000
    rider_share_bp: int = 8000

    def __post_init__(self) -> None:
        amounts = [self.base_fen, self.base_m, self.per_km_fen, self.max_distance_m]
        if any(type(n) is not int or n < 0 for n in amounts):
            raise invalid("an errand tariff's amounts are non-negative ints")
        if set(self.weight_surcharge_fen) != set(WEIGHT_CLASSES):
            raise invalid("an errand tariff prices every weight class", classes=WEIGHT_CLASSES)
        charges = [self.weight_surcharge_fen[w] for w in WEIGHT_CLASSES]
        if any(type(n) is not int or n < 0 for n in charges) or charges != sorted(charges):
            raise invalid("weight surcharges are ints that never fall as the weight grows")
        if not 0 <= self.rider_share_bp <= BP_WHOLE:
            raise invalid("the rider's share is basis points within 0..10000")

    def distance_fen(self, distance_m: float) -> int:
        if distance_m <= self.base_m:
            return self.base_fen
        started_km = math.ceil((distance_m - self.base_m) / 1000)
        return self.base_fen + started_km * self.per_km_fen

    def weight_fen(self, weight_class: str) -> int:
        if weight_class not in self.weight_surcharge_fen:
            raise invalid("unknown weight class", weight_class=weight_class[:32])
        return self.weight_surcharge_fen[weight_class]

    def quote(self, distance_m: float, weight_class: str) -> ErrandQuote:
        """The price of carrying an item of `weight_class` over `distance_m`."""
        if not math.isfinite(distance_m) or distance_m < 0:
            raise invalid("a distance is a non-negative number of metres")
        if distance_m > self.max_distance_m:
            raise DomainError(
                "outside_delivery_range",
                "an errand's drop-off is too far from its pickup",
                distance_m=math.ceil(distance_m),
                max_distance_m=self.max_distance_m,
            )
        return ErrandQuote(
            math.ceil(distance_m), self.distance_fen(distance_m), self.weight_fen(weight_class)
        )

    def split_plan(self) -> SplitPlan:
        """The courier desk's split plan: the rider's share, then the platform the rest."""
        return SplitPlan(
            (
                SplitLevel("rider", Ratio(self.rider_share_bp), "total"),
                SplitLevel("platform", Ratio(BP_WHOLE), "total"),
            )
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "base_fen": self.base_fen,
            "base_m": self.base_m,
            "per_km_fen": self.per_km_fen,
            "weight_surcharge_fen": dict(self.weight_surcharge_fen),
            "max_distance_m": self.max_distance_m,
            "rider_share_bp": self.rider_share_bp,
        }
