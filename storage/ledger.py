"""The ledger in Redis: append-only transactions, running balances, and day indexes."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson

from domain.ledger import Transaction, party_payable
from domain.payments import Payment
from storage import keys
from storage.inboxes import InboxStore
from storage.redis import RedisClient, Scripts


class LedgerStore:
    def __init__(self, client: RedisClient, scripts: Scripts) -> None:
        self.client = client
        self.scripts = scripts

    async def post(
        self,
        txn: Transaction,
        merchant_id: str,
        payment: Payment | None = None,
        client: Any = None,
        volume_fen: int = 0,
    ) -> bool:
        """Post once, with the payment record it books; False when this transaction id was
        posted before (nothing changes).

        `volume_fen` is added to the merchant's captured volume of the transaction's month
        (which picks its split tier) in the same step, only when the transaction is new."""
        day = txn.at.date()
        touches_merchant = txn.amount_on(party_payable("merchant", merchant_id)) != 0
        record_key = keys.payment(payment.order_id) if payment else keys.NO_RECORD
        record_json = orjson.dumps(payment.as_dict()) if payment else b""
        counters = (
            [(keys.merchant_volume(merchant_id), txn.at.strftime("%Y%m"), volume_fen)]
            if volume_fen
            else []
        )
        args: list[Any] = [
            orjson.dumps(txn.as_dict()),
            1 if touches_merchant else 0,
            record_json,
            len(txn.postings),
        ]
        for posting in txn.postings:
            args += [posting.account, posting.amount_fen]
        for _, field, amount in counters:
            args += [field, amount]
        posted = await self.scripts.post_transaction(
            keys=[
                keys.ledger_txn(txn.txn_id),
                keys.LEDGER_BALANCES,
                keys.ledger_of_order(txn.order_id),
                keys.LEDGER_JOURNAL,
                keys.ledger_of_day(day),
                keys.ledger_of_merchant_day(merchant_id, day),
                record_key,
                *(key for key, _, _ in counters),
            ],
            args=args,
            client=client,
        )
        # In a MULTI pipeline the answer comes with execute(); outside it, now.
        return bool(posted) if client is None else True

    async def post_with_event(
        self,
        txn: Transaction,
        payment: Payment,
        parties: list[tuple[str, str]],
        event: dict[str, Any],
        inboxes: InboxStore,
    ) -> None:
        """Post a transaction and tell the parties of it, in one MULTI."""
        async with self.client.pipeline(transaction=True) as pipe:
            await self.post(txn, payment.merchant_id, payment, client=pipe)
            await inboxes.queue_tell(pipe, parties, event)
            await pipe.execute()

    async def _list(self, key: str) -> list[Transaction]:
        return [
            Transaction.from_dict(orjson.loads(raw)) for raw in await self.client.lrange(key, 0, -1)
        ]

    async def of_order(self, order_id: str) -> list[Transaction]:
        return await self._list(keys.ledger_of_order(order_id))

    async def of_day(self, day: date) -> list[Transaction]:
        return await self._list(keys.ledger_of_day(day))

    async def of_merchant_day(self, merchant_id: str, day: date) -> list[Transaction]:
        return await self._list(keys.ledger_of_merchant_day(merchant_id, day))
