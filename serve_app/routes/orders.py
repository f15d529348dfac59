"""Orders as customers (and every party reading its own) see them."""

from __future__ import annotations

import hashlib
import uuid

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from domain import commands as c
from domain.errors import forbidden, not_found
from domain.orders import visible_to
from serve_app import views
from serve_app.auth import Caller
from serve_app.deps import caller, customer, customer_or_admin, services
from serve_app.schemas import CancelIn, OrderIn
from serve_app.services import Services, as_json, now, unwrap

router = APIRouter()


def order_id_for(who: Caller, idempotency_key: str | None) -> str:
    """The same key always names the same order, so a retry can never make two."""
    if idempotency_key:
        digest = hashlib.blake2b(f"{who.sub}\n{idempotency_key}".encode(), digest_size=10)
        return f"o_{digest.hexdigest()}"
    return f"o_{uuid.uuid4().hex[:20]}"


@router.post("/v1/orders", status_code=201)
async def place_order(
    body: OrderIn,
    request: Request,
    who: Caller = Depends(customer),
    app: Services = Depends(services),
) -> Response:
    order_id = order_id_for(who, request.headers.get("idempotency-key"))
    merchant = app.directory.merchant(body.merchant_id)

    async def run() -> Response:
        request_body = {**body.model_dump(), "order_id": order_id, "customer_id": who.sub}
        reply = unwrap(await merchant.place(request_body))
        app.remember_merchant(order_id, body.merchant_id)
        return as_json(views.new_order(reply["order"], reply["payment"]), 201)

    return await app.idempotent(request, who, run)


@router.get("/v1/orders/{order_id}")
async def get_order(
    order_id: str, who: Caller = Depends(caller), app: Services = Depends(services)
) -> Response:
    read = await app.orders.read(order_id)
    if read is None or not visible_to(
        who.role,
        who.sub,
        customer_id=read.order["customer_id"],
        merchant_id=read.order["merchant_id"],
        rider_id=read.order.get("rider_id"),
    ):
        raise not_found("order", order_id)
    return as_json(views.order(read, app.checkout))


@router.get("/v1/orders")
async def list_orders(
    status: str | None = None,
    limit: int = Query(20, gt=0, le=100),
    cursor: int = Query(0, ge=0),
    who: Caller = Depends(caller),
    app: Services = Depends(services),
) -> Response:
    if who.role == "admin":
        raise forbidden("operations list orders through the dashboard")
    ids = await app.orders.ids_of(who.role, who.sub, cursor, limit)
    orders = await app.orders.many(ids)
    if status:
        orders = [o for o in orders if o["status"] == status]
    next_cursor = cursor + len(ids) if len(ids) == limit else None
    return as_json({"orders": orders, "cursor": next_cursor})


@router.post("/v1/orders/{order_id}/cancel")
async def cancel(
    order_id: str,
    request: Request,
    body: CancelIn | None = None,
    who: Caller = Depends(customer_or_admin),
    app: Services = Depends(services),
) -> Response:
    body = body or CancelIn()
    command = c.CancelOrder(
        at=now(), reason=body.reason, by=who.role, expected_version=body.expected_version
    )
    return await app.idempotent(request, who, lambda: app.act(order_id, command, who))
