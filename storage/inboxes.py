"""Terminals' inbox streams: appending events, reading them from a cursor, and the live hub.

Every event is appended to its inbox stream and announced on the stream's channel in
the same script. Each process that serves terminals holds exactly one Pub/Sub
connection (the `Hub`) and subscribes to the channels of the terminals connected to it;
no Redis connection is held per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from storage import keys
from storage.redis import UNAVAILABLE, RedisClient, Scripts

log = logging.getLogger(__name__)

# What a listener receives instead of announcements it may have missed: re-read the stream.
RESYNC = "resync"
QUEUE_LIMIT = 1000
# After losing Redis the hub tries again at once-ish, then backs off to this.
RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 5.0
LOST: tuple[type[BaseException], ...] = (*UNAVAILABLE, OSError)


def parse_id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def is_stream_id(cursor: str) -> bool:
    ms, _, seq = cursor.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit())


class InboxStore:
    def __init__(
        self, client: RedisClient, scripts: Scripts, maxlen: int, retention_s: int
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.maxlen = maxlen
        self.retention_ms = retention_s * 1000

    def _args(self, event: dict[str, Any]) -> list[Any]:
        return [self.maxlen, self.retention_ms, orjson.dumps(event), keys.notify_channel("")]

    async def tell(self, parties: list[tuple[str, str]], event: dict[str, Any]) -> None:
        """Append an event to the inbox of each `(role, id)` (operations: `("ops", ...)`)."""
        inboxes = [keys.inbox(role, who) for role, who in parties]
        await self.scripts.append_event(keys=inboxes, args=self._args(event))

    async def queue_tell(
        self, pipe: Any, parties: list[tuple[str, str]], event: dict[str, Any]
    ) -> None:
        """Add `tell` to a MULTI pipeline, so it commits together with the state it reports."""
        inboxes = [keys.inbox(role, who) for role, who in parties]
        await self.scripts.append_event(keys=inboxes, args=self._args(event), client=pipe)

    async def after(self, inbox: str, cursor: str | None, limit: int) -> list[dict[str, Any]]:
        """The events after `cursor` (all retained ones without it), oldest first."""
        start = f"({cursor}" if cursor else "-"
        entries = await self.client.xrange(inbox, start, "+", count=limit)
        return [{"cursor": entry_id, **orjson.loads(f["e"])} for entry_id, f in entries]

    async def last_id(self, inbox: str) -> str:
        last = await self.client.xrevrange(inbox, "+", "-", count=1)
        return str(last[0][0]) if last else "0-0"

    async def trimmed_before(self, inbox: str, cursor: str) -> bool:
        """Whether events after `cursor` may have been trimmed away.

        Trimming keeps no record of the last id it removed, so a cursor older than the
        first retained entry of a trimmed stream counts as a gap, even in the rare case
        that only the terminal's own last event was trimmed; a resync is always safe.
        """
        try:
            info = await self.client.xinfo_stream(inbox)
        except Exception:  # no stream yet: nothing was ever trimmed
            return False
        if info["entries-added"] <= info["length"]:
            return False
        first = info.get("first-entry")
        boundary = first[0] if first else info["last-generated-id"]
        position = parse_id(cursor)
        return position < parse_id(boundary) and not (
            first is None and position == parse_id(boundary)
        )


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
    """The process's single Pub/Sub reader, fanning announcements out to listeners."""

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
                        with contextlib.suppress(*UNAVAILABLE):
                            await self._pubsub.unsubscribe(ch)

    async def _run(self) -> None:
        while True:
            if not self._by_channel:
                self._ready.clear()
                await self._ready.wait()
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except LOST as err:
                log.warning("sync hub lost Redis (%r); subscribing again", err)
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
        """Subscribe to every channel again, trying with back-off until Redis answers.

        Announcements may have been lost meanwhile, so then every listener re-reads its
        stream from its cursor: an open socket gets exactly what it missed."""
        delay = RECONNECT_FIRST_S
        while True:
            await asyncio.sleep(delay)
            async with self._subscribing:
                with contextlib.suppress(Exception):
                    await self._pubsub.aclose()
                self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                channels = list(self._by_channel)
                try:
                    if channels:
                        await self._pubsub.subscribe(*channels)
                except LOST:
                    delay = min(delay * 2, RECONNECT_MAX_S)
                    continue
            break
        log.info("sync hub subscribed again to %d channels", len(channels))
        for members in self._by_channel.values():
            for listener in members:
                listener.offer((RESYNC, ""))
