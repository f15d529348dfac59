"""Merchants: onboarding, finding them near a point, their menus."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from domain.errors import forbidden
from domain.geo import Point, require_indexable
from serve_app.auth import Caller
from serve_app.deps import admin, customer, merchant_or_admin, services
from serve_app.openapi import answers
from serve_app.schemas import Id, IndexedLat, Lng, MenuItemIn, MerchantIn
from serve_app.services import Services, as_json, unwrap

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
    who: Caller = Depends(customer),
    app: Services = Depends(services),
) -> Response:
    require_indexable(Point(lat, lng), "the point searched around")
    return as_json({"merchants": await app.merchants.nearby(lat, lng, radius_m, limit)})


@router.get("/v1/merchants/{merchant_id}/menu", responses=answers(404))
async def menu(merchant_id: Id, app: Services = Depends(services)) -> Response:
    version, items = await app.merchants.menu(merchant_id)
    return as_json({"merchant_id": merchant_id, "menu_version": version, "items": items})


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
