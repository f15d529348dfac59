"""The HTTP API of API.md as one FastAPI app behind Ray Serve.

Reads go straight to Redis from the replica; writes go through the owning actor.
Handlers: schema in, one call, schema out.
"""

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, Response
from ray import serve

from actors.checkout import checkout_of
from actors.placement import Directory
from cluster.settings import Settings
from domain import commands as c
from domain import ledger
from domain.errors import DomainError, forbidden, invalid, not_found
from domain.geo import Point, zone_of, zones_around
from serve_app import auth, errors
from serve_app.merchants import ProfileCache
from serve_app.schemas import (
    AcceptIn,
    CancelIn,
    CouponIn,
    DevTokenIn,
    ExpectVersion,
    LocationIn,
    MenuItemIn,
    MerchantIn,
    OrderIn,
    RefundIn,
    RejectIn,
    RiderStatusIn,
)
from serve_app.sync import Feed, Hub, ResyncRequired, is_stream_id, menu_channel, snapshot
from storage import coupons, keys, metrics
from storage.ledger import LedgerStore
from storage.orders import inbox_key
from storage.redis import Scripts, connect

api = FastAPI(
    title="o2o delivery platform",
    version="0.1.0",
    description="Same-city delivery: merchants, orders, payments, riders and live sync.",
)
errors.install(api)


# Orders whose merchant a replica keeps for routing commands (about 170 bytes each:
# 50,000 of them took 8 MiB in `make bench-memory`).
ORDERS_ROUTED = 50_000


def as_json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def unwrap(reply: Any) -> Any:
    if isinstance(reply, DomainError):
        raise reply
    return reply


def now() -> datetime:
    return datetime.now(UTC)


