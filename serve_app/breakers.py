"""A circuit breaker per merchant around the replica's calls to merchant entities.

A merchant's entity that stops answering in time (its calls time out, or fail with
something other than a refusal) opens its breaker after `merchant_breaker_failures`
in a row: for `merchant_breaker_open_s` its calls are answered at once with 503
`merchant_unavailable` and `Retry-After`, without a message to its host; then calls
are let through again, and the first answer closes the breaker (a failure opens it
again). Other merchants are not touched: each has its own breaker (`purgatory`, in
this replica's memory: a replica learns on its own, and a breaker costs no Redis
round trip per call).

Why lanes: a host answers a batch of messages when its slowest message is done, and
placements to a host travel one batch at a time (`actors/directory.py`), so one slow
merchant's placement would hold up every placement batched with it or queued behind
it. So here:

- a batch that has not come back in several times the host's usual round trip
  (`STALL_FACTOR`) stops holding up the next: the next messages to that host leave
  in another lane, and every merchant of the stuck batch is sent apart;
- a merchant sent apart (from a stuck batch, or late) travels in batches of its own
  messages only, until it has answered in time for `merchant_breaker_open_s` with its
  breaker closed. Only there is it checked by its breaker and are its late answers
  counted: in a shared batch nobody can tell which merchant was slow.

What remains: a merchant's first slow message cannot be told apart in advance, so
the few messages in its batch or queued behind it in that lane before the batch
counts as stuck wait up to `merchant_call_timeout_s` and are answered 503
`merchant_unavailable` (retry in a second), once each time a merchant turns slow.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import redis.exceptions
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, RayActorError

from actors.directory import (
    MESSAGES_IN_FLIGHT,
    MOVED_RETRIES,
    Act,
    Directory,
    Message,
    Onboard,
    Place,
    Reply,
    SetMenuItem,
    host_name,
    moved,
    moved_pause,
    still_moving,
)
from domain.errors import DomainError
from storage.batching import Batcher
from storage.settings import Settings

KIND = "merchant"

# What is not the merchant's fault, so never opens its breaker: its host restarting
# (every merchant of the host fails alike, and Ray brings the host back in about two
# seconds), Redis away (the platform answers 503 for everybody), and a caller that
# went away. A refusal (out of stock...) is a reply, not an exception, and counts as
# an answer.
NOT_THE_MERCHANT: tuple[type[BaseException], ...] = (
    RayActorError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    asyncio.CancelledError,
)


class MerchantTimeout(Exception):
    """A merchant's entity did not answer within `merchant_call_timeout_s`."""


