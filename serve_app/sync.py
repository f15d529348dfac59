"""Live events for terminals: cursors, backlog then live announcements, resync.

A terminal's feed first reads its inbox stream after its cursor, then takes live
announcements from the replica's hub, skipping anything at or before its cursor, so a
reconnect with the last cursor yields exactly what was missed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from domain.errands import shown_to
from storage import keys
from storage.inboxes import RESYNC, Hub, InboxStore, Listener, parse_id
from storage.orders import OrderStore

# The recent orders a terminal is sent, as they are now, after a gap in its stream.
RESYNC_ORDERS = 50


class ResyncRequired(Exception):
    """The terminal's cursor is older than what the stream still holds."""


class Feed:
    """One terminal's ordered view of its inbox stream, from a cursor on."""

    def __init__(self, hub: Hub, inboxes: InboxStore, inbox: str, cursor: str | None) -> None:
        self.hub = hub
        self.inboxes = inboxes
        self.inbox = inbox
        self.cursor = cursor
        self.listener = Listener()

    async def __aenter__(self) -> Feed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.hub.leave(self.listener)

    async def subscribe(self) -> None:
        """Take live announcements; read the backlog after this so nothing falls between."""
        await self.hub.join(self.listener, keys.notify_channel(self.inbox))

    async def view(self, merchant_id: str) -> None:
        """Hear the menu changes of the merchant the terminal is looking at (one at a time)."""
        prefix = keys.menu_channel("")
        for channel in [c for c in self.listener.channels if c.startswith(prefix)]:
            await self.hub.leave(self.listener, channel)
        await self.hub.join(self.listener, keys.menu_channel(merchant_id))

    async def check_retained(self) -> None:
        """Refuse a cursor from before what the stream still holds."""
        if not self.cursor or self.cursor in ("0", "0-0"):
            return
        if await self.inboxes.trimmed_before(self.inbox, self.cursor):
            raise ResyncRequired

    async def backlog(self, limit: int = 500) -> list[dict[str, Any]]:
        events = await self.inboxes.after(self.inbox, self.cursor, limit)
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
            events.append({"cursor": stream_id, **self.inboxes.decode(payload)})
            self.cursor = stream_id
        return events


async def snapshot(
    inboxes: InboxStore, orders: OrderStore, inbox: str, role: str, sub: str
) -> dict[str, Any]:
    """What a terminal needs after a gap: its recent orders as they are now, and a fresh cursor."""
    cursor = await inboxes.last_id(inbox)
    recent: list[dict[str, Any]] = []
    if role != "admin":
        ids = await orders.ids_of(role, sub, 0, RESYNC_ORDERS)
        recent = [shown_to(order, role) for order in await orders.many(ids)]
    return {"type": "resync_required", "cursor": cursor, "data": {"orders": recent}}
