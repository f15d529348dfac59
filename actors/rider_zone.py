"""The rider-zone host: where riders are, and who is offered which order."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from actors.host import EntityHost
from actors.placement import Directory
from cluster.settings import Settings
from domain import commands as c
from domain.dispatch import Offer, RiderPosition, rank_riders
from domain.errors import DomainError, forbidden, not_found
from domain.geo import Point, zones_around
from storage import keys
from storage.orders import inbox_key, queue_event

log = logging.getLogger(__name__)

Reply = dict[str, Any] | DomainError
SEARCH_RADIUS_M = 8000
RETRY_WAITING_S = 5.0


class RiderZoneHost(EntityHost):
    """Hosts rider-zone entities, one per h3 cell.

    Concurrency: one `asyncio.Lock` per zone; a zone's location updates, offers and
    answers run one at a time. Offer expiry and the retry of orders that found no
    rider are asyncio timers on this host.
    Persists: `rider:{id}` (position, zone, online, load), `zone:{cell}:riders` (GEO
    set of online riders), `offer:{id}`, `dispatch:waiting:{cell}`, and `offer`
    events on the offered rider's inbox only.
    """

    def __init__(self, settings: Settings, index: int = 0) -> None:
        super().__init__(settings, index)
        self.directory = Directory(settings)
        self._retry_loop: asyncio.Task[None] | None = None
        self._zones_seen: set[str] = set()

    def _ensure_retry_loop(self, zone: str) -> None:
        self._zones_seen.add(zone)
        if self._retry_loop is None:
            self._retry_loop = asyncio.get_running_loop().create_task(self._retry_waiting())

    async def set_status(
        self, zone: str, rider_id: str, online: bool, lat: float, lng: float
    ) -> Reply:
        async with self.lock(zone):
            return await self._place_rider(zone, rider_id, online, lat, lng)

    async def locate(self, zone: str, rider_id: str, lat: float, lng: float) -> Reply:
        async with self.lock(zone):
            online = await self.redis.hget(keys.rider(rider_id), "online")
            placed = await self._place_rider(zone, rider_id, online == "1", lat, lng)
        await self._tell_customers(rider_id, lat, lng)
        return placed

    async def _tell_customers(self, rider_id: str, lat: float, lng: float) -> None:
        """The customer of each order the rider carries sees the rider move, rate-limited."""
        active = await self.redis.smembers(keys.rider_orders(rider_id))
        interval_ms = int(self.settings.rider_location_interval_s * 1000)
        for order_id in active:
            # One gate per order across all hosts: a rider crossing zones is not told twice.
            if not await self.redis.set(f"gate:location:{order_id}", 1, nx=True, px=interval_ms):
                continue
            customer_id, version, status = await self.redis.hmget(
                keys.order(order_id), "customer_id", "version", "status"
            )
            if customer_id is None or status not in ("accepted", "ready", "picked_up"):
                continue
            await self.scripts.append_event(
                keys=[inbox_key("customer", customer_id)],
                args=[
                    self.settings.inbox_maxlen,
                    self.settings.inbox_retention_s * 1000,
                    orjson.dumps(
                        {
                            "type": "rider_location",
                            "order_id": order_id,
                            "version": int(version),
                            "at": datetime.now(UTC).isoformat(),
                            "data": {"rider_id": rider_id, "lat": lat, "lng": lng},
                        }
                    ),
                ],
            )

    async def _place_rider(
        self, zone: str, rider_id: str, online: bool, lat: float, lng: float
    ) -> Reply:
        old_zone = await self.redis.hget(keys.rider(rider_id), "zone")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.rider(rider_id),
                mapping={
                    "lat": lat,
                    "lng": lng,
                    "zone": zone,
                    "online": "1" if online else "0",
                    "seen_at": time.time(),
                },
            )
            pipe.hsetnx(keys.rider(rider_id), "load", 0)
            if old_zone and old_zone != zone:
                pipe.zrem(keys.zone_riders(old_zone), rider_id)
            if online:
                pipe.geoadd(keys.zone_riders(zone), (lng, lat, rider_id))
            else:
                pipe.zrem(keys.zone_riders(zone), rider_id)
            await pipe.execute()
        return {"rider_id": rider_id, "online": online, "zone": zone, "lat": lat, "lng": lng}

    async def _candidates(self, zone: str, pickup: Point) -> list[RiderPosition]:
        zones = zones_around(zone, self.settings.dispatch_rings)
        async with self.redis.pipeline(transaction=False) as pipe:
            for z in zones:
                pipe.geosearch(
                    keys.zone_riders(z),
                    longitude=pickup.lng,
                    latitude=pickup.lat,
                    radius=SEARCH_RADIUS_M,
                    unit="m",
                    sort="ASC",
                    count=20,
                )
            found = await pipe.execute()
        rider_ids = sorted({rid for ids in found for rid in ids})
        if not rider_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid in rider_ids:
                pipe.hmget(keys.rider(rid), "lat", "lng", "seen_at", "online", "load")
            rows = await pipe.execute()
        riders = []
        for rid, (lat, lng, seen_at, online, load) in zip(rider_ids, rows, strict=True):
            if lat is None or online != "1":
                continue
            riders.append(
                RiderPosition(
                    rider_id=rid,
                    at_point=Point(float(lat), float(lng)),
                    seen_at=datetime.fromtimestamp(float(seen_at), UTC),
                    busy=int(load or 0) > 0,
                )
            )
        return riders

    async def dispatch(self, zone: str, request: dict[str, Any]) -> Reply:
        """Offer an order to the best rider near its pickup, or queue it to try again."""
        self._ensure_retry_loop(zone)
        async with self.lock(zone):
            return await self._offer_next(zone, request)

    async def _offer_next(self, zone: str, request: dict[str, Any]) -> Reply:
        order_id = request["order_id"]
        pickup = Point(**request["pickup"])
        now = datetime.now(UTC)
        tried = frozenset(await self.redis.smembers(f"dispatch:{order_id}:tried"))
        ranked = rank_riders(pickup, await self._candidates(zone, pickup), now, exclude=tried)
        if not ranked:
            await self.redis.zadd(
                keys.dispatch_waiting(zone), {orjson.dumps(request).decode(): time.time()}
            )
            return {"order_id": order_id, "offered_to": None, "waiting": True}
        rider = ranked[0]
        offer = Offer(
            offer_id=f"of_{uuid.uuid4().hex[:16]}",
            order_id=order_id,
            rider_id=rider.rider_id,
            zone=zone,
            pickup=pickup,
            dropoff=Point(**request["dropoff"]),
            expires_at=now + timedelta(seconds=self.settings.offer_ttl_s),
        )
        record = {**offer.as_dict(), "status": "open", "request": request}
        data = {k: v for k, v in offer.as_dict().items() if k not in ("rider_id", "zone")}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(
                keys.offer(offer.offer_id),
                orjson.dumps(record),
                ex=self.settings.offer_ttl_s + 3600,
            )
            pipe.sadd(f"dispatch:{order_id}:tried", rider.rider_id)
            pipe.expire(f"dispatch:{order_id}:tried", 6 * 3600)
            await queue_event(
                pipe,
                self.scripts,
                [inbox_key("rider", rider.rider_id)],
                {
                    "type": "offer",
                    "order_id": order_id,
                    "version": request["version"],
                    "at": now.isoformat(),
                    "data": data,
                },
                self.settings.inbox_maxlen,
                self.settings.inbox_retention_s,
            )
            await pipe.execute()
        asyncio.get_running_loop().call_later(
            self.settings.offer_ttl_s,
            lambda: self.spawn(self._expire(zone, offer.offer_id), f"expire {offer.offer_id}"),
        )
        return {"order_id": order_id, "offered_to": rider.rider_id, "offer_id": offer.offer_id}

    async def _expire(self, zone: str, offer_id: str) -> Reply:
        async with self.lock(zone):
            record = await self._offer(offer_id)
            if record is None or record["status"] != "open":
                return {"offer_id": offer_id, "status": "closed"}
            await self._close(offer_id, record, "expired")
            return await self._offer_next(zone, record["request"])

    async def _offer(self, offer_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(keys.offer(offer_id))
        return orjson.loads(raw) if raw else None

    async def _close(self, offer_id: str, record: dict[str, Any], status: str) -> None:
        record["status"] = status
        await self.redis.set(keys.offer(offer_id), orjson.dumps(record), keepttl=True)

    async def answer(self, zone: str, offer_id: str, rider_id: str, accept: bool) -> Reply:
        """The offered rider accepts or declines; an accepted offer assigns the rider."""
        async with self.lock(zone):
            record = await self._offer(offer_id)
            if record is None:
                return not_found("offer", offer_id)
            if record["rider_id"] != rider_id:
                return forbidden("this offer was made to another rider")
            if record["status"] != "open":
                return DomainError("offer_closed", f"the offer is {record['status']}")
            if datetime.now(UTC) >= datetime.fromisoformat(record["expires_at"]):
                await self._close(offer_id, record, "expired")
                return DomainError("offer_closed", "the offer expired")
            if not accept:
                await self._close(offer_id, record, "declined")
                next_offer = await self._offer_next(zone, record["request"])
                return {"offer_id": offer_id, "status": "declined", "next": next_offer}
            request = record["request"]
            merchants = await self.directory.host("merchant", request["merchant_id"])
            assigned = await merchants.act.remote(
                request["merchant_id"],
                request["order_id"],
                c.AssignRider(at=datetime.now(UTC), rider_id=rider_id),
                ("system", "dispatch"),
            )
            if isinstance(assigned, DomainError):
                await self._close(offer_id, record, "withdrawn")
                return assigned
            await self._close(offer_id, record, "accepted")
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(keys.rider(rider_id), "load", 1)
                pipe.sadd(keys.rider_orders(rider_id), request["order_id"])
                await pipe.execute()
            return {"offer_id": offer_id, "status": "accepted", "order": assigned}

    async def _retry_waiting(self) -> None:
        """Orders that found no rider are offered again every few seconds."""
        while True:
            await asyncio.sleep(RETRY_WAITING_S)
            for zone in list(self._zones_seen):
                try:
                    waiting = await self.redis.zrange(keys.dispatch_waiting(zone), 0, 49)
                    for raw in waiting:
                        await self.redis.zrem(keys.dispatch_waiting(zone), raw)
                        async with self.lock(zone):
                            await self._offer_next(zone, orjson.loads(raw))
                except Exception:
                    log.exception("retrying waiting orders of %s failed", zone)
