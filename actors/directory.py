"""Which host actor holds which entity, the messages entities take, and typed references.

Entities are spread over N host actors per kind by rendezvous hashing, so adding a
host moves only the entities that land on it. Hosts are named, detached actors in
namespace `o2o` that restart forever; a restarted host loads its entities from Redis
on their next message.

Another process reaches an entity through a typed reference,
`directory.merchant(merchant_id).act(order_id, command, caller)`: each method builds
one message and sends it, by default as a letter in the command mailbox of the
entity's shard (`actors/mailroom.py`: read by whichever host owns the shard, on
whatever node); with `entity_transport = "ray"`, as a Ray actor call to the host, with
whatever else is going to the same host (a Ray actor call costs far more CPU than the
work of most messages). The `ray.remote` registry that creates the hosts is apart
(`actors/registry.py`), so nothing here imports a host.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError

from actors.mailroom import Mailroom
from domain import commands as c
from domain import reactions as r
from domain.dispatch import Dispatch
from domain.errors import DomainError
from domain.geo import zone_of
from domain.reactions import Refund, Settle
from storage import keys
from storage.batching import Batcher
from storage.layout import Layout, LayoutStore
from storage.mailboxes import mail
from storage.provider import Checkout
from storage.settings import Settings

NAMESPACE = "o2o"
KINDS = ("merchant", "rider_zone", "payment")

# What a host answers to a message: the entity's answer, or the refusal.
Reply = dict[str, Any] | DomainError


def configured_hosts(kind: str, settings: Settings) -> int:
    """The host count a deployment asks for (0: size it from the cluster)."""
    return {
        "merchant": settings.merchant_hosts,
        "rider_zone": settings.rider_zone_hosts,
        "payment": settings.payment_hosts,
    }[kind]


# What only the API replicas read: a deployment that changes no more than these does
# not replace the hosts (the host counts are the layout's, `storage/layout.py`).
NOT_FOR_HOSTS = frozenset(
    {
        "merchant_hosts",
        "rider_zone_hosts",
        "payment_hosts",
        "ray_address",
        "ray_num_cpus",
        "ray_dashboard",
        "http_host",
        "http_port",
        "front_door",
        "access_log",
        "haproxy_maxconn",
        "serve_throughput_optimized",
        "serve_http_metrics",
        "merchant_call_timeout_s",
        "merchant_breaker_failures",
        "merchant_breaker_open_s",
    }
)
NOT_FOR_HOSTS_PREFIXES = ("api_", "rate_limit_", "shed_", "trusted_")


def settings_digest(settings: Settings) -> str:
    """What a host was deployed with, as far as hosts read it: a deployment whose digest
    differs replaces the hosts, so new settings reach them."""
    wanted = {
        name: value
        for name, value in settings.model_dump(mode="json").items()
        if name not in NOT_FOR_HOSTS and not name.startswith(NOT_FOR_HOSTS_PREFIXES)
    }
    canonical = repr(sorted(wanted.items())).encode()
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def _weight(i: int, key: str) -> int:
    digest = hashlib.blake2b(f"{i}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def host_index(entity_id: str, hosts: int) -> int:
    return max(range(hosts), key=lambda i: _weight(i, entity_id))


def shard_for(kind: str, entity_id: str) -> int:
    """The shard an entity belongs to (`storage/keys.py`): a payment is in the shard its
    order's id names, every other entity in the one its id hashes to."""
    return keys.order_shard(entity_id) if kind == "payment" else keys.shard_of(entity_id)


def host_of_shard(kind: str, shard: int, layout: Layout) -> int:
    """The host that owns a shard: its pinned host, or else the rendezvous winner among
    the hosts nobody pinned a shard to (so a pin moves that one shard and no other, and
    adding a host moves only the shards it wins)."""
    pinned = layout.pins.get(shard)
    if pinned is not None and pinned < layout.count:
        return pinned
    dedicated = {i for s, i in layout.pins.items() if i < layout.count}
    candidates = [i for i in range(layout.count) if i not in dedicated] or list(range(layout.count))
    return max(candidates, key=lambda i: _weight(i, f"{kind}:{shard}"))


def shards_of_host(kind: str, index: int, layout: Layout) -> list[int]:
    return [s for s in range(keys.SHARDS) if host_of_shard(kind, s, layout) == index]


