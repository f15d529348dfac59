"""Errands (跑腿) as customers ask for them: a price first, then the courier job itself.

An errand is an order of kind `errand` at a courier desk (`domain/errands.py`); once
placed it is read, paid, cancelled and followed like any order (`/v1/orders/...`, the
sync streams), and its rider proves the pickup and the delivery with the codes the
customer passes on (`/v1/rider/orders/{id}/pickup` and `/deliver` with `{"code"}`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response

from domain import errands
from domain.errand_tariff import WEIGHT_LIMIT_KG, ErrandTariff
from domain.geo import Point, distance_m
from serve_app import views
from serve_app.auth import Caller
from serve_app.deps import customer, services
from serve_app.openapi import answers
from serve_app.routes.orders import order_id_for
from serve_app.schemas import ErrandIn, ErrandQuoteIn
from serve_app.services import Services, as_json, creation_key, unwrap

router = APIRouter()

# The tariff every courier desk prices by (`actors/merchant.py` holds the same).
TARIFF = ErrandTariff()


@router.post("/v1/errands/quote")
async def quote(body: ErrandQuoteIn, who: Caller = Depends(customer)) -> Response:
    """What an errand between two points costs, before it is ordered: the distance,
    its price, the weight class's surcharge and the total (integer fen). Computed by
    the errand tariff in the replica; nothing is stored. 422 `outside_delivery_range`
    past the tariff's longest errand."""
    pickup = Point(body.pickup.lat, body.pickup.lng)
    dropoff = Point(body.dropoff.lat, body.dropoff.lng)
    lines, amounts = errands.price(pickup, dropoff, body.category, body.weight_class, TARIFF)
    priced = TARIFF.quote(distance_m(pickup, dropoff), body.weight_class)
    return as_json(
        {
            **priced.as_dict(),
            "category": body.category,
            "weight_class": body.weight_class,
            "weight_limit_kg": WEIGHT_LIMIT_KG[body.weight_class],
            "items": [
                {"item_id": li.item_id, "name": li.name, "qty": li.qty, "price_fen": li.price_fen}
                for li in lines
            ],
            "amounts": amounts.as_dict(),
        }
    )


@router.post("/v1/errands", status_code=201, responses=answers(409))
async def place_errand(
    body: ErrandIn,
    request: Request,
    who: Caller = Depends(customer),
    app: Services = Depends(services),
    device_id: str | None = Header(
        None,
        alias="X-Device-Id",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_\-.:]+$",
        description="The client's own id of the device it runs on, as for `POST /v1/orders`: "
        "errands count with orders in the risk checks.",
    ),
) -> Response:
    """Order an errand: `201` with the order (`kind: "errand"`, its `errand` part with
    the pickup and delivery codes, shown to its customer only) and its `payment`, as
    `POST /v1/orders` answers. Paid through `payment.pay_url`, it is dispatched at once.
    409 `price_changed` when `expected_total_fen` is not today's price."""
    desk = errands.desk_of(who.sub)
    order_id = order_id_for(who, desk, creation_key(request))

    async def run() -> Response:
        placing = {
            **body.model_dump(),
            "kind": errands.ERRAND,
            "merchant_id": desk,
            "order_id": order_id,
            "customer_id": who.sub,
            "device_id": device_id,
        }
        reply = unwrap(await app.directory.merchant(desk).place(placing))
        app.remember_merchant(order_id, desk)
        return as_json(views.new_order(reply["order"], reply["payment"]), 201)

    return await app.idempotent(request, who, run)
