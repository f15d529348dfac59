"""The host layout: how many host actors each entity kind has, which shards are pinned to
a host of their own, and how far each host has got in handing over shards.

This record is the one source of truth every process routes by (API replicas, hosts,
the command line): a host count held in each process's own settings could give a shard
two owners or none the moment two processes disagree. Every change bumps the kind's
epoch; a host that has let go of the shards it lost under an epoch, or has come up
under it, marks the epoch as handed over, and a host that gained shards starts on them
only once every other host has (`actors/host.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from storage import keys
from storage.redis import RedisClient, _source


@dataclass(frozen=True)
class Layout:
    """One kind's hosts: `count` of them (indexes 0..count-1), `pins` shard -> host index
    for shards given a host of their own, `epoch` bumped on every change, and `previous`
    the count before the last change."""

    count: int
    epoch: int = 0
    previous: int = 0
    pins: dict[int, int] = field(default_factory=dict)

    def hosts_involved(self) -> range:
        """Every host that may have owned a shard under this epoch or the one before."""
        return range(max(self.count, self.previous))


def _pins_wire(pins: dict[int, int]) -> str:
    return orjson.dumps({str(s): i for s, i in sorted(pins.items())}).decode()


def parse_layout(row: list[str | None], fallback: int) -> Layout:
    count, epoch, previous, pins = row
    if count is None:
        return Layout(fallback, 0, fallback)
    parsed = orjson.loads(pins or "{}")
    return Layout(
        int(count), int(epoch or 0), int(previous or count), {int(s): i for s, i in parsed.items()}
    )


class LayoutStore:
    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._set = client.register_script(_source("set_layout"))

    async def read(self, kind: str, fallback: int = 1) -> Layout:
        """The kind's layout; `fallback` hosts when nobody has written one yet."""
        row = await self.client.hmget(keys.host_layout(kind), "count", "epoch", "previous", "pins")
        return parse_layout(row, fallback)

    async def read_all(self, kinds: tuple[str, ...], fallback: int = 1) -> dict[str, Layout]:
        async with self.client.pipeline(transaction=False) as pipe:
            for kind in kinds:
                pipe.hmget(keys.host_layout(kind), "count", "epoch", "previous", "pins")
            rows = await pipe.execute()
        return {kind: parse_layout(row, fallback) for kind, row in zip(kinds, rows, strict=True)}

    async def write(
        self, kind: str, count: int, pins: dict[int, int] | None = None, keep: bool = False
    ) -> Layout:
        """Set the kind's host count and pins (a new epoch if either changed); with `keep`,
        only when the kind has no layout yet."""
        if count < 1:
            raise ValueError("a kind needs at least one host")
        wire = _pins_wire(pins or {})
        row = await self._set(
            keys=[keys.host_layout(kind)], args=[count, wire, "keep" if keep else ""]
        )
        return parse_layout(row, count)

    async def handed_over(self, kind: str) -> dict[int, int]:
        """Per host index, the last epoch it has handed over under."""
        marks = await self.client.hgetall(keys.host_handovers(kind))
        return {int(index): int(epoch) for index, epoch in marks.items()}

    async def mark_handed_over(self, kind: str, index: int, epoch: int) -> None:
        await self.client.hset(keys.host_handovers(kind), str(index), str(epoch))
