"""Operations: coupons, refunds, reconciliation and the dashboard's figures."""

from __future__ import annotations

import hashlib
import uuid
from datetime import date

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from domain.errors import DomainError, not_found
from serve_app import dashboard
from serve_app.auth import Caller
from serve_app.deps import admin, services
from serve_app.openapi import answers
from serve_app.schemas import CouponIn, Id, RefundIn
from serve_app.services import Services, as_json, creation_key, now, unwrap

router = APIRouter()


@router.post("/v1/admin/coupons", status_code=201, responses=answers(409))
async def create_coupon(
    body: CouponIn,
    request: Request,
    who: Caller = Depends(admin),
    app: Services = Depends(services),
) -> Response:
    spec = body.model_dump(mode="json", exclude_none=True)

    async def run() -> Response:
        if not await app.coupons.create(spec):
            raise DomainError("coupon_exists", "a coupon with this code exists", code=body.code)
        return as_json(spec, 201)

    # A retry of a creation that went through gets its answer, not `coupon_exists`.
    return await app.idempotent(request, who, run)


def refund_no_for(order_id: str, idempotency_key: str | None) -> str:
    """An admin refund's number: the Idempotency-Key names it, so a retry refunds once."""
    suffix = (
        hashlib.blake2b(idempotency_key.encode(), digest_size=6).hexdigest()
        if idempotency_key
        else uuid.uuid4().hex[:12]
    )
    return f"{order_id}-a{suffix}"


@router.post("/v1/admin/orders/{order_id}/refund", responses=answers(404, 409))
async def admin_refund(
    order_id: Id,
    body: RefundIn,
    request: Request,
    who: Caller = Depends(admin),
    app: Services = Depends(services),
) -> Response:
    """A partial or full refund. One that takes the merchant's refunds of the day past
    its share is held for another operator's review (`status: held`, `review_id`;
    `domain/risk.py`), not sent to the provider."""
    if await app.orders.merchant_of(order_id) is None:
        raise not_found("order", order_id)
    refund_no = refund_no_for(order_id, creation_key(request))
    payment = app.directory.payment(order_id)

    async def run() -> Response:
        refund = unwrap(await payment.refund(body.amount_fen, refund_no, body.reason, who.sub))
        return as_json({"order_id": order_id, **refund})

    return await app.idempotent(request, who, run)


@router.post("/v1/admin/reconciliation")
async def reconciliation(
    day: date = Query(alias="date"), who: Caller = Depends(admin), app: Services = Depends(services)
) -> Response:
    return as_json(unwrap(await app.directory.payment("reconciliation").reconcile(day)))


@router.get("/v1/admin/metrics")
async def admin_metrics(
    window_min: int = Query(15, gt=0, le=1440),
    who: Caller = Depends(admin),
    app: Services = Depends(services),
) -> Response:
    """Operations' dashboard figures over a sliding window, hot zones and waiting orders."""
    return as_json(await dashboard.figures(app, now(), window_min))
