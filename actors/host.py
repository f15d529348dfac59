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

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from actors.directory import (
    MOVED,
    Directory,
    Message,
    Reply,
    configured_hosts,
    host_name,
    settings_digest,
    shard_for,
    shards_of_host,
)
from actors.mailroom import open_letter, reply_payload
from domain import reactions as r
from domain.errors import DomainError
from storage import keys
from storage.faults import FaultStore
from storage.inboxes import InboxStore
from storage.layout import Layout, LayoutStore
from storage.mailboxes import BATCH as MAIL_BATCH
from storage.mailboxes import Doorbell, Entry, Letter, MailboxStore
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
# How often a host reads the host layout, how long it waits for another host to hand
# over a shard it gained (a dead host never does: it restarts under the new layout and
# owns nothing of it), and how long for its own messages under way on a shard it lost.
LAYOUT_WATCH_S = 1.0
HANDOVER_WAIT_S = 15.0
LET_GO_WAIT_S = 10.0


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

    Messages come as letters in its shards' command mailboxes (`actors/mailroom.py`),
    read by one loop that starts each as a task of its own (so a slow entity holds up
    only its own letters), acknowledged and answered once its effect is stored; or as
    Ray calls to `handle` (`entity_transport = "ray"`). The follow-ups other entities
    post to this host's shards (`storage/mailboxes.py`) are read by another loop and
    applied by `react`; each is acknowledged once its effect is stored. A letter or a
    follow-up that a crash interrupts is read again by the restarted host (a letter
    only while its sender still waits).

    Which shards are this host's comes from the host layout in Redis
    (`storage/layout.py`), watched every second. When it changes, the host first stops
    taking messages for the shards it lost (their senders are told `entity_moved` and
    go to the new owner), lets what is under way on them finish, stops reading their
    mailboxes and drops their entities from memory, then marks the new epoch handed
    over. A host that gained shards holds their messages until every other host has
    handed over under that epoch, takes over what their mailboxes hold pending under
    another host's name, and only then serves them, loading each entity from Redis.
    Everything an entity is lives in Redis, so nothing else has to travel.
    """

    # The entity kind hosted, which names the mailboxes read and the consumer.
    KIND: ClassVar[str] = ""

    def __init__(self, settings: Settings, index: int = 0) -> None:
        self.settings = settings
        self.index = index
        self.redis = connect(settings.effective_redis_url)
        self.scripts = Scripts(self.redis)
        self.directory = Directory(settings, self.redis)
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
        # Until the layout is read: what the settings say (tests build hosts directly).
        self.layouts = LayoutStore(self.redis)
        self.layout = (
            Layout(max(1, configured_hosts(self.KIND, settings))) if self.KIND else Layout(1)
        )
        self.shards: list[int] = []
        self._owned: set[int] = set()
        self._arriving: dict[int, asyncio.Event] = {}
        self._busy: Counter[int] = Counter()
        self._adopted = asyncio.Event()
        self._watching = False
        self.epoch = -1
        self._mail_stopping = False
        self._closed = False
        self._mail: asyncio.Task[None] | None = None
        # The command mailboxes' reader, the letters it started and has not answered,
        # and the answers waiting for the next round trip (`actors/mailroom.py`).
        self._letters: asyncio.Task[None] | None = None
        self._letters_running: set[tuple[str, str]] = set()
        # Letters done and not yet acknowledged, each with its sender's channel and
        # (request id, reply), or None when it was dropped unapplied.
        self._answers: list[tuple[Letter, tuple[str, tuple[str, Any]] | None]] = []
        self._answering: asyncio.Task[None] | None = None
        # The host's own background loops (deadlines, expiries, polls), for `close`.
        self._loops: list[asyncio.Task[None] | None] = []

    def start(self) -> None:
        """Start what runs from the host's start: reading its mailboxes. Ray runs an async
        actor's `__init__` on its loop; outside one (a test) nothing starts."""
        if not self.KIND:
            return
        with contextlib.suppress(RuntimeError):
            self._loops.append(asyncio.get_running_loop().create_task(self._watch_layout()))
            self._watching = True
        # What a host that died between a commit and its relay left in the outboxes.
        self.every(
            OUTBOX_SWEEP_S,
            "relaying outboxes",
            lambda: self.relay.sweep([keys.outbox(self.KIND, shard) for shard in self.shards]),
        )

    # -- which shards are this host's ---------------------------------------------

    def owns(self, entity_id: str) -> bool:
        """Whether the entity's shard is this host's now (its background work on an
        entity asks this before acting)."""
        return shard_for(self.KIND, entity_id) in self._owned

    def entity_of(self, message: Message) -> str | None:
        """The entity a message is for (None: it is for the host, not one entity)."""
        return None

    async def owned(self, message: Message, act: Callable[[Message], Awaitable[Reply]]) -> Reply:
        """Run `act` on a message if its entity's shard is this host's; a message for a
        shard this host is taking over waits until it has; any other is answered
        `entity_moved`, and its sender asks the shard's new owner."""
        entity = self.entity_of(message) if self.KIND else None
        if entity is None:
            return await act(message)
        shard = shard_for(self.KIND, entity)
        if not await self._take(shard):
            return DomainError(MOVED, f"shard {shard} of {self.KIND} is not on {self.name}")
        self._busy[shard] += 1
        try:
            return await act(message)
        finally:
            self._busy[shard] -= 1

    async def _take(self, shard: int) -> bool:
        if not self._adopted.is_set() and not self._watching:
            # Built outside an event loop (a test): nothing watches the layout yet.
            self._watching = True
            self._loops.append(asyncio.get_running_loop().create_task(self._watch_layout()))
        if not self._adopted.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._adopted.wait(), HANDOVER_WAIT_S + LAYOUT_WATCH_S)
        if shard in self._owned:
            return True
        arriving = self._arriving.get(shard)
        if arriving is not None:
            await arriving.wait()
        return shard in self._owned

    async def _watch_layout(self) -> None:
        while not self._closed:
            try:
                layout = await self.layouts.read(self.KIND, self.layout.count)
                if layout.epoch != self.epoch:
                    await self.adopt(layout)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning(
                    "%s: reading the host layout failed (%r)", self.name, err, exc_info=True
                )
            await asyncio.sleep(LAYOUT_WATCH_S)

    async def adopt(self, layout: Layout) -> None:
        """Hand over the shards this host lost under `layout` and take those it gained."""
        mine = set(shards_of_host(self.KIND, self.index, layout))
        lost, gained = self._owned - mine, mine - self._owned
        self._owned -= lost
        for shard in gained:
            self._arriving.setdefault(shard, asyncio.Event())
        self.layout = layout
        self.directory.layouts[self.KIND] = layout
        if lost or gained or self._mail is None:
            await self._stop_mail()
        if lost:
            await self._let_go(lost)
        await self.layouts.mark_handed_over(self.KIND, self.index, layout.epoch)
        if gained:
            await self._wait_for_handover(layout)
            streams = self.mailboxes.streams(self.KIND, sorted(gained))
            commands = self.mailboxes.command_streams(self.KIND, sorted(gained))
            await self.mailboxes.open(streams + commands)
            taken = await self.mailboxes.take_over(streams + commands, self.name)
            if taken:
                log.info("%s: took over %d pending follow-ups and letters", self.name, taken)
        self._owned |= gained
        self.shards = sorted(self._owned)
        for shard in gained:
            self._arriving.pop(shard).set()
        self.epoch = layout.epoch
        if lost or gained:
            log.info(
                "%s: layout epoch %d, %d shards (lost %d, gained %d)",
                self.name,
                layout.epoch,
                len(self.shards),
                len(lost),
                len(gained),
            )
        self._adopted.set()
        self._start_mail()

    async def _let_go(self, lost: set[int]) -> None:
        deadline = time.monotonic() + LET_GO_WAIT_S
        # Polled: a message's count changes in `owned`, which must stay cheap.
        while any(self._busy[s] for s in lost) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        self.forget_shards(lost)

    def forget_shards(self, shards: set[int]) -> None:
        """Drop from memory the entities of shards this host no longer owns."""
        for store in self._caches:
            for entity_id in [e for e in store if shard_for(self.KIND, e) in shards]:
                del store[entity_id]
                self._touched.pop(entity_id, None)

    async def _wait_for_handover(self, layout: Layout) -> None:
        deadline = time.monotonic() + HANDOVER_WAIT_S
        others = [i for i in layout.hosts_involved() if i != self.index]
        while time.monotonic() < deadline:
            marks = await self.layouts.handed_over(self.KIND)
            late = [i for i in others if marks.get(i, -1) < layout.epoch]
            if not late:
                return
            await asyncio.sleep(0.05)
        log.warning(
            "%s: hosts %s did not hand over under epoch %d; taking their shards",
            self.name,
            late,
            layout.epoch,
        )

    def _start_mail(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        self._mail_stopping = False
        if self._mail is None or self._mail.done():
            self._mail = loop.create_task(self._read_mail())
        if self._letters is None or self._letters.done():
            self._letters = loop.create_task(self._read_letters())

    async def _stop_mail(self) -> None:
        """Let the mail reader finish the batch it is applying, and stop both readers
        (letters already started run on, and answer: `_let_go` waits for them)."""
        tasks = [t for t in (self._mail, self._letters) if t is not None and not t.done()]
        self._mail = self._letters = None
        if not tasks:
            return
        self._mail_stopping = True
        _, late = await asyncio.wait(tasks, timeout=LET_GO_WAIT_S)
        for task in late:
            task.cancel()

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
        """Apply the follow-ups posted to this host's shards, a batch at a time."""

        async def apply(entries: list[Entry]) -> int:
            return len(await self.apply_mail(entries))

        await self._read_loop(
            "the mailboxes",
            self.mailboxes.streams(self.KIND, self.shards),
            self.mailboxes.read,
            apply,
        )

    async def _read_letters(self) -> None:
        """Start each letter to this host's shards as it arrives, as a task of its own."""

        async def start(letters: list[Letter]) -> int:
            for letter in letters:
                # Entry ids repeat across streams (one per millisecond each).
                if (letter.stream, letter.entry_id) not in self._letters_running:
                    self._start_letter(letter)
            return 0  # none finished yet: one pending pass is enough

        streams = self.mailboxes.command_streams(self.KIND, self.shards)
        await self._read_loop("letters", streams, self.mailboxes.read_letters, start)

    async def _read_loop(
        self,
        what: str,
        streams: list[str],
        read: Callable[[list[str], str, bool], Awaitable[list[Any]]],
        take: Callable[[list[Any]], Awaitable[int]],
    ) -> None:
        """Read these mailboxes until the host stops reading them, and hand each batch to
        `take` (which says how many it finished): first what this host read before and
        did not finish (it died, or Redis failed under it), then new entries as the
        mailboxes' bells ring (all of them now and then, in case a bell was missed), and
        every `PENDING_PASS_S` again what is left pending."""
        if not streams:
            return  # owns no shard (beyond the layout's count): started again when it does
        pending, since_pass = True, time.monotonic()
        bell: Doorbell | None = None
        to_read = streams
        while not self._mail_stopping:
            try:
                if bell is None:
                    await self.mailboxes.open(streams)
                    bell = await self.mailboxes.doorbell(streams)
                    to_read = streams
                entries = await read(streams if pending else to_read, self.name, pending)
                done = await take(entries)
                if pending and done < max(len(entries), 1):
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
                log.warning("%s: reading %s failed (%r); again in a moment", self.name, what, err)
                if bell is not None:
                    await bell.close()
                    bell = None
                await asyncio.sleep(MAIL_RETRY_S)
        if bell is not None:
            await bell.close()

    def _start_letter(self, letter: Letter) -> None:
        self._letters_running.add((letter.stream, letter.entry_id))
        task = asyncio.get_running_loop().create_task(self._answer_letter(letter))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _answer_letter(self, letter: Letter) -> None:
        reply_to: tuple[str, tuple[str, Any]] | None = None
        try:
            opened = open_letter(letter.payload)
        except Exception as err:
            # No host could ever read it: kept, it would be read again forever.
            log.warning("%s: letter %s could not be read (%r)", self.name, letter.entry_id, err)
        else:
            if time.time() <= opened.deadline:
                # As a batch of one: each kind's `handle` is where it receives messages.
                try:
                    reply: Any = (await self.handle([opened.message]))[0]
                except Exception as err:
                    reply = sendable([err])[0]
                reply_to = (opened.reply_to, (opened.request_id, reply))
            # Else its sender has answered 503 already: the letter is dropped unapplied.
        self._answers.append((letter, reply_to))
        if self._answering is None:
            self._answering = asyncio.get_running_loop().create_task(self._send_answers())

    async def _send_answers(self) -> None:
        # The answers of letters finished in this turn of the loop share a round trip.
        await asyncio.sleep(0)
        try:
            while self._answers:
                batch, self._answers = self._answers, []
                # One message per sender: a replica waiting on many letters parses one.
                by_sender: dict[str, list[tuple[str, Any]]] = {}
                for _, reply_to in batch:
                    if reply_to is not None:
                        by_sender.setdefault(reply_to[0], []).append(reply_to[1])
                try:
                    await self.mailboxes.answer(
                        [letter for letter, _ in batch],
                        [(sender, reply_payload(pairs)) for sender, pairs in by_sender.items()],
                    )
                except Exception as err:
                    # Left pending: the next pending pass runs them again (idempotent).
                    log.warning("%s: answering %d letters failed (%r)", self.name, len(batch), err)
                for letter, _ in batch:
                    self._letters_running.discard((letter.stream, letter.entry_id))
        finally:
            self._answering = None

    async def apply_mail(self, entries: list[Entry]) -> list[Entry]:
        """Apply entries side by side; acknowledge and return those whose effect is stored
        (a refusal is a final answer too: the follow-up had nothing left to do)."""

        async def apply(entry: Entry) -> Reply | None:
            try:
                intent = r.from_wire(entry.message)
            except (KeyError, TypeError, ValueError) as err:
                # No host could ever apply it: kept, it would be read again forever.
                return DomainError("invalid_request", f"not a follow-up: {err!r}")
            return await self.react(intent)

        results = await asyncio.gather(*(apply(entry) for entry in entries), return_exceptions=True)
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

    async def follow_up(self, intents: list[r.Intent]) -> None:
        """Post follow-ups that no commit carries to the mailboxes of the entities that
        act on them (one round trip)."""
        await self.mailboxes.post(self.directory.post(intents))

    async def react(self, intent: r.Intent) -> Reply | None:
        """Apply one follow-up; each kind of host says which it takes."""
        return DomainError("invalid_request", f"{type(intent).__name__} is not for this host")

    async def close(self) -> None:
        """Stop the host's loops and let its connections go (tests; Ray kills hosts)."""
        # Nothing starts again after this, whatever was under way.
        self._closed = self._mail_stopping = True
        for task in (self._mail, self._letters, *self._loops):
            if task is not None:
                task.cancel()
        running = [t for t in (self._mail, self._letters, *self._loops) if t is not None]
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
            *(self.owned(m, self.receive) for m in batch), return_exceptions=True
        )
        return sendable(replies)

    async def receive(self, message: Message) -> Reply:
        """One message; each kind of host says which it takes."""
        return DomainError("invalid_request", f"{type(message).__name__} is not for this host")

    async def ping(self) -> str:
        await ping(self.redis)
        return "ok"

    async def deployed_with(self) -> str:
        """The digest of the settings this host runs with (`actors/registry.py`)."""
        return settings_digest(self.settings)

    async def deployment(self) -> Settings:
        """The settings this host runs with: a host added at run time gets the same."""
        return self.settings

    async def placement(self) -> dict[str, Any]:
        """Where this host runs and what it owns, for operations and tests."""
        return {
            "name": self.name,
            "node_id": ray.get_runtime_context().get_node_id(),
            "epoch": self.epoch,
            "shards": list(self.shards),
            "entities_cached": sum(len(c) for c in self._caches),
        }
