"""Regional promotions: operations publish one to h3 cells and follow its push; a
customer registers its home cell and reads the promotions active where it is.

A promotion reaches the customers registered to its cells (`PUT /v1/me/home`) and those
connected in them (a customer's sync socket says where it is: `?lat=&lng=` on
`/v1/sync/ws`, or a `{"type": "location", "lat": ..., "lng": ...}` message), as one
`promotion` event on each one's inbox stream, pushed at `O2O_PROMOTION_BATCH_PER_S`
by the rider-zone hosts (`actors/promotions.py`). A customer who registers to, or
connects in, a cell while a promotion is active there is told at once; one that was
offline reads them here (`GET /v1/me/promotions`).
"""

from __future__ import annotations

import hashlib
import uuid

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from domain import promotions
from domain.errors import DomainError, not_found
from domain.geo import Point, zone_of
from domain.promotions import Promotion
from serve_app.auth import Caller
from serve_app.deps import admin, customer, services
from serve_app.openapi import answers
from serve_app.schemas import HomeIn, Id, PromotionIn
from serve_app.services import Services, as_json, creation_key, now
from storage.promotions import ms, progress_view

router = APIRouter()


def promotion_id_for(who: Caller, idempotency_key: str | None) -> str:
    """A promotion's id: the Idempotency-Key names it, so even two retries racing each
    other publish once."""
    if idempotency_key:
        digest = hashlib.blake2b(f"{who.sub}\n{idempotency_key}".encode(), digest_size=6)
        return f"pr_{digest.hexdigest()}"
    return f"pr_{uuid.uuid4().hex[:12]}"


def admin_view(promotion: Promotion, progress: dict[str, str]) -> dict[str, object]:
    return {
        **promotion.public(),
        "cells": list(promotion.given_cells),
        "zone_cells": len(promotion.cells),
        "published_at": promotion.published_at.isoformat(),
        "status": promotions.job_status(promotion, progress.get("finished"), now()),
        "progress": {**progress_view(progress), "cells_total": len(promotion.cells)},
    }


@router.post("/v1/admin/promotions", status_code=201, responses=answers(409))
async def publish_promotion(
    body: PromotionIn,
    request: Request,
    who: Caller = Depends(admin),
    app: Services = Depends(services),
) -> Response:
    """Publish a promotion to h3 cells (at the zones' resolution or coarser, at most
    100 naming at most 1,000 zones; 422 otherwise). A coupon promotion names an
    existing coupon that has not ended (409 `coupon_unavailable` otherwise). The push
    starts at `starts_at` (at once if that is past) and its progress is
    `GET /v1/admin/promotions/{id}`."""
    promotion_id = promotion_id_for(who, creation_key(request))

    async def run() -> Response:
        at = now()
        promotion = promotions.publish(
            promotion_id=promotion_id,
            kind=body.kind,
            cells=body.cells,
            title=body.title,
            body=body.body,
            coupon_code=body.coupon_code,
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            now=at,
            resolution=app.settings.zone_resolution,
        )
        if promotion.coupon_code:
            coupon = await app.coupons.load(promotion.coupon_code)
            if coupon.ends_at <= at:
                raise DomainError(
                    "coupon_unavailable", "the coupon has ended", code=promotion.coupon_code
                )
        # False: a retry with the same key published it meanwhile; its record answers.
        await app.promotions.publish(promotion, ms(at))
        loaded = await app.promotions.load(promotion.id)
        if loaded is None:
            raise not_found("promotion", promotion.id)
        return as_json(admin_view(*loaded), 201)

    return await app.idempotent(request, who, run)


@router.get("/v1/admin/promotions/{promotion_id}", responses=answers(404))
async def promotion_progress(
    promotion_id: Id, who: Caller = Depends(admin), app: Services = Depends(services)
) -> Response:
    """A promotion and how far its push has got: `status` (`scheduled`, `pushing`,
    `done`, `expired`), `progress.targeted` (the customers its cells held when it was
    published; one registered and connected there counts twice), `progress.pushed`
    (customers told, each once) and the cells done. Kept a week after it ends."""
    loaded = await app.promotions.load(promotion_id)
    if loaded is None:
        raise not_found("promotion", promotion_id)
    return as_json(admin_view(*loaded))


@router.put("/v1/me/home")
async def set_home(
    body: HomeIn,
    request: Request,
    who: Caller = Depends(customer),
    app: Services = Depends(services),
) -> Response:
    """Register the customer to the h3 cell (at the zones' resolution) of its home: the
    promotions of that cell reach it. Only the cell is kept, not the point. Promotions
    active there now are pushed to it at once."""
    cell = zone_of(Point(body.lat, body.lng), app.settings.zone_resolution)

    async def run() -> Response:
        await app.promotions.set_home(who.sub, cell)
        await app.promotions.tell_arrival(who.sub, cell, now())
        return as_json({"home_cell": cell})

    return await app.idempotent(request, who, run)


@router.get("/v1/me/promotions")
async def my_promotions(
    who: Caller = Depends(customer), app: Services = Depends(services)
) -> Response:
    """The promotions active now in the customer's cells (its home, and the cell its
    socket reported while that counts), and any still active it was told of: what a
    device that was offline missed. Earliest start first."""
    at = now()
    home, here, until = await app.promotions.place_of(who.sub)
    cells = promotions.customer_cells(home, here, until, ms(at))
    found = await app.promotions.active_for(who.sub, cells, at)
    return as_json(
        {
            "home_cell": home,
            "here_cell": here if here in cells else None,
            "promotions": [p.public() for p in found],
        }
    )
