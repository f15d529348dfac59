"""Live events for terminals: one fan-in reader per replica, cursors, resync.

Every event is appended to its inbox stream and announced on `notify:<inbox>` in the
same Lua script. Each Serve replica holds exactly one Pub/Sub connection (the hub)
and subscribes to the channels of the terminals connected to it; no Redis connection
is held per socket. A terminal's feed first reads the stream after its cursor, then
takes live announcements, skipping anything at or before its cursor, so a reconnect
with the last cursor yields exactly what was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from storage import keys
from storage.orders import notify_channel
from storage.redis import RedisClient

log = logging.getLogger(__name__)

RESYNC = "resync"
QUEUE_LIMIT = 1000


def parse_id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def is_stream_id(cursor: str) -> bool:
    ms, _, seq = cursor.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit())


class ResyncRequired(Exception):
    """The terminal's cursor is older than what the stream still holds."""


@dataclass(eq=False)
class Listener:
    """One socket's or long poll's mailbox in the hub."""

    channels: set[str] = field(default_factory=set)
    queue: asyncio.Queue[tuple[str, str]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT)
    )

    def offer(self, item: tuple[str, str]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            # A slow consumer: drop the backlog and let it re-read its stream.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait((RESYNC, ""))


class Hub:
    """The replica's single Pub/Sub reader, fanning announcements out to listeners."""

    def __init__(self, redis_url: str) -> None:
        self._client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        self._pubsub: Any = None
        self._by_channel: dict[str, set[Listener]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._subscribing = asyncio.Lock()

    @property
    def connections(self) -> int:
        return sum(len(v) for v in self._by_channel.values())

    async def _ensure(self) -> None:
        if self._task is None or self._task.done():
            self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            self._ready.clear()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def join(self, listener: Listener, channel: str) -> None:
        await self._ensure()
        # One at a time: concurrent first SUBSCRIBEs would each take their own connection.
        async with self._subscribing:
            members = self._by_channel.get(channel)
            if members is None:
                await self._pubsub.subscribe(channel)
                members = self._by_channel[channel] = set()
                self._ready.set()
            members.add(listener)
            listener.channels.add(channel)

    async def leave(self, listener: Listener, channel: str | None = None) -> None:
        for ch in [channel] if channel else list(listener.channels):
            listener.channels.discard(ch)
            members = self._by_channel.get(ch)
            if members is None:
                continue
            members.discard(listener)
            if not members:
                del self._by_channel[ch]
                async with self._subscribing:
                    if ch not in self._by_channel:
                        with contextlib.suppress(RedisConnectionError):
                            await self._pubsub.unsubscribe(ch)

    async def _run(self) -> None:
        while True:
            if not self._by_channel:
                self._ready.clear()
                await self._ready.wait()
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisConnectionError, OSError) as err:
                log.warning("sync hub lost Redis (%s); resubscribing", err)
                await self._reconnect()
                continue
            except RuntimeError:
                # The first SUBSCRIBE is still on its way; the connection is not set yet.
                await asyncio.sleep(0.01)
                continue
            if message is None or message.get("type") != "message":
                continue
            stream_id, _, payload = message["data"].partition(" ")
            for listener in list(self._by_channel.get(message["channel"], ())):
                listener.offer((stream_id, payload))

    async def _reconnect(self) -> None:
        await asyncio.sleep(0.5)
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        channels = list(self._by_channel)
        try:
            if channels:
                await self._pubsub.subscribe(*channels)
        except (RedisConnectionError, OSError):
            return
        # Announcements may have been lost while disconnected: everyone re-reads.
        for members in self._by_channel.values():
            for listener in members:
                listener.offer((RESYNC, ""))


class Feed:
    """One terminal's ordered view of its inbox stream, from a cursor on."""

    def __init__(self, hub: Hub, redis: RedisClient, inbox: str, cursor: str | None) -> None:
        self.hub = hub
        self.redis = redis
        self.inbox = inbox
        self.cursor = cursor
        self.listener = Listener()

    async def __aenter__(self) -> Feed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.hub.leave(self.listener)

    async def subscribe(self) -> None:
        """Take live announcements; read the backlog after this so nothing falls between."""
        await self.hub.join(self.listener, notify_channel(self.inbox))

    async def check_retained(self) -> None:
        """Refuse a cursor from before what the stream still holds.

        Trimming keeps no record of the last id it removed, so a cursor older than the
        first retained entry of a trimmed stream counts as a gap, even in the rare case
        that only the terminal's own last event was trimmed; a resync is always safe.
        """
        if not self.cursor or self.cursor in ("0", "0-0"):
            return
        try:
            info = await self.redis.xinfo_stream(self.inbox)
        except Exception:  # no stream yet: nothing was ever trimmed
            return
        if info["entries-added"] <= info["length"]:
            return
        first = info.get("first-entry")
        boundary = first[0] if first else info["last-generated-id"]
        position = parse_id(self.cursor)
        if position < parse_id(boundary) and not (first is None and position == parse_id(boundary)):
            raise ResyncRequired

    async def backlog(self, limit: int = 500) -> list[dict[str, Any]]:
        start = f"({self.cursor}" if self.cursor else "-"
        entries = await self.redis.xrange(self.inbox, start, "+", count=limit)
        events = [{"cursor": entry_id, **orjson.loads(f["e"])} for entry_id, f in entries]
        if events:
            self.cursor = events[-1]["cursor"]
        return events

    async def live(self, timeout_s: float | None) -> list[dict[str, Any]]:
        """Wait for announcements; return the new events (re-reading the stream on resync)."""
        try:
            first = await asyncio.wait_for(self.listener.queue.get(), timeout_s)
        except TimeoutError:
            return []
        items = [first]
        while not self.listener.queue.empty():
            items.append(self.listener.queue.get_nowait())
        events: list[dict[str, Any]] = []
        for stream_id, payload in items:
            if stream_id == RESYNC:
                return events + await self.backlog()
            if stream_id.startswith("menu:"):
                events.append(orjson.loads(payload))
                continue
            if self.cursor and parse_id(stream_id) <= parse_id(self.cursor):
                continue
            events.append({"cursor": stream_id, **orjson.loads(payload)})
            self.cursor = stream_id
        return events


async def snapshot(redis: RedisClient, inbox: str, role: str, sub: str) -> dict[str, Any]:
    """What a terminal needs after a gap: its recent orders as they are now, and a fresh cursor."""
    last = await redis.xrevrange(inbox, "+", "-", count=1)
    cursor = last[0][0] if last else "0-0"
    orders: list[dict[str, Any]] = []
    if role != "admin":
        ids = await redis.zrevrange(keys.orders_of(role, sub), 0, 49)
        if ids:
            async with redis.pipeline(transaction=False) as pipe:
                for order_id in ids:
                    pipe.hget(keys.order(order_id), "json")
                orders = [orjson.loads(raw) for raw in await pipe.execute() if raw]
    return {"type": "resync_required", "cursor": cursor, "data": {"orders": orders}}


def menu_channel(merchant_id: str) -> str:
    return f"notify:menu:{merchant_id}"
