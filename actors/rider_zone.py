"""The rider-zone host: where riders are, and who is offered which order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from actors import telemetry
from actors.directory import (
    AnswerOffer,
    FindRider,
    Locate,
    Message,
    Reply,
    SetStatus,
)
from actors.host import EntityHost
from actors.promotions import TICK_S, Pusher
from domain import commands as c
from domain import events as e
from domain import offers
from domain import reactions as r
from domain.dispatch import Dispatch, RiderPosition, Weights, eta, job_of, rank
from domain.errands import shown_to
from domain.errors import DomainError, not_found
from domain.geo import Point, distance_m, zone_of, zones_at
from domain.offers import Offer
from domain.orders import Order, ready_at
from storage import keys
from storage.offers import OfferStore
from storage.promotions import PromotionStore
from storage.riders import RiderStore
from storage.settings import Settings

log = logging.getLogger(__name__)

RETRY_WAITING_S = 5.0
# How often open offers past their time are looked for, and how many per look.
EXPIRY_CHECK_S = 0.5
EXPIRY_BATCH = 200
# Orders a retry round offers again per zone.
RETRY_BATCH = 50


@dataclass
class ZoneState:
    """A zone's riders as last reported: rider id -> (position, seen at)."""

    riders: dict[str, tuple[Point, float]] = field(default_factory=dict)


