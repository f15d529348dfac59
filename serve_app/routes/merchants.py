"""Merchants: onboarding, finding them near a point, their menus."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from domain.errors import forbidden
from domain.geo import Point, require_indexable
from domain.merchants import MENU_PAGE, MENU_PAGE_MAX
from serve_app.auth import Caller
from serve_app.deps import admin, customer, merchant_or_admin, services
from serve_app.openapi import answers
from serve_app.schemas import Id, IndexedLat, Lng, MenuItemIn, MerchantIn
from serve_app.services import Services, as_json, now, unwrap

router = APIRouter()


@router.post("/v1/merchants", status_code=201, responses=answers(409))
async def onboard(
    body: MerchantIn,
    request: Request,
    who: Caller = Depends(admin),
    app: Services = Depends(services),
) -> Response:
    profile = body.model_dump(exclude_none=True)
    profile["delivery"] = body.delivery.model_dump(exclude_none=True)
    profile["id"] = body.id or f"m_{uuid.uuid4().hex[:12]}"

    async def run() -> Response:
        return as_json(unwrap(await app.directory.merchant(profile["id"]).onboard(profile)), 201)

    return await app.idempotent(request, who, run)


@router.get("/v1/merchants/nearby")
async def nearby(
    lat: IndexedLat,
    lng: Lng,
    radius_m: int = Query(10_000, gt=0, le=50_000),
    limit: int = Query(50, gt=0, le=200),
    include_closed: bool = Query(False, description="also those outside their opening hours"),
    kind: Literal["restaurant", "shop"] | None = Query(None, description="only this kind"),
    who: Caller = Depends(customer),
    app: Services = Depends(services),
) -> Response:
    """Merchants taking orders whose delivery range covers the point, nearest first. Each
    says `open_now` and, when closed, `next_opening_at`; merchants outside their opening
    hours are left out unless `include_closed=true` (placement would answer them 409
    `merchant_closed`)."""
    require_indexable(Point(lat, lng), "the point searched around")
    found = await app.merchants.nearby(
        lat,
        lng,
        radius_m,
        limit,
        now(),
        app.settings.city_utc_offset_min,
        include_closed=include_closed,
        kind=kind,
    )
    return as_json({"merchants": found})


@router.get("/v1/merchants/{merchant_id}/menu", responses=answers(404))
async def menu(
    merchant_id: Id,
    q: str | None = Query(
        None, max_length=100, description="items whose name contains this, in any case"
    ),
    limit: int | None = Query(None, gt=0, le=MENU_PAGE_MAX),
    cursor: Id | None = Query(None, description="the `cursor` of the page before"),
    app: Services = Depends(services),
) -> Response:
    """The whole menu, or with `q`, `limit` or `cursor` one page of it in item id order
    (`limit` 50 unless given) with `total` (the items matching) and `cursor` (where the
    next page starts; null after the last)."""
    if q is None and limit is None and cursor is None:
        version, items = await app.merchants.menu(merchant_id)
        return as_json({"merchant_id": merchant_id, "menu_version": version, "items": items})
    page = await app.merchants.menu_page(merchant_id, q, cursor, limit or MENU_PAGE)
    return as_json(page)


@router.put("/v1/merchants/{merchant_id}/menu/items/{item_id}", responses=answers(404))
async def set_menu_item(
    merchant_id: Id,
    item_id: Id,
    body: MenuItemIn,
    request: Request,
    who: Caller = Depends(merchant_or_admin),
    app: Services = Depends(services),
) -> Response:
    if who.role == "merchant" and who.sub != merchant_id:
        raise forbidden("a merchant changes only its own menu")
    item = {
        "id": item_id,
        "name": body.name,
        "price_fen": body.price_fen,
        "available": body.available,
    }

    async def run() -> Response:
        return as_json(
            unwrap(await app.directory.merchant(merchant_id).set_menu_item(item, body.stock))
        )

    return await app.idempotent(request, who, run)
