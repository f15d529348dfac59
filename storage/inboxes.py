"""Terminals' inbox streams: appending events, reading them from a cursor, and the live hub.

Every event is appended to its inbox stream and announced on the stream's channel in
the same script. Each process that serves terminals holds exactly one Pub/Sub
connection (the `Hub`) and subscribes to the channels of the terminals connected to it;
no Redis connection is held per socket. Events that carry personal text are sealed on
the stream and in its announcement, and opened here as a feed reads them (`decode`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from storage import keys
from storage.redis import UNAVAILABLE, RedisClient, Scripts, connect, queue_eval
from storage.sealing import Sealer
from storage.settings import DEV_DATA_KEY

log = logging.getLogger(__name__)

# What a listener receives instead of announcements it may have missed: re-read the stream.
RESYNC = "resync"
QUEUE_LIMIT = 1000
# After losing Redis the hub tries again at once-ish, then backs off to this.
RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 5.0
LOST: tuple[type[BaseException], ...] = (*UNAVAILABLE, OSError)
# How long a new subscription may take to be confirmed before a socket goes on anyway.
CONFIRM_S = 2.0


def parse_id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def is_stream_id(cursor: str) -> bool:
    ms, _, seq = cursor.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit())


class InboxStore:
    def __init__(
        self,
        client: RedisClient,
        scripts: Scripts,
        maxlen: int,
        retention_s: int,
        sealer: Sealer | None = None,
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.maxlen = maxlen
        self.retention_ms = retention_s * 1000
        self.sealer = sealer or Sealer(DEV_DATA_KEY)

    def decode(self, payload: str) -> dict[str, Any]:
        """An event as a stream entry or an announcement holds it, opened for its terminal."""
        event: dict[str, Any] = self.sealer.open_event(orjson.loads(payload))
        return event

    def _args(self, event: dict[str, Any]) -> list[Any]:
        return [self.maxlen, self.retention_ms, orjson.dumps(event), keys.notify_channel("")]

    async def tell(self, parties: list[tuple[str, str]], event: dict[str, Any]) -> None:
        """Append an event that no state change carries (a rider's position, an order
        waiting for a rider) to the inbox of each `(role, id)`, each inbox in its own
        slot: one script per inbox, in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            for role, who in parties:
                queue_eval(
                    pipe, self.scripts.append_event, [keys.inbox(role, who)], self._args(event)
                )
            await pipe.execute()

    async def after(self, inbox: str, cursor: str | None, limit: int) -> list[dict[str, Any]]:
        """The events after `cursor` (all retained ones without it), oldest first."""
        start = f"({cursor}" if cursor else "-"
        entries = await self.client.xrange(inbox, start, "+", count=limit)
        return [{"cursor": entry_id, **self.decode(f["e"])} for entry_id, f in entries]

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
        self._client = connect(redis_url)
        self._pubsub: Any = None
        self._by_channel: dict[str, set[Listener]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._subscribing = asyncio.Lock()
        self._initialized = False
        # Subscriptions sent and not yet confirmed by the server.
        self._joining: dict[str, asyncio.Future[None]] = {}

    @property
    def connections(self) -> int:
        return sum(len(v) for v in self._by_channel.values())

    async def _ensure(self) -> None:
        if self._task is None or self._task.done():
            self._pubsub = self._client.pubsub()
            self._ready.clear()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def join(self, listener: Listener, channel: str) -> None:
        if not self._initialized:
            # A cluster client learns its slots' nodes here; Pub/Sub needs one to talk to.
            await self._client.initialize()
            self._initialized = True
        await self._ensure()
        # One at a time: concurrent first SUBSCRIBEs would each take their own connection.
        async with self._subscribing:
            members = self._by_channel.get(channel)
            if members is None:
                confirmed = asyncio.ensure_future(self._confirmed(channel))
                await asyncio.sleep(0)
                await self._pubsub.subscribe(channel)
                members = self._by_channel[channel] = set()
                self._ready.set()
                await confirmed
            members.add(listener)
            listener.channels.add(channel)

    async def _confirmed(self, channel: str) -> None:
        """Wait until the server confirms the subscription, so a backlog read next
        cannot miss an event announced in between (on a cluster the announcement travels
        from the stream's node to the subscriber's over the cluster bus)."""
        waiter = self._joining[channel] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(waiter, CONFIRM_S)
        except TimeoutError:
            log.warning("sync hub: %s was not confirmed in %.0f s", channel, CONFIRM_S)
        finally:
            self._joining.pop(channel, None)

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
            if message is not None and message.get("type") == "subscribe":
                waiter = self._joining.get(message.get("channel") or "")
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
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
                self._pubsub = self._client.pubsub()
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