class RetryLater(DomainError):
    """A refusal that says when to come back (`Retry-After`, in `details`)."""

    def __init__(self, code: str, message: str, retry_after_s: int, **details: object) -> None:
        super().__init__(code, message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s


def merchant_unavailable(merchant_id: str, retry_after_s: float) -> RetryLater:
    return RetryLater(
        "merchant_unavailable",
        "the merchant is not answering; try again later",
        max(1, math.ceil(retry_after_s)),
        merchant_id=merchant_id,
    )


# A batch to a host that has not come back in `STALL_FACTOR` times the host's usual
# round trip, and never less than `STALL_FLOOR_S` (placement's p99 beside full load is
# about 50 ms), no longer holds up the messages after it, and the merchants it carries
# are sent apart. Relative to the usual: on a starved machine every batch is slow, and
# sending everybody apart would only cost more Ray calls.
STALL_FLOOR_S = 0.1
STALL_FACTOR = 5.0
# Weight of each new round trip in a host's usual one.
PACE_WEIGHT = 0.05
# Lanes to one host at most: past this, stuck batches share the last one.
LANES_PER_HOST = 8


class Pace:
    """A host's usual batch round trip (a moving average), and so when one is stuck."""

    def __init__(self) -> None:
        self.usual_s = STALL_FLOOR_S / STALL_FACTOR

    def stall_s(self) -> float:
        return max(STALL_FLOOR_S, STALL_FACTOR * self.usual_s)

    def took(self, seconds: float) -> None:
        # A stuck batch counts as no slower than stuck: one cannot drag the usual up.
        seconds = min(seconds, self.stall_s())
        self.usual_s += PACE_WEIGHT * (seconds - self.usual_s)


def merchant_of(message: Message) -> str | None:
    match message:
        case Place():
            return str(message.request.get("merchant_id"))
        case Act() | SetMenuItem():
            return message.merchant_id
        case Onboard():
            return str(message.profile.get("id"))
    return None


class Lane:
    """A batcher to one host that knows which of its batches in flight are stuck."""

    def __init__(self, handle: ActorHandle, in_flight: int, pace: Pace | None = None) -> None:
        self.handle = handle
        self.in_flight = in_flight
        self.pace = pace or Pace()
        # Batches in flight: when each left, and the merchants it carries.
        self._sent: dict[int, tuple[float, list[Message]]] = {}
        self._told: set[int] = set()
        self._next = 0

        async def deliver(batch: list[Message]) -> list[Reply]:
            self._next += 1
            ticket = self._next
            sent = time.monotonic()
            self._sent[ticket] = (sent, batch)
            try:
                replies: list[Reply] = await handle.handle.remote(batch)
            finally:
                del self._sent[ticket]
                self.pace.took(time.monotonic() - sent)
            return replies

        self.batcher: Batcher[Message, Reply] = Batcher(deliver, max_in_flight=in_flight)

    def stuck(self, now: float) -> list[list[Message]] | None:
        """None while a batch slot is free or in time; else the stuck batches not told
        of before (each is told once)."""
        stall_s = self.pace.stall_s()
        late = [(t, b) for t, (sent, b) in self._sent.items() if now - sent > stall_s]
        if len(late) < self.in_flight:
            return None
        fresh = [batch for ticket, batch in late if ticket not in self._told]
        self._told.update(ticket for ticket, _ in late)
        self._told.intersection_update(self._sent)
        return fresh


class GuardedDirectory(Directory):
    """The replica's directory: every message to a merchant passes its breaker, with a
    bound on how long the replica waits for the answer."""

    def __init__(self, settings: Settings, redis: Any = None) -> None:
        super().__init__(settings, redis)
        self.timeout_s = settings.merchant_call_timeout_s
        self.open_s = settings.merchant_breaker_open_s
        self.breakers = AsyncCircuitBreakerFactory(
            default_threshold=settings.merchant_breaker_failures,
            default_ttl=settings.merchant_breaker_open_s,
            exclude=list(NOT_THE_MERCHANT),
        )
        self._shared: dict[tuple[str, int], list[Lane]] = {}
        self._paces: dict[str, Pace] = {}
        # Merchants sent apart: their own lane, and until when (monotonic) at least.
        self._apart: dict[str, tuple[Lane, float]] = {}

    async def send(
        self, kind: str, entity_id: str, message: Message, in_flight: int = MESSAGES_IN_FLIGHT
    ) -> Reply:
        if kind != KIND:
            return await super().send(kind, entity_id, message, in_flight)
        for attempt in range(MOVED_RETRIES):
            await self.refresh_quietly(force=attempt > 0)
            try:
                reply = await self._guarded(entity_id, message, in_flight)
            except DomainError as err:
                if not moved(err):
                    raise
                reply = err
            except ActorDiedError:
                # The merchant's host was replaced: its name belongs to a new actor now.
                self._forget(host_name(KIND, self.host_of(KIND, entity_id)))
                if attempt + 1 == MOVED_RETRIES:
                    raise
                continue
            if not moved(reply):
                return reply
            # Its own lane leads to the host it left.
            self._apart.pop(entity_id, None)
            await asyncio.sleep(moved_pause(attempt))
        return still_moving()

    def _forget(self, name: str) -> None:
        super()._forget(name)
        for key in [k for k in self._shared if k[0] == name]:
            del self._shared[key]
        self._apart.clear()

    async def _guarded(self, entity_id: str, message: Message, in_flight: int) -> Reply:
        if self.mailroom is not None:
            return await self._lettered(entity_id, message)
        own = await self._own_lane(entity_id)
        if own is None:
            return await self._shared_call(entity_id, message, in_flight)
        # Only a merchant's own batches are its own doing: only they count for its
        # breaker (an open breaker keeps its merchant apart).
        breaker = await self.breakers.get_breaker(entity_id)
        try:
            async with breaker:
                return await self._own_call(own, entity_id, message)
        except OpenedState as opened:
            return merchant_unavailable(entity_id, opened.opened_at + self.open_s - time.time())
        except MerchantTimeout:
            opened_now = breaker.context.state == "opened"
            return merchant_unavailable(entity_id, self.open_s if opened_now else 1)

    async def _lettered(self, merchant_id: str, message: Message) -> Reply:
        """By mailbox each message is answered on its own, so a slow merchant delays its
        own letters only (its host runs each under its entity's lock): no lanes, and
        every late or failed answer counts for its breaker."""
        breaker = await self.breakers.get_breaker(merchant_id)
        try:
            async with breaker:
                try:
                    # Bounded once Redis has the letter: a store that is down is a 503
                    # of its own, not the merchant's lateness.
                    return await self.by_mailbox(KIND, merchant_id, message, self.timeout_s)
                except TimeoutError:
                    raise MerchantTimeout(merchant_id) from None
        except OpenedState as opened:
            return merchant_unavailable(merchant_id, opened.opened_at + self.open_s - time.time())
        except MerchantTimeout:
            opened_now = breaker.context.state == "opened"
            return merchant_unavailable(merchant_id, self.open_s if opened_now else 1)

    async def _shared_call(self, merchant_id: str, message: Message, in_flight: int) -> Reply:
        lane = await self._shared_lane(merchant_id, in_flight)
        try:
            return await asyncio.wait_for(lane.batcher.submit(message), self.timeout_s)
        except TimeoutError:
            # Late behind or beside somebody else: sent apart, not blamed.
            self._set_apart(merchant_id, lane.handle)
            return merchant_unavailable(merchant_id, 1)

    async def _own_call(self, lane: Lane, merchant_id: str, message: Message) -> Reply:
        try:
            return await asyncio.wait_for(lane.batcher.submit(message), self.timeout_s)
        except TimeoutError:
            self._set_apart(merchant_id, lane.handle)
            raise MerchantTimeout(merchant_id) from None
        except Exception as err:
            if not isinstance(err, NOT_THE_MERCHANT):
                self._set_apart(merchant_id, lane.handle)
            raise

    async def _shared_lane(self, merchant_id: str, in_flight: int) -> Lane:
        name = host_name(KIND, self.host_of(KIND, merchant_id))
        handle = await self._handle(name)
        lanes = self._shared.setdefault((name, in_flight), [])
        now = time.monotonic()
        for lane in lanes:
            stuck = lane.stuck(now)
            if stuck is None:
                return lane
            # Whoever of these is slow, its next messages must not meet the others'.
            for batch in stuck:
                for message in batch:
                    if (other := merchant_of(message)) is not None:
                        self._set_apart(other, handle)
        if len(lanes) >= LANES_PER_HOST:
            return lanes[-1]
        lane = Lane(handle, in_flight, self._paces.setdefault(name, Pace()))
        lanes.append(lane)
        return lane

    async def _own_lane(self, merchant_id: str) -> Lane | None:
        apart = self._apart.get(merchant_id)
        if apart is None:
            return None
        lane, until = apart
        if time.monotonic() < until:
            return lane
        breaker = await self.breakers.get_breaker(merchant_id)
        if breaker.context.state != "closed" or breaker.context.failure_count:
            return lane
        del self._apart[merchant_id]
        return None

    def _set_apart(self, merchant_id: str, handle: ActorHandle) -> None:
        until = time.monotonic() + self.open_s
        apart = self._apart.get(merchant_id)
        lane = apart[0] if apart is not None else Lane(handle, MESSAGES_IN_FLIGHT)
        self._apart[merchant_id] = (lane, until)
