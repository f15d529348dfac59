"""Which host actor holds which entity, the messages entities take, and typed references.

Entities are spread over N host actors per kind by rendezvous hashing, so adding a
host moves only the entities that land on it. Hosts are named, detached actors in
namespace `o2o` that restart forever; a restarted host loads its entities from Redis
on their next message.

Another process reaches an entity through a typed reference,
`directory.merchant(merchant_id).act(order_id, command, caller)`: each method builds
one message and sends it with whatever else is going to the same host (a Ray actor
call costs far more CPU than the work of most messages). The `ray.remote` registry
that creates the hosts is apart (`actors/registry.py`), so nothing here imports a host.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Any

import ray
from ray.actor import ActorHandle

from domain import commands as c
from domain import reactions as r
from domain.dispatch import Dispatch
from domain.errors import DomainError
from domain.geo import zone_of
from domain.reactions import Refund, Settle
from storage import keys
from storage.batching import Batcher
from storage.mailboxes import mail
from storage.provider import Checkout
from storage.settings import Settings

NAMESPACE = "o2o"
KINDS = ("merchant", "rider_zone", "payment")

# What a host answers to a message: the entity's answer, or the refusal.
Reply = dict[str, Any] | DomainError


def host_count(kind: str, settings: Settings) -> int:
    return {
        "merchant": settings.merchant_hosts,
        "rider_zone": settings.rider_zone_hosts,
        "payment": settings.payment_hosts,
    }[kind]


def host_index(entity_id: str, hosts: int) -> int:
    def weight(i: int) -> int:
        digest = hashlib.blake2b(f"{i}:{entity_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")

    return max(range(hosts), key=weight)


def shard_for(kind: str, entity_id: str) -> int:
    """The shard an entity belongs to (`storage/keys.py`): a payment is in the shard its
    order's id names, every other entity in the one its id hashes to."""
    return keys.order_shard(entity_id) if kind == "payment" else keys.shard_of(entity_id)


def host_of_shard(kind: str, shard: int, hosts: int) -> int:
    return host_index(f"{kind}:{shard}", hosts)


def host_of(kind: str, entity_id: str, settings: Settings) -> int:
    """The host that owns the entity's shard, and so takes every message to the entity."""
    return host_of_shard(kind, shard_for(kind, entity_id), host_count(kind, settings))


def shards_of_host(kind: str, index: int, settings: Settings) -> list[int]:
    hosts = host_count(kind, settings)
    return [s for s in range(keys.SHARDS) if host_of_shard(kind, s, hosts) == index]


def destination(intent: r.Intent, zone_resolution: int) -> tuple[str, str]:
    """The entity that acts on a follow-up: (kind, entity id)."""
    match intent:
        case r.FindRider():
            return "rider_zone", zone_of(intent.request.pickup, zone_resolution)
        case r.Refund() | r.Settle():
            return "payment", intent.order_id
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


@dataclass(frozen=True)
class Nudge:
    """A rider of the zone may have become free: offer the waiting orders now."""

    zone: str


@dataclass(frozen=True)
class Forget:
    """A rider crossed into another zone: this one drops it from memory."""

    zone: str
    rider_id: str


# -- messages to payment shards (and `Refund` and `Settle`, the follow-ups of orders) ---


@dataclass(frozen=True)
class Notify:
    body: bytes
    signature: str | None


@dataclass(frozen=True)
class Reconcile:
    day: date


Message = (
    Onboard
    | SetMenuItem
    | Place
    | Act
    | SetStatus
    | Locate
    | AnswerOffer
    | FindRider
    | Nudge
    | Forget
    | Notify
    | Refund
    | Settle
    | Reconcile
)

# Batches of mixed messages to one host in flight at once: a batch answers when its
# slowest message does (a dispatch, a provider call), so mixed messages keep a few
# going rather than queue behind one. Placements, all alike, go one batch at a time:
# one large batch cost less than two half-size ones (README, Performance).
MESSAGES_IN_FLIGHT = 4
PLACEMENTS_IN_FLIGHT = 1


class Directory:
    """Handles to host actors, looked up once per process and kept, and the batchers
    that carry messages to them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._handles: dict[str, ActorHandle] = {}
        self._batchers: dict[tuple[str, int], Batcher[Message, Reply]] = {}

    def merchant(self, merchant_id: str) -> MerchantRef:
        return MerchantRef(self, merchant_id)

    def rider_zone(self, zone: str) -> RiderZoneRef:
        return RiderZoneRef(self, zone)

    def payment(self, order_id: str) -> PaymentRef:
        return PaymentRef(self, order_id)

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
        name = host_name(kind, host_of(kind, entity_id, self.settings))
        batcher = self._batchers.get((name, in_flight))
        if batcher is None:
            handle = await self._handle(name)

            async def deliver(batch: list[Message]) -> list[Reply]:
                replies: list[Reply] = await handle.handle.remote(batch)
                return replies

            batcher = self._batchers[(name, in_flight)] = Batcher(deliver, max_in_flight=in_flight)
        return await batcher.submit(message)

    def post(self, intents: list[r.Intent]) -> list[tuple[str, bytes]]:
        """The mailbox entries that carry these follow-ups to the entities acting on them."""
        posted = []
        for intent in intents:
            kind, entity_id = destination(intent, self.settings.zone_resolution)
            posted.append(mail(kind, shard_for(kind, entity_id), r.to_wire(intent)))
        return posted

    async def all_hosts(self) -> list[ActorHandle]:
        found = []
        for kind in KINDS:
            for i in range(host_count(kind, self.settings)):
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

    async def nudge(self) -> Reply:
        return await self._send(Nudge(self.zone))

    async def forget(self, rider_id: str) -> Reply:
        return await self._send(Forget(self.zone, rider_id))


class PaymentRef:
    def __init__(self, directory: Directory, order_id: str) -> None:
        self.directory = directory
        self.order_id = order_id

    async def _send(self, message: Message) -> Reply:
        return await self.directory.send("payment", self.order_id, message)

    async def notify(self, body: bytes, signature: str | None) -> Reply:
        return await self._send(Notify(body, signature))

    async def refund(self, amount_fen: int, refund_no: str, reason: str) -> Reply:
        return await self._send(Refund(self.order_id, amount_fen, refund_no, reason))

    async def settle(self) -> Reply:
        return await self._send(Settle(self.order_id))

    async def reconcile(self, day: date) -> Reply:
        return await self._send(Reconcile(day))
