"""Who gets in at the replica's door: load shedding, and rate limits per caller.

ASGI middleware in front of the routes, so a refusal costs no routing, no dependency
and no body read:

- **Shedding.** A replica working on `shed_max_in_flight` ordinary requests answers
  the next one 503 `service_unavailable` with `Retry-After` at once, rather than queue
  it behind work it cannot finish in time. Long polls and WebSockets hold a slot for
  their whole life while costing nothing in between, so they are not counted (Serve's
  `max_ongoing_requests` still caps everything).
- **Rate limits** (`limits`, fixed windows in Redis, shared by every replica) per
  caller and route class: placement, other changes, reads, token minting. The caller
  is the token's role and subject, or the client address without a valid token (a
  bad token is still refused 401 by its route). Past its limit a caller gets 429
  `rate_limited` with `Retry-After` until its window ends, after a pause of
  `rate_limit_hold_s` (up to half as long again, so that refusals do not go out
  together): a client that ignores `Retry-After` on many sockets is slowed to a
  request per socket per pause instead of keeping the replica busy refusing it (a
  refusal costs the replica about 0.7 ms of CPU, most of it Serve's and uvicorn's). A
  refusal is remembered in the replica until the window ends, so each costs a
  dictionary lookup and no Redis round trip.

Never limited nor shed: the provider's payment notifications (a lost one costs a
customer's money until the poller finds it), and the health probes (they touch
nothing of a caller's; the liveness probe must not touch Redis at all). When Redis
cannot be asked, requests are let in: they then fail or pass on their own merits.

Behind Serve's HAProxy every client reaches the replica from HAProxy's address, so
anonymous callers (token minting, public menus, the pages) share one key there.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import Response
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisClusterStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from domain.errors import DomainError
from serve_app import auth, errors
from serve_app.breakers import RetryLater
from serve_app.services import current
from storage.redis import (
    COMMAND_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    UNAVAILABLE,
    QueueingPool,
    is_cluster,
)
from storage.settings import Settings

log = logging.getLogger(__name__)

NOTIFY_PATH = "/v1/payments/callback"
HEALTH_PREFIX = "/v1/health"
AUTH_PREFIX = "/v1/auth/"
LONG_POLL_PATH = "/v1/sync/events"
READS = frozenset({"GET", "HEAD", "OPTIONS"})

# The limiter's own connections: a burst of checks waits for one of these instead of
# taking the connections the routes' own commands need.
LIMITER_CONNECTIONS = 32
# Prefix of the limiter's keys in Redis (named by `limits`: "<prefix>/<class>/<caller>/...").
KEY_PREFIX = "ratelimit"
# What a limiter that cannot ask Redis sees: the request is let in.
NOT_ASKED: tuple[type[Exception], ...] = (*UNAVAILABLE, RedisError)
# Refusals remembered per replica before expired ones are swept.
REFUSALS_KEPT = 10_000
# A shed request may come back as soon as a slot is likely free again.
SHED_RETRY_AFTER_S = 1
# At most one warning this often while Redis cannot be asked.
WARN_EVERY_S = 10.0


def route_class(method: str, path: str) -> str | None:
    """The limit a request counts against; None for what is never limited nor shed."""
    if path == NOTIFY_PATH or path.startswith(HEALTH_PREFIX):
        return None
    if path.startswith(AUTH_PREFIX):
        return "auth"
    if method in READS:
        return "read"
    if method == "POST" and path == "/v1/orders":
        return "place"
    return "write"


def is_long_poll(path: str, query_string: bytes) -> bool:
    if path != LONG_POLL_PATH:
        return False
    try:
        wait = parse_qs(query_string.decode("latin-1")).get("wait_s", ["0"])[-1]
        return float(wait) > 0
    except ValueError:
        return False


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def address_of(scope: Scope) -> str:
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"


def caller_of(scope: Scope, secret: str) -> str:
    token = auth.bearer(header(scope, b"authorization"))
    if token:
        try:
            who = auth.decode(secret, token)
        except DomainError:
            return address_of(scope)
        return f"{who.role}:{who.sub}"
    return address_of(scope)


class Limiter:
    """Fixed windows per caller and route class, counted in Redis."""

    def __init__(self, settings: Settings) -> None:
        url = settings.effective_redis_url
        storage: Storage
        if is_cluster(url):
            # One key per counter: nothing of a window spans two slots.
            storage = RedisClusterStorage(
                f"async+{url}",
                implementation="redispy",
                key_prefix=KEY_PREFIX,
                max_connections=LIMITER_CONNECTIONS,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=COMMAND_TIMEOUT_S,
            )
        else:
            pool = QueueingPool.from_url(
                url,
                max_connections=LIMITER_CONNECTIONS,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=COMMAND_TIMEOUT_S,
            )
            # `limits` types its options as scalars; the pool is passed on to redis-py.
            options: dict[str, Any] = {"connection_pool": pool}
            storage = RedisStorage(
                f"async+{url}", implementation="redispy", key_prefix=KEY_PREFIX, **options
            )
        self.strategy = FixedWindowRateLimiter(storage)
        self.items: dict[str, list[RateLimitItem]] = {
            "place": parse_many(settings.rate_limit_place),
            "write": parse_many(settings.rate_limit_write),
            "read": parse_many(settings.rate_limit_read),
            "auth": parse_many(settings.rate_limit_auth),
        }
        # (class, caller) -> when (epoch seconds) its exhausted window ends.
        self._refused: dict[tuple[str, str], float] = {}
        self._warned = 0.0

    async def refused_until(self, route: str, caller: str) -> float | None:
        """When (epoch seconds) the caller's exhausted window ends, or None: let in (and
        counted)."""
        now = time.time()
        ends = self._refused.get((route, caller))
        if ends is not None:
            if now < ends:
                return ends
            del self._refused[(route, caller)]
        try:
            for item in self.items[route]:
                if not await self.strategy.hit(item, route, caller):
                    stats = await self.strategy.get_window_stats(item, route, caller)
                    ends = max(stats.reset_time, now + 1)
                    self._remember((route, caller), ends, now)
                    return ends
        except NOT_ASKED as err:
            if now - self._warned > WARN_EVERY_S:
                self._warned = now
                log.warning("rate limits not checked, Redis unavailable (%r)", err)
        return None

    def _remember(self, key: tuple[str, str], ends: float, now: float) -> None:
        if len(self._refused) >= REFUSALS_KEPT:
            self._refused = {k: t for k, t in self._refused.items() if t > now}
            if len(self._refused) >= REFUSALS_KEPT:
                self._refused.clear()
        self._refused[key] = ends


class Gate:
    """One replica's admission state: its limiter and its count of ordinary requests."""

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.jwt_secret
        self.bound = settings.shed_max_in_flight
        self.hold_s = settings.rate_limit_hold_s
        self.limiter = Limiter(settings)
        self.in_flight = 0


