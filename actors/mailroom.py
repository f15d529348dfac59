"""Messages to entities through their shards' command mailboxes, and their replies.

A sender (an API replica, or a host writing to an entity of another kind) appends each
message as one entry, a *letter*, to the command mailbox of the entity's shard
(`storage/keys.py: commands`), with a request id, the sender's reply channel and a
deadline, and rings the mailbox's bell; the letters posted in one turn of the event
loop leave in one pipeline. The host that owns the shard reads its command mailboxes
in batches through the consumer group, runs each letter as a task of its own under
its entity's lock (so one slow entity holds up nobody else's letters), and once the
effect is stored acknowledges the letters and publishes their replies on their
senders' channels, a batch's in one pipeline (`actors/host.py`).

Why not a Ray actor call for each: one costs 0.7-0.9 ms of CPU for the caller and as
much for the host whatever it carries; a letter costs 0.25-0.35 ms for both sides and
Redis together at 16 in flight (`make bench-hop`, README), and does not care which
node the host is on.

What a crash costs: a host that dies with letters read and not acknowledged leaves
them pending under its name; its restart (or the shard's next owner, which takes them
over) reads them again and applies those whose deadline has not passed. So a letter
is applied at least once while its sender waits, and entities apply letters as they
apply follow-ups: an order by its id and version, a payment by its intent, a refund
by its number. A sender without a reply after `mailbox_reply_timeout_s` answers 503
(a retry with the same Idempotency-Key returns what was done); a letter read after
its deadline is dropped unapplied. Replies are not kept: the request waiting for one
lives only in its sender's memory, and dies with it.

Letters are pickled: Redis is inside the platform's trust boundary as Ray's object
store is for Ray calls (whoever can write to it can rewrite every order already).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import pickle
import time
import uuid
from dataclasses import dataclass
from typing import Any

from domain.errors import DomainError
from storage import keys
from storage.mailboxes import MailboxStore

log = logging.getLogger(__name__)

# How long a sender waits for its reply channel's subscription before the first letter.
SUBSCRIBE_WAIT_S = 5.0
# Back-off of the reply listener after Redis failed under it.
LISTEN_RETRY_FIRST_S = 0.1
LISTEN_RETRY_MAX_S = 2.0


def encode(value: object) -> str:
    return base64.b64encode(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)).decode()


def decode(payload: str) -> Any:
    return pickle.loads(base64.b64decode(payload))


@dataclass(frozen=True)
class Opened:
    """A letter as its host reads it."""

    request_id: str
    reply_to: str
    deadline: float
    message: Any


def open_letter(payload: str) -> Opened:
    request_id, reply_to, deadline, message = decode(payload)
    return Opened(str(request_id), str(reply_to), float(deadline), message)


@dataclass
class Posted:
    """A letter in its mailbox: its id, whether Redis has it, and its reply to come."""

    request_id: str
    sent: asyncio.Future[None]
    reply: asyncio.Future[Any]


def unanswered() -> DomainError:
    return DomainError("service_unavailable", "the entity did not answer in time")


class Mailroom:
    """One process's letters: posting them, and hearing their replies on its own channel.

    One listener task per process holds a Pub/Sub subscription to the process's reply
    channel and resolves the waiting senders' futures; after Redis failed under it, it
    subscribes again (replies published meanwhile are lost: their senders time out)."""

    def __init__(self, client: Any, timeout_s: float) -> None:
        self.client = client
        self.store = MailboxStore(client)
        self.timeout_s = timeout_s
        self.channel = keys.replies(uuid.uuid4().hex)
        self._ids = itertools.count()
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._outgoing: list[tuple[Posted, str, str]] = []
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Event | None = None

    async def send(self, kind: str, shard: int, message: object) -> Any:
        """Post a message to the shard's command mailbox and wait for its reply (an
        entity's answer, a refusal, or the exception it raised); 503 when none comes."""
        letter = await self.post(kind, shard, message)
        try:
            return await self.wait(letter, self.timeout_s)
        except TimeoutError:
            return unanswered()

    async def post(
        self, kind: str, shard: int, message: object, timeout_s: float | None = None
    ) -> Posted:
        """The message in the shard's command mailbox: returns once Redis has it (or
        raises what Redis raised), with the letter to `wait` on for `timeout_s` at most
        (the mailroom's bound by default). A letter its host reads after that is dropped
        unapplied: its sender has answered 503, and that 503 then means "not done"
        unless the letter was already under way."""
        await self._listen()
        loop = asyncio.get_running_loop()
        posted = Posted(f"{next(self._ids):x}", loop.create_future(), loop.create_future())
        self._waiting[posted.request_id] = posted.reply
        deadline = time.time() + (self.timeout_s if timeout_s is None else timeout_s)
        body = encode((posted.request_id, self.channel, deadline, message))
        self._outgoing.append((posted, keys.commands(kind, shard), body))
        if not self._flushing:
            # Whatever else is posted in this turn of the loop leaves in the same pipeline.
            self._flushing = True
            loop.call_soon(self._flush)
        try:
            await posted.sent
        except BaseException:
            self._waiting.pop(posted.request_id, None)
            raise
        return posted

    async def wait(self, posted: Posted, timeout_s: float) -> Any:
        """The reply to a posted letter; TimeoutError after `timeout_s`."""
        try:
            return await asyncio.wait_for(asyncio.shield(posted.reply), timeout_s)
        finally:
            self._waiting.pop(posted.request_id, None)

    def _flush(self) -> None:
        self._flushing = False
        batch, self._outgoing = self._outgoing, []
        if batch:
            # Each batch on its own: one stuck on a dead server holds up no later one.
            task = asyncio.get_running_loop().create_task(self._post(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _post(self, batch: list[tuple[Posted, str, str]]) -> None:
        try:
            await self.store.post_letters([(stream, body) for _, stream, body in batch])
        except Exception as err:
            for posted, _, _ in batch:
                if not posted.sent.done():
                    posted.sent.set_exception(err)
        else:
            for posted, _, _ in batch:
                if not posted.sent.done():
                    posted.sent.set_result(None)

    async def _listen(self) -> None:
        if self._subscribed is None:
            self._subscribed = asyncio.Event()
        if self._listening is None or self._listening.done():
            self._listening = asyncio.get_running_loop().create_task(self._hear())
        if not self._subscribed.is_set():
            # A reply published before the subscription would be lost.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_WAIT_S)

    async def _hear(self) -> None:
        assert self._subscribed is not None
        delay = LISTEN_RETRY_FIRST_S
        while True:
            pubsub = None
            try:
                # A cluster client learns its nodes here; Pub/Sub needs one to talk to.
                await self.client.initialize()
                pubsub = self.client.pubsub()
                await pubsub.subscribe(self.channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message.get("type") == "subscribe":
                        self._subscribed.set()
                        delay = LISTEN_RETRY_FIRST_S
                    elif message.get("type") == "message":
                        self._deliver(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self._subscribed.clear()
                log.warning("mailroom: the reply channel failed (%r); again in %.1f s", err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LISTEN_RETRY_MAX_S)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()

    def _deliver(self, payload: str) -> None:
        try:
            replies = decode(payload)
        except Exception:
            log.exception("mailroom: a reply could not be read")
            return
        for request_id, reply in replies:
            future = self._waiting.get(request_id)
            if future is not None and not future.done():
                future.set_result(reply)

    async def close(self) -> None:
        for task in (self._listening, *self._tasks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


def reply_payload(replies: list[tuple[str, object]]) -> str:
    """What a host publishes on a sender's channel: (request id, reply) pairs."""
    return encode(replies)
