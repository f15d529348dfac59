"""The offer's state machine: answered once, closed by its deadline, never reopened."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.dispatch import Dispatch
from domain.errors import DomainError
from domain.geo import Point
from domain.offers import (
    Answer,
    Expire,
    Offer,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    OfferStatus,
    Withdraw,
    decide,
    evolve,
    too_late,
)

NOW = datetime(2025, 3, 1, 11, 30, tzinfo=UTC)
PICKUP = Point(39.9087, 116.3975)
DROPOFF = Point(39.9222, 116.3975)
OFFER = Offer(
    offer_id="of-1",
    order_id="o-1",
    rider_id="r-1",
    zone="8731aa428ffffff",
    pickup=PICKUP,
    dropoff=DROPOFF,
    expires_at=NOW + timedelta(seconds=30),
    request=Dispatch("o-1", "m-1", PICKUP, DROPOFF, None, version=3),
)


def test_the_offered_rider_accepts_or_declines_before_the_deadline() -> None:
    late = OFFER.expires_at - timedelta(microseconds=1)
    (accepted,) = decide(OFFER, Answer("r-1", True, late))
    assert isinstance(accepted, OfferAccepted)
    assert evolve(OFFER, accepted).status == OfferStatus.ACCEPTED
    (declined,) = decide(OFFER, Answer("r-1", False, NOW))
    assert isinstance(declined, OfferDeclined)
    assert evolve(OFFER, declined).status == OfferStatus.DECLINED


@pytest.mark.parametrize("after", [timedelta(0), timedelta(seconds=1)])
def test_an_answer_at_or_after_the_deadline_expires_the_offer(after: timedelta) -> None:
    command = Answer("r-1", True, OFFER.expires_at + after)
    events = decide(OFFER, command)
    assert [type(e) for e in events] == [OfferExpired]
    refusal = too_late(command, events)
    assert refusal is not None and refusal.code == "offer_closed"


def test_another_riders_offer_is_as_if_it_did_not_exist() -> None:
    with pytest.raises(DomainError) as err:
        decide(OFFER, Answer("r-2", True, NOW))
    assert err.value.code == "offer_not_found"


def test_a_closed_offer_stays_closed() -> None:
    closed = evolve(OFFER, OfferExpired("of-1", NOW))
    with pytest.raises(DomainError) as err:
        decide(closed, Answer("r-1", True, NOW))
    assert err.value.code == "offer_closed"
    assert decide(closed, Expire(NOW)) == []
    assert decide(closed, Withdraw(NOW)) == []


def test_the_wire_form_round_trips() -> None:
    d = OFFER.as_dict()
    assert d["expires_at"] == (NOW + timedelta(seconds=30)).isoformat()
    assert d["pickup"] == {"lat": PICKUP.lat, "lng": PICKUP.lng}
    assert d["status"] == "open"
    assert Offer.from_dict(d) == OFFER
