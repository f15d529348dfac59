"""The batcher sends at once when idle and gathers calls while busy, failing them together."""

from __future__ import annotations

import asyncio

import pytest

from storage.batching import Batcher


async def test_idle_calls_go_at_once_and_busy_ones_are_gathered() -> None:
    sent: list[list[int]] = []
    release = asyncio.Event()

    async def send(items: list[int]) -> list[int]:
        sent.append(items)
        await release.wait()
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(send, max_in_flight=1)
    calls = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    assert sent == [[0]]  # the first went alone, the rest wait for the slot
    release.set()
    assert await asyncio.gather(*calls) == [0, 10, 20, 30, 40]
    assert sent == [[0], [1, 2, 3, 4]]


async def test_a_failed_batch_fails_every_call_in_it() -> None:
    async def send(items: list[int]) -> list[int]:
        raise ConnectionError("host restarting")

    batcher: Batcher[int, int] = Batcher(send)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    with pytest.raises(ConnectionError):
        await batcher.submit(9)


async def test_batches_are_capped() -> None:
    sizes: list[int] = []

    async def send(items: list[int]) -> list[int]:
        sizes.append(len(items))
        await asyncio.sleep(0.001)
        return items

    batcher: Batcher[int, int] = Batcher(send, max_in_flight=1, max_batch=10)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(45))) == list(range(45))
    assert max(sizes) <= 10
    assert sum(sizes) == 45


async def test_one_failed_call_fails_only_its_own_caller() -> None:
    async def send(items: list[int]) -> list[object]:
        return [ValueError(f"bad {i}") if i == 2 else i for i in items]

    batcher: Batcher[int, object] = Batcher(send, max_in_flight=1)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
    assert [r if not isinstance(r, ValueError) else str(r) for r in results] == [0, 1, "bad 2", 3]
