"""Who carries an order: rank the riders a zone can reach, make an offer, let it expire.

Two policies:
- `nearest`: the nearest fresh rider carrying nothing (the baseline).
- `score`: the lowest expected cost in minutes, where cost is the rider's travel to
  the pickup, plus the rider's idle wait if it arrives before the food is ready
  (weighted lightly), plus the food's wait if the rider arrives after it is ready
  (weighted heavily), plus a charge per order the rider already carries, plus a
  fairness term that favours riders who delivered less than average today. A rider
  that carries orders can take one more only if it is a batch: the same merchant,
  or a pickup and a drop-off both near one of its current jobs, up to a capacity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from domain.geo import Point, distance_m
from domain.orders import OrderStatus

# A rider not heard from for this long is not offered orders, nor counted as idle.
STALE_AFTER = timedelta(seconds=60)
Policy = Literal["score", "nearest"]


@dataclass(frozen=True)
class Job:
    """An order a rider carries or is heading to."""

    order_id: str
    merchant_id: str
    pickup: Point
    dropoff: Point
    picked_up: bool = False


def job_of(stored: Mapping[str, Any]) -> Job:
    """An order in its stored form (`Order.as_dict()`) as the job of the rider carrying it.

    Dispatch weighs the jobs of a dozen riders per order: reading four fields of the
    stored form is far cheaper than rebuilding each whole order."""
    return Job(
        order_id=stored["id"],
        merchant_id=stored["merchant_id"],
        pickup=Point(stored["pickup"]["lat"], stored["pickup"]["lng"]),
        dropoff=Point(stored["delivery"]["lat"], stored["delivery"]["lng"]),
        picked_up=stored["status"] == OrderStatus.PICKED_UP,
    )


@dataclass(frozen=True)
class RiderPosition:
    rider_id: str
    at_point: Point
    seen_at: datetime
    busy: bool = False
    jobs: tuple[Job, ...] = ()
    delivered_today: int = 0
    # An offer this rider has not answered yet: one question at a time.
    offered: bool = False

    @property
    def load(self) -> int:
        return len(self.jobs) if self.jobs else int(self.busy)


@dataclass(frozen=True)
class Dispatch:
    """An order looking for a rider, as of the order's `version`."""

    order_id: str
    merchant_id: str
    pickup: Point
    dropoff: Point
    ready_at: datetime | None = None
    version: int = 0
    # Operations were told once already that this order waits for a rider.
    told_ops: bool = False
    # `food` or `errand`, told to the rider with the offer.
    kind: str = "food"

    def as_dict(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "merchant_id": self.merchant_id,
            "version": self.version,
            "ready_at": self.ready_at.isoformat() if self.ready_at else None,
            "pickup": {"lat": self.pickup.lat, "lng": self.pickup.lng},
            "dropoff": {"lat": self.dropoff.lat, "lng": self.dropoff.lng},
            "told_ops": self.told_ops,
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Dispatch:
        return cls(
            order_id=d["order_id"],
            merchant_id=d["merchant_id"],
            pickup=Point(**d["pickup"]),
            dropoff=Point(**d["dropoff"]),
            ready_at=datetime.fromisoformat(d["ready_at"]) if d.get("ready_at") else None,
            version=d.get("version", 0),
            told_ops=d.get("told_ops", False),
            kind=d.get("kind", "food"),
        )


@dataclass(frozen=True)
class Weights:
    speed_m_per_min: float = 300.0  # an e-bike in city traffic, about 18 km/h
    early: float = 0.3  # a minute of the rider waiting at the counter
    late: float = 2.0  # a minute of the food waiting for the rider
    per_order_carried: float = 4.0
    fairness: float = 0.5  # per delivery above (or below) today's mean
    capacity: int = 3
    batch_pickup_m: float = 300.0
    batch_near_m: float = 1500.0


def _fresh(
    riders: Iterable[RiderPosition], now: datetime, exclude: frozenset[str], stale_after: timedelta
) -> list[RiderPosition]:
    return [
        r
        for r in riders
        if r.rider_id not in exclude and not r.offered and now - r.seen_at <= stale_after
    ]


def rank_riders(
    pickup: Point,
    riders: Iterable[RiderPosition],
    now: datetime,
    exclude: frozenset[str] = frozenset(),
    stale_after: timedelta = STALE_AFTER,
) -> list[RiderPosition]:
    """The nearest policy: fresh riders carrying nothing, nearest to the pickup first."""
    free = [r for r in _fresh(riders, now, exclude, stale_after) if not r.busy and not r.jobs]
    free.sort(key=lambda r: (distance_m(r.at_point, pickup), r.rider_id))
    return free


def _same_counter(job: Job, order: Dispatch) -> bool:
    """Picked up at the same counter: the same merchant's, at the same point. A food
    merchant's orders always are; the errands of one courier desk (`domain/errands.py`)
    only when their pickups are one place."""
    return job.merchant_id == order.merchant_id and job.pickup == order.pickup


def batchable(order: Dispatch, rider: RiderPosition, weights: Weights) -> bool:
    """Whether a rider already carrying orders can sensibly add this one."""
    if not rider.jobs:
        return not rider.busy
    if len(rider.jobs) >= weights.capacity:
        return False
    for job in rider.jobs:
        same_counter = _same_counter(job, order) or (
            distance_m(job.pickup, order.pickup) <= weights.batch_pickup_m
        )
        if same_counter and not job.picked_up:
            return True
        along_the_way = (
            distance_m(job.pickup, order.pickup) <= weights.batch_near_m
            and distance_m(job.dropoff, order.dropoff) <= weights.batch_near_m
        )
        if along_the_way and not job.picked_up:
            return True
    return False


def cost_minutes(
    order: Dispatch, rider: RiderPosition, now: datetime, mean_delivered: float, weights: Weights
) -> float:
    travel = distance_m(rider.at_point, order.pickup) / weights.speed_m_per_min
    ready_in = 0.0
    if order.ready_at is not None:
        ready_in = max(0.0, (order.ready_at - now).total_seconds() / 60)
    same_trip = any(_same_counter(j, order) and not j.picked_up for j in rider.jobs)
    carried = rider.load * weights.per_order_carried * (0.5 if same_trip else 1.0)
    return (
        travel
        + weights.early * max(0.0, ready_in - travel)
        + weights.late * max(0.0, travel - ready_in)
        + carried
        + weights.fairness * (rider.delivered_today - mean_delivered)
    )


def score_riders(
    order: Dispatch,
    riders: Iterable[RiderPosition],
    now: datetime,
    exclude: frozenset[str] = frozenset(),
    weights: Weights = Weights(),
    stale_after: timedelta = STALE_AFTER,
) -> list[RiderPosition]:
    """The scoring policy: eligible riders, lowest expected cost first."""
    fresh = _fresh(riders, now, exclude, stale_after)
    if not fresh:
        return []
    mean_delivered = sum(r.delivered_today for r in fresh) / len(fresh)
    eligible = [r for r in fresh if batchable(order, r, weights)]
    eligible.sort(key=lambda r: (cost_minutes(order, r, now, mean_delivered, weights), r.rider_id))
    return eligible


def rank(
    policy: Policy,
    order: Dispatch,
    riders: Iterable[RiderPosition],
    now: datetime,
    exclude: frozenset[str] = frozenset(),
    weights: Weights = Weights(),
) -> list[RiderPosition]:
    if policy == "nearest":
        return rank_riders(order.pickup, riders, now, exclude)
    return score_riders(order, riders, now, exclude, weights)


@dataclass(frozen=True)
class Eta:
    pickup_at: datetime
    delivery_at: datetime

    def as_dict(self) -> dict[str, str]:
        return {
            "pickup_at": self.pickup_at.isoformat(),
            "delivery_at": self.delivery_at.isoformat(),
        }


def eta(
    rider_at: Point,
    job: Job,
    now: datetime,
    ready_at: datetime | None,
    weights: Weights = Weights(),
) -> Eta:
    """When the rider reaches the counter (not before the food is ready) and the door."""
    minute = timedelta(minutes=1)
    if job.picked_up:
        pickup = now
        to_door = distance_m(rider_at, job.dropoff) / weights.speed_m_per_min
    else:
        pickup = now + distance_m(rider_at, job.pickup) / weights.speed_m_per_min * minute
        if ready_at is not None and ready_at > pickup:
            pickup = ready_at
        to_door = distance_m(job.pickup, job.dropoff) / weights.speed_m_per_min
    return Eta(pickup, pickup + to_door * minute)
