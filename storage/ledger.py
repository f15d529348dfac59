"""The ledger in Redis: append-only transactions, running balances, and day indexes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import orjson

from domain.ledger import Transaction, party_payable
from storage.redis import RedisClient, Scripts

BALANCES = "ledger:balances"
JOURNAL = "ledger:journal"


def txn_key(txn_id: str) -> str:
    return f"ledger:txn:{txn_id}"


def order_index(order_id: str) -> str:
    return f"ledger:order:{order_id}"


def day_index(day: date) -> str:
    return f"ledger:day:{day.isoformat()}"


def merchant_day_index(merchant_id: str, day: date) -> str:
    return f"ledger:merchant:{merchant_id}:{day.isoformat()}"


def merchant_volume(merchant_id: str) -> str:
    """Captured fen per month (`YYYYMM` fields): what tiered split plans are chosen by."""
    return f"merchant:{merchant_id}:volume"


class LedgerStore:
    def __init__(self, client: RedisClient, scripts: Scripts) -> None:
        self.client = client
        self.scripts = scripts

    async def post(
        self,
        txn: Transaction,
        merchant_id: str,
        record: tuple[str, dict[str, Any]] | None = None,
        client: Any = None,
        counters: Sequence[tuple[str, str, int]] = (),
    ) -> bool:
        """Post once; False when this transaction id was posted before (nothing changes).

        Each `(hash key, field, amount)` of `counters` is raised in the same step, only
        when the transaction is new."""
        day = txn.at.date()
        touches_merchant = txn.amount_on(party_payable("merchant", merchant_id)) != 0
        record_key, record_json = (record[0], orjson.dumps(record[1])) if record else ("", b"")
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
                txn_key(txn.txn_id),
                BALANCES,
                order_index(txn.order_id),
                JOURNAL,
                day_index(day),
                merchant_day_index(merchant_id, day),
                record_key or "ledger:no-record",
                *(key for key, _, _ in counters),
            ],
            args=args,
            client=client,
        )
        # In a MULTI pipeline the answer comes with execute(); outside it, now.
        return bool(posted) if client is None else True

    async def _list(self, key: str) -> list[Transaction]:
        return [
            Transaction.from_dict(orjson.loads(raw)) for raw in await self.client.lrange(key, 0, -1)
        ]

    async def of_order(self, order_id: str) -> list[Transaction]:
        return await self._list(order_index(order_id))

    async def of_day(self, day: date) -> list[Transaction]:
        return await self._list(day_index(day))

    async def of_merchant_day(self, merchant_id: str, day: date) -> list[Transaction]:
        return await self._list(merchant_day_index(merchant_id, day))

    async def balances(self) -> dict[str, int]:
        raw = await self.client.hgetall(BALANCES)
        return {account: int(amount) for account, amount in raw.items()}
