"""Regional promotions in Redis: where customers are, the promotions, and their pushes.

Where a customer counts (`domain/promotions.py`): its home cell (`set_home`) and the
cell its sync socket reported (`arrive`, counted for `presence_s`), each in the
customer's own record and in the cell's index of customers (`cell:customers:{h:cell}`,
members `h:<id>` for a home, `p:<id>` for a presence scored by until when it counts).
The index is a hint for the push, written beside the record and not with it (another
slot): every push checks the customer's own record in the same script that tells it,
so an index entry left behind by a move or a crash tells nobody, and a customer is
never told twice (the promotions it was told of are kept in its slot, by their end).

A promotion, its push (a job in the `{promo}` queue, scored by when it may start),
each cell's active promotions and the lease of the one process pushing are all in
the `{promo}` slot: publishing is one script, and the push's cursor (which cell, the
`ZSCAN` cursor in it) and counts are recorded by one script that checks the lease, so
a pusher that lost it cannot move the next one's cursor. Nothing of a push lives only
in a process: a pusher that dies leaves the cursor where its last page was recorded,
and the next holder of the lease goes on from there (a page told again tells nobody
twice).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from domain.promotions import Promotion, PromotionPushed
from storage import keys
from storage.redis import RedisClient, _source, queue_eval

HOME, HERE = "h:", "p:"
# A published promotion's record (and progress) is kept this long after it ends.
KEPT_AFTER_END_MS = 7 * 24 * 3600 * 1000


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass
class Job:
    """A promotion's push as the pusher works it: the cells in order, the one it is in
    (`cell`), and the `ZSCAN` cursor in that cell (`scan`, "0" at a cell's start)."""

    promotion_id: str
    cells: tuple[str, ...]
    event: bytes
    starts_ms: int
    ends_ms: int
    cell: int
    scan: str


class PromotionStore:
    def __init__(
        self, client: RedisClient, inbox_maxlen: int, inbox_retention_s: int, presence_s: int
    ) -> None:
        self.client = client
        self.maxlen = inbox_maxlen
        self.retention_ms = inbox_retention_s * 1000
        self.presence_ms = presence_s * 1000
        self._publish = client.register_script(_source("publish_promotion"))
        self._push = client.register_script(_source("push_promotion"))
        self._progress = client.register_script(_source("promotion_progress"))
        self._renew = client.register_script(_source("renew_lease"))

    # -- where customers are ---------------------------------------------------------

    async def set_home(self, customer_id: str, cell: str) -> str | None:
        """Register a customer to a cell; returns the cell it was registered to before.

        The new cell's index first, then the record, then the old cell's index: a
        crash in between leaves an extra index entry, which the push passes over."""
        member = HOME + customer_id
        await self.client.zadd(keys.cell_customers(cell), {member: float("inf")})
        place = keys.customer_place(customer_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hget(place, "home")
            pipe.hset(place, "home", cell)
            old, _ = await pipe.execute()
        if old and old != cell:
            await self.client.zrem(keys.cell_customers(old), member)
        return str(old) if old else None

    async def arrive(self, customer_id: str, cell: str, now_ms: int) -> None:
        """A customer's socket says it is in `cell`: it counts there for `presence_s`.
        The cell's reports that have run out leave its index at the same time."""
        until = now_ms + self.presence_ms
        index = keys.cell_customers(cell)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(index, {HERE + customer_id: until})
            pipe.zremrangebyscore(index, "-inf", f"({now_ms}")
            await pipe.execute()
        await self.client.hset(
            keys.customer_place(customer_id), mapping={"here": cell, "here_until": until}
        )

    async def place_of(self, customer_id: str) -> tuple[str | None, str | None, int]:
        """`(home, here, here_until_ms)` of a customer (None and 0 where unknown)."""
        home, here, until = await self.client.hmget(
            keys.customer_place(customer_id), "home", "here", "here_until"
        )
        return home, here, int(until or 0)

    # -- promotions ------------------------------------------------------------------

    async def publish(self, promotion: Promotion, now_ms: int) -> bool:
        """Store a promotion and queue its push; False when its id exists already.

        `targeted` is counted first (another slot per cell): the entries of the cells'
        indexes that count now, an upper bound of the customers the push reaches then
        (one registered and connected in its cells counts twice)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for cell in promotion.cells:
                pipe.zcount(keys.cell_customers(cell), now_ms, "+inf")
            targeted = sum(int(n) for n in await pipe.execute())
        ends = ms(promotion.ends_at)
        published = await self._publish(
            keys=[
                keys.promotion(promotion.id),
                keys.PROMOTION_JOBS,
                *(keys.cell_promotions(cell) for cell in promotion.cells),
            ],
            args=[
                promotion.id,
                orjson.dumps(promotion.as_dict()),
                max(ms(promotion.starts_at), now_ms),
                ends,
                ends + KEPT_AFTER_END_MS,
                now_ms,
                targeted,
            ],
        )
        return bool(published)

    async def load(self, promotion_id: str) -> tuple[Promotion, dict[str, str]] | None:
        """A promotion and its push's progress fields, or None."""
        record = await self.client.hgetall(keys.promotion(promotion_id))
        if not record or "json" not in record:
            return None
        return Promotion.from_dict(orjson.loads(record.pop("json"))), record

    async def many(self, promotion_ids: list[str]) -> list[Promotion]:
        if not promotion_ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for promotion_id in promotion_ids:
                pipe.hget(keys.promotion(promotion_id), "json")
            found = await pipe.execute()
        return [Promotion.from_dict(orjson.loads(raw)) for raw in found if raw]

    async def active_for(
        self, customer_id: str, cells: list[str], now: datetime
    ) -> list[Promotion]:
        """The promotions active now in any of `cells`, and those the customer was told
        of that are still active (it may have moved since), earliest start first."""
        now_ms = ms(now)
        async with self.client.pipeline(transaction=False) as pipe:
            for cell in cells:
                pipe.zrangebyscore(keys.cell_promotions(cell), f"({now_ms}", "+inf")
            pipe.zrangebyscore(keys.customer_promotions(customer_id), f"({now_ms}", "+inf")
            found = await pipe.execute()
        ids = sorted({pid for page in found for pid in page})
        active = [p for p in await self.many(ids) if p.active(now)]
        return sorted(active, key=lambda p: (p.starts_at, p.id))

    async def active_in(self, cell: str, now: datetime) -> list[Promotion]:
        """The promotions active now in one cell."""
        ids = await self.client.zrangebyscore(keys.cell_promotions(cell), f"({ms(now)}", "+inf")
        return [p for p in await self.many(sorted(ids)) if p.active(now)]

    # -- telling customers -----------------------------------------------------------

    async def tell(
        self,
        promotion_id: str,
        event: bytes,
        ends_ms: int,
        found: list[tuple[str, str]],
        now_ms: int,
    ) -> Counter[str]:
        """Tell each `(customer, cell it was found in)` of a promotion, each in its own
        slot, in one round trip; the outcomes by kind (`pushed`, `told`, `elsewhere`)."""
        if not found:
            return Counter()
        channel = keys.notify_channel("")
        async with self.client.pipeline(transaction=False) as pipe:
            for customer_id, cell in found:
                queue_eval(
                    pipe,
                    self._push,
                    [
                        keys.customer_place(customer_id),
                        keys.customer_promotions(customer_id),
                        keys.inbox("customer", customer_id),
                    ],
                    [
                        promotion_id,
                        ends_ms,
                        cell,
                        now_ms,
                        self.maxlen,
                        self.retention_ms,
                        event,
                        channel,
                    ],
                )
            outcomes = await pipe.execute()
        return Counter(str(o) for o in outcomes)

    async def tell_arrival(self, customer_id: str, cell: str, now: datetime) -> int:
        """A customer now counts in `cell` (registered or connected): tell it of the
        promotions active there that it was not told of; how many it was told."""
        told = 0
        for promotion in await self.active_in(cell, now):
            outcome = await self.tell(
                promotion.id,
                event_bytes(promotion),
                ms(promotion.ends_at),
                [(customer_id, cell)],
                ms(now),
            )
            told += outcome["pushed"]
        return told

    # -- the push --------------------------------------------------------------------

    async def due(self, now_ms: int) -> str | None:
        """The oldest push that may run now, if any."""
        due = await self.client.zrangebyscore(keys.PROMOTION_JOBS, "-inf", now_ms, start=0, num=1)
        return str(due[0]) if due else None

    async def job(self, promotion_id: str) -> Job | None:
        loaded = await self.load(promotion_id)
        if loaded is None:
            return None
        promotion, progress = loaded
        return Job(
            promotion_id=promotion.id,
            cells=promotion.cells,
            event=event_bytes(promotion),
            starts_ms=ms(promotion.starts_at),
            ends_ms=ms(promotion.ends_at),
            cell=int(progress.get("cell", 0)),
            scan=progress.get("scan", "0"),
        )

    async def scan(
        self, cell: str, cursor: str, count: int, now_ms: int
    ) -> tuple[str, int, list[str]]:
        """One page of a cell's index from `cursor`: the next cursor ("0": the cell is
        done), the entries looked at, and the customers among them who count now."""
        following, entries = await self.client.zscan(
            keys.cell_customers(cell), int(cursor), count=max(1, count)
        )
        live = [member[2:] for member, score in entries if score >= now_ms]
        return str(following), len(entries), live

    async def advance(
        self,
        owner: str,
        promotion_id: str,
        cell: int,
        scan: str,
        examined: int,
        pushed: int,
        finished: str,
        now: datetime,
    ) -> bool:
        """Record a page done (and, with `finished`, the push's end); False when `owner`
        no longer holds the pusher's lease, and nothing was recorded."""
        recorded = await self._progress(
            keys=[keys.PROMOTION_PUSHER, keys.promotion(promotion_id), keys.PROMOTION_JOBS],
            args=[owner, promotion_id, cell, scan, examined, pushed, finished, now.isoformat()],
        )
        return bool(recorded)

    async def lead(self, owner: str, ttl_ms: int) -> bool:
        """Take the pusher's lease if nobody holds it."""
        return bool(await self.client.set(keys.PROMOTION_PUSHER, owner, nx=True, px=ttl_ms))

    async def keep(self, owner: str, ttl_ms: int) -> bool:
        """Extend the lease `owner` holds; False when it does not hold it any more."""
        return bool(await self._renew(keys=[keys.PROMOTION_PUSHER], args=[owner, ttl_ms]))

    async def let_go(self, owner: str) -> None:
        await self._renew(keys=[keys.PROMOTION_PUSHER], args=[owner, 0])


def event_bytes(promotion: Promotion) -> bytes:
    """The one `promotion` event every customer of a promotion is told, as stored."""
    return orjson.dumps(PromotionPushed(promotion=promotion).as_dict())


def progress_view(progress: dict[str, Any]) -> dict[str, Any]:
    """A push's counts and times as operations read them."""
    return {
        "targeted": int(progress.get("targeted", 0)),
        "pushed": int(progress.get("pushed", 0)),
        "examined": int(progress.get("examined", 0)),
        "cells_done": int(progress.get("cell", 0)),
        "started_at": progress.get("started_at"),
        "finished_at": progress.get("finished_at"),
    }
