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
from storage.orders import due_in
from storage.outbox import Relay, Remote, queue_entry
from storage.redis import RedisClient


class PaymentStore:
    def __init__(
        self, client: RedisClient, metrics: MetricsStore, relay: Relay | None = None
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.mailboxes = MailboxStore(client)
        self.relay = relay

    async def _commit(
        self, payment: Payment, mail: Sequence[tuple[str, bytes]], stop_asking: bool
    ) -> None:
        """The payment record, its due time and its follow-ups in one MULTI in the order's
        slot; follow-ups for other slots go through the payment shard's outbox."""
        outbox = keys.outbox("payment", keys.order_shard(payment.order_id))
        remote = Remote(outbox)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(keys.payment(payment.order_id), orjson.dumps(payment.as_dict()))
            if stop_asking:
                pipe.zrem(keys.payments_due_of(payment.order_id), payment.order_id)
            for mailbox, message in mail:
                if remote.is_home(mailbox):
                    self.mailboxes.queue_post(pipe, [(mailbox, message)])
                else:
                    remote.post(mailbox, message)
            queue_entry(pipe, outbox, remote)
            await pipe.execute()
        await self.mailboxes.ring([m for m, _ in mail if remote.is_home(m)])
        if remote and self.relay is not None:
            await self.relay.flush(outbox)

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
        await self._commit(payment, mail, stop_asking=False)

    async def captured(self, payment: Payment, newly: bool) -> None:
        """The provider has the money: stop asking it, and count the sale once."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.payments_due_of(payment.order_id), payment.order_id)
            if newly and payment.paid_at:
                at = datetime.fromisoformat(payment.paid_at)
                self.metrics.queue_count(pipe, at, gmv_fen=payment.captured_fen)
            await pipe.execute()

    async def due(self, shards: list[int], now: float, limit: int) -> list[str]:
        """Orders of these shards awaiting payment whose time to ask the provider has come."""
        return await due_in(self.client, [keys.payments_due(s) for s in shards], now, limit)

    async def ask_again_at(self, order_id: str, at: float) -> None:
        await self.client.zadd(keys.payments_due_of(order_id), {order_id: at})

    async def no_longer_due(self, order_id: str) -> None:
        await self.client.zrem(keys.payments_due_of(order_id), order_id)

    async def close(self, payment: Payment, mail: Sequence[tuple[str, bytes]]) -> None:
        """Save a payment the provider closed, stop asking about it, and post what follows
        (the order's cancellation), in one step."""
        await self._commit(payment, mail, stop_asking=True)