class RiderZoneHost(EntityHost):
    """Hosts rider-zone entities, one per h3 cell.

    Concurrency: one `asyncio.Lock` per zone for choosing riders (a zone's dispatches
    run one at a time, so no rider is asked two questions at once), one per offer for
    its answer and its expiry, one per rider for its position and status. An offer's
    expiry is a due time in Redis (`offers:expiries`) that the host's watch loop acts
    on, so it survives the host; the retry of orders that found no rider reads the
    waiting queues in Redis every few seconds, and at once when a rider may have freed
    up (an `OfferWaiting` follow-up), taking an order out of its queue only once it is
    offered. Orders to dispatch, those offers of waiting orders and a zone's news that
    a rider left it arrive as follow-ups in the zone shards' mailboxes.
    Keeps the zone's online riders in memory (loaded from Redis on first use after a
    start) and persists: each rider's position, zone, online status and deliveries per
    day (its load and orders move with the order's assignment and delivery), each
    zone's GEO set of online riders, the offers with their expiries, the orders
    waiting for a rider per zone with the shard's set of such zones (which the retry
    round reads instead of scanning), the order's `eta`, and `offer` events on the
    offered rider's inbox only. An offer and its expiry are one transaction in the
    zone shard's slot; the rider's side of it goes through the shard's outbox.
    """

    KIND = "rider_zone"

    def __init__(self, settings: Settings, index: int = 0) -> None:
        super().__init__(settings, index)
        self.weights = Weights(capacity=settings.rider_capacity)
        self.riders = RiderStore(self.redis, self.scripts)
        self.offers = OfferStore(
            self.redis,
            self.scripts,
            self.metrics,
            settings.offer_ttl_s,
            self.relay,
        )
        self._retry_loop: asyncio.Task[None] | None = None
        # From the start, not from the first dispatch: orders left waiting before a
        # restart are offered again though no new order or rider comes to this host.
        with contextlib.suppress(RuntimeError):
            self._ensure_retry_loop()
        self._zones: dict[str, ZoneState] = self.cache({})
        # Zones with an `OfferWaiting` follow-up posted and not yet applied.
        self._nudged: set[str] = set()
        self.every(EXPIRY_CHECK_S, "expiring offers", self.expire_due)
        # Regional promotions' paced push, by whichever rider-zone host holds its lease
        # (`actors/promotions.py`): apart from the hosts that change orders.
        self.pusher = Pusher(
            PromotionStore(
                self.redis,
                settings.inbox_maxlen,
                settings.inbox_retention_s,
                settings.promotion_presence_s,
            ),
            self.name,
            settings.promotion_batch_per_s,
        )
        self.every(TICK_S, "pushing promotions", self.pusher.step)
        telemetry.watch(self)
        self.start()

    async def react(self, intent: r.Intent) -> Reply | None:
        """An order to dispatch, as its merchant's acceptance posted it: offered once,
        however often the follow-up is applied (an open offer or a rider means done)."""
        telemetry.concerning(telemetry.order_of(intent))
        if isinstance(intent, r.OfferWaiting):
            self._nudged.discard(intent.zone)
            await self._retry_zone(intent.zone, forget_declines=False)
            return None
        if isinstance(intent, r.ForgetRider):
            await self.forget(intent.zone, intent.rider_id)
            return None
        if not isinstance(intent, r.FindRider):
            return await super().react(intent)
        request = intent.request
        zone = zone_of(request.pickup, self.settings.zone_resolution)
        stored = await self.orders.load_raw(request.order_id)
        if (
            stored is None
            or stored.get("rider_id")
            or stored["status"] not in ("accepted", "ready")
        ):
            return None
        if await self.offers.open_for(zone, request.order_id):
            return None
        return await self.dispatch(zone, request)

    async def expire_due(self) -> None:
        """Close this host's open offers past their time, and ask the next rider."""
        for zone, offer_id in await self.offers.expired(self.shards, time.time(), EXPIRY_BATCH):
            if self.owns(zone):
                with telemetry.about():
                    await self._expire(zone, offer_id)

    def entity_of(self, message: Message) -> str | None:
        zone = getattr(message, "zone", None)
        return zone if isinstance(zone, str) else None

    async def receive(self, message: Message) -> Reply:
        telemetry.concerning(telemetry.order_of(message))
        match message:
            case SetStatus():
                return await self.set_status(
                    message.zone, message.rider_id, message.online, message.lat, message.lng
                )
            case Locate():
                return await self.locate(message.zone, message.rider_id, message.lat, message.lng)
            case AnswerOffer():
                return await self.answer(
                    message.zone, message.offer_id, message.rider_id, message.accept
                )
            case FindRider():
                return await self.dispatch(message.zone, message.request)
        return await super().receive(message)

    def _ensure_retry_loop(self) -> None:
        if self._retry_loop is None or self._retry_loop.done():
            self._retry_loop = asyncio.get_running_loop().create_task(self._retry_waiting())

    async def _zone(self, zone: str) -> ZoneState:
        state = self._zones.get(zone)
        if state is None:
            state = self._zones[zone] = ZoneState(await self.riders.in_zone(zone))
        return state

    # -- where riders are ---------------------------------------------------------

    async def set_status(
        self, zone: str, rider_id: str, online: bool, lat: float, lng: float
    ) -> Reply:
        self._ensure_retry_loop()
        async with self.lock(f"rider:{rider_id}"):
            old_zone = await self.riders.zone_of(rider_id)
            placed = await self._place_rider(zone, rider_id, old_zone, online, lat, lng)
        if online:
            await self.nudge(zone)
        return placed

    async def locate(self, zone: str, rider_id: str, lat: float, lng: float) -> Reply:
        async with self.lock(f"rider:{rider_id}"):
            online, old_zone = await self.riders.online_and_zone(rider_id)
            placed = await self._place_rider(zone, rider_id, old_zone, online, lat, lng)
        await self._tell_customers(rider_id, Point(lat, lng))
        return placed

    async def forget(self, zone: str, rider_id: str) -> None:
        async with self.lock(f"rider:{rider_id}"):
            state = self._zones.get(zone)
            if state is not None:
                state.riders.pop(rider_id, None)

    async def _place_rider(
        self, zone: str, rider_id: str, old_zone: str | None, online: bool, lat: float, lng: float
    ) -> Reply:
        now = time.time()
        at = Point(lat, lng)
        await self.riders.place(rider_id, zone, old_zone, online, at, now)
        state = await self._zone(zone)
        if online:
            state.riders[rider_id] = (at, now)
        else:
            state.riders.pop(rider_id, None)
        if old_zone and old_zone != zone:
            # The rider now belongs to the other zone's entity; the one it left learns it
            # from its mailbox (it may be on another host, or on this one behind the
            # rider's lock held here).
            await self.follow_up([r.ForgetRider(old_zone, rider_id)])
        return {"rider_id": rider_id, "online": online, "zone": zone, "lat": lat, "lng": lng}

    async def _tell_customers(self, rider_id: str, at: Point) -> None:
        """The customer of each order the rider carries sees it move and its new ETA."""
        interval_ms = int(self.settings.rider_location_interval_s * 1000)
        for order_id in await self.riders.carried(rider_id):
            stored = await self.riders.open_location_gate(order_id, interval_ms)
            if stored is None:
                continue
            order = Order.from_dict(stored)
            new_eta = _eta_of(order, stored, at)
            located = e.RiderLocated(
                order_id=order_id,
                version=order.version,
                at=datetime.now(UTC),
                rider_id=rider_id,
                lat=at.lat,
                lng=at.lng,
                eta=new_eta,
            )
            await self.orders.set_eta(order_id, new_eta)
            await self.inboxes.tell([("customer", order.customer_id)], located.as_dict())

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
        found |= await self.riders.nearest_in(neighbours, pickup, shortlist)
        return await self.riders.positions(sorted(found))

    async def dispatch(self, zone: str, request: Dispatch) -> Reply:
        """Offer an order to the best rider near its pickup, or queue it to try again."""
        self._ensure_retry_loop()
        async with self.lock(zone):
            return await self._offer_next(zone, request)

    async def _offer_next(self, zone: str, request: Dispatch) -> Reply:
        now = datetime.now(UTC)
        tried = await self.offers.tried(zone, request.order_id)
        ranked: list[RiderPosition] = []
        candidates: list[RiderPosition] = []
        # Widen step by step: the zone's shortlist, the rest of the zone, then each ring
        # of neighbours out to the limit; each step adds only riders not yet found.
        steps = [(0, False), (0, True)]
        steps += [(ring, False) for ring in range(1, self.settings.dispatch_rings + 1)]
        for ring, rest in steps:
            found = await self._candidates(zone, request.pickup, ring, rest)
            if not found and candidates:
                continue
            seen = {r.rider_id for r in candidates}
            candidates += [r for r in found if r.rider_id not in seen]
            ranked = rank(
                self.settings.dispatch_policy, request, candidates, now, tried, self.weights
            )
            if ranked:
                break
        if not ranked:
            return await self._wait(zone, request, now)
        rider = ranked[0]
        offer = Offer(
            offer_id=keys.new_offer_id(zone, uuid.uuid4().hex[:16]),
            order_id=request.order_id,
            rider_id=rider.rider_id,
            zone=zone,
            pickup=request.pickup,
            dropoff=request.dropoff,
            expires_at=now + timedelta(seconds=self.settings.offer_ttl_s),
            request=request,
        )
        made = e.OfferMade(
            order_id=request.order_id,
            version=request.version,
            at=now,
            offer_id=offer.offer_id,
            expires_at=offer.expires_at,
            pickup=offer.pickup,
            dropoff=offer.dropoff,
            kind=request.kind,
        )
        await self.offers.open(offer, made)
        telemetry.dispatch("offered")
        await self.crash_if_armed(f"crash_after_commit:offer:{request.merchant_id}")
        return {
            "order_id": request.order_id,
            "offered_to": rider.rider_id,
            "offer_id": offer.offer_id,
        }

    async def _wait(self, zone: str, request: Dispatch, now: datetime) -> Reply:
        """No rider anywhere near: park the order, tell operations once, retry later."""
        added = await self.offers.wait(zone, request)
        telemetry.dispatch("no_rider")
        if added and not request.told_ops:
            log.info("order %s waits for a rider: none free near its pickup", request.order_id)
            waiting = e.DispatchWaiting(
                order_id=request.order_id, version=request.version, at=now, zone=zone
            )
            await self.inboxes.tell([("ops", "all")], waiting.as_dict())
        return {"order_id": request.order_id, "offered_to": None, "waiting": True}

    async def _expire(self, zone: str, offer_id: str) -> Reply:
        async with self.lock(f"offer:{offer_id}"):
            offer = await self.offers.load(offer_id)
            if offer is None:
                await self.offers.forget_expiry(zone, offer_id)
                return {"offer_id": offer_id, "status": "closed"}
            telemetry.concerning(offer.order_id)
            expired = offers.decide(offer, offers.Expire(datetime.now(UTC)))
            if not expired:
                return {"offer_id": offer_id, "status": "closed"}
            await self.offers.close(offers.evolve(offer, expired[0]))
            telemetry.dispatch("expired")
        async with self.lock(zone):
            return await self._offer_next(zone, offer.request)

    async def answer(self, zone: str, offer_id: str, rider_id: str, accept: bool) -> Reply:
        """The offered rider accepts or declines; an accepted offer assigns the rider.

        Runs under the offer's own lock (its expiry takes it too), not the zone's: the
        assignment waits on the merchant's host, and the zone's dispatches, which must
        not offer one rider two orders at once, should not wait for it."""
        async with self.lock(f"offer:{offer_id}"):
            offer = await self.offers.load(offer_id)
            if offer is None:
                return not_found("offer", offer_id)
            telemetry.concerning(offer.order_id)
            command = offers.Answer(rider_id, accept, datetime.now(UTC))
            try:
                (answered,) = offers.decide(offer, command)
            except DomainError as err:
                return err
            offer = offers.evolve(offer, answered)
            if (late := offers.too_late(command, [answered])) is not None:
                await self.offers.close(offer)
                telemetry.dispatch("late")
                return late
            if isinstance(answered, offers.OfferAccepted):
                telemetry.dispatch("accepted")
                return await self._accepted(zone, offer)
            await self.offers.close(offer)
            telemetry.dispatch("declined")
        async with self.lock(zone):
            next_offer = await self._offer_next(zone, offer.request)
        # The rider may take another order; this one will not be offered to it again.
        await self.nudge(zone)
        return {"offer_id": offer_id, "status": "declined", "next": next_offer}

    async def _accepted(self, zone: str, offer: Offer) -> Reply:
        """Assign the rider (under the offer's lock, which `answer` holds)."""
        request = offer.request
        assigned = await self.directory.merchant(request.merchant_id).act(
            request.order_id,
            c.AssignRider(at=datetime.now(UTC), rider_id=offer.rider_id),
            ("system", "dispatch"),
        )
        if isinstance(assigned, DomainError):
            withdrawn = offers.decide(offer, offers.Withdraw(datetime.now(UTC)))
            await self.offers.close(offers.evolve(offer, withdrawn[0]) if withdrawn else offer)
            telemetry.dispatch("withdrawn")
            return assigned
        at = await self._position(zone, offer.rider_id)
        first_eta = _eta_of(Order.from_dict(assigned), assigned, at) if at else None
        await self.offers.accepted(offer, first_eta)
        telemetry.dispatch("assigned")
        # Answered, the rider can be asked again (up to its capacity).
        await self.nudge(zone)
        return {
            "offer_id": offer.offer_id,
            "status": "accepted",
            # As the rider may read it: an errand's proof codes are its customer's.
            "order": shown_to(assigned, "rider"),
            "eta": first_eta,
        }

    async def _position(self, zone: str, rider_id: str) -> Point | None:
        """Where the rider was last seen: this zone's memory, else Redis (a rider from a
        neighbouring zone)."""
        state = self._zones.get(zone)
        if state is not None and rider_id in state.riders:
            return state.riders[rider_id][0]
        return await self.riders.position(rider_id)

    async def _retry_waiting(self) -> None:
        """Orders that found no rider are offered again every few seconds."""
        while True:
            await asyncio.sleep(RETRY_WAITING_S)
            try:
                for zone in await self.offers.zones_waiting(self.shards):
                    if self._mine(zone):
                        await self._retry_zone(zone)
                        await self.offers.forget_zone_if_empty(zone)
            except Exception:
                log.exception("retrying waiting orders failed")

    def _mine(self, zone: str) -> bool:
        return self.owns(zone)

    async def _retry_zone(self, zone: str, forget_declines: bool = True) -> None:
        for member, request in await self.offers.waiting(zone, RETRY_BATCH):
            if not await self.orders.awaits_rider(request.order_id):
                await self.offers.taken(zone, member)  # it needs no rider any more
                continue
            if forget_declines:
                # Riders who declined earlier may take it now that time has passed.
                await self.offers.forget_tried(zone, request.order_id)
            again = replace(request, told_ops=True)
            with telemetry.about(request.order_id):
                async with self.lock(zone):
                    # A retry round and a nudge may both have read it; one offers it.
                    if not await self.offers.still_waiting(zone, member):
                        continue
                    await self.crash_if_armed(f"crash_before_offer:{request.merchant_id}")
                    parked_as_is = False
                    if not await self.offers.open_for(zone, request.order_id):
                        reply = await self._offer_next(zone, again)
                        parked_as_is = (
                            isinstance(reply, dict)
                            and bool(reply.get("waiting"))
                            and self.offers.waiting_member(again) == member
                        )
                    if not parked_as_is:
                        await self.offers.taken(zone, member)

    async def nudge(self, zone: str) -> Reply:
        """A rider of this zone may have become free: its waiting orders are offered now,
        by a follow-up in the zone's mailbox, rather than at the next retry round."""
        if zone not in self._nudged and await self.offers.any_waiting(zone):
            await self.follow_up([r.OfferWaiting(zone)])
            # One follow-up waiting per zone is enough (forgotten as it is applied).
            self._nudged.add(zone)
        return {"zone": zone}


def _eta_of(order: Order, stored: dict[str, Any], rider_at: Point) -> dict[str, str]:
    """`order` and `stored` are one order, parsed and as stored."""
    return eta(rider_at, job_of(stored), datetime.now(UTC), ready_at(order)).as_dict()
