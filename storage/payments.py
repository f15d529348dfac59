"""Payment records in Redis, and the orders whose payment the provider is asked about."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from domain.payments import Payment
from storage import keys
from storage.mailboxes import MailboxStore
from storage.metrics import MetricsStore
from storage.redis import RedisClient


class PaymentStore:
    def __init__(self, client: RedisClient, metrics: MetricsStore) -> None:
        self.client = client
        self.metrics = metrics
        self.mailboxes = MailboxStore(client)

    async def load(self, order_id: str) -> tuple[Payment | None, dict[str, Any] | None]:
        """The order's payment record (None until something happened to it) and the order
        as stored, read in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(keys.payment(order_id))
            pipe.hget(keys.order(order_id), "json")
            raw, raw_order = await pipe.execute()
        payment = Payment.from_dict(orjson.loads(raw)) if raw else None
        return payment, (orjson.loads(raw_order) if raw_order else None)

    async def save(self, payment: Payment, mail: Sequence[tuple[str, bytes]] = ()) -> None:
        """Save the payment, with the follow-ups it sets going (`(mailbox, message)`)."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(keys.payment(payment.order_id), orjson.dumps(payment.as_dict()))
            self.mailboxes.queue_post(pipe, mail)
            await pipe.execute()

    async def captured(self, payment: Payment, newly: bool) -> None:
        """The provider has the money: stop asking it, and count the sale once."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.PAYMENTS_DUE, payment.order_id)
            if newly and payment.paid_at:
                at = datetime.fromisoformat(payment.paid_at)
                self.metrics.queue_count(pipe, at, gmv_fen=payment.captured_fen)
            await pipe.execute()

    async def due(self, now: float, limit: int) -> list[str]:
        """Orders awaiting payment whose time to ask the provider has come."""
        due: list[str] = await self.client.zrangebyscore(
            keys.PAYMENTS_DUE, "-inf", now, start=0, num=limit
        )
        return due

    async def ask_again_at(self, order_id: str, at: float) -> None:
        await self.client.zadd(keys.PAYMENTS_DUE, {order_id: at})

    async def no_longer_due(self, order_id: str) -> None:
        await self.client.zrem(keys.PAYMENTS_DUE, order_id)

    async def close(self, payment: Payment, mail: Sequence[tuple[str, bytes]]) -> None:
        """Save a payment the provider closed, stop asking about it, and post what follows
        (the order's cancellation), in one step."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(keys.payment(payment.order_id), orjson.dumps(payment.as_dict()))
            pipe.zrem(keys.PAYMENTS_DUE, payment.order_id)
            self.mailboxes.queue_post(pipe, mail)
            await pipe.execute()
