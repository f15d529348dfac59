"""The push of regional promotions: one paced loop for the whole platform.

Every rider-zone host runs a `Pusher` step every `TICK_S`; only the host holding the
pusher's lease in Redis (`promotions:pusher:{promo}`, `LEASE_S`, renewed every
`RENEW_S`) pushes, the others ask for the lease once a second. So the pace
(`O2O_PROMOTION_BATCH_PER_S`) holds for the platform, not per host, and a host that
dies hands the push over when its lease runs out: the next holder goes on from the
cursor recorded in Redis (`storage/promotions.py`).

Why here, apart from the order path: an order's changes and their events are the
merchant hosts' (placement, acceptance, the transitions) and the payment hosts'
(payment, refunds), and the replicas fan events out to sockets; a rider-zone host
only dispatches. The push costs Redis a script per customer, taken in slices of a
tenth of a second (50 customers at 500 a second) so an order event waits behind one
slice at most, never behind a whole promotion. `loadtests/bench_promotions.py`
measures order events' latency with and without a 10,000-customer push in flight.

The work of one slice: take the oldest push that may run (`promotions:jobs`), read a
page of the cell it is in (`ZSCAN` from its cursor, about as many entries as the pace
allows), tell the customers of the page who count there (one script each, in one
pipeline; a customer is told once whatever happens), then record the cursor and the
counts, only while holding the lease. A push ends when its last cell is done
(`done`), or when its window closes first (`expired`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from domain.promotions import Pace
from storage.promotions import Job, PromotionStore
from storage.redis import UNAVAILABLE

log = logging.getLogger(__name__)

TICK_S = 0.1
LEASE_S = 5.0
RENEW_S = 1.0
# How often a host that is not pushing asks for the lease, and how often the pusher
# looks for a push when it has none.
IDLE_S = 1.0
# Pages one slice reads at most (cells with nobody in them cost a page each).
PAGES_PER_TICK = 20


def wall_now() -> datetime:
    return datetime.now(UTC)


class Pusher:
    """One process's part in pushing promotions (see the module's docstring)."""

    def __init__(
        self,
        store: PromotionStore,
        name: str,
        per_s: int,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = wall_now,
    ) -> None:
        self.store = store
        # Unique per process: a host restarted under the same name is another holder.
        self.owner = f"{name}:{uuid.uuid4().hex[:8]}"
        self.pace = Pace(per_s)
        self.clock = clock
        self.wall = wall
        self.leading = False
        self._renewed = 0.0
        self._next_try = 0.0
        self._next_look = 0.0
        self._paused_until = 0.0
        self._job: Job | None = None

    async def step(self) -> int:
        """One slice; returns how many customers it told. While Redis is unavailable it
        waits `IDLE_S` between tries (a page it could not record is worked again)."""
        now = self.clock()
        if now < self._paused_until:
            return 0
        try:
            told = await self._step(now)
        except UNAVAILABLE as err:
            log.warning("promotions: %s cannot reach Redis (%r); again shortly", self.owner, err)
            self._paused_until, self._job = now + IDLE_S, None
            return 0
        return told

    async def _step(self, now: float) -> int:
        if not self.leading:
            if now < self._next_try:
                return 0
            self._next_try = now + IDLE_S
            if not await self.store.lead(self.owner, int(LEASE_S * 1000)):
                return 0
            log.info("promotions: %s pushes now", self.owner)
            self.leading, self._renewed, self._job = True, now, None
            self.pace = Pace(self.pace.per_s)
        elif now - self._renewed >= RENEW_S:
            if not await self.store.keep(self.owner, int(LEASE_S * 1000)):
                self._lose("its lease ran out")
                return 0
            self._renewed = now
        told = 0
        for _ in range(PAGES_PER_TICK):
            budget = self.pace.allowance(self.clock())
            if budget < 1:
                break
            job = await self._current()
            if job is None:
                self.pace.idle()
                break
            examined, pushed = await self._page(job, budget)
            if not self.leading:
                break
            self.pace.spend(max(examined, 1))
            told += pushed
        return told

    async def _current(self) -> Job | None:
        if self._job is not None:
            return self._job
        now = self.clock()
        if now < self._next_look:
            return None
        promotion_id = await self.store.due(int(self.wall().timestamp() * 1000))
        if promotion_id is None:
            self._next_look = now + IDLE_S
            return None
        self._job = await self.store.job(promotion_id)
        if self._job is None:
            # Its record is gone (kept a week after its end): only the queue entry is left.
            await self.store.advance(self.owner, promotion_id, 0, "0", 0, 0, "expired", self.wall())
        return self._job

    async def _page(self, job: Job, budget: int) -> tuple[int, int]:
        """Work one page of the job; `(entries examined, customers told)`."""
        at = self.wall()
        now_ms = int(at.timestamp() * 1000)
        if now_ms >= job.ends_ms or job.cell >= len(job.cells):
            finished = "expired" if job.cell < len(job.cells) else "done"
            await self._record(job, 0, 0, finished, at)
            return 0, 0
        cell = job.cells[job.cell]
        cursor, examined, live = await self.store.scan(cell, job.scan, budget, now_ms)
        outcomes = await self.store.tell(
            job.promotion_id, job.event, job.ends_ms, [(c, cell) for c in live], now_ms
        )
        pushed = outcomes["pushed"]
        if cursor == "0":
            job.cell, job.scan = job.cell + 1, "0"
        else:
            job.scan = cursor
        finished = "done" if job.cell >= len(job.cells) else ""
        await self._record(job, examined, pushed, finished, at)
        return examined, pushed

    async def _record(
        self, job: Job, examined: int, pushed: int, finished: str, at: datetime
    ) -> None:
        recorded = await self.store.advance(
            self.owner, job.promotion_id, job.cell, job.scan, examined, pushed, finished, at
        )
        if not recorded:
            self._lose("another process holds the lease")
        elif finished:
            log.info("promotions: push of %s %s", job.promotion_id, finished)
            self._job = None

    def _lose(self, why: str) -> None:
        log.warning("promotions: %s stops pushing: %s", self.owner, why)
        self.leading, self._job = False, None

    async def close(self) -> None:
        """Hand the lease over at once (a host stopping on purpose)."""
        if self.leading:
            await self.store.let_go(self.owner)
            self.leading = False
