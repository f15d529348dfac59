"""The review queue: every hold a risk check made (`domain/risk.py`), in `{ops}`.

A review is written by the change that holds (an order's script, a payment's MULTI),
as writes of that change's outbox entry (`storage/outbox.py`): it exists exactly when
the hold does, and the relay applies it once. Its decision is written the same way, by
the change that releases or closes the hold, so the queue never shows a hold open
that its entity has let go (the entity's own state is what a decision is judged on:
a second decision finds nothing held and is refused).

A review is a hash: `json` (what was held, why and the facts the rule weighed, as
written when it opened), `status` (`open`, `approved`, `refused`, `closed`),
`decided_by`, `decided_at`. `reviews:{ops}` lists every review by when it opened,
`reviews:open:{ops}` the open ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from domain import events as e
from domain import risk
from domain.orders import Order
from domain.risk import Hold
from storage import keys
from storage.outbox import Remote
from storage.redis import RedisClient


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def opened(remote: Remote, record: dict[str, Any], at: datetime) -> None:
    """Open a review with the change that holds (writes of its outbox entry)."""
    review_id = record["id"]
    key = keys.review(review_id)
    remote.call("HSET", key, "json", orjson.dumps(record).decode(), "status", risk.OPEN)
    remote.call("ZADD", keys.REVIEWS, _ms(at), review_id)
    remote.call("ZADD", keys.REVIEWS_OPEN, _ms(at), review_id)


def decided(remote: Remote, review_id: str, status: str, by: str, at: datetime) -> None:
    """Close a review with the change that lets its hold go."""
    remote.call(
        "HSET",
        keys.review(review_id),
        "status",
        status,
        "decided_by",
        by,
        "decided_at",
        at.isoformat(),
    )
    remote.call("ZREM", keys.REVIEWS_OPEN, review_id)


def order_record(order: Order, hold: Hold, at: datetime) -> dict[str, Any]:
    return {
        "id": hold.review_id,
        "kind": "order",
        "reason": hold.reason,
        "message": hold.message,
        "facts": dict(hold.facts),
        "order_id": order.id,
        "customer_id": order.customer_id,
        "merchant_id": order.merchant_id,
        "rider_id": order.rider_id,
        "order_status": order.status.value,
        "total_fen": order.amounts.total_fen,
        "paid_fen": order.paid_fen,
        "opened_at": at.isoformat(),
    }


def refund_record(
    review_id: str,
    hit: risk.Hit,
    order_id: str,
    customer_id: str,
    merchant_id: str,
    refund_no: str,
    amount_fen: int,
    requested_by: str,
    at: datetime,
) -> dict[str, Any]:
    return {
        "id": review_id,
        "kind": "refund",
        "reason": hit.reason,
        "message": hit.message,
        "facts": dict(hit.facts),
        "order_id": order_id,
        "customer_id": customer_id,
        "merchant_id": merchant_id,
        "refund_no": refund_no,
        "amount_fen": amount_fen,
        "requested_by": requested_by,
        "opened_at": at.isoformat(),
    }


def order_changes(remote: Remote, before: Order | None, after: Order, event: e.Event) -> None:
    """The review writes of an order's change: a hold it opens, a hold it lets go (by a
    decision, or because the order closed first)."""
    old = before.hold if before is not None and before.on_hold else None
    new = after.hold if after.on_hold else None
    if old is not None and (new is None or new.review_id != old.review_id):
        now = after.hold if after.hold and after.hold.review_id == old.review_id else None
        status = now.status if now is not None and not now.open else risk.CLOSED
        by = event.by if isinstance(event, e.OrderReleased | e.OrderCancelled) else "system"
        decided(remote, old.review_id, status, by, event.at)
    if new is not None and (old is None or old.review_id != new.review_id):
        opened(remote, order_record(after, new, event.at), event.at)


def view(review_id: str, stored: dict[str, str]) -> dict[str, Any] | None:
    if not stored.get("json"):
        return None
    record: dict[str, Any] = orjson.loads(stored["json"])
    return {
        **record,
        "id": review_id,
        "status": stored.get("status", risk.OPEN),
        "decided_by": stored.get("decided_by"),
        "decided_at": stored.get("decided_at"),
    }


class ReviewStore:
    def __init__(self, client: RedisClient) -> None:
        self.client = client

    async def get(self, review_id: str) -> dict[str, Any] | None:
        return view(review_id, await self.client.hgetall(keys.review(review_id)))

    async def page(
        self, status: str | None, start: int, count: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Reviews oldest first (a queue), the open ones or all (then filtered by status),
        from offset `start`; and the next page's offset, None after the last."""
        index = keys.REVIEWS_OPEN if status == risk.OPEN else keys.REVIEWS
        ids: list[str] = await self.client.zrange(index, start, start + count - 1)
        async with self.client.pipeline(transaction=False) as pipe:
            for review_id in ids:
                pipe.hgetall(keys.review(review_id))
            stored = await pipe.execute() if ids else []
        found = [view(i, s) for i, s in zip(ids, stored, strict=True)]
        reviews = [r for r in found if r is not None and status in (None, r["status"])]
        return reviews, (start + len(ids) if len(ids) == count else None)
