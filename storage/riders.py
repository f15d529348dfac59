"""Riders in Redis: where each is, which zone holds it, what it carries and did today."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson

from domain.dispatch import RiderPosition, job_of
from domain.geo import Point
from storage import keys
from storage.metrics import MetricsStore
from storage.redis import RedisClient, Scripts

# How far a neighbouring zone is searched for riders near a pickup.
SEARCH_RADIUS_M = 8000


def delivered_field(at: datetime) -> str:
    return f"delivered:{at:%Y%m%d}"


class RiderStore:
    def __init__(self, client: RedisClient, scripts: Scripts) -> None:
        self.client = client
        self.scripts = scripts
        self.metrics = MetricsStore(client)

    async def zone_of(self, rider_id: str) -> str | None:
        zone: str | None = await self.client.hget(keys.rider(rider_id), "zone")
        return zone

    async def online_and_zone(self, rider_id: str) -> tuple[bool, str | None]:
        online, zone = await self.client.hmget(keys.rider(rider_id), "online", "zone")
        return online == "1", zone

    async def position(self, rider_id: str) -> Point | None:
        lat, lng = await self.client.hmget(keys.rider(rider_id), "lat", "lng")
        return Point(float(lat), float(lng)) if lat is not None else None

    async def place(
        self,
        rider_id: str,
        zone: str,
        old_zone: str | None,
        online: bool,
        at: Point,
        seen_at: float,
    ) -> None:
        """Record a rider's position and status, and move it between zones' GEO sets.

        A position is soft state that the rider's next report rewrites, and the rider
        and its zones are in different slots: the writes go side by side in one round
        trip, not as one transaction."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(
                keys.rider(rider_id),
                mapping={
                    "lat": at.lat,
                    "lng": at.lng,
                    "zone": zone,
                    "online": "1" if online else "0",
                    "seen_at": seen_at,
                },
            )
            pipe.hsetnx(keys.rider(rider_id), "load", 0)
            if old_zone and old_zone != zone:
                pipe.zrem(keys.zone_riders(old_zone), rider_id)
            if online:
                pipe.geoadd(keys.zone_riders(zone), (at.lng, at.lat, rider_id))
            else:
                pipe.zrem(keys.zone_riders(zone), rider_id)
            await pipe.execute()

    async def in_zone(self, zone: str) -> dict[str, tuple[Point, float]]:
        """A zone's online riders: rider id -> (position, seen at)."""
        members = await self.client.zrange(keys.zone_riders(zone), 0, -1)
        if not members:
            return {}
        positions = await self.client.geopos(keys.zone_riders(zone), *members)
        async with self.client.pipeline(transaction=False) as pipe:
            for rider_id in members:
                pipe.hget(keys.rider(rider_id), "seen_at")
            seen = await pipe.execute()
        return {
            rider_id: (Point(pos[1], pos[0]), float(at or 0))
            for rider_id, pos, at in zip(members, positions, seen, strict=True)
            if pos is not None
        }

    async def nearest_in(self, zones: list[str], pickup: Point, count: int) -> set[str]:
        """The `count` nearest riders to the pickup in each of these zones."""
        if not zones:
            return set()
        async with self.client.pipeline(transaction=False) as pipe:
            for z in zones:
                pipe.geosearch(
                    keys.zone_riders(z),
                    longitude=pickup.lng,
                    latitude=pickup.lat,
                    radius=SEARCH_RADIUS_M,
                    unit="m",
                    sort="ASC",
                    count=count,
                )
            return {rider_id for ids in await pipe.execute() for rider_id in ids}

    async def positions(self, rider_ids: list[str]) -> list[RiderPosition]:
        """These riders as dispatch weighs them: where, how fresh, what they carry, whether
        an offer waits for their answer. Riders offline or never seen are left out."""
        if not rider_ids:
            return []
        today = delivered_field(datetime.now(UTC))
        async with self.client.pipeline(transaction=False) as pipe:
            for rid in rider_ids:
                pipe.hmget(keys.rider(rid), "lat", "lng", "seen_at", "online", "load", today)
                pipe.smembers(keys.rider_orders(rid))
                pipe.exists(keys.rider_offer(rid))
            rows = await pipe.execute()
        carried = sorted({oid for i in range(1, len(rows), 3) for oid in rows[i]})
        orders: dict[str, dict[str, Any]] = {}
        if carried:
            async with self.client.pipeline(transaction=False) as pipe:
                for oid in carried:
                    pipe.hget(keys.order(oid), "json")
                for oid, raw in zip(carried, await pipe.execute(), strict=True):
                    if raw:
                        orders[oid] = orjson.loads(raw)
        riders = []
        for n, rid in enumerate(rider_ids):
            lat, lng, seen_at, online, load, delivered = rows[3 * n]
            if lat is None or online != "1":
                continue
            jobs = tuple(job_of(orders[oid]) for oid in sorted(rows[3 * n + 1]) if oid in orders)
            riders.append(
                RiderPosition(
                    rider_id=rid,
                    at_point=Point(float(lat), float(lng)),
                    seen_at=datetime.fromtimestamp(float(seen_at), UTC),
                    busy=int(load or 0) > 0,
                    jobs=jobs,
                    delivered_today=int(delivered or 0),
                    offered=bool(rows[3 * n + 2]),
                )
            )
        return riders

    async def carried(self, rider_id: str) -> set[str]:
        """The orders a rider carries now."""
        orders: set[str] = await self.client.smembers(keys.rider_orders(rider_id))
        return orders

    async def open_location_gate(self, order_id: str, interval_ms: int) -> dict[str, Any] | None:
        """The order, if its customer may be told of its rider now (at most once per
        interval), and it is still on its way."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(keys.location_gate(order_id), 1, nx=True, px=interval_ms)
            pipe.hmget(keys.order(order_id), "json", "version", "status")
            opened, (raw, _, status) = await pipe.execute()
        if not opened or raw is None or status not in ("accepted", "ready", "picked_up"):
            return None
        order: dict[str, Any] = orjson.loads(raw)
        return order

    async def free(
        self, rider_id: str, order_id: str, delivery_seconds: int, delivered: bool = True
    ) -> str | None:
        """A delivery is done: the rider carries one order less and counts one more today,
        once per order however often this is called. Not `delivered` (an errand cancelled
        on the way to its pickup): one order less, nothing counted.

        Returns the zone the rider is in (None when the order was freed before)."""
        now = datetime.now(UTC)
        zone = await self.scripts.free_rider(
            keys=[keys.rider(rider_id), keys.rider_orders(rider_id)],
            args=[order_id, delivered_field(now) if delivered else ""],
        )
        if not zone or not delivered:
            return str(zone) if zone else None
        # The figures are in a slot of their own: counted beside the change, not in it
        # (a crash between them loses one count, never a rider's load).
        await self.metrics.count(now, delivered=1, delivery_seconds=delivery_seconds)
        return str(zone)

    async def idle_in(self, zone: str, fresh_after_s: float) -> int:
        """Riders of a zone that carry nothing and were heard from within `fresh_after_s`."""
        members = await self.client.zrange(keys.zone_riders(zone), 0, -1)
        if not members:
            return 0
        async with self.client.pipeline(transaction=False) as pipe:
            for rider_id in members:
                pipe.hmget(keys.rider(rider_id), "load", "seen_at")
            rows = await pipe.execute()
        fresh_after = time.time() - fresh_after_s
        return sum(
            1 for load, seen in rows if int(load or 0) == 0 and float(seen or 0) > fresh_after
        )
