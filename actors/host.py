"""What every entity host shares: settings, one Redis client and its stores, one lock per
entity, and the one entry point other processes call, `handle(messages)`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from ray.exceptions import ActorUnavailableError, RayActorError

from actors.directory import Directory, Message, Reply, host_name, shards_of_host
from domain import reactions as r
from domain.errors import DomainError
from storage import keys
from storage.faults import FaultStore
from storage.inboxes import InboxStore
from storage.mailboxes import BATCH as MAIL_BATCH
from storage.mailboxes import Doorbell, Entry, MailboxStore
from storage.metrics import MetricsStore
from storage.orders import OrderStore
from storage.outbox import Relay
from storage.redis import UNAVAILABLE, ScriptPipeline, Scripts, connect, ping
from storage.sealing import Sealer
from storage.settings import Settings

log = logging.getLogger(__name__)

# How often a host reads again what it left pending, and how long it waits after its
# mailboxes could not be read.
PENDING_PASS_S = 10.0
MAIL_RETRY_S = 1.0
# How long the mail reader waits for a bell before it looks at every mailbox anyway.
MAIL_IDLE_S = 1.0
# How often a host relays what its shards' outboxes still hold.
OUTBOX_SWEEP_S = 1.0


def sendable(replies: list[Any]) -> list[Any]:
    """Replies as they can cross to another process. A store that is down is a 503 to
    its sender; any other exception goes back as its text, since some (a cluster
    client's, holding its connection) cannot be pickled, and one that cannot would
    fail the whole batch."""
    sent: list[Any] = []
    for reply in replies:
        if isinstance(reply, UNAVAILABLE):
            reply = DomainError("service_unavailable", "the platform's store is unavailable")
        elif isinstance(reply, RayActorError | ActorUnavailableError):
            # Another entity's host this one waited on is restarting: a 503 for the caller.
            reply = DomainError("service_unavailable", "an entity's host is restarting")
        elif isinstance(reply, BaseException) and not isinstance(reply, DomainError):
            try:
                pickle.dumps(reply)
            except Exception:
                reply = RuntimeError(f"{type(reply).__name__}: {reply}")
        sent.append(reply)
    return sent


class EntityHost:
    """Hosts many entities of one kind in one async process.

    Each entity has its own `asyncio.Lock`, its serial mailbox: messages to one entity
    run one at a time while other entities on the same host proceed. Nothing that
    awaits another entity's host is done while holding a lock that the other side
    could be waiting for. A lock lives only while somebody holds or waits for it, and
    an entity's cached state is dropped after `entity_idle_s` without messages (it is
    reloaded from Redis on the next one), so a host's memory follows its active
    entities, not every entity it ever saw.

    The follow-ups other entities post to this host's shards (`storage/mailboxes.py`)
    are read by one loop, started with the host, and applied by `react`; each is
    acknowledged once its effect is stored, so one that a crash interrupts is applied
    again by the restarted host.
    """

    # The entity kind hosted, which names the mailboxes read and the consumer.
    KIND: ClassVar[str] = ""

    def __init__(self, settings: Settings, index: int = 0) -> None:
        self.settings = settings
        self.index = index
        self.redis = connect(settings.effective_redis_url)
        self.scripts = Scripts(self.redis)
        self.directory = Directory(settings)
        self.metrics = MetricsStore(self.redis)
        self.inboxes = InboxStore(
            self.redis, self.scripts, settings.inbox_maxlen, settings.inbox_retention_s
        )
        self.relay = Relay(
            self.redis, self.scripts, settings.inbox_maxlen, settings.inbox_retention_s
        )
        self.orders = OrderStore(
            self.redis,
            self.scripts,
            settings.inbox_maxlen,
            settings.inbox_retention_s,
            settings.payment_poll_s,
            ScriptPipeline(
                self.redis, settings.redis_wait_replicas, settings.redis_wait_timeout_ms
            ),
            self.relay,
            Sealer(settings.data_key),
        )
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._caches: list[dict[str, Any]] = []
        self._touched: dict[str, float] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.mailboxes = MailboxStore(self.redis)
        self.faults = FaultStore(self.redis, settings.fault_injection)
        self.name = host_name(self.KIND or "entity", index)
        self.shards = shards_of_host(self.KIND, index, settings) if self.KIND else []
        self._mail: asyncio.Task[None] | None = None
        # The host's own background loops (deadlines, expiries, polls), for `close`.
        self._loops: list[asyncio.Task[None] | None] = []

    def start(self) -> None:
        """Start what runs from the host's start: reading its mailboxes. Ray runs an async
        actor's `__init__` on its loop; outside one (a test) nothing starts."""
        if not self.KIND:
            return
        with contextlib.suppress(RuntimeError):
            self._mail = asyncio.get_running_loop().create_task(self._read_mail())
        # What a host that died between a commit and its relay left in the outboxes.
        outboxes = [keys.outbox(self.KIND, shard) for shard in self.shards]
        self.every(OUTBOX_SWEEP_S, "relaying outboxes", lambda: self.relay.sweep(outboxes))

    def every(self, interval_s: float, what: str, step: Callable[[], Awaitable[object]]) -> None:
        """Run `step` every `interval_s` from the host's start (a failed step is logged and
        the next one runs): the host's watch over due times in Redis."""

        async def watch() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await step()
                except Exception:
                    log.exception("%s: %s failed", self.name, what)

        with contextlib.suppress(RuntimeError):
            self._loops.append(asyncio.get_running_loop().create_task(watch()))

    async def _read_mail(self) -> None:
        streams = self.mailboxes.streams(self.KIND, self.shards)
        # First what this host read before and did not finish (it died, or Redis failed
        # under it), then new entries as the mailboxes' bells ring (all of them now and
        # then, in case a bell was missed), and now and then again what is left pending.
        pending, since_pass = True, time.monotonic()
        bell: Doorbell | None = None
        to_read = streams
        while True:
            try:
                if bell is None:
                    await self.mailboxes.open(streams)
                    bell = await self.mailboxes.doorbell(streams)
                    to_read = streams
                entries = await self.mailboxes.read(
                    streams if pending else to_read, self.name, pending=pending
                )
                done = await self.apply_mail(entries)
                if pending and len(done) < max(len(entries), 1):
                    pending, since_pass = False, time.monotonic()
                elif not pending and time.monotonic() - since_pass > PENDING_PASS_S:
                    pending = True
                per_stream = Counter(entry.stream for entry in entries)
                full = sorted(s for s, n in per_stream.items() if n >= MAIL_BATCH)
                if full or pending:
                    to_read = full or streams
                    continue
                rung = await bell.rung(MAIL_IDLE_S)
                to_read = sorted(rung) if rung else streams
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning(
                    "%s: reading the mailboxes failed (%r); again in a moment", self.name, err
                )
                if bell is not None:
                    await bell.close()
                    bell = None
                await asyncio.sleep(MAIL_RETRY_S)

    async def apply_mail(self, entries: list[Entry]) -> list[Entry]:
        """Apply entries side by side; acknowledge and return those whose effect is stored
        (a refusal is a final answer too: the follow-up had nothing left to do)."""
        results = await asyncio.gather(
            *(self.react(r.from_wire(entry.message)) for entry in entries),
            return_exceptions=True,
        )
        done = []
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, DomainError):
                log.info("%s: follow-up %s refused: %s", self.name, entry.message, result)
            elif isinstance(result, BaseException):
                log.warning("%s: follow-up %s failed: %r", self.name, entry.message, result)
                continue
            done.append(entry)
        await self.mailboxes.done(done)
        return done

    async def react(self, intent: r.Intent) -> Reply | None:
        """Apply one follow-up; each kind of host says which it takes."""
        return DomainError("invalid_request", f"{type(intent).__name__} is not for this host")

    async def close(self) -> None:
        """Stop the host's loops and let its connections go (tests; Ray kills hosts)."""
        for task in (self._mail, *self._loops):
            if task is not None:
                task.cancel()
        running = [t for t in (self._mail, *self._loops) if t is not None]
        if running:
            await asyncio.wait(running, timeout=1.0)
        await self.redis.aclose()

    async def crash_if_armed(self, fault: str) -> None:
        """Tests only: die here, at once, as a killed process would."""
        if await self.faults.take(fault):
            log.error("%s: fault %s armed, crashing", self.name, fault)
            os._exit(17)

    def refuse_if_full(self, entity_id: str, code: str) -> None:
        """Refuse a person's message to an entity whose queue is full (its bounded
        mailbox): at once, with `code` (a 503 with Retry-After), before it waits."""
        entry = self._locks.get(entity_id)
        if entry is not None and entry[1][0] >= self.settings.entity_queue_limit:
            raise DomainError(
                code, "too many requests are waiting for this entity; try again shortly"
            )

    @asynccontextmanager
    async def lock(self, entity_id: str) -> AsyncIterator[None]:
        """Hold the entity's mailbox; the lock is forgotten when nobody needs it."""
        entry = self._locks.get(entity_id)
        if entry is None:
            entry = self._locks[entity_id] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        if self._caches:
            self._touched[entity_id] = time.monotonic()
            self._ensure_sweeper()
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[entity_id]

    def cache(self, store: dict[str, Any]) -> dict[str, Any]:
        """Register a per-entity cache that the idle sweep may empty."""
        self._caches.append(store)
        return store

    def _ensure_sweeper(self) -> None:
        if self._caches and (self._sweeper is None or self._sweeper.done()):
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, self.settings.entity_idle_s))
            self.sweep()

    def sweep(self, now: float | None = None) -> int:
        """Drop the cached state of entities idle for `entity_idle_s`; returns how many."""
        cutoff = (now if now is not None else time.monotonic()) - self.settings.entity_idle_s
        idle = [e for e, at in self._touched.items() if at < cutoff and e not in self._locks]
        for entity_id in idle:
            del self._touched[entity_id]
            for store in self._caches:
                store.pop(entity_id, None)
        return len(idle)

    async def stats(self) -> dict[str, int]:
        return {
            "locks": len(self._locks),
            "entities_cached": sum(len(c) for c in self._caches),
            "background_tasks": len(self._background),
        }

    def spawn(self, work: Awaitable[Any], what: str) -> None:
        """Run follow-up work after the reply; failures are logged, never lost silently."""

        async def guarded() -> None:
            try:
                result = await work
                if isinstance(result, DomainError):
                    log.warning("%s refused: %s", what, result)
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.get_running_loop().create_task(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def handle(self, batch: list[Message]) -> list[Reply]:
        """Many messages in one call, run concurrently, each under its own entity's lock.

        A message that raises gives its own sender the exception, not the whole batch."""
        replies: list[Any] = await asyncio.gather(
            *(self.receive(m) for m in batch), return_exceptions=True
        )
        return sendable(replies)

    async def receive(self, message: Message) -> Reply:
        """One message; each kind of host says which it takes."""
        return DomainError("invalid_request", f"{type(message).__name__} is not for this host")

    async def ping(self) -> str:
        await ping(self.redis)
        return "ok"
