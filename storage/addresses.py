"""Customers' address books: one hash per customer, each change with its events in one script.

The book lives in the customer's slot beside its inbox (`keys.address_book`), so a change
and its event on that inbox (every socket of the customer's token hears of it, and a
device that was away reads it from its cursor) are one Lua script, guarded by the book's
version. Addresses are sealed at rest, bound to the customer (`storage/sealing.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from domain.addresses import AddressBook, BookEvent
from domain.errors import DomainError
from storage import keys
from storage.redis import RedisClient, Scripts
from storage.sealing import Sealer
from storage.settings import DEV_DATA_KEY


class AddressStore:
    def __init__(
        self,
        client: RedisClient,
        scripts: Scripts,
        inbox_maxlen: int,
        retention_s: int,
        sealer: Sealer | None = None,
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.inbox_maxlen = inbox_maxlen
        self.retention_ms = retention_s * 1000
        self.sealer = sealer or Sealer(DEV_DATA_KEY)

    async def load(self, customer_id: str) -> AddressBook:
        """The customer's book, empty (version 0) if it never had an address."""
        raw = await self.client.hget(keys.address_book(customer_id), "json")
        if not raw:
            return AddressBook(customer_id)
        return AddressBook.from_dict(self.sealer.open_book(orjson.loads(raw)))

    async def commit(
        self, before: AddressBook, after: AddressBook, events: Sequence[BookEvent]
    ) -> None:
        """Write the new book and append its events to the customer's inbox, in one script;
        `stale_version` if the book moved on since `before` was read."""
        sealed_events = [orjson.dumps(self.sealer.seal_event(ev.as_dict())) for ev in events]
        result = await self.scripts.apply_address_book(
            keys=[keys.address_book(after.customer_id), keys.inbox("customer", after.customer_id)],
            args=[
                before.version,
                after.version,
                orjson.dumps(self.sealer.seal_book(after.as_dict())),
                self.inbox_maxlen,
                self.retention_ms,
                keys.notify_channel(""),
                *sealed_events,
            ],
        )
        if result[0] != "ok":
            raise DomainError(
                "stale_version", "the address book changed underneath", version=int(result[1])
            )