def destination(intent: r.Intent, zone_resolution: int) -> tuple[str, str]:
    """The entity that acts on a follow-up: (kind, entity id)."""
    match intent:
        case r.FindRider():
            return "rider_zone", zone_of(intent.request.pickup, zone_resolution)
        case r.Refund() | r.Settle():
            return "payment", intent.order_id
        case r.OfferWaiting() | r.ForgetRider():
            return "rider_zone", intent.zone
    return "merchant", intent.merchant_id


def checkout_for(settings: Settings) -> Checkout:
    """The pay-link signer every process builds the same from the settings."""
    return Checkout(
        settings.payment_secret,
        settings.sandbox_url,
        settings.notify_url,
        settings.payment_timeout_s,
    )


def host_name(kind: str, index: int) -> str:
    return f"{kind}-host-{index}"


# -- messages to merchants ---------------------------------------------------------


@dataclass(frozen=True)
class Onboard:
    profile: dict[str, Any]


@dataclass(frozen=True)
class SetMenuItem:
    merchant_id: str
    item: dict[str, Any]
    stock: int


@dataclass(frozen=True)
class Place:
    """A new order: the request body with the order id and the customer."""

    request: dict[str, Any]


@dataclass(frozen=True)
class Act:
    merchant_id: str
    order_id: str
    command: c.Command
    caller: tuple[str, str]


# -- messages to rider zones -------------------------------------------------------


@dataclass(frozen=True)
class SetStatus:
    zone: str
    rider_id: str
    online: bool
    lat: float
    lng: float


@dataclass(frozen=True)
class Locate:
    zone: str
    rider_id: str
    lat: float
    lng: float


@dataclass(frozen=True)
class AnswerOffer:
    zone: str
    offer_id: str
    rider_id: str
    accept: bool


@dataclass(frozen=True)
class FindRider:
    zone: str
    request: Dispatch


# -- messages to payment shards (and `Refund` and `Settle`, the follow-ups of orders) ---


@dataclass(frozen=True)
class Notify:
    body: bytes
    signature: str | None
    # The order the notification names, as the replica read it: only for routing (the
    # host trusts nothing of the body before checking its signature).
    order_id: str = ""


@dataclass(frozen=True)
class Reconcile:
    day: date


@dataclass(frozen=True)
class AskRefund:
    """A refund an operator asks for: weighed by the refund-share rule first
    (`domain/risk.py`), where an order's follow-up `Refund` is not."""

    order_id: str
    amount_fen: int
    refund_no: str
    reason: str
    by: str


@dataclass(frozen=True)
class ReviewRefund:
    """Operations decide a refund held for review."""

    order_id: str
    refund_no: str
    review_id: str
    approve: bool
    by: str


Message = (
    Onboard
    | SetMenuItem
    | Place
    | Act
    | SetStatus
    | Locate
    | AnswerOffer
    | FindRider
    | Notify
    | Refund
    | Settle
    | Reconcile
    | AskRefund
    | ReviewRefund
)

# Batches of mixed messages to one host in flight at once: a batch answers when its
# slowest message does (a dispatch, a provider call), so mixed messages keep a few
# going rather than queue behind one. Placements, all alike, go one batch at a time:
# one large batch cost less than two half-size ones (README, Performance).
MESSAGES_IN_FLIGHT = 4
PLACEMENTS_IN_FLIGHT = 1


# How long a process routes by the host layout it read before reading it again, and
# how often a message is sent again to the shard's new owner after "entity_moved"
# (backing off from 0.1 s: the new owner may take a second to see the layout too).
LAYOUT_REFRESH_S = 1.0
MOVED_RETRIES = 7
MOVED = "entity_moved"


def _deliverer(handle: ActorHandle) -> Callable[[list[Message]], Awaitable[list[Reply]]]:
    async def deliver(batch: list[Message]) -> list[Reply]:
        replies: list[Reply] = await handle.handle.remote(batch)
        return replies

    return deliver


def still_moving() -> DomainError:
    return DomainError("service_unavailable", "the entity is moving to another host")


def moved_pause(attempt: int) -> float:
    return min(0.1 * 2**attempt, 1.0)


def moved(reply: object) -> bool:
    return isinstance(reply, DomainError) and reply.code == MOVED


