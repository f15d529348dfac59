"""Orders in Redis: one hash per order, indexes per owner, events on inbox streams."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis.commands.core import AsyncScript

from domain import events as e
from domain.errors import DomainError
from domain.orders import Order, audience, releases_stock
from storage import keys
from storage.redis import RedisClient, Scripts


def inbox_key(role: str, owner_id: str) -> str:
    return keys.OPS_INBOX if role == "ops" else keys.inbox(role, owner_id)


class OrderStore:
    def __init__(
        self,
        client: RedisClient,
        scripts: Scripts,
        inbox_maxlen: int,
        retention_s: int,
        payment_check_after_s: float,
        run_script: Callable[[AsyncScript, list[Any], list[Any]], Awaitable[Any]] | None = None,
    ) -> None:
        """`run_script(script, keys, args)` runs the commit script; by default on its own
        round trip (a host passes one that pipelines concurrent commits)."""
        self.client = client
        self.scripts = scripts
        self.run_script = run_script or _run_alone
        self.inbox_maxlen = inbox_maxlen
        self.retention_ms = retention_s * 1000
        self.payment_check_after_s = payment_check_after_s

    async def load(self, order_id: str) -> Order | None:
        raw = await self.client.hget(keys.order(order_id), "json")
        return Order.from_dict(orjson.loads(raw)) if raw else None

    async def commit(self, before: Order | None, after: Order, event: e.Event) -> None:
        """Write the new order, move stock, index it and publish the event in one script."""
        stock_sign = 0
        if before is None:
            stock_sign = -1
        elif releases_stock(event):
            stock_sign = 1
        stock_args: list[Any] = []
        if stock_sign:
            for line in after.lines:
                stock_args += [line.item_id, line.qty]
        placed_ms = int(after.placed_at.timestamp() * 1000)
        indexes: list[tuple[str, float]] = []
        if before is None:
            indexes = [
                (keys.orders_of("customer", after.customer_id), placed_ms),
                (keys.orders_of("merchant", after.merchant_id), placed_ms),
                # Saved with the order, so no order can await a payment nobody checks.
                (
                    keys.PAYMENTS_DUE,
                    after.placed_at.timestamp() + self.payment_check_after_s,
                ),
            ]
        elif isinstance(event, e.RiderAssigned):
            indexes = [(keys.orders_of("rider", event.rider_id), placed_ms)]
        inboxes = [inbox_key(role, who) for role, who in audience(after, event)]
        result = await self.run_script(
            self.scripts.apply_order,
            [
                keys.order(after.id),
                keys.stock(after.merchant_id),
                *(key for key, _ in indexes),
                *inboxes,
            ],
            [
                before.version if before else 0,
                after.version,
                orjson.dumps(after.as_dict()),
                after.status.value,
                after.rider_id or "",
                after.merchant_id,
                after.customer_id,
                stock_sign,
                len(stock_args) // 2,
                *stock_args,
                len(indexes),
                after.id,
                *(score for _, score in indexes),
                self.inbox_maxlen,
                self.retention_ms,
                orjson.dumps(event.as_dict()),
            ],
        )
        if result[0] == "ok":
            return
        if result[0] == "out_of_stock":
            raise DomainError(
                "out_of_stock", "not enough stock", item_id=result[1], available=int(result[2])
            )
        raise DomainError("stale_version", "the order changed underneath", version=int(result[1]))


async def _run_alone(script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
    return await script(keys=keys, args=args)


def notify_channel(inbox: str) -> str:
    return f"notify:{inbox}"


async def queue_event(
    pipe: Any,
    scripts: Scripts,
    inboxes: list[str],
    payload: dict[str, Any],
    maxlen: int,
    retention_s: int,
) -> None:
    """Add an event to a MULTI pipeline, so it commits together with the state it reports."""
    await scripts.append_event(
        keys=inboxes, args=[maxlen, retention_s * 1000, orjson.dumps(payload)], client=pipe
    )
