"""Operations' review queue: what the risk checks held (`domain/risk.py`), approved or
refused here.

A decision goes to the entity that holds (the order's merchant host, or the payment
shard for a refund), which judges it on its own state and writes the review's outcome
with the release in one step; so a second decision of the same review is 409
`review_decided`, whichever replica or operator sends it. A refund held for review is
decided by another operator than the one who asked for it.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from domain import commands as c
from domain import risk
from domain.errors import DomainError, forbidden, not_found
from serve_app.auth import Caller
from serve_app.deps import admin, services
from serve_app.openapi import answers
from serve_app.schemas import Id, Offset
from serve_app.services import Services, as_json, now, unwrap

router = APIRouter()

Status = Literal["open", "approved", "refused", "closed", "all"]


@router.get("/v1/admin/reviews")
async def list_reviews(
    status: Status = "open",
    limit: int = Query(20, gt=0, le=100),
    cursor: Offset = 0,
    who: Caller = Depends(admin),
    app: Services = Depends(services),
) -> Response:
    """The holds waiting for a decision (or all of them, or those decided so), oldest
    first; `cursor` is the answer's `cursor`, empty (or left out) for the first page."""
    found, next_cursor = await app.reviews.page(
        None if status == "all" else status, cursor or 0, limit
    )
    return as_json({"reviews": found, "cursor": next_cursor})


async def _decide(
    review_id: str, approve: bool, request: Request, who: Caller, app: Services
) -> Response:
    async def run() -> Response:
        review = await app.reviews.get(review_id)
        if review is None:
            raise not_found("review", review_id)
        if review["status"] != risk.OPEN:
            raise DomainError(
                "review_decided",
                "this review is decided already",
                review_id=review_id,
                status=review["status"],
            )
        if review["kind"] == "refund":
            if review.get("requested_by") == who.sub:
                raise forbidden("a refund is reviewed by another operator than who asked for it")
            unwrap(
                await app.directory.payment(review["order_id"]).review_refund(
                    review["refund_no"], review_id, approve, who.sub
                )
            )
        else:
            decision = c.Review(at=now(), review_id=review_id, approve=approve, by=who.sub)
            merchant_id = await app.merchant_of(review["order_id"])
            unwrap(
                await app.directory.merchant(merchant_id).act(review["order_id"], decision, who.who)
            )
        # The entity wrote the outcome with its release, relayed before it answered.
        return as_json(await app.reviews.get(review_id))

    return await app.idempotent(request, who, run)


@router.post("/v1/admin/reviews/{review_id}/approve", responses=answers(404, 409))
async def approve(
    review_id: Id,
    request: Request,
    who: Caller = Depends(admin),
    app: Services = Depends(services),
) -> Response:
    """Let the hold go: the order reaches its merchant (paid, for a capture of another
    amount: what was captured above its total goes back), the refund goes to the
    provider, the delivery is split as always. A capture short of the total cannot be
    approved (409 `payment_short`)."""
    return await _decide(review_id, True, request, who, app)


@router.post("/v1/admin/reviews/{review_id}/refuse", responses=answers(404, 409))
async def refuse(
    review_id: Id,
    request: Request,
    who: Caller = Depends(admin),
    app: Services = Depends(services),
) -> Response:
    """Refuse it: an order not yet with its merchant is cancelled (and refunded in full),
    a held refund is dropped, a delivery is split with the rider's share kept."""
    return await _decide(review_id, False, request, who, app)