def refusal(code: str, message: str, status: int, retry_after_s: int) -> Response:
    response = errors.error_response(code, message, status)
    response.headers["Retry-After"] = str(retry_after_s)
    return response


class Admission:
    """The ASGI middleware; its gate is made on the first request, once the replica's
    services (and so its settings) exist."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gate: Gate | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        route = route_class(scope["method"], path)
        if route is None:
            await self.app(scope, receive, send)
            return
        gate = self.gate
        if gate is None:
            gate = self.gate = Gate(current().settings)
        counted = not is_long_poll(path, scope["query_string"])
        if counted:
            if gate.in_flight >= gate.bound:
                shed = refusal(
                    "service_unavailable",
                    "the replica is at capacity; try again shortly",
                    503,
                    SHED_RETRY_AFTER_S,
                )
                await shed(scope, receive, send)
                return
            gate.in_flight += 1
        try:
            caller = address_of(scope) if route == "auth" else caller_of(scope, gate.secret)
            ends = await gate.limiter.refused_until(route, caller)
            if ends is None:
                await self.app(scope, receive, send)
                return
        finally:
            if counted:
                gate.in_flight -= 1
        # Held apart from the requests being worked on: waiting costs the replica nothing.
        # Not until the window's end, when every held refusal would go out at once and
        # come back at once; spread, so that a flood arriving together leaves apart.
        if gate.hold_s > 0:
            await asyncio.sleep(gate.hold_s * (1 + random.random() / 2))
        wait = max(1, math.ceil(ends - time.time()))
        limited = refusal("rate_limited", "too many requests; slow down", 429, wait)
        await limited(scope, receive, send)


async def on_retry_later(request: Request, err: Exception) -> Response:
    assert isinstance(err, RetryLater)
    response = errors.domain_error_response(err)
    response.headers["Retry-After"] = str(err.retry_after_s)
    return response


def install(app: FastAPI) -> None:
    """Admission in front of every route, and refusals that say when to come back."""
    app.add_middleware(Admission)
    app.add_exception_handler(RetryLater, on_retry_later)
