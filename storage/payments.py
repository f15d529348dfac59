"""Payment records in Redis, and the orders whose payment the provider is asked about."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from domain.payments import Payment
from storage import keys, reviews
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
        self,
        payment: Payment,
        mail: Sequence[tuple[str, bytes]],
        stop_asking: bool,
        refunded_fen: int = 0,
        beside: Callable[[Remote], None] | None = None,
    ) -> None:
        """The payment record, its due time and its follow-ups in one MULTI in the order's
        slot; follow-ups for other slots go through the payment shard's outbox.

        `refunded_fen`: a refund asked now, added to the merchant's refunds of the day
        (`storage/risk.py`); `beside` adds what the change writes in other slots (a
        review, an event) to the outbox entry."""
        outbox = keys.outbox("payment", keys.order_shard(payment.order_id))
        remote = Remote(outbox)
        if beside is not None:
            beside(remote)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(keys.payment(payment.order_id), orjson.dumps(payment.as_dict()))
            if refunded_fen:
                today = keys.merchant_day(payment.merchant_id, datetime.now(UTC).date())
                pipe.hincrby(today, "refunded_fen", refunded_fen)
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

    async def save(
        self, payment: Payment, mail: Sequence[tuple[str, bytes]] = (), refunded_fen: int = 0
    ) -> None:
        """Save the payment, with the follow-ups it sets going (`(mailbox, message)`);
        `refunded_fen`: the refund it asks, counted in its merchant's day."""
        await self._commit(payment, mail, stop_asking=False, refunded_fen=refunded_fen)

    async def hold_refund(
        self,
        payment: Payment,
        review: dict[str, Any],
        event: dict[str, Any],
        parties: Sequence[tuple[str, str]],
        at: datetime,
    ) -> None:
        """Save a payment with a refund held for review, open the review and tell the
        parties (customer, merchant, operations), in one step."""

        def beside(remote: Remote) -> None:
            reviews.opened(remote, review, at)
            self._tell(remote, parties, event)

        await self._commit(payment, (), stop_asking=False, beside=beside)

    async def release_refund(
        self,
        payment: Payment,
        review_id: str,
        status: str,
        by: str,
        at: datetime,
        event: dict[str, Any] | None,
        parties: Sequence[tuple[str, str]],
        refunded_fen: int,
    ) -> None:
        """Save a payment whose held refund review decided, and close the review (and tell
        the parties of a refusal), in one step."""

        def beside(remote: Remote) -> None:
            reviews.decided(remote, review_id, status, by, at)
            if event is not None:
                self._tell(remote, parties, event)

        await self._commit(payment, (), stop_asking=False, refunded_fen=refunded_fen, beside=beside)

    @staticmethod
    def _tell(remote: Remote, parties: Sequence[tuple[str, str]], event: dict[str, Any]) -> None:
        event_json = orjson.dumps(event).decode()
        for role, who in parties:
            remote.tell(keys.inbox(role, who), event_json)

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