@serve.deployment(name="api")
@serve.ingress(api)
class Api:
    """The ingress deployment. Stateless apart from its Redis pool and actor handles."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = connect(settings.effective_redis_url, max_connections=256)
        self.directory = Directory(settings)
        self.hub = Hub(settings.effective_redis_url)
        self.profiles = ProfileCache(self.redis)
        self.ledger = LedgerStore(self.redis, Scripts(self.redis))
        self._merchant_of: dict[str, str] = {}

    # -- plumbing -----------------------------------------------------------------

    def caller(self, request: Request) -> auth.Caller:
        return auth.decode(
            self.settings.jwt_secret, auth.bearer(request.headers.get("authorization"))
        )

    async def idempotent(
        self, request: Request, caller: auth.Caller, run: Callable[[], Awaitable[Response]]
    ) -> Response:
        """A replay with the same key and body returns the first (successful) response."""
        key = request.headers.get("idempotency-key")
        if not key:
            return await run()
        if len(key) > 200:
            raise invalid("Idempotency-Key is too long")
        body = await request.body()
        digest = hashlib.sha256(
            request.method.encode() + b" " + request.url.path.encode() + b"\n" + body
        ).hexdigest()
        record_key = keys.idempotency(f"{caller.role}:{caller.sub}", key)
        raw = await self.redis.get(record_key)
        if raw is not None:
            record = orjson.loads(raw)
            if record["digest"] != digest:
                raise DomainError(
                    "idempotency_key_reused", "this Idempotency-Key was used with another request"
                )
            return Response(
                record["body"].encode(),
                record["status"],
                media_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        response = await run()
        if 200 <= response.status_code < 300:
            record = {
                "digest": digest,
                "status": response.status_code,
                "body": bytes(response.body).decode(),
            }
            await self.redis.set(
                record_key, orjson.dumps(record), ex=self.settings.idempotency_ttl_s, nx=True
            )
        return response

    async def order_owner(self, order_id: str) -> tuple[str, str, str, str]:
        merchant_id, customer_id, rider_id, status = await self.redis.hmget(
            keys.order(order_id), "merchant_id", "customer_id", "rider_id", "status"
        )
        if merchant_id is None:
            raise not_found("order", order_id)
        return merchant_id, customer_id, rider_id or "", status

    async def merchant_of(self, order_id: str) -> str:
        """The merchant whose host runs the order's commands. It never changes, so it is
        kept (boundedly) and a command costs no read to route."""
        merchant_id = self._merchant_of.get(order_id)
        if merchant_id is None:
            merchant_id, *_ = await self.order_owner(order_id)
            self.remember_merchant(order_id, merchant_id)
        return merchant_id

    def remember_merchant(self, order_id: str, merchant_id: str) -> None:
        self._merchant_of[order_id] = merchant_id
        if len(self._merchant_of) > ORDERS_ROUTED:
            del self._merchant_of[next(iter(self._merchant_of))]

    async def act(self, order_id: str, command: c.Command, caller: auth.Caller) -> Response:
        merchant_id = await self.merchant_of(order_id)
        order = unwrap(
            await self.directory.call(
                "merchant", merchant_id, "act", merchant_id, order_id, command, caller.who
            )
        )
        return as_json(await self.order_view(order))

    async def order_view(self, order: dict[str, Any]) -> dict[str, Any]:
        """The order as the API shows it, with what the view adds read in one round trip."""
        rider_id = order.get("rider_id")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.order(order["id"]), "eta")
            pipe.get(keys.payment(order["id"]))
            if rider_id:
                pipe.hmget(keys.rider(rider_id), "lat", "lng")
            raw_eta, raw_payment, *position = await pipe.execute()
        return self.view(order, raw_eta, raw_payment, position[0] if position else None)

    def view(
        self,
        order: dict[str, Any],
        raw_eta: str | None,
        raw_payment: str | None,
        position: list[str | None] | None,
    ) -> dict[str, Any]:
        """The order with its rider's position, its eta and its payment, as read."""
        view = {k: v for k, v in order.items() if k not in ("rider_id", "pickup")}
        rider_id = order.get("rider_id")
        if rider_id:
            lat, lng = position or (None, None)
            view["rider"] = {
                "id": rider_id,
                "lat": float(lat) if lat is not None else None,
                "lng": float(lng) if lng is not None else None,
            }
        else:
            view["rider"] = None
        view["eta"] = orjson.loads(raw_eta) if raw_eta and rider_id else None
        if raw_payment:
            payment = orjson.loads(raw_payment)
        else:  # nothing happened to the payment yet: its pay link is all there is
            payment = checkout_of(self.settings, order) | {"status": "created", "refunded_fen": 0}
        view["payment"] = {
            "intent_id": payment["intent_id"],
            "pay_url": payment["pay_url"],
            "status": payment["status"],
            "refunded_fen": payment["refunded_fen"],
        }
        return view

    # -- health and auth ----------------------------------------------------------

    @api.get("/v1/health/live")
    async def live(self) -> Response:
        return as_json({"status": "ok"})

    @api.get("/v1/health")
    async def health(self) -> Response:
        down: dict[str, str] = {}
        try:
            await asyncio.wait_for(self.redis.ping(), 2)
        except Exception as err:
            down["redis"] = repr(err)
        try:
            hosts = await self.directory.all_hosts()
            await asyncio.wait_for(asyncio.gather(*(h.ping.remote() for h in hosts)), 5)
        except Exception as err:
            down["actors"] = repr(err)
        if down:
            return errors.error_response("service_unavailable", "some parts are down", 503, down)
        return as_json({"status": "ok"})

    @api.post("/v1/auth/dev-token")
    async def dev_token(self, body: DevTokenIn) -> Response:
        if not self.settings.dev_mode:
            raise DomainError("route_not_found", "not found")
        token, expires = auth.issue(
            self.settings.jwt_secret, body.role, body.sub, self.settings.jwt_ttl_s
        )
        return as_json(
            {"token": token, "expires_at": datetime.fromtimestamp(expires, UTC).isoformat()}
        )

    # -- merchants ----------------------------------------------------------------

    @api.post("/v1/merchants", status_code=201)
    async def onboard(self, body: MerchantIn, request: Request) -> Response:
        caller = self.caller(request)
        caller.require("admin")

        async def run() -> Response:
            profile = body.model_dump(exclude_none=True)
            profile["delivery"] = body.delivery.model_dump(exclude_none=True)
            profile["id"] = body.id or f"m_{uuid.uuid4().hex[:12]}"
            host = await self.directory.host("merchant", profile["id"])
            return as_json(unwrap(await host.onboard.remote(profile)), 201)

        return await self.idempotent(request, caller, run)

    @api.get("/v1/merchants/nearby")
    async def nearby(
        self,
        request: Request,
        lat: float = Query(ge=-90, le=90),
        lng: float = Query(ge=-180, le=180),
        radius_m: int = Query(10_000, gt=0, le=50_000),
        limit: int = Query(50, gt=0, le=200),
    ) -> Response:
        self.caller(request)
        return as_json({"merchants": await self.profiles.nearby(lat, lng, radius_m, limit)})

    @api.get("/v1/merchants/{merchant_id}/menu")
    async def menu(self, merchant_id: str) -> Response:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.merchant(merchant_id), "menu_version")
            pipe.hgetall(keys.menu(merchant_id))
            pipe.hgetall(keys.stock(merchant_id))
            version, items, stock = await pipe.execute()
        if version is None:
            raise not_found("merchant", merchant_id)
        menu = [
            {**orjson.loads(raw), "stock": int(stock.get(item_id, 0))}
            for item_id, raw in sorted(items.items())
        ]
        return as_json({"merchant_id": merchant_id, "menu_version": int(version), "items": menu})

    @api.put("/v1/merchants/{merchant_id}/menu/items/{item_id}")
    async def set_menu_item(
        self, merchant_id: str, item_id: str, body: MenuItemIn, request: Request
    ) -> Response:
        caller = self.caller(request)
        caller.require("merchant", "admin")
        if caller.role == "merchant" and caller.sub != merchant_id:
            raise forbidden("a merchant changes only its own menu")
        if not 0 < len(item_id) <= 64:
            raise invalid("item_id must be 1 to 64 characters")

        async def run() -> Response:
            host = await self.directory.host("merchant", merchant_id)
            item = {
                "id": item_id,
                "name": body.name,
                "price_fen": body.price_fen,
                "available": body.available,
            }
            return as_json(unwrap(await host.set_menu_item.remote(merchant_id, item, body.stock)))

        return await self.idempotent(request, caller, run)

    # -- orders -------------------------------------------------------------------

    @api.post("/v1/orders", status_code=201)
    async def place_order(self, body: OrderIn, request: Request) -> Response:
        caller = self.caller(request)
        caller.require("customer")
        key = request.headers.get("idempotency-key")
        if key:
            # The same key always names the same order, so a retry can never make two.
            digest = hashlib.blake2b(f"{caller.sub}\n{key}".encode(), digest_size=10).hexdigest()
            order_id = f"o_{digest}"
        else:
            order_id = f"o_{uuid.uuid4().hex[:20]}"

        async def run() -> Response:
            placements = await self.directory.batched("merchant", body.merchant_id, "place_orders")
            placed = unwrap(
                await placements.submit(
                    {**body.model_dump(), "order_id": order_id, "customer_id": caller.sub}
                )
            )
            self.remember_merchant(order_id, body.merchant_id)
            # A new order has no rider and its payment came with the reply: no reads.
            view = {k: v for k, v in placed["order"].items() if k not in ("rider_id", "pickup")}
            view.update(rider=None, eta=None, payment=placed["payment"])
            return as_json(view, 201)

        return await self.idempotent(request, caller, run)

    @api.get("/v1/orders/{order_id}")
    async def get_order(self, order_id: str, request: Request) -> Response:
        caller = self.caller(request)
        # The order, its eta and its payment in one round trip; a second only for the
        # position of the rider who carries it.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.order(order_id), "json", "eta")
            pipe.get(keys.payment(order_id))
            (raw, raw_eta), raw_payment = await pipe.execute()
        if raw is None:
            raise not_found("order", order_id)
        order = orjson.loads(raw)
        if caller.role != "admin" and caller.sub != order.get(f"{caller.role}_id"):
            raise not_found("order", order_id)
        rider_id = order.get("rider_id")
        position = await self.redis.hmget(keys.rider(rider_id), "lat", "lng") if rider_id else None
        return as_json(self.view(order, raw_eta, raw_payment, position))

    @api.get("/v1/orders")
    async def list_orders(
        self,
        request: Request,
        status: str | None = None,
        limit: int = Query(20, gt=0, le=100),
        cursor: int = Query(0, ge=0),
    ) -> Response:
        caller = self.caller(request)
        if caller.role == "admin":
            raise forbidden("operations list orders through the dashboard")
        ids = await self.redis.zrevrange(
            keys.orders_of(caller.role, caller.sub), cursor, cursor + limit - 1
        )
        if not ids:
            return as_json({"orders": [], "cursor": None})
        async with self.redis.pipeline(transaction=False) as pipe:
            for order_id in ids:
                pipe.hget(keys.order(order_id), "json")
            raws = await pipe.execute()
        orders = [orjson.loads(r) for r in raws if r]
        if status:
            orders = [o for o in orders if o["status"] == status]
        next_cursor = cursor + len(ids) if len(ids) == limit else None
        return as_json({"orders": orders, "cursor": next_cursor})

    @api.post("/v1/orders/{order_id}/cancel")
    async def cancel(
        self, order_id: str, request: Request, body: CancelIn | None = None
    ) -> Response:
        caller = self.caller(request)
        caller.require("customer", "admin")
        body = body or CancelIn()
        command = c.CancelOrder(
            at=now(), reason=body.reason, by=caller.role, expected_version=body.expected_version
        )
        return await self.idempotent(request, caller, lambda: self.act(order_id, command, caller))

    @api.post("/v1/merchant/orders/{order_id}/accept")
    async def accept(
        self, order_id: str, request: Request, body: AcceptIn | None = None
    ) -> Response:
        caller = self.caller(request)
        caller.require("merchant")
        body = body or AcceptIn()
        prep = body.prep_minutes
        if prep is None:
            raw = await self.redis.hget(keys.merchant(caller.sub), "profile")
            prep = orjson.loads(raw)["prep_minutes"] if raw else 15
        command = c.AcceptOrder(at=now(), prep_minutes=prep, expected_version=body.expected_version)
        return await self.idempotent(request, caller, lambda: self.act(order_id, command, caller))

    @api.post("/v1/merchant/orders/{order_id}/reject")
    async def reject(self, order_id: str, body: RejectIn, request: Request) -> Response:
        caller = self.caller(request)
        caller.require("merchant")
        command = c.RejectOrder(
            at=now(), reason=body.reason, expected_version=body.expected_version
        )
        return await self.idempotent(request, caller, lambda: self.act(order_id, command, caller))

    @api.post("/v1/merchant/orders/{order_id}/ready")
    async def ready(
        self, order_id: str, request: Request, body: ExpectVersion | None = None
    ) -> Response:
        caller = self.caller(request)
        caller.require("merchant")
        command = c.MarkReady(at=now(), expected_version=(body or ExpectVersion()).expected_version)
        return await self.idempotent(request, caller, lambda: self.act(order_id, command, caller))

    # -- riders -------------------------------------------------------------------

    @api.post("/v1/riders/me/status")
    async def rider_status(self, body: RiderStatusIn, request: Request) -> Response:
        caller = self.caller(request)
        caller.require("rider")
        lat, lng = body.lat, body.lng
        if lat is None or lng is None:
            known = await self.redis.hmget(keys.rider(caller.sub), "lat", "lng")
            if known[0] is None:
                raise DomainError("location_required", "send lat and lng when going online first")
            lat, lng = float(known[0]), float(known[1])
        zone = zone_of(Point(lat, lng), self.settings.zone_resolution)
        status = await self.directory.call(
            "rider_zone", zone, "set_status", zone, caller.sub, body.online, lat, lng
        )
        return as_json(unwrap(status))

    @api.post("/v1/riders/me/location")
    async def rider_location(self, body: LocationIn, request: Request) -> Response:
        caller = self.caller(request)
        caller.require("rider")
        zone = zone_of(Point(body.lat, body.lng), self.settings.zone_resolution)
        located = await self.directory.call(
            "rider_zone", zone, "locate", zone, caller.sub, body.lat, body.lng
        )
        return as_json(unwrap(located))

    async def answer_offer(self, offer_id: str, request: Request, accept: bool) -> Response:
        caller = self.caller(request)
        caller.require("rider")
        raw = await self.redis.get(keys.offer(offer_id))
        if raw is None:
            raise not_found("offer", offer_id)
        zone = orjson.loads(raw)["zone"]

        async def run() -> Response:
            answered = await self.directory.call(
                "rider_zone", zone, "answer", zone, offer_id, caller.sub, accept
            )
            return as_json(unwrap(answered))

        return await self.idempotent(request, caller, run)

    @api.post("/v1/rider/offers/{offer_id}/accept")
    async def accept_offer(self, offer_id: str, request: Request) -> Response:
        return await self.answer_offer(offer_id, request, True)

    @api.post("/v1/rider/offers/{offer_id}/decline")
    async def decline_offer(self, offer_id: str, request: Request) -> Response:
        return await self.answer_offer(offer_id, request, False)

    @api.post("/v1/rider/orders/{order_id}/pickup")
    async def pickup(self, order_id: str, request: Request) -> Response:
        caller = self.caller(request)
        caller.require("rider")
        command = c.PickUp(at=now(), rider_id=caller.sub)
        return await self.idempotent(request, caller, lambda: self.act(order_id, command, caller))

    @api.post("/v1/rider/orders/{order_id}/deliver")
    async def deliver(self, order_id: str, request: Request) -> Response:
        caller = self.caller(request)
        caller.require("rider")
        command = c.Deliver(at=now(), rider_id=caller.sub)
        return await self.idempotent(request, caller, lambda: self.act(order_id, command, caller))

    # -- payments and operations --------------------------------------------------

    @api.post("/v1/payments/callback")
    async def payment_callback(self, request: Request) -> Response:
        body = await request.body()
        try:
            order_id = orjson.loads(body)["out_trade_no"]
            if not isinstance(order_id, str):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return errors.error_response("malformed_json", "not a provider notification", 400)
        signature = request.headers.get("x-sandbox-signature")
        unwrap(await self.directory.call("payment", order_id, "notify", body, signature))
        return PlainTextResponse("success")

    @api.post("/v1/admin/coupons", status_code=201)
    async def create_coupon(self, body: CouponIn, request: Request) -> Response:
        caller = self.caller(request)
        caller.require("admin")
        spec = body.model_dump(mode="json", exclude_none=True)
        if not await coupons.create(self.redis, spec):
            raise DomainError("coupon_exists", "a coupon with this code exists", code=body.code)
        return as_json(spec, 201)

    @api.post("/v1/admin/orders/{order_id}/refund")
    async def admin_refund(self, order_id: str, body: RefundIn, request: Request) -> Response:
        """A partial or full refund; the Idempotency-Key (or a new id) is its refund number."""
        caller = self.caller(request)
        caller.require("admin")
        await self.order_owner(order_id)
        key = request.headers.get("idempotency-key")
        suffix = (
            hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
            if key
            else uuid.uuid4().hex[:12]
        )
        refund_no = f"{order_id}-a{suffix}"

        async def run() -> Response:
            host = await self.directory.host("payment", order_id)
            refund = unwrap(
                await host.refund.remote(order_id, body.amount_fen, refund_no, body.reason)
            )
            return as_json({"order_id": order_id, **refund})

        return await self.idempotent(request, caller, run)

    @api.get("/v1/merchant/settlement")
    async def settlement(self, request: Request, day: date = Query(alias="date")) -> Response:
        caller = self.caller(request)
        caller.require("merchant")
        txns = await self.ledger.of_merchant_day(caller.sub, day)
        report = ledger.settlement(txns, caller.sub, day)
        return as_json({"merchant_id": caller.sub, "date": day.isoformat(), **report})

    @api.post("/v1/admin/reconciliation")
    async def reconciliation(self, request: Request, day: date = Query(alias="date")) -> Response:
        caller = self.caller(request)
        caller.require("admin")
        host = await self.directory.host("payment", "reconciliation")
        return as_json(unwrap(await host.reconcile.remote(day)))

    @api.get("/v1/admin/metrics")
    async def admin_metrics(
        self, request: Request, window_min: int = Query(15, gt=0, le=1440)
    ) -> Response:
        """Operations' dashboard figures over a sliding window, hot zones and waiting orders."""
        caller = self.caller(request)
        caller.require("admin")
        figures = await metrics.summary(self.redis, now(), window_min)
        zone_orders: dict[str, int] = figures.pop("zone_orders")
        waiting: dict[str, dict[str, Any]] = {}
        zones_waiting = sorted(await self.redis.smembers(keys.WAITING_ZONES))
        async with self.redis.pipeline(transaction=False) as pipe:
            for zone in zones_waiting:
                pipe.zrange(keys.dispatch_waiting(zone), 0, 0, withscores=True)
                pipe.zcard(keys.dispatch_waiting(zone))
            replies = await pipe.execute()
        for zone, oldest, count in zip(zones_waiting, replies[::2], replies[1::2], strict=True):
            if oldest and count:
                waiting[zone] = {
                    "orders": count,
                    "oldest_s": round(time.time() - oldest[0][1], 1),
                }
        hot = []
        zones = sorted(set(zone_orders) | set(waiting), key=lambda z: -zone_orders.get(z, 0))[:10]
        for zone in zones:
            idle = await self.idle_riders(zone)
            need = metrics.riders_needed(zone_orders.get(zone, 0), window_min, idle)
            hot.append(
                {
                    "zone": zone,
                    "orders": zone_orders.get(zone, 0),
                    "waiting": waiting.get(zone, {}).get("orders", 0),
                    "idle_riders": idle,
                    "riders_needed": need,
                }
            )
        for entry in hot:
            if entry["riders_needed"] > 0:
                entry["move_from"] = await self.spare_riders_near(entry["zone"], hot)
        return as_json({**figures, "hot_zones": hot, "waiting": waiting})

    async def idle_riders(self, zone: str) -> int:
        members = await self.redis.zrange(keys.zone_riders(zone), 0, -1)
        if not members:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for rider_id in members:
                pipe.hmget(keys.rider(rider_id), "load", "seen_at")
            rows = await pipe.execute()
        fresh_after = time.time() - 60
        return sum(
            1 for load, seen in rows if int(load or 0) == 0 and float(seen or 0) > fresh_after
        )

    async def spare_riders_near(self, zone: str, hot: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Neighbouring zones with idle riders and no unmet demand of their own."""
        short = {h["zone"] for h in hot if h["riders_needed"] > 0}
        spare = []
        for near in zones_around(zone, 2)[1:]:
            if near in short:
                continue
            idle = await self.idle_riders(near)
            if idle:
                spare.append({"zone": near, "idle_riders": idle})
        return spare[:5]

    # -- sync ---------------------------------------------------------------------

    @api.get("/v1/sync/events")
    async def sync_events(
        self,
        request: Request,
        cursor: str | None = None,
        wait_s: float = Query(0, ge=0, le=30),
        limit: int = Query(100, gt=0, le=1000),
    ) -> Response:
        caller = self.caller(request)
        if cursor is not None and not is_stream_id(cursor):
            raise invalid("cursor must be a stream id like 1700000000000-0")
        inbox = self.inbox_of(caller)
        async with Feed(self.hub, self.redis, inbox, cursor) as feed:
            try:
                await feed.check_retained()
            except ResyncRequired:
                fresh = await snapshot(self.redis, inbox, caller.role, caller.sub)
                return as_json({"events": [fresh], "cursor": fresh["cursor"]})
            events = await feed.backlog(limit)
            if not events and wait_s > 0:
                await feed.subscribe()
                events = await feed.backlog(limit) or await feed.live(wait_s)
        return as_json({"events": events, "cursor": feed.cursor})

    @api.websocket("/v1/sync/ws")
    async def sync_ws(
        self,
        websocket: WebSocket,
        cursor: str | None = None,
        token: str | None = None,
        viewing: str | None = None,
    ) -> None:
        """Everything after `cursor`, then live events, one JSON text frame each."""
        try:
            caller = auth.decode(
                self.settings.jwt_secret,
                token or auth.bearer(websocket.headers.get("authorization")),
            )
            if cursor is not None and not is_stream_id(cursor):
                raise invalid("cursor must be a stream id like 1700000000000-0")
        except DomainError as err:
            await websocket.close(
                code=4401 if err.code == "unauthorized" else 4422, reason=err.message
            )
            return
        await websocket.accept()
        inbox = self.inbox_of(caller)
        async with Feed(self.hub, self.redis, inbox, cursor) as feed:
            await feed.subscribe()
            if viewing:
                await self.hub.join(feed.listener, menu_channel(viewing))
            sender = asyncio.create_task(self._push(websocket, feed, caller))
            receiver = asyncio.create_task(self._listen(websocket, feed))
            _, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _push(self, websocket: WebSocket, feed: Feed, caller: auth.Caller) -> None:
        try:
            await feed.check_retained()
        except ResyncRequired:
            fresh = await snapshot(self.redis, feed.inbox, caller.role, caller.sub)
            feed.cursor = fresh["cursor"]
            await websocket.send_text(orjson.dumps(fresh).decode())
        while True:
            batch = await feed.backlog()
            for event in batch:
                await websocket.send_text(orjson.dumps(event).decode())
            if len(batch) < 500:
                break
        while True:
            for event in await feed.live(None):
                await websocket.send_text(orjson.dumps(event).decode())

    async def _listen(self, websocket: WebSocket, feed: Feed) -> None:
        """Commands from the terminal: which merchant it is viewing, and pings."""
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                try:
                    command = orjson.loads(await websocket.receive_text())
                except orjson.JSONDecodeError:
                    continue
                kind = command.get("type") if isinstance(command, dict) else None
                if kind == "view" and isinstance(command.get("merchant_id"), str):
                    for channel in [
                        c for c in feed.listener.channels if c.startswith("notify:menu:")
                    ]:
                        await self.hub.leave(feed.listener, channel)
                    await self.hub.join(feed.listener, menu_channel(command["merchant_id"]))
                elif kind == "ping":
                    await websocket.send_text('{"type":"pong"}')

    def inbox_of(self, caller: auth.Caller) -> str:
        return inbox_key("ops" if caller.role == "admin" else caller.role, caller.sub)


def build(settings: Settings) -> Any:
    """The Serve application, bound with the platform's settings."""
    deployment: Any = Api
    return deployment.options(
        num_replicas=settings.api_replicas,
        max_ongoing_requests=settings.api_max_ongoing_requests,
        # Stopping must not wait on idle keep-alive clients; requests finish well inside this.
        graceful_shutdown_timeout_s=5,
        graceful_shutdown_wait_loop_s=0.5,
        ray_actor_options={"num_cpus": 0},
        logging_config={"enable_access_log": settings.access_log},
    ).bind(settings)
