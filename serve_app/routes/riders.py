"""The rider terminal: going on and off line, positions, offers, pickups and deliveries."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from domain import commands as c
from domain.errors import DomainError, not_found
from domain.geo import Point, require_indexable, zone_of
from serve_app.auth import Caller
from serve_app.deps import rider, services
from serve_app.openapi import answers
from serve_app.schemas import Id, LocationIn, ProofIn, RiderStatusIn
from serve_app.services import Services, as_json, now, unwrap

router = APIRouter()


@router.post("/v1/riders/me/status")
async def rider_status(
    body: RiderStatusIn, who: Caller = Depends(rider), app: Services = Depends(services)
) -> Response:
    at = Point(body.lat, body.lng) if body.lat is not None and body.lng is not None else None
    if at is None:
        at = await app.riders.position(who.sub)
        if at is None:
            raise DomainError("location_required", "send lat and lng when going online first")
    require_indexable(at, "a rider")
    zone = app.directory.rider_zone(zone_of(at, app.settings.zone_resolution))
    return as_json(unwrap(await zone.set_status(who.sub, body.online, at.lat, at.lng)))


@router.post("/v1/riders/me/location")
async def rider_location(
    body: LocationIn, who: Caller = Depends(rider), app: Services = Depends(services)
) -> Response:
    zone = app.directory.rider_zone(
        zone_of(Point(body.lat, body.lng), app.settings.zone_resolution)
    )
    return as_json(unwrap(await zone.locate(who.sub, body.lat, body.lng)))


async def _answer(
    offer_id: str, request: Request, who: Caller, app: Services, accept: bool
) -> Response:
    offer = await app.offers.load(offer_id)
    if offer is None:
        raise not_found("offer", offer_id)
    zone = app.directory.rider_zone(offer.zone)

    async def run() -> Response:
        return as_json(unwrap(await zone.answer(offer_id, who.sub, accept)))

    return await app.idempotent(request, who, run)


@router.post("/v1/rider/offers/{offer_id}/accept", responses=answers(404, 409))
async def accept_offer(
    offer_id: Id, request: Request, who: Caller = Depends(rider), app: Services = Depends(services)
) -> Response:
    return await _answer(offer_id, request, who, app, True)


@router.post("/v1/rider/offers/{offer_id}/decline", responses=answers(404, 409))
async def decline_offer(
    offer_id: Id, request: Request, who: Caller = Depends(rider), app: Services = Depends(services)
) -> Response:
    return await _answer(offer_id, request, who, app, False)


@router.post("/v1/rider/orders/{order_id}/pickup", responses=answers(404, 409))
async def pickup(
    order_id: Id,
    request: Request,
    body: ProofIn | None = None,
    who: Caller = Depends(rider),
    app: Services = Depends(services),
) -> Response:
    """The rider has the order. An errand's pickup needs `{"code"}`, the pickup code its
    customer was given (422 `wrong_code` otherwise, and nothing changes); a food order
    needs no body."""
    command = c.PickUp(at=now(), rider_id=who.sub, code=(body or ProofIn()).code)
    return await app.idempotent(request, who, lambda: app.act(order_id, command, who, request))


@router.post("/v1/rider/orders/{order_id}/deliver", responses=answers(404, 409))
async def deliver(
    order_id: Id,
    request: Request,
    body: ProofIn | None = None,
    who: Caller = Depends(rider),
    app: Services = Depends(services),
) -> Response:
    """The order is at its door. An errand's delivery needs `{"code"}`, the delivery
    code the recipient gives the rider (422 `wrong_code` otherwise, and nothing
    changes); a food order needs no body."""
    command = c.Deliver(at=now(), rider_id=who.sub, code=(body or ProofIn()).code)
    return await app.idempotent(request, who, lambda: app.act(order_id, command, who, request))
