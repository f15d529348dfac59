"""Offers and the orders waiting for a rider, per zone."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson

from domain import events as e
from domain.dispatch import Dispatch
from domain.offers import Offer
from storage import keys
from storage.metrics import MetricsStore
from storage.orders import due_in
from storage.outbox import Relay, Remote, queue_entry
from storage.redis import RedisClient, Scripts

# An offer's record outlives the offer by this much, so a late answer is told why.
KEEP_AFTER_S = 3600
# Who was asked about an order is kept this long (a lunch peak and then some).
TRIED_KEEP_S = 6 * 3600


class OfferStore:
    def __init__(
        self,
        client: RedisClient,
        scripts: Scripts,
        metrics: MetricsStore,
        offer_ttl_s: int,
        relay: Relay | None = None,
    ) -> None:
        """`relay` relays each change's outbox entry (the rider's side of an offer)
        before the change returns; without one the owning host's sweep does."""
        self.relay = relay
        self.client = client
        self.scripts = scripts
        self.metrics = metrics
        self.offer_ttl_s = offer_ttl_s

    async def load(self, offer_id: str) -> Offer | None:
        raw = await self.client.get(keys.offer(offer_id))
        return Offer.from_dict(orjson.loads(raw)) if raw else None

    async def tried(self, zone: str, order_id: str) -> frozenset[str]:
        """The riders this order was offered to since its last retry round."""
        return frozenset(await self.client.smembers(keys.offer_tried(zone, order_id)))

    async def forget_tried(self, zone: str, order_id: str) -> None:
        await self.client.delete(keys.offer_tried(zone, order_id))

    async def _commit(self, zone: str, fill: Any) -> None:
        """One MULTI in the zone's slot with its outbox entry (`fill(pipe, remote)` adds
        the writes), then the entry relayed."""
        outbox = keys.outbox("rider_zone", keys.shard_of(zone))
        remote = Remote(outbox)
        async with self.client.pipeline(transaction=True) as pipe:
            fill(pipe, remote)
            queue_entry(pipe, outbox, remote)
            await pipe.execute()
        if remote and self.relay is not None:
            await self.relay.flush(outbox)

    async def open(self, offer: Offer, made: e.OfferMade) -> None:
        """Save a new offer with its expiry, and (through the zone's outbox) hold its
        rider for it and tell that rider."""

        def fill(pipe: Any, remote: Remote) -> None:
            pipe.set(
                keys.offer(offer.offer_id),
                orjson.dumps(offer.as_dict()),
                ex=self.offer_ttl_s + KEEP_AFTER_S,
            )
            pipe.set(
                keys.order_offer(offer.zone, offer.order_id), offer.offer_id, ex=self.offer_ttl_s
            )
            # Its expiry is a due time in Redis, not a timer in a host: it survives the host.
            pipe.zadd(
                keys.offer_expiries_of(offer.zone), {_expiry(offer): offer.expires_at.timestamp()}
            )
            pipe.sadd(keys.offer_tried(offer.zone, offer.order_id), offer.rider_id)
            pipe.expire(keys.offer_tried(offer.zone, offer.order_id), TRIED_KEEP_S)
            remote.call(
                "SET", keys.rider_offer(offer.rider_id), offer.offer_id, "EX", self.offer_ttl_s
            )
            remote.tell(keys.inbox("rider", offer.rider_id), orjson.dumps(made.as_dict()).decode())

        await self._commit(offer.zone, fill)
        await self.metrics.count(made.at, offers=1)

    def _queue_close(self, pipe: Any, remote: Remote, offer: Offer) -> None:
        """End an offer: its record keeps its status, the rider is free to be asked again."""
        pipe.set(keys.offer(offer.offer_id), orjson.dumps(offer.as_dict()), keepttl=True)
        pipe.delete(keys.order_offer(offer.zone, offer.order_id))
        pipe.zrem(keys.offer_expiries_of(offer.zone), _expiry(offer))
        remote.call("DEL", keys.rider_offer(offer.rider_id))

    async def close(self, offer: Offer) -> None:
        await self._commit(offer.zone, lambda pipe, remote: self._queue_close(pipe, remote, offer))

    async def accepted(self, offer: Offer, eta: dict[str, str] | None) -> None:
        """The rider took the order. Its load and orders moved with the assignment (the
        order's own change); here the offer ends, and the first ETA is kept beside it."""
        await self.close(offer)
        async with self.client.pipeline(transaction=False) as pipe:
            if eta:
                pipe.hset(keys.order(offer.order_id), "eta", orjson.dumps(eta))
            self.metrics.queue_count(pipe, datetime.now(UTC), offers_accepted=1)
            await pipe.execute()

    async def open_for(self, zone: str, order_id: str) -> str | None:
        """The offer open for an order now, if any."""
        offer_id: str | None = await self.client.get(keys.order_offer(zone, order_id))
        return offer_id

    async def expired(self, shards: list[int], now: float, limit: int) -> list[tuple[str, str]]:
        """Open offers of these shards past their expiry: (zone, offer id)."""
        due = await due_in(self.client, [keys.offer_expiries(s) for s in shards], now, limit)
        return [tuple(member.split(" ", 1)) for member in due]  # type: ignore[misc]

    async def forget_expiry(self, zone: str, offer_id: str) -> None:
        await self.client.zrem(keys.offer_expiries_of(zone), f"{zone} {offer_id}")

    # -- orders waiting for a rider ---------------------------------------------------

    @staticmethod
    def waiting_member(request: Dispatch) -> str:
        """An order as its zone's queue holds it."""
        return orjson.dumps(request.as_dict()).decode()

    async def wait(self, zone: str, request: Dispatch) -> bool:
        """Park an order in its zone's queue; False if it was already there."""
        member = self.waiting_member(request)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.dispatch_waiting(zone), {member: time.time()}, nx=True)
            pipe.sadd(keys.waiting_zones_of(zone), zone)
            added, _ = await pipe.execute()
        return bool(added)

    async def zones_waiting(self, shards: list[int] | None = None) -> set[str]:
        """The zones of these shards (all without) with orders waiting for a rider."""
        async with self.client.pipeline(transaction=False) as pipe:
            for shard in range(keys.SHARDS) if shards is None else shards:
                pipe.smembers(keys.waiting_zones(shard))
            return {zone for zones in await pipe.execute() for zone in zones}

    async def any_waiting(self, zone: str) -> bool:
        return bool(await self.client.exists(keys.dispatch_waiting(zone)))

    async def waiting(self, zone: str, count: int) -> list[tuple[str, Dispatch]]:
        """Up to `count` of the zone's oldest waiting orders, each as the queue holds it:
        left there until it is offered or parked again (`taken`), so a host that dies
        in between leaves it for the next retry round instead of stranding it."""
        raws = await self.client.zrange(keys.dispatch_waiting(zone), 0, count - 1)
        return [(raw, Dispatch.from_dict(orjson.loads(raw))) for raw in raws]

    async def still_waiting(self, zone: str, member: str) -> bool:
        return await self.client.zscore(keys.dispatch_waiting(zone), member) is not None

    async def taken(self, zone: str, member: str) -> None:
        """An order the queue held is offered, parked again as another member, or needs
        no rider any more."""
        await self.client.zrem(keys.dispatch_waiting(zone), member)

    async def forget_zone_if_empty(self, zone: str) -> None:
        """Drop a zone from the waiting zones, unless an order waits there again (checked
        inside one script, so an order queued meanwhile keeps the zone listed)."""
        await self.scripts.forget_waiting_zone(
            keys=[keys.dispatch_waiting(zone), keys.waiting_zones_of(zone)], args=[zone]
        )

    async def waiting_by_zone(self) -> dict[str, tuple[int, float]]:
        """Per zone with waiting orders: how many, and since when the oldest waits."""
        zones = sorted(await self.zones_waiting())
        async with self.client.pipeline(transaction=False) as pipe:
            for zone in zones:
                pipe.zrange(keys.dispatch_waiting(zone), 0, 0, withscores=True)
                pipe.zcard(keys.dispatch_waiting(zone))
            replies = await pipe.execute()
        return {
            zone: (count, oldest[0][1])
            for zone, oldest, count in zip(zones, replies[::2], replies[1::2], strict=True)
            if oldest and count
        }


def _expiry(offer: Offer) -> str:
    return f"{offer.zone} {offer.offer_id}"