class Directory:
    """Handles to host actors, looked up once per process and kept, the batchers that
    carry messages to them, and the host layout (`storage/layout.py`) they route by.

    The layout is read from Redis at most once a second; a host that no longer owns
    the entity's shard answers `entity_moved`, and the message goes again to the new
    owner, so a change of the layout loses no message. Without a Redis client (unit
    tests) the settings' host counts are the layout.
    """

    def __init__(self, settings: Settings, redis: Any = None) -> None:
        self.settings = settings
        self._handles: dict[str, ActorHandle] = {}
        self._batchers: dict[tuple[str, int], Batcher[Message, Reply]] = {}
        self.layouts = {kind: Layout(max(1, configured_hosts(kind, settings))) for kind in KINDS}
        self._layout_store = LayoutStore(redis) if redis is not None else None
        self._layout_read_at = -LAYOUT_REFRESH_S
        self._layout_reading: asyncio.Task[None] | None = None
        # Messages by the shards' command mailboxes (`actors/mailroom.py`), or Ray calls.
        self.mailroom = (
            Mailroom(redis, settings.mailbox_reply_timeout_s)
            if redis is not None and settings.entity_transport == "mailbox"
            else None
        )

    def merchant(self, merchant_id: str) -> MerchantRef:
        return MerchantRef(self, merchant_id)

    def rider_zone(self, zone: str) -> RiderZoneRef:
        return RiderZoneRef(self, zone)

    def payment(self, order_id: str) -> PaymentRef:
        return PaymentRef(self, order_id)

    def host_of(self, kind: str, entity_id: str) -> int:
        """The host that owns the entity's shard, and so takes every message to it."""
        return host_of_shard(kind, shard_for(kind, entity_id), self.layouts[kind])

    async def refresh(self, force: bool = False) -> None:
        """Read the layout again if it is older than a second (or at once with `force`);
        concurrent callers share one read."""
        if self._layout_store is None:
            return
        if not force and time.monotonic() - self._layout_read_at < LAYOUT_REFRESH_S:
            return
        if self._layout_reading is None or self._layout_reading.done():
            self._layout_reading = asyncio.ensure_future(self._read_layout())
        await asyncio.shield(self._layout_reading)

    async def refresh_quietly(self, force: bool = False) -> None:
        # The layout could not be read (Redis is failing over): route by the last one;
        # a host that no longer owns the shard says so.
        with contextlib.suppress(Exception):
            await self.refresh(force)

    async def _read_layout(self) -> None:
        assert self._layout_store is not None
        self.layouts = await self._layout_store.read_all(KINDS)
        self._layout_read_at = time.monotonic()

    async def _handle(self, name: str) -> ActorHandle:
        handle = self._handles.get(name)
        if handle is None:
            handle = await asyncio.to_thread(ray.get_actor, name, NAMESPACE)
            self._handles[name] = handle
        return handle

    async def send(
        self, kind: str, entity_id: str, message: Message, in_flight: int = MESSAGES_IN_FLIGHT
    ) -> Reply:
        """Deliver a message to the entity's host with whatever else is going there."""
        for attempt in range(MOVED_RETRIES):
            await self.refresh_quietly(force=attempt > 0)
            if self.mailroom is not None:
                reply = await self.by_mailbox(kind, entity_id, message)
                if not moved(reply):
                    if isinstance(reply, DomainError):
                        raise reply
                    return reply
                await asyncio.sleep(moved_pause(attempt))
                continue
            name = host_name(kind, self.host_of(kind, entity_id))
            batcher = self._batchers.get((name, in_flight))
            if batcher is None:
                handle = await self._handle(name)

                async def deliver(
                    batch: list[Message], handle: ActorHandle = handle
                ) -> list[Reply]:
                    replies: list[Reply] = await handle.handle.remote(batch)
                    return replies

                batcher = self._batchers[(name, in_flight)] = Batcher(
                    deliver, max_in_flight=in_flight
                )
            try:
                reply = await batcher.submit(message)
            except DomainError as err:
                # Replies that are errors come back raised.
                reply = err
            except ActorDiedError:
                # The host was replaced (a deployment with new settings): the name now
                # belongs to a new actor.
                self._forget(name)
                if attempt + 1 == MOVED_RETRIES:
                    raise
                continue
            if not moved(reply):
                if isinstance(reply, DomainError):
                    raise reply
                return reply
            await asyncio.sleep(moved_pause(attempt))
        raise still_moving()

    async def by_mailbox(
        self, kind: str, entity_id: str, message: Message, timeout_s: float | None = None
    ) -> Reply:
        """The message as a letter to its entity's shard, its reply awaited for
        `timeout_s` (the mailroom's own bound: then 503) once Redis has the letter. An
        exception the host raised on it is raised here, as a Ray call raises it."""
        assert self.mailroom is not None
        shard = shard_for(kind, entity_id)
        if timeout_s is None:
            reply = await self.mailroom.send(kind, shard, message)
        else:
            letter = await self.mailroom.post(kind, shard, message, timeout_s)
            reply = await self.mailroom.wait(letter, timeout_s)
        if isinstance(reply, BaseException) and not isinstance(reply, DomainError):
            raise reply
        return reply  # type: ignore[no-any-return]

    def _forget(self, name: str) -> None:
        self._handles.pop(name, None)
        for key in [k for k in self._batchers if k[0] == name]:
            del self._batchers[key]

    def post(self, intents: list[r.Intent]) -> list[tuple[str, bytes]]:
        """The mailbox entries that carry these follow-ups to the entities acting on them."""
        posted = []
        for intent in intents:
            kind, entity_id = destination(intent, self.settings.zone_resolution)
            posted.append(mail(kind, shard_for(kind, entity_id), r.to_wire(intent)))
        return posted

    async def all_hosts(self) -> list[ActorHandle]:
        await self.refresh(force=True)
        found = []
        for kind in KINDS:
            for i in range(self.layouts[kind].count):
                found.append(await self._handle(host_name(kind, i)))
        return found


