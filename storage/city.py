"""The city as operations watch it: merchants, online riders and open orders around a point.

Read-only, for the dashboard's map, which asks every couple of seconds: every read is
pipelined, a handful of round trips whatever the size of the view, and each kind of
pin is capped so that a wide view costs a bounded answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from domain.orders import TERMINAL
from storage import keys
from storage.redis import RedisClient

# The most pins of each kind one view returns (a city centre at the lunch peak has far
# fewer; the caps only bound what a very wide view costs).
MAX_MERCHANTS = 500
MAX_RIDERS_PER_ZONE = 200
MAX_RIDERS = 1000
MAX_ORDERS = 500
# Recent orders looked at per merchant: an open order is one of a merchant's newest.
RECENT_ORDERS_PER_MERCHANT = 30
# Orders placed longer ago than this are not open any more (the payment timeout and a
# long delivery are well inside it), so the map does not look at them.
OPEN_ORDER_HORIZON_S = 3 * 3600
CLOSED = frozenset(status.value for status in TERMINAL)


@dataclass(frozen=True)
class MerchantPin:
    id: str
    name: str
    lat: float
    lng: float
    open: bool
    accept_mode: str


@dataclass(frozen=True)
class RiderPin:
    id: str
    lat: float
    lng: float
    zone: str
    load: int
    offered: bool
    seen_at: float


@dataclass(frozen=True)
class OrderPin:
    id: str
    status: str
    version: int
    merchant_id: str
    rider_id: str | None
    pickup: tuple[float, float]
    dropoff: tuple[float, float]
    placed_at: str


class CityStore:
    def __init__(self, client: RedisClient) -> None:
        self.client = client

    async def merchants_near(self, lat: float, lng: float, radius_m: float) -> list[MerchantPin]:
        """Merchants within `radius_m` of the point, nearest first, with their profiles."""
        found = await self.client.geosearch(
            keys.MERCHANT_GEO,
            longitude=lng,
            latitude=lat,
            radius=radius_m,
            unit="m",
            sort="ASC",
            count=MAX_MERCHANTS,
        )
        if not found:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for merchant_id in found:
                pipe.hget(keys.merchant(merchant_id), "profile")
            profiles = await pipe.execute()
        pins = []
        for raw in profiles:
            if raw is None:
                continue
            profile = orjson.loads(raw)
            pins.append(
                MerchantPin(
                    id=profile["id"],
                    name=profile["name"],
                    lat=float(profile["lat"]),
                    lng=float(profile["lng"]),
                    open=bool(profile.get("open", True)),
                    accept_mode=str(profile.get("accept_mode", "manual")),
                )
            )
        return pins

    async def riders_near(
        self, zones: list[str], lat: float, lng: float, radius_m: float
    ) -> list[RiderPin]:
        """The online riders of these zones within `radius_m` of the point."""
        if not zones:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for zone in zones:
                pipe.geosearch(
                    keys.zone_riders(zone),
                    longitude=lng,
                    latitude=lat,
                    radius=radius_m,
                    unit="m",
                    withcoord=True,
                    count=MAX_RIDERS_PER_ZONE,
                )
            per_zone = await pipe.execute()
        placed = [
            (rider_id, zone, float(coord[1]), float(coord[0]))
            for zone, found in zip(zones, per_zone, strict=True)
            for rider_id, coord in found
        ][:MAX_RIDERS]
        if not placed:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for rider_id, *_ in placed:
                pipe.hmget(keys.rider(rider_id), "load", "seen_at", "online")
                pipe.exists(keys.rider_offer(rider_id))
            rows = await pipe.execute()
        pins = []
        for n, (rider_id, zone, rider_lat, rider_lng) in enumerate(placed):
            (load, seen_at, online), offered = rows[2 * n], rows[2 * n + 1]
            if online != "1":
                continue
            pins.append(
                RiderPin(
                    id=rider_id,
                    lat=rider_lat,
                    lng=rider_lng,
                    zone=zone,
                    load=max(0, int(load or 0)),
                    offered=bool(offered),
                    seen_at=float(seen_at or 0),
                )
            )
        return pins

    async def open_orders_of(self, merchant_ids: list[str]) -> list[OrderPin]:
        """The open orders of these merchants (placed within the horizon), newest first."""
        if not merchant_ids:
            return []
        since_ms = int((time.time() - OPEN_ORDER_HORIZON_S) * 1000)
        async with self.client.pipeline(transaction=False) as pipe:
            for merchant_id in merchant_ids:
                pipe.zrevrangebyscore(
                    keys.orders_of("merchant", merchant_id),
                    "+inf",
                    since_ms,
                    start=0,
                    num=RECENT_ORDERS_PER_MERCHANT,
                )
            recent = [order_id for ids in await pipe.execute() for order_id in ids]
        if not recent:
            return []
        # The status first (a few bytes each): most recent orders are delivered already,
        # and only the open ones are worth their whole record.
        async with self.client.pipeline(transaction=False) as pipe:
            for order_id in recent:
                pipe.hget(keys.order(order_id), "status")
            statuses = await pipe.execute()
        still_open = [
            order_id
            for order_id, status in zip(recent, statuses, strict=True)
            if status is not None and status not in CLOSED
        ][:MAX_ORDERS]
        if not still_open:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for order_id in still_open:
                pipe.hget(keys.order(order_id), "json")
            raws = await pipe.execute()
        pins = []
        for raw in raws:
            if raw is None:
                continue
            order = orjson.loads(raw)
            pins.append(
                OrderPin(
                    id=order["id"],
                    status=order["status"],
                    version=int(order["version"]),
                    merchant_id=order["merchant_id"],
                    rider_id=order.get("rider_id"),
                    pickup=(float(order["pickup"]["lat"]), float(order["pickup"]["lng"])),
                    dropoff=(float(order["delivery"]["lat"]), float(order["delivery"]["lng"])),
                    placed_at=order["placed_at"],
                )
            )
        pins.sort(key=lambda pin: pin.placed_at, reverse=True)
        return pins
