"""Which Ray actor hosts which entity, and the options every host actor runs with.

Entities are spread over N host actors per kind by rendezvous hashing, so adding a
host moves only the entities that land on it. Hosts are named, detached actors in
namespace `o2o` that restart forever; a restarted host loads its entities from Redis
on their next message.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import ray
from ray.actor import ActorHandle

from actors.batching import Batcher
from cluster.settings import Settings

NAMESPACE = "o2o"
KINDS = ("merchant", "rider_zone", "payment")


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


def host_name(kind: str, index: int) -> str:
    return f"{kind}-host-{index}"


def _actor_class(kind: str) -> Any:
    # Imported here so that importing placement stays cheap for the HTTP layer.
    from actors.merchant import MerchantHost
    from actors.payment_shard import PaymentShardHost
    from actors.rider_zone import RiderZoneHost

    cls = {"merchant": MerchantHost, "rider_zone": RiderZoneHost, "payment": PaymentShardHost}[kind]
    return ray.remote(cls)


def _options(kind: str, index: int) -> dict[str, Any]:
    return {
        "name": host_name(kind, index),
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        # Host methods are not all safe to run twice; callers retry with their own keys.
        "max_task_retries": 0,
        # Hosts wait on Redis and on each other, they do not compute: no CPU reservation.
        "num_cpus": 0,
        "max_concurrency": 10_000,
        # Every order makes several actor calls; recording each in the GCS costs CPU on
        # the hot path and fills the GCS's memory up to its cap. Serve does the same
        # for its replicas.
        "enable_task_events": False,
    }


def start_hosts(settings: Settings) -> list[ActorHandle]:
    """Create every host actor that does not exist yet (the driver calls this once)."""
    handles = []
    for kind in KINDS:
        cls = _actor_class(kind)
        for i in range(host_count(kind, settings)):
            handles.append(cls.options(**_options(kind, i)).remote(settings, i))
    return handles


CALLS_IN_FLIGHT = 4


class Directory:
    """Handles to host actors, looked up once per process and kept."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._handles: dict[str, ActorHandle] = {}
        self._batchers: dict[tuple[str, str], Batcher[Any, Any]] = {}

    async def host(self, kind: str, entity_id: str) -> ActorHandle:
        name = host_name(kind, host_index(entity_id, host_count(kind, self.settings)))
        handle = self._handles.get(name)
        if handle is None:
            handle = await asyncio.to_thread(ray.get_actor, name, NAMESPACE)
            self._handles[name] = handle
        return handle

    async def batched(
        self, kind: str, entity_id: str, method: str, in_flight: int = 1
    ) -> Batcher[Any, Any]:
        """Calls to `method` (which takes and returns lists) of this entity's host, coalesced,
        with at most `in_flight` batches on their way at once."""
        name = host_name(kind, host_index(entity_id, host_count(kind, self.settings)))
        batcher = self._batchers.get((name, method))
        if batcher is None:
            remote = getattr(await self.host(kind, entity_id), method)

            async def send(items: list[Any]) -> list[Any]:
                results: list[Any] = await remote.remote(items)
                return results

            batcher = self._batchers[(name, method)] = Batcher(send, max_in_flight=in_flight)
        return batcher

    async def call(self, kind: str, entity_id: str, method: str, *args: Any) -> Any:
        """`method(*args)` on the entity's host, sent with whatever else is going there."""
        # A batch answers when its slowest call does (a dispatch, a provider call), so
        # mixed calls keep a few batches going rather than queue behind one.
        batcher = await self.batched(kind, entity_id, "calls", in_flight=CALLS_IN_FLIGHT)
        return await batcher.submit((method, args))

    async def all_hosts(self) -> list[ActorHandle]:
        found = []
        for kind in KINDS:
            for i in range(host_count(kind, self.settings)):
                name = host_name(kind, i)
                if name not in self._handles:
                    self._handles[name] = await asyncio.to_thread(ray.get_actor, name, NAMESPACE)
                found.append(self._handles[name])
        return found
