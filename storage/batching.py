"""Coalesce many small actor calls into few large ones.

A Ray actor call costs far more CPU than the work of placing one order, so callers
on the hot path send lists. The batcher sends at once when nothing is in flight,
and while batches are in flight it gathers what arrives and sends it as one call
when a slot frees up: no added wait when idle, large batches under load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[list[R]]],
        max_in_flight: int = 1,
        max_batch: int = 64,
    ) -> None:
        self._send = send
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._pump()
        return await future

    def _pump(self) -> None:
        while self._waiting and self._in_flight < self._max_in_flight:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._deliver(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._send([item for item, _ in batch])
        except BaseException as err:  # every caller of the batch gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                # One call of the batch that raised fails its own caller only.
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            self._pump()
