"""A host's memory follows its active entities: locks and caches are let go."""

from __future__ import annotations

import asyncio
import pickle
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import redis.exceptions
from ray.exceptions import ActorUnavailableError

from actors.host import EntityHost, sendable
from domain.errors import DomainError
from storage.settings import Settings


def host() -> EntityHost:
    # The Redis client connects lazily; nothing here talks to a server.
    return EntityHost(Settings(redis_url="redis://127.0.0.1:1/0", entity_idle_s=60))


async def test_a_lock_lives_only_while_it_is_held_or_awaited() -> None:
    h = host()
    order: list[str] = []

    async def work(name: str, pause: float) -> None:
        async with h.lock("m1"):
            order.append(f"{name} in")
            await asyncio.sleep(pause)
            order.append(f"{name} out")

    await asyncio.gather(work("a", 0.02), work("b", 0.0))
    assert order == ["a in", "a out", "b in", "b out"]  # one at a time, in arrival order
    assert (await h.stats())["locks"] == 0
    for i in range(1000):
        async with h.lock(f"order-{i}"):
            pass
    assert (await h.stats())["locks"] == 0


async def test_idle_entities_are_dropped_from_the_caches() -> None:
    h = host()
    states = h.cache({})
    for entity in ("m1", "m2"):
        async with h.lock(entity):
            states[entity] = object()
    assert h.sweep(now=time.monotonic()) == 0
    async with h.lock("m2"):
        pass
    assert h.sweep(now=time.monotonic() + 61) == 2
    assert states == {}


@dataclass(frozen=True)
class EchoIt:
    entity: str
    value: int


@dataclass(frozen=True)
class Boom:
    pass


@dataclass(frozen=True)
class NotForEcho:
    pass


class Echo(EntityHost):
    inside: ClassVar[list[str]] = []
    overlaps: ClassVar[list[tuple[str, ...]]] = []

    async def receive(self, message: Any) -> Any:
        match message:
            case EchoIt():
                return await self.echo(message.entity, message.value)
            case Boom():
                raise RuntimeError("broken")
        return await super().receive(message)

    async def echo(self, entity: str, value: int) -> tuple[str, int]:
        async with self.lock(entity):
            self.inside.append(entity)
            self.overlaps.append(tuple(sorted(self.inside)))
            await asyncio.sleep(0.01)
            self.inside.remove(entity)
            return entity, value


async def test_batched_messages_run_together_and_fail_alone() -> None:
    h = Echo(Settings(redis_url="redis://127.0.0.1:1/0"))
    replies = await h.handle(
        [EchoIt("a", 1), EchoIt("b", 2), Boom(), NotForEcho(), EchoIt("a", 3)]  # type: ignore[list-item]
    )
    # Different entities ran side by side; the same entity waited its turn.
    assert ("a", "b") in Echo.overlaps
    assert ("a", "a") not in Echo.overlaps
    assert replies[0] == ("a", 1) and replies[1] == ("b", 2) and replies[4] == ("a", 3)
    assert isinstance(replies[2], RuntimeError)
    assert getattr(replies[3], "code", None) == "invalid_request"


async def test_an_entity_with_a_full_queue_refuses_at_once_and_others_do_not_wait() -> None:
    h = EntityHost(Settings(redis_url="redis://127.0.0.1:1/0", entity_queue_limit=3))
    release = asyncio.Event()

    async def slow() -> None:
        async with h.lock("m_slow"):
            await release.wait()

    queued = [asyncio.create_task(slow()) for _ in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(DomainError) as refused:
        h.refuse_if_full("m_slow", "merchant_unavailable")
    assert refused.value.code == "merchant_unavailable"
    h.refuse_if_full("m_other", "merchant_unavailable")  # another merchant is not held up
    release.set()
    await asyncio.gather(*queued)
    h.refuse_if_full("m_slow", "merchant_unavailable")  # drained: taken again


def test_replies_cross_processes_whatever_failed() -> None:
    class Unpicklable(Exception):
        def __reduce__(self) -> Any:
            raise TypeError("cannot pickle a connection")

    replies = sendable(
        [
            {"ok": 1},
            DomainError("out_of_stock", "not enough stock"),
            redis.exceptions.ClusterDownError("the cluster is down"),
            Unpicklable("held a socket"),
            ActorUnavailableError("the merchant's host is restarting", None),
            ValueError("kept as it is"),
        ]
    )
    pickle.dumps(replies)  # one bad reply must not fail the batch
    assert replies[0] == {"ok": 1}
    assert replies[1].code == "out_of_stock"
    assert replies[2].code == "service_unavailable"
    assert isinstance(replies[3], RuntimeError) and "held a socket" in str(replies[3])
    assert replies[4].code == "service_unavailable"  # a 503, as the host's own death is
    assert isinstance(replies[5], ValueError)
