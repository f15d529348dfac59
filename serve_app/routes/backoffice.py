"""The merchant's back office: its orders' preparation and its settlement."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from domain import commands as c
from domain import ledger
from serve_app.auth import Caller
from serve_app.deps import merchant, services
from serve_app.openapi import answers
from serve_app.schemas import AcceptIn, ExpectVersion, Id, RejectIn
from serve_app.services import Services, as_json, now

router = APIRouter()


@router.post("/v1/merchant/orders/{order_id}/accept", responses=answers(404, 409))
async def accept(
    order_id: Id,
    request: Request,
    body: AcceptIn | None = None,
    who: Caller = Depends(merchant),
    app: Services = Depends(services),
) -> Response:
    body = body or AcceptIn()
    # No preparation time given: the merchant's usual one, which its host knows.
    command = c.AcceptOrder(
        at=now(), prep_minutes=body.prep_minutes, expected_version=body.expected_version
    )
    return await app.idempotent(request, who, lambda: app.act(order_id, command, who, request))


@router.post("/v1/merchant/orders/{order_id}/reject", responses=answers(404, 409))
async def reject(
    order_id: Id,
    body: RejectIn,
    request: Request,
    who: Caller = Depends(merchant),
    app: Services = Depends(services),
) -> Response:
    command = c.RejectOrder(at=now(), reason=body.reason, expected_version=body.expected_version)
    return await app.idempotent(request, who, lambda: app.act(order_id, command, who, request))


@router.post("/v1/merchant/orders/{order_id}/ready", responses=answers(404, 409))
async def ready(
    order_id: Id,
    request: Request,
    body: ExpectVersion | None = None,
    who: Caller = Depends(merchant),
    app: Services = Depends(services),
) -> Response:
    command = c.MarkReady(at=now(), expected_version=(body or ExpectVersion()).expected_version)
    return await app.idempotent(request, who, lambda: app.act(order_id, command, who, request))


@router.get("/v1/merchant/settlement")
async def settlement(
    day: date = Query(alias="date"),
    who: Caller = Depends(merchant),
    app: Services = Depends(services),
) -> Response:
    report = ledger.settlement(await app.ledger.of_merchant_day(who.sub, day), who.sub, day)
    return as_json({"merchant_id": who.sub, "date": day.isoformat(), **report})
