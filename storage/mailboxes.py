"""Entity shards' mailboxes: Redis streams read by their owning host through a consumer group.

A follow-up that must happen (dispatch an order, refund it, give its coupon back, free
its rider, settle it) is an entry in the mailbox of the shard of the entity that acts on
it, written in the same script or transaction as the change that causes it. The owning
host reads its shards' mailboxes in batches and acknowledges an entry only after its
effect is stored; entries it read and did not acknowledge (it died, or Redis failed
under it) stay pending under its name and are read again, at its restart or on its next
pass over what it left pending. So each follow-up is applied at least once, and the
receivers apply them idempotently (by order version or business key): exactly once in
effect.

Each shard also has a command mailbox (`keys.commands`): the messages whose sender
waits for a reply, people's commands from the API replicas and requests between
entities, one *letter* each (`actors/mailroom.py`). Same consumer group, same bells,
same takeover when the shard changes hands; its owner answers each letter on its own
(the reply on the sender's channel) rather than a batch at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import RedisCluster
from redis.exceptions import ResponseError

from storage import keys
from storage.redis import RedisClient

GROUP = "hosts"
# Entries read per mailbox and call.
BATCH = 256


@dataclass(frozen=True)
class Entry:
    stream: str
    entry_id: str
    message: dict[str, Any]


@dataclass(frozen=True)
class Letter:
    """An entry of a shard's command mailbox: one message whose sender waits for the
    reply (`actors/mailroom.py` writes and reads its payload)."""

    stream: str
    entry_id: str
    payload: str


def mail(kind: str, shard: int, message: dict[str, Any]) -> tuple[str, bytes]:
    """An entry for the mailbox of `kind`'s shard, as a commit script takes it."""
    return keys.mailbox(kind, shard), orjson.dumps(message)


