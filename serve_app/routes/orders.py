"""Orders as customers (and every party reading its own) see them."""

from __future__ import annotations

import hashlib
import uuid

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response

from domain import commands as c
from domain.errands import shown_to
from domain.errors import forbidden, not_found
from domain.geo import Point
from domain.orders import visible_to
from serve_app import views
from serve_app.auth import Caller
from serve_app.deps import caller, customer, customer_or_admin, services
from serve_app.openapi import answers
from serve_app.schemas import CancelIn, DeliveryChangeIn, Id, Offset, OrderIn
from serve_app.services import Services, as_json, creation_key, now, unwrap
from storage.keys import new_order_id

router = APIRouter()


def order_id_for(who: Caller, merchant_id: str, idempotency_key: str | None) -> str:
    """The same key always names the same order, so a retry can never make two; the id
    names its merchant's shard, where all of the order is kept."""
    if idempotency_key:
        digest = hashlib.blake2b(f"{who.sub}\n{idempotency_key}".encode(), digest_size=10)
        return new_order_id(merchant_id, digest.hexdigest())
    return new_order_id(merchant_id, uuid.uuid4().hex[:20])


@router.post("/v1/orders", status_code=201, responses=answers(404, 409))
async def place_order(
    body: OrderIn,
    request: Request,
    who: Caller = Depends(customer),
    app: Services = Depends(services),
    device_id: str | None = Header(
        None,
        alias="X-Device-Id",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_\-.:]+$",
        description="The client's own id of the device it runs on (an app install, a "
        "browser): orders per device are weighed by the risk checks beside the customer's.",
    ),
) -> Response:
    """An order over its customer's or device's risk limits is placed held for review
    (its `hold`; `domain/risk.py`): 201 all the same, and its merchant sees it once
    operations approve it."""
    order_id = order_id_for(who, body.merchant_id, creation_key(request))
    merchant = app.directory.merchant(body.merchant_id)

    async def run() -> Response:
        request_body = {
            **body.model_dump(),
            "order_id": order_id,
            "customer_id": who.sub,
            "device_id": device_id,
        }
        reply = unwrap(await merchant.place(request_body))
        app.remember_merchant(order_id, body.merchant_id)
        return as_json(views.new_order(reply["order"], reply["payment"]), 201)

    return await app.idempotent(request, who, run)


@router.get("/v1/orders/{order_id}", responses=answers(404))
async def get_order(
    order_id: Id, who: Caller = Depends(caller), app: Services = Depends(services)
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
    return as_json(views.order(read, app.checkout, who.role))


@router.get("/v1/orders", responses=answers(403))
async def list_orders(
    status: str | None = None,
    limit: int = Query(20, gt=0, le=100),
    cursor: Offset = 0,
    who: Caller = Depends(caller),
    app: Services = Depends(services),
) -> Response:
    """The caller's orders, newest first; `cursor` is the answer's `cursor`, or empty
    (or left out) for the newest."""
    if who.role == "admin":
        raise forbidden("operations list orders through the dashboard")
    start = cursor or 0
    ids = await app.orders.ids_of(who.role, who.sub, start, limit)
    orders = [shown_to(o, who.role) for o in await app.orders.many(ids)]
    if status:
        orders = [o for o in orders if o["status"] == status]
    next_cursor = start + len(ids) if len(ids) == limit else None
    return as_json({"orders": orders, "cursor": next_cursor})


@router.post("/v1/orders/{order_id}/cancel", responses=answers(404, 409))
async def cancel(
    order_id: Id,
    request: Request,
    body: CancelIn | None = None,
    who: Caller = Depends(customer_or_admin),
    app: Services = Depends(services),
) -> Response:
    body = body or CancelIn()
    command = c.CancelOrder(
        at=now(), reason=body.reason, by=who.role, expected_version=body.expected_version
    )
    return await app.idempotent(request, who, lambda: app.act(order_id, command, who, request))


@router.patch("/v1/orders/{order_id}/delivery", responses=answers(404, 409))
async def change_delivery(
    order_id: Id,
    body: DeliveryChangeIn,
    request: Request,
    who: Caller = Depends(customer),
    app: Services = Depends(services),
) -> Response:
    """Move the door of an order not yet picked up (its customer only): `delivery_changed`
    on the streams of the customer, the merchant and the rider.

    The new point must be one the merchant delivers to (422 `outside_delivery_range`);
    after pickup 409 `already_picked_up`. The fee is quoted again by the tariff: a
    dearer one is refused (409 `fee_increase_not_supported`); a cheaper one is taken and
    the order shows the new fee and total, and the difference goes back (a `refunded`
    event follows): at once if the order is paid; before payment, the pay link still
    asks the placed total (`link_fen`: the provider takes no second link of another
    amount), the customer pays that, and the difference is refunded right after the
    capture. With `expected_delivery_fee_fen`, any other fee is 409 `fee_changed` with
    the fee."""
    command = c.ChangeDelivery(
        at=now(),
        expected_version=body.expected_version,
        dropoff=Point(body.lat, body.lng),
        address=body.address,
        phone=body.phone,
        expected_delivery_fee_fen=body.expected_delivery_fee_fen,
    )
    return await app.idempotent(request, who, lambda: app.act(order_id, command, who, request))