class MerchantRef:
    def __init__(self, directory: Directory, merchant_id: str) -> None:
        self.directory = directory
        self.merchant_id = merchant_id

    async def onboard(self, profile: dict[str, Any]) -> Reply:
        return await self.directory.send("merchant", self.merchant_id, Onboard(profile))

    async def set_menu_item(self, item: dict[str, Any], stock: int) -> Reply:
        message = SetMenuItem(self.merchant_id, item, stock)
        return await self.directory.send("merchant", self.merchant_id, message)

    async def place(self, request: dict[str, Any]) -> Reply:
        return await self.directory.send(
            "merchant", self.merchant_id, Place(request), PLACEMENTS_IN_FLIGHT
        )

    async def act(self, order_id: str, command: c.Command, caller: tuple[str, str]) -> Reply:
        message = Act(self.merchant_id, order_id, command, caller)
        return await self.directory.send("merchant", self.merchant_id, message)


class RiderZoneRef:
    def __init__(self, directory: Directory, zone: str) -> None:
        self.directory = directory
        self.zone = zone

    async def _send(self, message: Message) -> Reply:
        return await self.directory.send("rider_zone", self.zone, message)

    async def set_status(self, rider_id: str, online: bool, lat: float, lng: float) -> Reply:
        return await self._send(SetStatus(self.zone, rider_id, online, lat, lng))

    async def locate(self, rider_id: str, lat: float, lng: float) -> Reply:
        return await self._send(Locate(self.zone, rider_id, lat, lng))

    async def answer(self, offer_id: str, rider_id: str, accept: bool) -> Reply:
        return await self._send(AnswerOffer(self.zone, offer_id, rider_id, accept))

    async def find_rider(self, request: Dispatch) -> Reply:
        return await self._send(FindRider(self.zone, request))


class PaymentRef:
    def __init__(self, directory: Directory, order_id: str) -> None:
        self.directory = directory
        self.order_id = order_id

    async def _send(self, message: Message) -> Reply:
        return await self.directory.send("payment", self.order_id, message)

    async def notify(self, body: bytes, signature: str | None) -> Reply:
        return await self._send(Notify(body, signature, self.order_id))

    async def refund(self, amount_fen: int, refund_no: str, reason: str, by: str) -> Reply:
        """A refund operator `by` asks for (it may be held for review)."""
        return await self._send(AskRefund(self.order_id, amount_fen, refund_no, reason, by))

    async def review_refund(self, refund_no: str, review_id: str, approve: bool, by: str) -> Reply:
        return await self._send(ReviewRefund(self.order_id, refund_no, review_id, approve, by))

    async def settle(self) -> Reply:
        return await self._send(Settle(self.order_id))

    async def reconcile(self, day: date) -> Reply:
        return await self._send(Reconcile(day))
