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
from storage.inboxes import InboxStore
from storage.metrics import MetricsStore
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
        inboxes: InboxStore,
        metrics: MetricsStore,
        offer_ttl_s: int,
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.inboxes = inboxes
        self.metrics = metrics
        self.offer_ttl_s = offer_ttl_s

    async def load(self, offer_id: str) -> Offer | None:
        raw = await self.client.get(keys.offer(offer_id))
        return Offer.from_dict(orjson.loads(raw)) if raw else None

    async def tried(self, order_id: str) -> frozenset[str]:
        """The riders this order was offered to since its last retry round."""
        return frozenset(await self.client.smembers(keys.offer_tried(order_id)))

    async def forget_tried(self, order_id: str) -> None:
        await self.client.delete(keys.offer_tried(order_id))

    async def open(self, offer: Offer, made: e.OfferMade) -> None:
        """Save a new offer, hold its rider for it, and tell that rider, in one transaction."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(
                keys.offer(offer.offer_id),
                orjson.dumps(offer.as_dict()),
                ex=self.offer_ttl_s + KEEP_AFTER_S,
            )
            pipe.set(keys.rider_offer(offer.rider_id), offer.offer_id, ex=self.offer_ttl_s)
            pipe.set(keys.order_offer(offer.order_id), offer.offer_id, ex=self.offer_ttl_s)
            # Its expiry is a due time in Redis, not a timer in a host: it survives the host.
            pipe.zadd(keys.OFFER_EXPIRIES, {_expiry(offer): offer.expires_at.timestamp()})
            pipe.sadd(keys.offer_tried(offer.order_id), offer.rider_id)
            pipe.expire(keys.offer_tried(offer.order_id), TRIED_KEEP_S)
            await self.inboxes.queue_tell(pipe, [("rider", offer.rider_id)], made.as_dict())
            self.metrics.queue_count(pipe, made.at, offers=1)
            await pipe.execute()

    def _queue_close(self, pipe: Any, offer: Offer) -> None:
        """End an offer inside a MULTI pipeline: its record keeps its status, the rider is
        free to be asked again."""
        pipe.set(keys.offer(offer.offer_id), orjson.dumps(offer.as_dict()), keepttl=True)
        pipe.delete(keys.rider_offer(offer.rider_id))
        pipe.delete(keys.order_offer(offer.order_id))
        pipe.zrem(keys.OFFER_EXPIRIES, _expiry(offer))

    async def close(self, offer: Offer) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            self._queue_close(pipe, offer)
            await pipe.execute()

    async def accepted(self, offer: Offer, eta: dict[str, str] | None) -> None:
        """The rider takes the order: its load and the offer's end in one transaction, so a
        dispatch in the zone never sees the rider both free of the offer and not yet
        carrying the order."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hincrby(keys.rider(offer.rider_id), "load", 1)
            pipe.sadd(keys.rider_orders(offer.rider_id), offer.order_id)
            if eta:
                pipe.hset(keys.order(offer.order_id), "eta", orjson.dumps(eta))
            self._queue_close(pipe, offer)
            self.metrics.queue_count(pipe, datetime.now(UTC), offers_accepted=1)
            await pipe.execute()

    async def open_for(self, order_id: str) -> str | None:
        """The offer open for an order now, if any."""
        offer_id: str | None = await self.client.get(keys.order_offer(order_id))
        return offer_id

    async def expired(self, now: float, limit: int) -> list[tuple[str, str]]:
        """Open offers past their expiry, oldest first: (zone, offer id)."""
        due = await self.client.zrangebyscore(keys.OFFER_EXPIRIES, "-inf", now, start=0, num=limit)
        return [tuple(member.split(" ", 1)) for member in due]  # type: ignore[misc]

    async def forget_expiry(self, zone: str, offer_id: str) -> None:
        await self.client.zrem(keys.OFFER_EXPIRIES, f"{zone} {offer_id}")

    # -- orders waiting for a rider ---------------------------------------------------

    async def wait(self, zone: str, request: Dispatch) -> bool:
        """Park an order in its zone's queue; False if it was already there."""
        member = orjson.dumps(request.as_dict()).decode()
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.dispatch_waiting(zone), {member: time.time()}, nx=True)
            pipe.sadd(keys.WAITING_ZONES, zone)
            added, _ = await pipe.execute()
        return bool(added)

    async def zones_waiting(self) -> set[str]:
        zones: set[str] = await self.client.smembers(keys.WAITING_ZONES)
        return zones

    async def any_waiting(self, zone: str) -> bool:
        return bool(await self.client.exists(keys.dispatch_waiting(zone)))

    async def take_waiting(self, zone: str, count: int) -> list[Dispatch]:
        """Up to `count` of the zone's oldest waiting orders, each taken by one caller only."""
        taken = []
        for raw in await self.client.zrange(keys.dispatch_waiting(zone), 0, count - 1):
            if await self.client.zrem(keys.dispatch_waiting(zone), raw):
                taken.append(Dispatch.from_dict(orjson.loads(raw)))
        return taken

    async def forget_zone_if_empty(self, zone: str) -> None:
        """Drop a zone from the waiting zones, unless an order waits there again (checked
        inside one script, so an order queued meanwhile keeps the zone listed)."""
        await self.scripts.forget_waiting_zone(
            keys=[keys.dispatch_waiting(zone), keys.WAITING_ZONES], args=[zone]
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
