"""An offer: one order put to one rider, answered, expired or withdrawn.

`decide(offer, command) -> events` and `evolve(offer, event) -> offer`, like orders.
An offer is open until its rider answers, its time runs out, or the order can no
longer take that rider; every way out is an event, and a closed offer stays closed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from domain.dispatch import Dispatch
from domain.errors import DomainError, not_found
from domain.geo import Point


class OfferStatus(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class Offer:
    offer_id: str
    order_id: str
    rider_id: str
    zone: str
    pickup: Point
    dropoff: Point
    expires_at: datetime
    # What dispatch knew of the order, so the next rider can be asked the same.
    request: Dispatch
    status: OfferStatus = OfferStatus.OPEN

    def as_dict(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id,
            "order_id": self.order_id,
            "rider_id": self.rider_id,
            "zone": self.zone,
            "expires_at": self.expires_at.isoformat(),
            "pickup": {"lat": self.pickup.lat, "lng": self.pickup.lng},
            "dropoff": {"lat": self.dropoff.lat, "lng": self.dropoff.lng},
            "status": self.status.value,
            "request": self.request.as_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Offer:
        return cls(
            offer_id=d["offer_id"],
            order_id=d["order_id"],
            rider_id=d["rider_id"],
            zone=d["zone"],
            pickup=Point(**d["pickup"]),
            dropoff=Point(**d["dropoff"]),
            expires_at=datetime.fromisoformat(d["expires_at"]),
            request=Dispatch.from_dict(d["request"]),
            status=OfferStatus(d["status"]),
        )


# -- commands ----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """The rider says yes or no."""

    rider_id: str
    accept: bool
    at: datetime


@dataclass(frozen=True)
class Expire:
    at: datetime


@dataclass(frozen=True)
class Withdraw:
    """The order cannot take this rider after all (it was closed or given another)."""

    at: datetime


OfferCommand = Answer | Expire | Withdraw

# -- events ------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferAccepted:
    offer_id: str
    rider_id: str
    at: datetime


@dataclass(frozen=True)
class OfferDeclined:
    offer_id: str
    rider_id: str
    at: datetime


@dataclass(frozen=True)
class OfferExpired:
    offer_id: str
    at: datetime


@dataclass(frozen=True)
class OfferWithdrawn:
    offer_id: str
    at: datetime


OfferEvent = OfferAccepted | OfferDeclined | OfferExpired | OfferWithdrawn


def decide(offer: Offer, command: OfferCommand) -> list[OfferEvent]:
    """The events a command produces, or a DomainError; an empty list means already done.

    An answer that comes after the offer's time closes it as expired (`too_late` tells
    the rider so)."""
    match command:
        case Answer():
            if offer.rider_id != command.rider_id:
                # Another party's object looks like no object at all, as orders do.
                raise not_found("offer", offer.offer_id)
            if offer.status != OfferStatus.OPEN:
                raise DomainError("offer_closed", f"the offer is {offer.status.value}")
            if command.at >= offer.expires_at:
                return [OfferExpired(offer.offer_id, command.at)]
            if command.accept:
                return [OfferAccepted(offer.offer_id, command.rider_id, command.at)]
            return [OfferDeclined(offer.offer_id, command.rider_id, command.at)]
        case Expire():
            if offer.status != OfferStatus.OPEN:
                return []
            return [OfferExpired(offer.offer_id, command.at)]
        case Withdraw():
            if offer.status != OfferStatus.OPEN:
                return []
            return [OfferWithdrawn(offer.offer_id, command.at)]


def too_late(command: OfferCommand, events: list[OfferEvent]) -> DomainError | None:
    """What the rider hears when its answer found the offer's time run out."""
    if isinstance(command, Answer) and any(isinstance(e, OfferExpired) for e in events):
        return DomainError("offer_closed", "the offer expired")
    return None


def evolve(offer: Offer, event: OfferEvent) -> Offer:
    match event:
        case OfferAccepted():
            return replace(offer, status=OfferStatus.ACCEPTED)
        case OfferDeclined():
            return replace(offer, status=OfferStatus.DECLINED)
        case OfferExpired():
            return replace(offer, status=OfferStatus.EXPIRED)
        case OfferWithdrawn():
            return replace(offer, status=OfferStatus.WITHDRAWN)