class MailboxStore:
    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)

    async def open(self, streams: list[str]) -> None:
        """Make each mailbox and its consumer group if they are not there yet."""
        for stream in streams:
            try:
                await self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise

    async def read(self, streams: list[str], consumer: str, pending: bool = False) -> list[Entry]:
        """New follow-ups for `consumer`, or with `pending` those it read before and did
        not acknowledge."""
        return [
            Entry(stream, entry_id, orjson.loads(fields["m"]))
            for stream, entry_id, fields in await self._rows(streams, consumer, pending)
        ]

    async def read_letters(
        self, streams: list[str], consumer: str, pending: bool = False
    ) -> list[Letter]:
        """New letters in these command mailboxes for `consumer` (or, with `pending`,
        those it read before and did not acknowledge)."""
        return [
            Letter(stream, entry_id, fields["c"])
            for stream, entry_id, fields in await self._rows(streams, consumer, pending)
        ]

    async def _rows(
        self, streams: list[str], consumer: str, pending: bool
    ) -> list[tuple[str, str, dict[str, str]]]:
        """Each mailbox is in its own slot, so each is read on its own (one round trip
        for all); nothing blocks: the mailboxes' bells say when to read."""
        if not streams:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xreadgroup(GROUP, consumer, {stream: "0" if pending else ">"}, count=BATCH)
            answers = await pipe.execute()
        return [
            (stream, entry_id, fields)
            for answer in answers
            for stream, rows in answer or []
            for entry_id, fields in rows
            # A pending entry deleted meanwhile comes back without fields.
            if fields
        ]

    async def post_letters(self, letters: Sequence[tuple[str, str]]) -> None:
        """Append letters to their command mailboxes and ring each mailbox's bell, in one
        round trip (a bell follows its stream's entries on the same pipeline)."""
        bells = [(keys.bell(stream), "1") for stream in sorted({s for s, _ in letters})]
        async with self.client.pipeline(transaction=False) as pipe:
            for stream, payload in letters:
                pipe.xadd(stream, {"c": payload})
            await self._execute_and_publish(pipe, bells)

    async def post(self, posted: Sequence[tuple[str, bytes]]) -> None:
        """Append follow-ups (`mail` entries) that no commit carries to their mailboxes and
        ring the bells, in one round trip: each is applied once its host reads it."""
        bells = [(keys.bell(stream), "1") for stream in sorted({s for s, _ in posted})]
        async with self.client.pipeline(transaction=False) as pipe:
            self.queue_post(pipe, posted)
            await self._execute_and_publish(pipe, bells)

    async def answer(self, letters: Sequence[Letter], replies: Sequence[tuple[str, str]]) -> None:
        """Acknowledge letters whose effect is stored, and send their replies, in one round
        trip: a reply lost with Redis is a sender's timeout, never a second effect."""
        async with self.client.pipeline(transaction=False) as pipe:
            self._queue_done(pipe, letters)
            await self._execute_and_publish(pipe, replies)

    async def _execute_and_publish(self, pipe: Any, messages: Sequence[tuple[str, str]]) -> None:
        # A cluster's pipelines refuse PUBLISH (it has no slot): there each goes on its
        # own, after the pipeline, side by side.
        if not self.cluster:
            for channel, payload in messages:
                pipe.publish(channel, payload)
        await pipe.execute()
        if self.cluster and messages:
            await asyncio.gather(*(self.client.publish(c, p) for c, p in messages))

    async def take_over(self, streams: list[str], consumer: str) -> int:
        """Make every entry pending in these mailboxes `consumer`'s, whoever read it
        before (the host that owned the shard until now has handed it over, or died);
        returns how many. The consumer then reads them as its own pending entries."""
        taken = 0
        for stream in streams:
            start = "0-0"
            for _ in range(10_000):
                answer = await self.client.xautoclaim(
                    stream,
                    GROUP,
                    consumer,
                    min_idle_time=0,
                    start_id=start,
                    count=BATCH,
                    justid=True,
                )
                if len(answer) < 2:
                    break
                start, claimed = answer[0], answer[1]
                taken += len(claimed)
                if start in ("0-0", b"0-0"):
                    break
        return taken

    async def done(self, entries: list[Entry]) -> None:
        """Acknowledge entries whose effect is stored."""
        if not entries:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            self._queue_done(pipe, entries)
            await pipe.execute()

    @staticmethod
    def _queue_done(pipe: Any, entries: Sequence[Entry | Letter]) -> None:
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        for stream, ids in by_stream.items():
            pipe.xack(stream, GROUP, *ids)
            # Acknowledged entries are of no further use: keep the streams short.
            pipe.xdel(stream, *ids)

    async def doorbell(self, streams: list[str]) -> Doorbell:
        bell = Doorbell(self.client.pubsub(ignore_subscribe_messages=True))
        await bell.pubsub.subscribe(*(keys.bell(stream) for stream in streams))
        return bell

    def streams(self, kind: str, shards: list[int]) -> list[str]:
        return [keys.mailbox(kind, shard) for shard in shards]

    def command_streams(self, kind: str, shards: list[int]) -> list[str]:
        return [keys.commands(kind, shard) for shard in shards]

    def queue_post(self, pipe: Any, posted: Sequence[tuple[str, bytes]]) -> None:
        """Add entries to a MULTI pipeline, so they commit with the change that causes them."""
        for stream, payload in posted:
            pipe.xadd(stream, {"m": payload})

    async def ring(self, streams: Sequence[str]) -> None:
        """Ring the bells of mailboxes that just got entries (after their transaction:
        a bell has no slot). A bell missed costs its host a second, never the entry."""
        for stream in sorted(set(streams)):
            await self.client.publish(keys.bell(stream), "1")


@dataclass
class Doorbell:
    """The bells of a host's mailboxes: which of them got entries since the last look."""

    pubsub: Any

    async def rung(self, timeout_s: float) -> set[str]:
        """The mailboxes rung, waiting up to `timeout_s` for the first (empty: none)."""
        rung: set[str] = set()
        message = await self.pubsub.get_message(timeout=timeout_s)
        while message is not None:
            if message.get("type") == "message":
                rung.add(message["channel"].removeprefix(keys.BELL_PREFIX))
            if len(rung) > 4 * BATCH:
                break
            message = await self.pubsub.get_message(timeout=0)
        return rung

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
