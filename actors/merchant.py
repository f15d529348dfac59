"""The merchant host: menus, stock and the lifecycle of every order of its merchants."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from actors.checkout import checkout
from actors.host import EntityHost
from actors.placement import Directory
from cluster.settings import Settings
from domain import commands as c
from domain import events as e
from domain import ledger
from domain.errors import DomainError, not_found
from domain.geo import Point, zone_of
from domain.merchants import MenuItem, Merchant, Requested, price_order
from domain.orders import Order, authorize, decide, evolve, place
from domain.pricing import DeliveryTariff
from storage import coupons, keys, metrics

log = logging.getLogger(__name__)

# Orders under way kept in memory per host: a bound, so abandoned ones cannot pile up.
ORDERS_KEPT = 10_000

Reply = dict[str, Any] | DomainError


@dataclass
class MerchantState:
    merchant: Merchant
    menu: dict[str, MenuItem]
    menu_version: int


class MerchantHost(EntityHost):
    """Hosts merchant entities.

    Concurrency: one `asyncio.Lock` per merchant; a merchant's menu changes, order
    placements and order transitions run one at a time, merchants proceed in parallel.
    Persists: `merchant:{id}` (profile, menu_version), `menu:{id}`, `stock:{id}`,
    `order:{id}` with its indexes (a new order also joins `payments:pending`), and
    every order event on the inboxes of its customer, merchant, rider and
    operations, each change in one Lua script.
    Caches merchant profiles and menus, reloaded from Redis after a restart, and up
    to `ORDERS_KEPT` orders under way (read again whenever a command fails on one).
    """

    BATCHED = frozenset({"act"})

    def __init__(self, settings: Settings, index: int = 0) -> None:
        super().__init__(settings, index)
        self.directory = Directory(settings)
        self.tariff = DeliveryTariff()
        self._state: dict[str, MerchantState] = self.cache({})
        # Orders under way, most recently used last. This host is the only writer of
        # its merchants' orders, and every write is guarded by the order's version, so
        # a copy here saves a read per command and a stale one fails safe.
        self._orders: OrderedDict[str, Order] = OrderedDict()

    def _remember(self, order: Order) -> None:
        if not order.is_open:
            self._orders.pop(order.id, None)
            return
        self._orders[order.id] = order
        self._orders.move_to_end(order.id)
        if len(self._orders) > ORDERS_KEPT:
            self._orders.popitem(last=False)

    async def _order(self, order_id: str) -> Order | None:
        order = self._orders.get(order_id)
        return order if order is not None else await self.orders.load(order_id)

    async def _load(self, merchant_id: str) -> MerchantState:
        state = self._state.get(merchant_id)
        if state is not None:
            return state
        profile, version = await self.redis.hmget(
            keys.merchant(merchant_id), "profile", "menu_version"
        )
        if profile is None:
            raise not_found("merchant", merchant_id)
        items = await self.redis.hgetall(keys.menu(merchant_id))
        menu = {k: MenuItem(**orjson.loads(v)) for k, v in items.items()}
        state = MerchantState(Merchant.from_dict(orjson.loads(profile)), menu, int(version or 0))
        self._state[merchant_id] = state
        return state

    async def onboard(self, profile: dict[str, Any]) -> Reply:
        try:
            merchant = Merchant.from_dict(profile)
            ledger.plan_or_default(merchant.split_plan)
        except DomainError as err:
            return err
        async with self.lock(merchant.id):
            created = await self.redis.hsetnx(
                keys.merchant(merchant.id), "profile", orjson.dumps(merchant.as_dict())
            )
            if not created:
                return DomainError("merchant_exists", "merchant already exists", id=merchant.id)
            reach = merchant.delivery.reach_m(merchant.location)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(keys.merchant(merchant.id), "menu_version", 0)
                pipe.geoadd(
                    keys.MERCHANT_GEO, (merchant.location.lng, merchant.location.lat, merchant.id)
                )
                pipe.sadd(keys.MERCHANT_IDS, merchant.id)
                pipe.zadd(keys.MERCHANT_MAX_REACH, {merchant.id: reach})
                pipe.incr(keys.MERCHANTS_VERSION)
                await pipe.execute()
            self._state[merchant.id] = MerchantState(merchant, {}, 0)
        await metrics.count(self.redis, datetime.now(UTC), onboarded=1)
        return merchant.as_dict()

    async def set_menu_item(self, merchant_id: str, item: dict[str, Any], stock: int) -> Reply:
        try:
            menu_item = MenuItem(**item)
            if stock < 0:
                return DomainError("invalid_request", "stock must not be negative")
            async with self.lock(merchant_id):
                state = await self._load(merchant_id)
                version = await self.scripts.set_menu_item(
                    keys=[
                        keys.menu(merchant_id),
                        keys.stock(merchant_id),
                        keys.merchant(merchant_id),
                    ],
                    args=[
                        menu_item.id,
                        orjson.dumps(menu_item.as_dict()),
                        stock,
                        merchant_id,
                        datetime.now(UTC).isoformat(),
                    ],
                )
                state.menu[menu_item.id] = menu_item
                state.menu_version = int(version)
        except DomainError as err:
            return err
        return {**menu_item.as_dict(), "stock": stock, "menu_version": int(version)}

    async def place_orders(self, requests: list[dict[str, Any]]) -> list[Reply]:
        """Many placements in one message; each still runs under its merchant's lock."""
        placed: list[tuple[datetime, str, str]] = []
        replies = await asyncio.gather(*(self.place_order(r, placed) for r in requests))
        if placed:
            self.spawn(metrics.orders_placed(self.redis, placed), "count new orders")
        return list(replies)

    async def place_order(
        self, request: dict[str, Any], placed: list[tuple[datetime, str, str]]
    ) -> Reply:
        """Price, reserve stock and save a new order; reply with its signed pay link.

        A new order is added to `placed` as `(at, zone, customer_id)` for the metrics."""
        merchant_id = request["merchant_id"]
        customer_id = request["customer_id"]
        order_id = request["order_id"]
        now = datetime.now(UTC)
        try:
            async with self.lock(merchant_id):
                # Only a retry can find its order already there (the id comes from the
                # Idempotency-Key); a coupon must not be claimed again for it.
                existing = await self.orders.load(order_id) if request.get("coupon_code") else None
                if existing is None:
                    try:
                        order = await self._place(request, now)
                    except DomainError as err:
                        if err.code != "stale_version":
                            raise
                        existing = await self.orders.load(order_id)
                    else:
                        zone = zone_of(order.dropoff, self.settings.zone_resolution)
                        placed.append((now, zone, order.customer_id))
                if existing is not None:
                    if existing.customer_id != customer_id:
                        return DomainError("order_exists", "order id taken")
                    order = existing
        except DomainError as err:
            return err
        payment = checkout(
            self.settings, order.id, order.amounts.total_fen, order.placed_at.timestamp()
        )
        return {"order": order.as_dict(), "payment": payment}

    async def _place(self, request: dict[str, Any], now: datetime) -> Order:
        state = await self._load(request["merchant_id"])
        dropoff = Point(request["delivery"]["lat"], request["delivery"]["lng"])
        code = request.get("coupon_code")
        coupon = await coupons.load(self.redis, code) if code else None
        lines, amounts = price_order(
            state.merchant,
            state.menu,
            [Requested(i["item_id"], i["qty"]) for i in request["items"]],
            dropoff,
            self.tariff,
            coupon,
            now,
        )
        expected_total = request.get("expected_total_fen")
        seen_version = request.get("menu_version")
        stale_menu = seen_version is not None and seen_version != state.menu_version
        if (expected_total is not None and expected_total != amounts.total_fen) or (
            stale_menu and expected_total is None
        ):
            # A customer who saw an older menu must confirm the total it will pay now.
            raise DomainError(
                "price_changed",
                "the total differs from what the customer saw",
                expected_total_fen=expected_total,
                total_fen=amounts.total_fen,
                menu_version=state.menu_version,
            )
        command = c.PlaceOrder(
            at=now,
            order_id=request["order_id"],
            customer_id=request["customer_id"],
            merchant_id=state.merchant.id,
            lines=lines,
            amounts=amounts,
            pickup=state.merchant.location,
            dropoff=dropoff,
            address=request["delivery"].get("address", ""),
            coupon_code=code,
        )
        (placed,) = decide(None, command)
        order = place(command)
        if code:
            await coupons.claim(self.scripts, code, order.customer_id)
        try:
            await self.orders.commit(None, order, placed)
        except DomainError:
            if code:
                await coupons.release(self.scripts, code, order.customer_id)
            raise
        return order

    async def act(
        self, merchant_id: str, order_id: str, command: c.Command, caller: tuple[str, str]
    ) -> Reply:
        """Run one command on one order of this merchant; reply with the order or an error."""
        try:
            async with self.lock(merchant_id):
                await self._load(merchant_id)
                kept = order_id in self._orders
                try:
                    order, happened = await self._apply(merchant_id, order_id, command, caller)
                except DomainError:
                    if not kept:
                        raise
                    # The kept copy may be behind Redis (another host wrote meanwhile):
                    # judge the command again on what Redis holds.
                    self._orders.pop(order_id, None)
                    order, happened = await self._apply(merchant_id, order_id, command, caller)
        except DomainError as err:
            return err
        for event in happened:
            self._follow_up(order, event)
        return order.as_dict()

    async def _apply(
        self, merchant_id: str, order_id: str, command: c.Command, caller: tuple[str, str]
    ) -> tuple[Order, list[e.Event]]:
        before = await self._order(order_id)
        if before is None or before.merchant_id != merchant_id:
            raise not_found("order", order_id)
        authorize(before, command, *caller)
        order = before
        happened = decide(order, command)
        for event in happened:
            after = evolve(order, event)
            await self.orders.commit(order, after, event)
            order = after
        self._remember(order)
        return order, happened

    def _follow_up(self, order: Order, event: e.Event) -> None:
        """What an event sets going elsewhere: acceptance, dispatch, refunds, coupons back."""
        match event:
            case e.OrderPaid():
                state = self._state.get(order.merchant_id)
                if state is not None and state.merchant.accept_mode == "auto":
                    self.spawn(
                        self.act(
                            order.merchant_id,
                            order.id,
                            c.AcceptOrder(
                                at=datetime.now(UTC), prep_minutes=state.merchant.prep_minutes
                            ),
                            ("system", "auto_accept"),
                        ),
                        f"auto-accept {order.id}",
                    )
            case e.OrderAccepted():
                self.spawn(self._dispatch(order), f"dispatch {order.id}")
            case e.OrderCancelled() | e.OrderRejected():
                if event.refund_fen > 0:
                    self.spawn(self._refund(order, event.refund_fen), f"refund {order.id}")
                if order.coupon_code:
                    self.spawn(
                        coupons.release(self.scripts, order.coupon_code, order.customer_id),
                        f"coupon back {order.id}",
                    )
            case e.OrderDelivered():
                self.spawn(self._free_rider(event.rider_id, order), f"rider free {event.rider_id}")
                self.spawn(self._settle(order), f"settle {order.id}")

    async def _free_rider(self, rider_id: str, order: Order) -> None:
        now = datetime.now(UTC)
        seconds = int((now - order.placed_at).total_seconds())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(keys.rider(rider_id), "load", -1)
            pipe.hincrby(keys.rider(rider_id), f"delivered:{now:%Y%m%d}", 1)
            pipe.srem(keys.rider_orders(rider_id), order.id)
            metrics.queue_count(pipe, now, delivered=1, delivery_seconds=seconds)
            pipe.hget(keys.rider(rider_id), "zone")
            *_, zone = await pipe.execute()
        # Orders waiting for a rider there need not wait for the next retry round. A
        # read is far cheaper than a message to the zone's host, and mostly none wait.
        if zone and await self.redis.exists(keys.dispatch_waiting(zone)):
            await self.directory.call("rider_zone", zone, "nudge", zone)

    async def _dispatch(self, order: Order) -> Reply:
        zone = zone_of(order.pickup, self.settings.zone_resolution)
        result: Reply = await self.directory.call(
            "rider_zone", zone, "dispatch", zone, _dispatch_request(order)
        )
        return result

    async def _settle(self, order: Order) -> Reply:
        result: Reply = await self.directory.call("payment", order.id, "settle", order.id)
        return result

    async def _refund(self, order: Order, amount_fen: int) -> Reply:
        result: Reply = await self.directory.call(
            "payment",
            order.id,
            "refund",
            order.id,
            amount_fen,
            f"{order.id}-r{order.version}",
            order.close_reason or "",
        )
        return result


def _dispatch_request(order: Order) -> dict[str, Any]:
    accepted_at = next((t.at for t in order.timeline if t.status == "accepted"), None)
    ready_at = (
        accepted_at + timedelta(minutes=order.prep_minutes)
        if accepted_at is not None and order.prep_minutes is not None
        else None
    )
    return {
        "order_id": order.id,
        "merchant_id": order.merchant_id,
        "version": order.version,
        "ready_at": ready_at.isoformat() if ready_at else None,
        "pickup": {"lat": order.pickup.lat, "lng": order.pickup.lng},
        "dropoff": {"lat": order.dropoff.lat, "lng": order.dropoff.lng},
    }
