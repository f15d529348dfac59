"""What every route of a replica uses: settings, the stores, the directory of entities.

One `Services` per replica, made when the replica starts; routes receive it from the
`services` dependency. Reads go straight to Redis through the stores; writes go to the
entity that owns them through the directory.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from actors.directory import Directory, Reply, checkout_for
from domain import commands as c
from domain.errors import DomainError, invalid, not_found
from serve_app import views
from serve_app.auth import Caller
from serve_app.breakers import GuardedDirectory
from storage.addresses import AddressStore
from storage.coupons import CouponStore
from storage.idempotency import IdempotencyStore
from storage.inboxes import Hub, InboxStore
from storage.ledger import LedgerStore
from storage.merchants import MerchantStore
from storage.metrics import MetricsStore
from storage.offers import OfferStore
from storage.orders import OrderStore
from storage.promotions import PromotionStore
from storage.redis import Scripts, connect, ping
from storage.reviews import ReviewStore
from storage.riders import RiderStore
from storage.sealing import Sealer
from storage.settings import Settings

# Orders whose merchant a replica keeps for routing commands (about 170 bytes each:
# 50,000 of them took 8 MiB in `make bench-memory`).
ORDERS_ROUTED = 50_000


# Set on every request by Serve's HAProxy, through the platform's wrapper
# (`serve_app/admission.py`), replacing a client's own.
ATTEMPT_HEADER = "X-Attempt-Id"


def creation_key(request: Request) -> str | None:
    """What names the thing a request creates (an order, an errand, an address, a
    promotion, a refund): its Idempotency-Key, else the attempt id HAProxy gave it.
    HAProxy replays a request whose replica died before answering; the replay carries
    the same attempt id, so it names the same thing and creates nothing twice. A client
    that sends again without a key makes a new attempt, as it always did."""
    key = request.headers.get("idempotency-key")
    if key:
        return key
    attempt = haproxy_attempt(request)
    return f"attempt:{attempt}" if attempt else None


def attempt_of(request: Request) -> str:
    """What names a request to an order (`Order.attempts`): HAProxy's attempt id, which
    its replay carries too, else one of its own (Serve's proxy replays nothing, but a
    host can still read the request's letter again after a crash)."""
    return haproxy_attempt(request) or uuid.uuid4().hex


def haproxy_attempt(request: Request) -> str | None:
    """The attempt id HAProxy gave the request, if it is one (a UUID fits in 64)."""
    attempt = request.headers.get(ATTEMPT_HEADER)
    return attempt if attempt and len(attempt) <= 64 else None


def as_json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def now() -> datetime:
    return datetime.now(UTC)


def unwrap(reply: Reply) -> dict[str, Any]:
    if isinstance(reply, DomainError):
        raise reply
    return reply


class Services:
    def __init__(self, settings: Settings) -> None:
        settings.refuse_unsafe()
        self.settings = settings
        self.redis = connect(settings.effective_redis_url, max_connections=256)
        scripts = Scripts(self.redis)
        # Every merchant call behind its breaker and a bound (`serve_app/breakers.py`).
        self.directory: Directory = GuardedDirectory(settings, self.redis)
        self.hub = Hub(settings.effective_redis_url)
        self.metrics = MetricsStore(self.redis)
        sealer = Sealer(settings.data_key)
        self.inboxes = InboxStore(
            self.redis, scripts, settings.inbox_maxlen, settings.inbox_retention_s, sealer
        )
        self.addresses = AddressStore(
            self.redis, scripts, settings.inbox_maxlen, settings.inbox_retention_s, sealer
        )
        self.orders = OrderStore(
            self.redis,
            scripts,
            settings.inbox_maxlen,
            settings.inbox_retention_s,
            settings.payment_poll_s,
            sealer=Sealer(settings.data_key),
        )
        self.merchants = MerchantStore(self.redis, scripts)
        self.riders = RiderStore(self.redis, scripts)
        self.offers = OfferStore(self.redis, scripts, self.metrics, settings.offer_ttl_s)
        self.coupons = CouponStore(self.redis, scripts)
        self.promotions = PromotionStore(
            self.redis,
            settings.inbox_maxlen,
            settings.inbox_retention_s,
            settings.promotion_presence_s,
        )
        self.ledger = LedgerStore(self.redis, scripts)
        self.idempotency = IdempotencyStore(self.redis, settings.idempotency_ttl_s, sealer)
        self.reviews = ReviewStore(self.redis)
        self.checkout = checkout_for(settings)
        self._merchant_of: dict[str, str] = {}

    async def redis_answers(self) -> None:
        await ping(self.redis)

    async def idempotent(
        self, request: Request, caller: Caller, run: Callable[[], Awaitable[Response]]
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
        scope = f"{caller.role}:{caller.sub}"
        record = await self.idempotency.first(scope, key)
        if record is not None:
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
            first = {
                "digest": digest,
                "status": response.status_code,
                "body": bytes(response.body).decode(),
            }
            await self.idempotency.remember(scope, key, first)
        return response

    async def merchant_of(self, order_id: str) -> str:
        """The merchant whose host runs the order's commands. It never changes, so it is
        kept (boundedly) and a command costs no read to route."""
        merchant_id = self._merchant_of.get(order_id)
        if merchant_id is None:
            merchant_id = await self.orders.merchant_of(order_id)
            if merchant_id is None:
                raise not_found("order", order_id)
            self.remember_merchant(order_id, merchant_id)
        return merchant_id

    def remember_merchant(self, order_id: str, merchant_id: str) -> None:
        self._merchant_of[order_id] = merchant_id
        if len(self._merchant_of) > ORDERS_ROUTED:
            del self._merchant_of[next(iter(self._merchant_of))]

    async def act(
        self, order_id: str, command: c.Command, caller: Caller, request: Request
    ) -> Response:
        """Run a command on an order at its merchant's host; answer with the order's view
        (also to the request sent again after its change went through)."""
        merchant_id = await self.merchant_of(order_id)
        command = replace(command, attempt=attempt_of(request))
        order = unwrap(
            await self.directory.merchant(merchant_id).act(order_id, command, caller.who)
        )
        read = await self.orders.read_beside(order)
        return as_json(views.order(read, self.checkout, caller.role))


# The replica's one `Services`, made by the Serve deployment when the replica starts.
# A module global, not the app's state: Serve runs a copy of the FastAPI app in each
# replica, while this module is imported there like any other.
_current: Services | None = None


def install(made: Services) -> None:
    global _current
    _current = made


def current() -> Services:
    if _current is None:
        raise RuntimeError("the replica's services are not made yet")
    return _current
