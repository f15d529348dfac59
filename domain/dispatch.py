"""Who carries an order: rank the riders a zone knows, make an offer, let it expire.

The policy here is the walking skeleton's: nearest fresh rider without an open offer
first. Scoring by load, ready time and fairness builds on `rank_riders`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.geo import Point, distance_m

STALE_AFTER = timedelta(seconds=60)
OFFER_TTL = timedelta(seconds=30)


@dataclass(frozen=True)
class RiderPosition:
    rider_id: str
    at_point: Point
    seen_at: datetime
    busy: bool = False


@dataclass(frozen=True)
class Offer:
    offer_id: str
    order_id: str
    rider_id: str
    zone: str
    pickup: Point
    dropoff: Point
    expires_at: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "offer_id": self.offer_id,
            "order_id": self.order_id,
            "rider_id": self.rider_id,
            "zone": self.zone,
            "expires_at": self.expires_at.isoformat(),
            "pickup": {"lat": self.pickup.lat, "lng": self.pickup.lng},
            "dropoff": {"lat": self.dropoff.lat, "lng": self.dropoff.lng},
        }


def rank_riders(
    pickup: Point,
    riders: Iterable[RiderPosition],
    now: datetime,
    exclude: frozenset[str] = frozenset(),
    stale_after: timedelta = STALE_AFTER,
) -> list[RiderPosition]:
    """Fresh, free riders not excluded (declined or timed out), nearest to the pickup first."""
    fresh = [
        r
        for r in riders
        if r.rider_id not in exclude and not r.busy and now - r.seen_at <= stale_after
    ]
    fresh.sort(key=lambda r: (distance_m(r.at_point, pickup), r.rider_id))
    return fresh


def offer_expired(offer: Offer, now: datetime) -> bool:
    return now >= offer.expires_at
