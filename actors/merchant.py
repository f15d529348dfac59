"""The merchant host: menus, stock and the lifecycle of every order of its merchants."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from actors import telemetry
from actors.directory import (
    Act,
    Message,
    Onboard,
    Place,
    Reply,
    SetMenuItem,
    checkout_for,
)
from actors.host import EntityHost, sendable
from domain import commands as c
from domain import errands, ledger, risk
from domain import events as e
from domain import reactions as r
from domain.errand_tariff import ErrandTariff
from domain.errors import DomainError, invalid, not_found
from domain.geo import Point, require_indexable, zone_of
from domain.merchants import (
    MenuItem,
    Merchant,
    Requested,
    accepting,
    confirm_total,
    delivery_fee_to,
    price_order,
)
from domain.orders import (
    MERCHANT_ACCEPT_TIMEOUT,
    Order,
    attempted,
    authorize,
    decide,
    delivery_hold,
    evolve,
    place,
    replayed,
)
from domain.pricing import DeliveryTariff
from storage import keys
from storage.batching import Batcher
from storage.coupons import CouponStore
from storage.merchants import MerchantState, MerchantStore
from storage.offers import OfferStore
from storage.riders import RiderStore
from storage.risk import RiskStore, figures_of
from storage.settings import Settings

log = logging.getLogger(__name__)

# Orders under way kept in memory per host: a bound, so abandoned ones cannot pile up.
ORDERS_KEPT = 10_000
# How often the host looks for paid orders past their accept deadline, and how many it
# takes per look.
ACCEPT_DEADLINE_CHECK_S = 1.0
ACCEPT_DEADLINE_BATCH = 100

# A new order as the metrics count it: (at, zone of its door, customer).
NewOrder = tuple[datetime, str, str]


class MerchantHost(EntityHost):
    """Hosts merchant entities.

    Concurrency: one `asyncio.Lock` per merchant; a merchant's menu changes, order
    placements and order transitions run one at a time, merchants proceed in parallel.
    Persists, in the slot of the merchant's shard (`storage/keys.py`): the profile,
    menu and stock, and each order with its indexes and due times (a new order also
    joins the shard's `payments:due`), each change in one Lua script with its events on
    the merchant's inbox and, through the shard's outbox, on the inboxes and order
    indexes of its customer, rider and operations.
    Caches merchant profiles and menus, reloaded from Redis after a restart, and up
    to `ORDERS_KEPT` orders under way (read again whenever a command fails on one).
    The follow-ups of each event (`domain/reactions.py`) run after the reply.
    The courier desks that hold errands (`domain/errands.py`) are merchants of this
    host like any other, built from the code rather than onboarded; an errand is placed
    by `place_errand` and then lives as an order.
    Risk checks (`domain/risk.py`): a placement reads its customer's and device's
    windows before the merchant's lock and is counted by its own commit; one past them
    is placed held. A delivery faster than a bike is committed held (its split waits).
    Operations' decision on a held order (`Review`) is one more command.
    """

    KIND = "merchant"

    def __init__(self, settings: Settings, index: int = 0) -> None:
        super().__init__(settings, index)
        self.tariff = DeliveryTariff()
        self.errand_tariff = ErrandTariff()
        self.merchants = MerchantStore(self.redis, self.scripts, self.relay)
        self.coupons = CouponStore(self.redis, self.scripts)
        self.riders = RiderStore(self.redis, self.scripts)
        self.offers = OfferStore(self.redis, self.scripts, self.metrics, settings.offer_ttl_s)
        self.checkout = checkout_for(settings)
        self.risk = RiskStore(self.redis, figures_of(settings))
        self._state: dict[str, MerchantState] = self.cache({})
        # Orders under way, most recently used last. This host is the only writer of
        # its merchants' orders, and every write is guarded by the order's version, so
        # a copy here saves a read per command and a stale one fails safe.
        self._orders: OrderedDict[str, Order] = OrderedDict()
        # The new orders' counts (`r.CountOrder`, read from the mailbox in batches) that
        # arrive together share one round trip.
        self._counting: Batcher[NewOrder, None] = Batcher(self._count_new_orders, max_batch=256)
        # Paid orders may be waiting on this host's merchants from before a restart, so
        # their deadlines are watched from the start.
        self.every(ACCEPT_DEADLINE_CHECK_S, "checking accept deadlines", self.reject_unanswered)
        telemetry.watch(self)
        self.start()

    async def handle(self, batch: list[Message]) -> list[Reply]:
        """As every host, with each placement timed for the metrics."""

        async def one(message: Message) -> Reply:
            telemetry.concerning(telemetry.order_of(message))
            if isinstance(message, Place):
                started = time.perf_counter()
                placing = (
                    self.place_errand
                    if message.request.get("kind") == errands.ERRAND
                    else self.place_order
                )
                placed = await placing(message.request)
                telemetry.placed(started, placed)
                return placed
            return await self.receive(message)

        replies: list[Any] = await asyncio.gather(
            *(self.owned(m, one) for m in batch), return_exceptions=True
        )
        return sendable(replies)

    async def _count_new_orders(self, counted: list[NewOrder]) -> list[None]:
        await self.metrics.count_new_orders(counted)
        return [None] * len(counted)

    def entity_of(self, message: Message) -> str | None:
        match message:
            case Act() | SetMenuItem():
                return message.merchant_id
            case Place():
                return str(message.request["merchant_id"])
            case Onboard():
                return str(message.profile.get("id", "")) or None
        return None

    def forget_shards(self, shards: set[int]) -> None:
        super().forget_shards(shards)
        for order_id in [o for o in self._orders if keys.order_shard(o) in shards]:
            del self._orders[order_id]

    async def receive(self, message: Message) -> Reply:
        match message:
            case Act() if message.caller[0] != "system":
                try:
                    self.refuse_if_full(message.merchant_id, "merchant_unavailable")
                except DomainError as err:
                    return err
                return await self.act(
                    message.merchant_id, message.order_id, message.command, message.caller
                )
            case Act():
                return await self.act(
                    message.merchant_id, message.order_id, message.command, message.caller
                )
            case SetMenuItem():
                return await self.set_menu_item(message.merchant_id, message.item, message.stock)
            case Onboard():
                return await self.onboard(message.profile)
        return await super().receive(message)

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
        if state is None and errands.is_desk(merchant_id):
            # A courier desk is the code's, not onboarded: its profile is written for
            # the payment host's split each time a host takes it up.
            desk = Merchant.from_dict(errands.desk_profile(merchant_id, self.errand_tariff))
            await self.merchants.keep_desk(desk)
            state = self._state[merchant_id] = MerchantState(desk, {}, 0)
        if state is None:
            state = self._state[merchant_id] = await self.merchants.load(merchant_id)
        return state

    async def onboard(self, profile: dict[str, Any]) -> Reply:
        try:
            merchant = Merchant.from_dict(profile)
            if errands.is_desk(merchant.id):
                raise DomainError("merchant_exists", "the courier desk's id", id=merchant.id)
            require_indexable(merchant.location, "a merchant")
            ledger.plan_or_default(merchant.split_plan)
            async with self.lock(merchant.id):
                await self.merchants.onboard(merchant)
                self._state[merchant.id] = MerchantState(merchant, {}, 0)
        except DomainError as err:
            return err
        await self.metrics.count(datetime.now(UTC), onboarded=1)
        return merchant.as_dict()

    async def set_menu_item(self, merchant_id: str, item: dict[str, Any], stock: int) -> Reply:
        try:
            menu_item = MenuItem(**item)
            if stock < 0:
                raise invalid("stock must not be negative")
            async with self.lock(merchant_id):
                state = await self._load(merchant_id)
                change = e.MenuChanged(
                    merchant_id=merchant_id,
                    menu_version=state.menu_version + 1,
                    item={**menu_item.as_dict(), "stock": stock},
                    at=datetime.now(UTC),
                )
                try:
                    version = await self.merchants.set_menu_item(menu_item, stock, change)
                except DomainError as err:
                    if err.code != "stale_version":
                        raise
                    # Another host wrote the menu meanwhile: read it again, once.
                    self._state.pop(merchant_id, None)
                    state = await self._load(merchant_id)
                    change = replace(change, menu_version=state.menu_version + 1)
                    version = await self.merchants.set_menu_item(menu_item, stock, change)
                state.menu[menu_item.id] = menu_item
                state.menu_version = version
        except DomainError as err:
            return err
        return {**menu_item.as_dict(), "stock": stock, "menu_version": version}

    async def place_order(self, request: dict[str, Any]) -> Reply:
        """Price, reserve stock and save a new order; reply with its signed pay link."""
        merchant_id = request["merchant_id"]
        customer_id = request["customer_id"]
        order_id = request["order_id"]
        await self.faults.slow_merchant(merchant_id)
        now = datetime.now(UTC)
        try:
            self.refuse_if_full(merchant_id, "merchant_unavailable")
            # Counted before the merchant's lock: the counts are the customer's and the
            # device's, not the merchant's.
            hold = await self._placement_hold(request, now)
            async with self.lock(merchant_id):
                # Only a retry can find its order already there (the id comes from the
                # Idempotency-Key); a coupon must not be claimed again for it.
                existing = await self.orders.load(order_id) if request.get("coupon_code") else None
                if existing is None:
                    try:
                        order = await self._place(request, now, hold)
                    except DomainError as err:
                        if err.code != "stale_version":
                            raise
                        existing = await self.orders.load(order_id)
                if existing is not None:
                    if existing.customer_id != customer_id:
                        return DomainError("order_exists", "order id taken")
                    order = existing
        except DomainError as err:
            return err
        payment = self.checkout.link(order.id, order.amounts.total_fen, order.placed_at.timestamp())
        return {"order": order.as_dict(), "payment": payment}

    async def _placement_hold(self, request: dict[str, Any], now: datetime) -> risk.Hold | None:
        """The placement's risk check (`domain/risk.py`): its customer's and device's
        orders and failed payments in their windows, this one counted (read only: the
        order's own commit counts it, `_place`)."""
        order_id = request["order_id"]
        counts = await self.risk.placement(request["customer_id"], request.get("device_id"), now)
        hit = risk.placement(counts, self.risk.figures)
        if hit is None:
            return None
        telemetry.order_event("held_at_placement")
        return risk.hold_of(hit, risk.order_review_id(order_id, "placed"), hidden=True)

    async def _place(
        self, request: dict[str, Any], now: datetime, hold: risk.Hold | None = None
    ) -> Order:
        state = await self._load(request["merchant_id"])
        dropoff = Point(request["delivery"]["lat"], request["delivery"]["lng"])
        code = request.get("coupon_code")
        coupon = await self.coupons.load(code) if code else None
        lines, amounts = price_order(
            state.merchant,
            state.menu,
            [Requested(i["item_id"], i["qty"]) for i in request["items"]],
            dropoff,
            self.tariff,
            coupon,
            now,
            self.settings.city_utc_offset_min,
        )
        confirm_total(
            amounts,
            request.get("expected_total_fen"),
            request.get("menu_version"),
            state.menu_version,
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
            phone=request["delivery"].get("phone", ""),
            coupon_code=code,
            hold=hold,
        )
        (order_placed,) = decide(None, command)
        order = place(command)
        if code:
            await self.coupons.claim(code, order.customer_id, order.id)
        counted = partial(
            self.risk.count_placement,
            customer_id=order.customer_id,
            device_id=request.get("device_id"),
            order_id=order.id,
            at=now,
            payment_timeout_s=self.settings.payment_timeout_s,
        )
        try:
            await self.orders.commit(
                None,
                order,
                order_placed,
                self.directory.post(r.reactions(order, order_placed, state.merchant)),
                beside=counted,
            )
        except DomainError:
            if code:
                await self.coupons.release(code, order.customer_id, order.id)
            raise
        telemetry.order_event(order_placed.type)
        await self.crash_if_armed(f"crash_after_commit:{order_placed.type}:{order.merchant_id}")
        return order

    async def place_errand(self, request: dict[str, Any]) -> Reply:
        """Price and save a new errand at its courier desk (`domain/errands.py`), with its
        two proof codes; reply with its signed pay link, as for any order. A retry (the
        id comes from the Idempotency-Key) finds its errand and answers it again."""
        desk_id, order_id = request["merchant_id"], request["order_id"]
        now = datetime.now(UTC)
        try:
            self.refuse_if_full(desk_id, "merchant_unavailable")
            # The same risk check as any placement: the customer's and device's counts.
            hold = await self._placement_hold(request, now)
            async with self.lock(desk_id):
                state = await self._load(desk_id)
                try:
                    order = await self._place_errand(state, request, now, hold)
                except DomainError as err:
                    if err.code != "stale_version":
                        raise
                    existing = await self.orders.load(order_id)
                    if existing is None or existing.customer_id != request["customer_id"]:
                        return DomainError("order_exists", "order id taken")
                    order = existing
        except DomainError as err:
            return err
        payment = self.checkout.link(order.id, order.amounts.total_fen, order.placed_at.timestamp())
        return {"order": order.as_dict(), "payment": payment}

    async def _place_errand(
        self,
        state: MerchantState,
        request: dict[str, Any],
        now: datetime,
        hold: risk.Hold | None = None,
    ) -> Order:
        a, b = request["pickup"], request["dropoff"]
        pickup, dropoff = Point(a["lat"], a["lng"]), Point(b["lat"], b["lng"])
        lines, amounts = errands.price(
            pickup, dropoff, request["category"], request["weight_class"], self.errand_tariff
        )
        confirm_total(amounts, request.get("expected_total_fen"), None, 0)
        errand = errands.Errand(
            category=request["category"],
            weight_class=request["weight_class"],
            pickup_address=a.get("address", ""),
            pickup_contact_name=a.get("contact_name", ""),
            pickup_contact_phone=a.get("contact_phone", ""),
            pickup_note=a.get("note", ""),
            dropoff_contact_name=b.get("contact_name", ""),
            pickup_code=errands.new_code(secrets.randbelow),
            delivery_code=errands.new_code(secrets.randbelow),
        )
        command = c.PlaceOrder(
            at=now,
            order_id=request["order_id"],
            customer_id=request["customer_id"],
            merchant_id=state.merchant.id,
            lines=lines,
            amounts=amounts,
            pickup=pickup,
            dropoff=dropoff,
            address=b.get("address", ""),
            phone=b.get("contact_phone", ""),
            errand=errand,
            hold=hold,
        )
        (order_placed,) = decide(None, command)
        order = place(command)
        follow_ups = self.directory.post(r.reactions(order, order_placed, state.merchant))
        await self.orders.commit(None, order, order_placed, follow_ups)
        telemetry.order_event(order_placed.type)
        return order

    async def act(
        self, merchant_id: str, order_id: str, command: c.Command, caller: tuple[str, str]
    ) -> Reply:
        """Run one command on one order of this merchant; reply with the order or an error."""
        try:
            async with self.lock(merchant_id):
                state = await self._load(merchant_id)
                if isinstance(command, c.AcceptOrder):
                    # A restaurant's usual preparation time, or a shop's ready at once.
                    command = accepting(state.merchant, command)
                if isinstance(command, c.ChangeDelivery):
                    # Quoted by placement's rules; None where the merchant does not go,
                    # which `decide` refuses once it has checked who asks.
                    fee = delivery_fee_to(state.merchant, command.dropoff, self.tariff)
                    command = replace(command, delivery_fee_fen=fee)
                if isinstance(command, c.MarkPaid) and command.accept_deadline is None:
                    deadline = command.at + timedelta(
                        seconds=self.settings.merchant_accept_timeout_s
                    )
                    command = replace(command, accept_deadline=deadline)
                if isinstance(command, c.Review) and command.accept_deadline is None:
                    # A paid order released to its merchant: its answer is due from now.
                    deadline = command.at + timedelta(
                        seconds=self.settings.merchant_accept_timeout_s
                    )
                    command = replace(command, accept_deadline=deadline)
                kept = order_id in self._orders
                try:
                    order = await self._apply(state, order_id, command, caller)
                except DomainError:
                    if not kept:
                        raise
                    # The kept copy may be behind Redis (another host wrote meanwhile):
                    # judge the command again on what Redis holds.
                    self._orders.pop(order_id, None)
                    order = await self._apply(state, order_id, command, caller)
        except DomainError as err:
            return err
        return order.as_dict()

    async def _apply(
        self, state: MerchantState, order_id: str, command: c.Command, caller: tuple[str, str]
    ) -> Order:
        """Decide, and commit each event with the follow-ups it sets going (posted to the
        mailboxes of the entities that act on them, in the event's own script)."""
        merchant_id = state.merchant.id
        before = await self._order(order_id)
        if before is None or before.merchant_id != merchant_id:
            raise not_found("order", order_id)
        authorize(before, command, *caller)
        if replayed(before, command):
            return before
        if isinstance(command, c.Deliver) and command.hold is None:
            # Faster than a bike from the counter to the door: its split waits for review.
            command = replace(command, hold=delivery_hold(before, command.at, self.risk.figures))
        order = before
        for event in decide(order, command):
            after = attempted(evolve(order, event), command)
            follow_ups = self.directory.post(r.reactions(after, event, state.merchant))
            await self.orders.commit(order, after, event, follow_ups)
            telemetry.order_event(event.type)
            await self.crash_if_armed(f"crash_after_commit:{event.type}:{merchant_id}")
            order = after
        self._remember(order)
        return order

    async def reject_unanswered(self) -> int:
        """Reject the paid orders this host's merchants did not answer in time (and so
        refund them): one look at the due deadlines; returns how many closed."""
        rejected = 0
        due = await self.orders.past_accept_deadline(
            self.shards, time.time(), ACCEPT_DEADLINE_BATCH
        )
        for order_id in due:
            merchant_id = await self.orders.merchant_of(order_id)
            if merchant_id is None:
                await self.orders.forget_accept_deadline(order_id)
                continue
            if not self.owns(merchant_id):
                continue
            timed_out = c.RejectOrder(at=datetime.now(UTC), reason=MERCHANT_ACCEPT_TIMEOUT)
            with telemetry.about(order_id):
                reply = await self.act(
                    merchant_id, order_id, timed_out, ("system", "accept_timeout")
                )
            if isinstance(reply, DomainError):
                # Answered at the last moment (or closed): nothing to reject any more.
                await self.orders.forget_accept_deadline(order_id)
            else:
                rejected += 1
        return rejected

    async def react(self, intent: r.Intent) -> Reply | None:
        """The follow-ups a merchant's host applies itself, each at most once in effect."""
        telemetry.concerning(telemetry.order_of(intent))
        match intent:
            case r.Accept():
                accept = c.AcceptOrder(at=datetime.now(UTC), prep_minutes=intent.prep_minutes)
                return await self.act(
                    intent.merchant_id, intent.order_id, accept, ("system", "auto_accept")
                )
            case r.ReadyOnAccept():
                # Asked under the merchant's lock like any command, so it waits for the
                # acceptance that posted it to finish (a copy read beside it could be
                # from before that acceptance).
                ready = c.MarkReady(at=datetime.now(UTC))
                reply = await self.act(
                    intent.merchant_id, intent.order_id, ready, ("system", "ready_on_accept")
                )
                if isinstance(reply, DomainError) and reply.code == "invalid_transition":
                    return None  # made ready with its acceptance: the usual case
                return reply
            case r.Cancel():
                cancel = c.CancelOrder(at=datetime.now(UTC), reason=intent.reason, by="system")
                return await self.act(
                    intent.merchant_id, intent.order_id, cancel, ("system", "payments")
                )
            case r.CountOrder():
                at = datetime.fromtimestamp(intent.placed_at_s, UTC)
                zone = zone_of(Point(intent.lat, intent.lng), self.settings.zone_resolution)
                await self._counting.submit((at, zone, intent.customer_id))
                return None
            case r.ReturnCoupon():
                await self.coupons.release(intent.code, intent.customer_id, intent.order_id)
                return None
            case r.FreeRider():
                seconds = int((datetime.now(UTC) - intent.placed_at).total_seconds())
                rider_zone = await self.riders.free(
                    intent.rider_id, intent.order_id, seconds, intent.delivered
                )
                # Orders waiting for a rider there need not wait for the next retry round.
                # A read is far cheaper than a message to the zone's host, and mostly none
                # wait.
                if rider_zone and await self.offers.any_waiting(rider_zone):
                    await self.follow_up([r.OfferWaiting(rider_zone)])
                return None
        return await super().react(intent)
