"""The rider-zone host: where riders are, and who is offered which order."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from actors.host import EntityHost
from actors.placement import Directory, host_count, host_index
from cluster.settings import Settings
from domain import commands as c
from domain.dispatch import Dispatch, Job, Offer, RiderPosition, Weights, eta, rank
from domain.errors import DomainError, forbidden, not_found
from domain.geo import Point, distance_m, zones_at
from storage import keys, metrics
from storage.orders import inbox_key, queue_event

log = logging.getLogger(__name__)

Reply = dict[str, Any] | DomainError
SEARCH_RADIUS_M = 8000
RETRY_WAITING_S = 5.0


def day_field(at: datetime) -> str:
    return f"delivered:{at:%Y%m%d}"


@dataclass
class ZoneState:
    """A zone's riders as last reported: rider id -> (position, seen at)."""

    riders: dict[str, tuple[Point, float]] = field(default_factory=dict)


class RiderZoneHost(EntityHost):
    """Hosts rider-zone entities, one per h3 cell.

    Concurrency: one `asyncio.Lock` per zone for choosing riders (a zone's dispatches
    run one at a time, so no rider is asked two questions at once), one per offer for
    its answer and its expiry, one per rider for its position and status. Offer
    expiry and the retry of orders that found no rider are asyncio timers on this host.
    Keeps the zone's online riders in memory (loaded from Redis on first use after a
    start) and persists: `rider:{id}` (position, zone, online, load, deliveries per
    day), `rider:{id}:orders`, `zone:{cell}:riders` (GEO set of online riders),
    `offer:{id}`, `dispatch:waiting:{cell}` with the set of such cells
    (`dispatch:zones_waiting`, which the retry round reads instead of scanning), the
    order's `eta`, and `offer` events on the offered rider's inbox only.
    """

    BATCHED = frozenset({"set_status", "locate", "answer", "dispatch", "nudge"})

    def __init__(self, settings: Settings, index: int = 0) -> None:
        super().__init__(settings, index)
        self.directory = Directory(settings)
        self.weights = Weights(capacity=settings.rider_capacity)
        self._retry_loop: asyncio.Task[None] | None = None
        self._zones: dict[str, ZoneState] = self.cache({})
        # Zones whose waiting orders are being offered again after a nudge.
        self._nudged: set[str] = set()

    def _ensure_retry_loop(self) -> None:
        if self._retry_loop is None or self._retry_loop.done():
            self._retry_loop = asyncio.get_running_loop().create_task(self._retry_waiting())

    async def _zone(self, zone: str) -> ZoneState:
        state = self._zones.get(zone)
        if state is None:
            state = self._zones[zone] = ZoneState()
            members = await self.redis.zrange(keys.zone_riders(zone), 0, -1)
            if members:
                positions = await self.redis.geopos(keys.zone_riders(zone), *members)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for rider_id in members:
                        pipe.hget(keys.rider(rider_id), "seen_at")
                    seen = await pipe.execute()
                for rider_id, pos, at in zip(members, positions, seen, strict=True):
                    if pos is not None:
                        state.riders[rider_id] = (Point(pos[1], pos[0]), float(at or 0))
        return state

    # -- where riders are ---------------------------------------------------------

    async def set_status(
        self, zone: str, rider_id: str, online: bool, lat: float, lng: float
    ) -> Reply:
        self._ensure_retry_loop()
        async with self.lock(f"rider:{rider_id}"):
            old_zone = await self.redis.hget(keys.rider(rider_id), "zone")
            placed = await self._place_rider(zone, rider_id, old_zone, online, lat, lng)
        if online:
            await self.nudge(zone)
        return placed

    async def locate(self, zone: str, rider_id: str, lat: float, lng: float) -> Reply:
        async with self.lock(f"rider:{rider_id}"):
            online, old_zone = await self.redis.hmget(keys.rider(rider_id), "online", "zone")
            placed = await self._place_rider(zone, rider_id, old_zone, online == "1", lat, lng)
        await self._tell_customers(rider_id, Point(lat, lng))
        return placed

    async def forget(self, zone: str, rider_id: str) -> None:
        """A rider crossed into another zone: drop it from this zone's memory."""
        async with self.lock(f"rider:{rider_id}"):
            state = self._zones.get(zone)
            if state is not None:
                state.riders.pop(rider_id, None)

    async def _place_rider(
        self, zone: str, rider_id: str, old_zone: str | None, online: bool, lat: float, lng: float
    ) -> Reply:
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.rider(rider_id),
                mapping={
                    "lat": lat,
                    "lng": lng,
                    "zone": zone,
                    "online": "1" if online else "0",
                    "seen_at": now,
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
        state = await self._zone(zone)
        if online:
            state.riders[rider_id] = (Point(lat, lng), now)
        else:
            state.riders.pop(rider_id, None)
        if old_zone and old_zone != zone:
            # The rider now belongs to the other zone's entity.
            old_host = await self.directory.host("rider_zone", old_zone)
            old_host.forget.remote(old_zone, rider_id)
        return {"rider_id": rider_id, "online": online, "zone": zone, "lat": lat, "lng": lng}

    async def _tell_customers(self, rider_id: str, at: Point) -> None:
        """The customer of each order the rider carries sees it move and its new ETA."""
        active = await self.redis.smembers(keys.rider_orders(rider_id))
        interval_ms = int(self.settings.rider_location_interval_s * 1000)
        for order_id in active:
            async with self.redis.pipeline(transaction=False) as pipe:
                # One gate per order across all hosts: a rider crossing zones is not
                # told twice.
                pipe.set(f"gate:location:{order_id}", 1, nx=True, px=interval_ms)
                pipe.hmget(keys.order(order_id), "json", "version", "status")
                opened, (raw, version, status) = await pipe.execute()
            if not opened or raw is None or status not in ("accepted", "ready", "picked_up"):
                continue
            order = orjson.loads(raw)
            new_eta = _eta_of(order, at)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(keys.order(order_id), "eta", orjson.dumps(new_eta))
                await queue_event(
                    pipe,
                    self.scripts,
                    [inbox_key("customer", order["customer_id"])],
                    {
                        "type": "rider_location",
                        "order_id": order_id,
                        "version": int(version),
                        "at": datetime.now(UTC).isoformat(),
                        "data": {
                            "rider_id": rider_id,
                            "lat": at.lat,
                            "lng": at.lng,
                            "eta": new_eta,
                        },
                    },
                    self.settings.inbox_maxlen,
                    self.settings.inbox_retention_s,
                )
                await pipe.execute()

    # -- who carries what ---------------------------------------------------------

    async def _candidates(
        self, zone: str, pickup: Point, ring: int, rest: bool = False
    ) -> list[RiderPosition]:
        """The nearest riders of the zones exactly `ring` steps from this one (0: its own,
        in memory), at most `dispatch_shortlist` per zone; with `rest`, the zone's others.

        A rider farther away than that many others is rarely the one to send, and reading
        every rider of a busy zone on every dispatch would make dispatch as slow as the
        zone is large; the rest are read only when nobody on the shortlist can go.
        """
        shortlist = self.settings.dispatch_shortlist
        found: set[str] = set()
        if ring == 0:
            known = (await self._zone(zone)).riders
            nearest = sorted(known, key=lambda rid: distance_m(known[rid][0], pickup))
            found.update(nearest[shortlist:] if rest else nearest[:shortlist])
        neighbours = zones_at(zone, ring) if ring else []
        if neighbours:
            async with self.redis.pipeline(transaction=False) as pipe:
                for z in neighbours:
                    pipe.geosearch(
                        keys.zone_riders(z),
                        longitude=pickup.lng,
                        latitude=pickup.lat,
                        radius=SEARCH_RADIUS_M,
                        unit="m",
                        sort="ASC",
                        count=shortlist,
                    )
                for ids in await pipe.execute():
                    found.update(ids)
        rider_ids = sorted(found)
        if not rider_ids:
            return []
        today = day_field(datetime.now(UTC))
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid in rider_ids:
                pipe.hmget(keys.rider(rid), "lat", "lng", "seen_at", "online", "load", today)
                pipe.smembers(keys.rider_orders(rid))
                pipe.exists(keys.rider_offer(rid))
            rows = await pipe.execute()
        carried = sorted({oid for i in range(1, len(rows), 3) for oid in rows[i]})
        orders: dict[str, dict[str, Any]] = {}
        if carried:
            async with self.redis.pipeline(transaction=False) as pipe:
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
            jobs = tuple(_job(orders[oid]) for oid in sorted(rows[3 * n + 1]) if oid in orders)
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

    async def dispatch(self, zone: str, request: dict[str, Any]) -> Reply:
        """Offer an order to the best rider near its pickup, or queue it to try again."""
        self._ensure_retry_loop()
        async with self.lock(zone):
            return await self._offer_next(zone, request)

    async def _offer_next(self, zone: str, request: dict[str, Any]) -> Reply:
        order_id = request["order_id"]
        order = Dispatch(
            order_id=order_id,
            merchant_id=request["merchant_id"],
            pickup=Point(**request["pickup"]),
            dropoff=Point(**request["dropoff"]),
            ready_at=datetime.fromisoformat(request["ready_at"])
            if request.get("ready_at")
            else None,
        )
        now = datetime.now(UTC)
        tried = frozenset(await self.redis.smembers(f"dispatch:{order_id}:tried"))
        ranked: list[RiderPosition] = []
        candidates: list[RiderPosition] = []
        # Widen step by step: the zone's shortlist, the rest of the zone, then each ring
        # of neighbours out to the limit; each step adds only riders not yet found.
        steps = [(0, False), (0, True)]
        steps += [(ring, False) for ring in range(1, self.settings.dispatch_rings + 1)]
        for ring, rest in steps:
            found = await self._candidates(zone, order.pickup, ring, rest)
            if not found and candidates:
                continue
            seen = {r.rider_id for r in candidates}
            candidates += [r for r in found if r.rider_id not in seen]
            ranked = rank(
                self.settings.dispatch_policy, order, candidates, now, tried, self.weights
            )
            if ranked:
                break
        if not ranked:
            return await self._wait(zone, request, now)
        rider = ranked[0]
        offer = Offer(
            offer_id=f"of_{uuid.uuid4().hex[:16]}",
            order_id=order_id,
            rider_id=rider.rider_id,
            zone=zone,
            pickup=order.pickup,
            dropoff=order.dropoff,
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
            pipe.set(keys.rider_offer(rider.rider_id), offer.offer_id, ex=self.settings.offer_ttl_s)
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
            metrics.queue_count(pipe, now, offers=1)
            await pipe.execute()
        asyncio.get_running_loop().call_later(
            self.settings.offer_ttl_s,
            lambda: self.spawn(self._expire(zone, offer.offer_id), f"expire {offer.offer_id}"),
        )
        return {"order_id": order_id, "offered_to": rider.rider_id, "offer_id": offer.offer_id}

    async def _wait(self, zone: str, request: dict[str, Any], now: datetime) -> Reply:
        """No rider anywhere near: park the order, tell operations once, retry later."""
        member = orjson.dumps(request).decode()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.dispatch_waiting(zone), {member: time.time()}, nx=True)
            pipe.sadd(keys.WAITING_ZONES, zone)
            added, _ = await pipe.execute()
        if added and not request.get("told_ops"):
            await self.scripts.append_event(
                keys=[keys.OPS_INBOX],
                args=[
                    self.settings.inbox_maxlen,
                    self.settings.inbox_retention_s * 1000,
                    orjson.dumps(
                        {
                            "type": "dispatch_waiting",
                            "order_id": request["order_id"],
                            "version": request["version"],
                            "at": now.isoformat(),
                            "data": {"zone": zone},
                        }
                    ),
                ],
            )
        return {"order_id": request["order_id"], "offered_to": None, "waiting": True}

    async def _expire(self, zone: str, offer_id: str) -> Reply:
        async with self.lock(f"offer:{offer_id}"):
            record = await self._offer(offer_id)
            if record is None or record["status"] != "open":
                return {"offer_id": offer_id, "status": "closed"}
            await self._close(offer_id, record, "expired")
        async with self.lock(zone):
            return await self._offer_next(zone, record["request"])

    async def _offer(self, offer_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(keys.offer(offer_id))
        return orjson.loads(raw) if raw else None

    async def _close(self, offer_id: str, record: dict[str, Any], status: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            _queue_close(pipe, offer_id, record, status)
            await pipe.execute()

    async def answer(self, zone: str, offer_id: str, rider_id: str, accept: bool) -> Reply:
        """The offered rider accepts or declines; an accepted offer assigns the rider.

        Runs under the offer's own lock (its expiry takes it too), not the zone's: the
        assignment waits on the merchant's host, and the zone's dispatches, which must
        not offer one rider two orders at once, should not wait for it."""
        async with self.lock(f"offer:{offer_id}"):
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
            else:
                return await self._accepted(zone, offer_id, record, rider_id)
        async with self.lock(zone):
            next_offer = await self._offer_next(zone, record["request"])
        # The rider may take another order; this one will not be offered to it again.
        await self.nudge(zone)
        return {"offer_id": offer_id, "status": "declined", "next": next_offer}

    async def _accepted(
        self, zone: str, offer_id: str, record: dict[str, Any], rider_id: str
    ) -> Reply:
        """Assign the rider (under the offer's lock, which `answer` holds)."""
        request = record["request"]
        assigned = await self.directory.call(
            "merchant",
            request["merchant_id"],
            "act",
            request["merchant_id"],
            request["order_id"],
            c.AssignRider(at=datetime.now(UTC), rider_id=rider_id),
            ("system", "dispatch"),
        )
        if isinstance(assigned, DomainError):
            await self._close(offer_id, record, "withdrawn")
            return assigned
        first_eta = _eta_of(assigned, at) if (at := await self._position(zone, rider_id)) else None
        # The rider's load and the offer's end in one transaction, so a dispatch in the
        # zone never sees the rider both free of the offer and not yet carrying the order.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(keys.rider(rider_id), "load", 1)
            pipe.sadd(keys.rider_orders(rider_id), request["order_id"])
            if first_eta:
                pipe.hset(keys.order(request["order_id"]), "eta", orjson.dumps(first_eta))
            _queue_close(pipe, offer_id, record, "accepted")
            metrics.queue_count(pipe, datetime.now(UTC), offers_accepted=1)
            await pipe.execute()
        # Answered, the rider can be asked again (up to its capacity).
        await self.nudge(zone)
        return {"offer_id": offer_id, "status": "accepted", "order": assigned, "eta": first_eta}

    async def _position(self, zone: str, rider_id: str) -> Point | None:
        """Where the rider was last seen: this zone's memory, else Redis (a rider from a
        neighbouring zone)."""
        state = self._zones.get(zone)
        if state is not None and rider_id in state.riders:
            return state.riders[rider_id][0]
        lat, lng = await self.redis.hmget(keys.rider(rider_id), "lat", "lng")
        return Point(float(lat), float(lng)) if lat is not None else None

    async def _retry_waiting(self) -> None:
        """Orders that found no rider are offered again every few seconds."""
        while True:
            await asyncio.sleep(RETRY_WAITING_S)
            try:
                for zone in await self.redis.smembers(keys.WAITING_ZONES):
                    if self._mine(zone):
                        await self._retry_zone(zone)
                        await self.scripts.forget_waiting_zone(
                            keys=[keys.dispatch_waiting(zone), keys.WAITING_ZONES], args=[zone]
                        )
            except Exception:
                log.exception("retrying waiting orders failed")

    def _mine(self, zone: str) -> bool:
        return host_index(zone, host_count("rider_zone", self.settings)) == self.index

    async def _retry_zone(self, zone: str, forget_declines: bool = True) -> None:
        waiting = await self.redis.zrange(keys.dispatch_waiting(zone), 0, 49)
        for raw in waiting:
            if not await self.redis.zrem(keys.dispatch_waiting(zone), raw):
                continue  # another retry of this zone took it
            request = orjson.loads(raw)
            status = await self.redis.hget(keys.order(request["order_id"]), "status")
            if status not in ("accepted", "ready"):
                continue
            if forget_declines:
                # Riders who declined earlier may take it now that time has passed.
                await self.redis.delete(f"dispatch:{request['order_id']}:tried")
            async with self.lock(zone):
                await self._offer_next(zone, {**request, "told_ops": True})

    async def nudge(self, zone: str) -> Reply:
        """A rider of this zone may have become free: offer the waiting orders now rather
        than at the next retry round (riders who declined are not asked again here)."""
        if zone not in self._nudged and await self.redis.exists(keys.dispatch_waiting(zone)):
            self._nudged.add(zone)

            async def retry() -> None:
                try:
                    await self._retry_zone(zone, forget_declines=False)
                finally:
                    self._nudged.discard(zone)

            self.spawn(retry(), f"nudge {zone}")
        return {"zone": zone}


def _queue_close(pipe: Any, offer_id: str, record: dict[str, Any], status: str) -> None:
    """End an offer inside a MULTI pipeline: its record keeps `status`, the rider is free
    to be asked again."""
    record["status"] = status
    pipe.set(keys.offer(offer_id), orjson.dumps(record), keepttl=True)
    pipe.delete(keys.rider_offer(record["rider_id"]))


def _job(order: dict[str, Any]) -> Job:
    return Job(
        order_id=order["id"],
        merchant_id=order["merchant_id"],
        pickup=Point(order["pickup"]["lat"], order["pickup"]["lng"]),
        dropoff=Point(order["delivery"]["lat"], order["delivery"]["lng"]),
        picked_up=order["status"] == "picked_up",
    )


def _eta_of(order: dict[str, Any], rider_at: Point) -> dict[str, str]:
    ready_at = None
    accepted = next((t["at"] for t in order["timeline"] if t["status"] == "accepted"), None)
    if accepted and order.get("prep_minutes") is not None:
        ready_at = datetime.fromisoformat(accepted) + timedelta(minutes=order["prep_minutes"])
    return eta(rider_at, _job(order), datetime.now(UTC), ready_at).as_dict()
