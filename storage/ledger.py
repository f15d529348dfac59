"""The ledger in Redis: append-only transactions, running balances, and day indexes."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson

from domain.ledger import Transaction, party_payable
from domain.payments import Payment
from storage import keys
from storage.outbox import Relay, Remote
from storage.redis import RedisClient, Scripts


class LedgerStore:
    def __init__(
        self,
        client: RedisClient,
        scripts: Scripts,
        relay: Relay | None = None,
        inbox_maxlen: int = 1000,
        retention_s: int = 3600,
    ) -> None:
        """`relay` relays the outbox entry of a posting that tells parties in other slots
        before `post_with_event` returns (without one, the owning host's sweep does)."""
        self.client = client
        self.scripts = scripts
        self.relay = relay
        self.inbox_maxlen = inbox_maxlen
        self.retention_ms = retention_s * 1000

    async def post(
        self,
        txn: Transaction,
        merchant_id: str,
        payment: Payment | None = None,
        volume_fen: int = 0,
        parties: list[tuple[str, str]] = (),  # type: ignore[assignment]
        event: dict[str, Any] | None = None,
    ) -> bool:
        """Post once, with the payment record it books; False when this transaction id was
        posted before (nothing changes).

        `volume_fen` is added to the merchant's captured volume of the transaction's month
        (which picks its split tier) and of its day (which the refund share weighs) in
        the same step, only when the transaction is new;
        so is `event` told to `parties`."""
        day = txn.at.date()
        shard = keys.order_shard(txn.order_id)
        outbox = keys.outbox("payment", shard)
        remote = Remote(outbox)
        touches_merchant = txn.amount_on(party_payable("merchant", merchant_id)) != 0
        record_key = keys.payment(payment.order_id) if payment else keys.no_record(shard)
        record_json = orjson.dumps(payment.as_dict()) if payment else b""
        counters = (
            [
                (keys.merchant_volume(merchant_id), txn.at.strftime("%Y%m"), volume_fen),
                # The day's, which the refund share weighs (`storage/risk.py`).
                (keys.merchant_day(merchant_id, day), "captured_fen", volume_fen),
            ]
            if volume_fen
            else []
        )
        event_json = orjson.dumps(event).decode() if event is not None else ""
        inboxes = []
        for role, who in parties:
            inbox = keys.inbox(role, who)
            if remote.is_home(inbox):
                inboxes.append(inbox)
            else:
                remote.tell(inbox, event_json)
        args: list[Any] = [
            orjson.dumps(txn.as_dict()),
            1 if touches_merchant else 0,
            record_json,
            len(txn.postings),
        ]
        for posting in txn.postings:
            args += [posting.account, posting.amount_fen]
        args.append(len(counters))
        for _, field, amount in counters:
            args += [field, amount]
        args += [
            remote.entry(),
            self.inbox_maxlen,
            self.retention_ms,
            event_json if inboxes else "",
            keys.notify_channel(""),
        ]
        posted = await self.scripts.post_transaction(
            keys=[
                keys.ledger_txn(txn.order_id, txn.txn_id),
                keys.ledger_balances(shard),
                keys.ledger_of_order(txn.order_id),
                keys.ledger_journal(shard),
                keys.ledger_of_day(shard, day),
                keys.ledger_of_merchant_day(merchant_id, day),
                record_key,
                outbox,
                *(key for key, _, _ in counters),
                *inboxes,
            ],
            args=args,
        )
        if posted and remote and self.relay is not None:
            await self.relay.flush(outbox)
        return bool(posted)

    async def post_with_event(
        self,
        txn: Transaction,
        payment: Payment,
        parties: list[tuple[str, str]],
        event: dict[str, Any],
    ) -> bool:
        """Post a transaction and tell the parties of it, in one step."""
        return await self.post(txn, payment.merchant_id, payment, parties=parties, event=event)

    async def _list(self, key: str) -> list[Transaction]:
        return [
            Transaction.from_dict(orjson.loads(raw)) for raw in await self.client.lrange(key, 0, -1)
        ]

    async def of_order(self, order_id: str) -> list[Transaction]:
        return await self._list(keys.ledger_of_order(order_id))

    async def of_day(self, day: date) -> list[Transaction]:
        """The city's transactions of a day: every shard's, in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            for shard in range(keys.SHARDS):
                pipe.lrange(keys.ledger_of_day(shard, day), 0, -1)
            return [
                Transaction.from_dict(orjson.loads(raw))
                for rows in await pipe.execute()
                for raw in rows
            ]

    async def balances(self) -> dict[str, int]:
        """Every account's balance, summed over the shards."""
        totals: dict[str, int] = {}
        async with self.client.pipeline(transaction=False) as pipe:
            for shard in range(keys.SHARDS):
                pipe.hgetall(keys.ledger_balances(shard))
            for balances in await pipe.execute():
                for account, amount in balances.items():
                    totals[account] = totals.get(account, 0) + int(amount)
        return totals

    async def of_merchant_day(self, merchant_id: str, day: date) -> list[Transaction]:
        return await self._list(keys.ledger_of_merchant_day(merchant_id, day))
