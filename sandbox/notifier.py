"""How the sandbox tells the merchant what happened: signed, retried notifications.

Each notification is posted to the intent's notify_url until the merchant answers
"success" or the attempts run out, backing off between failures. The knobs make
delivery as unreliable as a real provider's: notifications dropped, sent twice,
late, or held back and released in reverse order. Every attempt is logged so tests
can see what was sent and what became of it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import orjson

from storage.provider import SIGNATURE_HEADER, sign

log = logging.getLogger("sandbox")

# Read at most this much of a webhook reply; "success" is all that matters.
_MAX_REPLY_BYTES = 64 * 1024
NOTIFY_TIMEOUT_S = 5.0
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 5.0


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def backoff_s(attempt: int) -> float:
    """Pause after failed attempt number `attempt` (1-based): 0.2, 0.4, 0.8 ... capped."""
    # Exponent capped so very large max_attempts cannot overflow the float.
    return min(BACKOFF_BASE_S * 2 ** min(attempt - 1, 16), BACKOFF_CAP_S)


class DeliveryKnobs(Protocol):
    """The knobs that shape delivery; the provider's `Knobs` has them all."""

    drop_rate: float
    duplicate: int
    delay_ms: int
    reorder: bool
    max_attempts: int


@dataclass
class Notification:
    id: str
    type: str
    intent_id: str
    out_trade_no: str
    amount_fen: int
    refund_no: str | None
    at: float
    notify_url: str
    # pending -> delivered | abandoned; "held" while reorder keeps it back.
    state: str = "pending"
    # Serialised once so every attempt and duplicate carries byte-identical
    # content under a fresh signature.
    body: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.body = orjson.dumps(
            {
                "id": self.id,
                "type": self.type,
                "intent_id": self.intent_id,
                "out_trade_no": self.out_trade_no,
                "amount_fen": self.amount_fen,
                "refund_no": self.refund_no,
                "at": rfc3339(self.at),
            }
        )


class Notifier:
    """Delivers the provider's notifications and remembers every attempt."""

    def __init__(self, secret: str, knobs: Callable[[], DeliveryKnobs], seed: int = 0) -> None:
        self.secret = secret
        # A getter rather than the knobs themselves: resetting replaces them, and
        # deliveries re-read them every round so tests can change them mid-flight.
        self.knobs = knobs
        self.seed = seed
        self.rng = random.Random(seed)
        self.notifications: list[Notification] = []
        self.attempts: list[dict[str, Any]] = []
        self.held: list[Notification] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._closing = False

    # ---- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        self._closing = False
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=NOTIFY_TIMEOUT_S),
            headers={"User-Agent": "o2o-payment-sandbox/1"},
        )

    async def stop(self) -> None:
        self._closing = True
        # Loop because a cancelled release task may have spawned a delivery
        # just before it noticed; _spawn refuses new work once closing.
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def pending_tasks(self) -> int:
        return len(self._tasks)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._closing:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reseed(self) -> None:
        # Reseeding makes each test that resets see the same random sequence.
        self.rng = random.Random(self.seed)

    # ---- notifications ---------------------------------------------------

    def notify(
        self,
        type_: str,
        *,
        intent_id: str,
        out_trade_no: str,
        amount_fen: int,
        refund_no: str | None,
        at: float,
        notify_url: str,
    ) -> None:
        notification = Notification(
            id=f"evt_{uuid.uuid4().hex}",
            type=type_,
            intent_id=intent_id,
            out_trade_no=out_trade_no,
            amount_fen=amount_fen,
            refund_no=refund_no,
            at=at,
            notify_url=notify_url,
        )
        self.notifications.append(notification)
        if self.knobs().reorder:
            notification.state = "held"
            self.held.append(notification)
        else:
            self._spawn(self._deliver(notification, None))

    def release_held(self) -> int:
        batch = self.held[::-1]
        self.held = []
        if batch:
            self._spawn(self._release(batch))
        return len(batch)

    async def _release(self, batch: list[Notification]) -> None:
        # Concurrent first attempts could still arrive in any order, so each
        # one waits for the previous first attempt to finish; retries after
        # that run independently.
        for notification in batch:
            first_done = asyncio.Event()
            notification.state = "pending"
            self._spawn(self._deliver(notification, first_done))
            await first_done.wait()

    async def _deliver(self, n: Notification, first_done: asyncio.Event | None) -> None:
        try:
            if self.knobs().delay_ms:
                await asyncio.sleep(self.knobs().delay_ms / 1000)
            attempt = 0
            # Knobs are re-read every round so tests can change them mid-flight.
            while attempt < self.knobs().max_attempts:
                attempt += 1
                delivered = await self._attempt(n, attempt)
                if first_done is not None:
                    first_done.set()
                if delivered:
                    n.state = "delivered"
                    for copy in range(1, self.knobs().duplicate + 1):
                        await self._attempt(n, attempt, copy=copy)
                    return
                if attempt < self.knobs().max_attempts:
                    await asyncio.sleep(backoff_s(attempt))
            n.state = "abandoned"
            log.warning("gave up on notification %s after %d attempts", n.id, attempt)
        except Exception:
            log.exception("notification %s crashed", n.id)
        finally:
            if first_done is not None:
                first_done.set()

    async def _attempt(self, n: Notification, attempt: int, copy: int = 0) -> bool:
        # Duplicates imitate a provider re-sending after a lost ack, which is
        # independent of the (already decided) fate of the original.
        if copy == 0 and self.rng.random() < self.knobs().drop_rate:
            self._record(n, attempt, copy, "dropped", None)
            return False
        if self._session is None:
            self._record(n, attempt, copy, "failed", "provider not started")
            return False
        body = n.body
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
        }
        try:
            async with self._session.post(
                n.notify_url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                reply = await _read_capped(resp, _MAX_REPLY_BYTES + 1)
                ok = (
                    resp.status == 200
                    and len(reply) <= _MAX_REPLY_BYTES
                    and reply.decode("utf-8", "replace").strip() == "success"
                )
                detail = None if ok else f"HTTP {resp.status}: {reply[:80]!r}"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self._record(n, attempt, copy, "delivered" if ok else "failed", detail)
        return ok

    def _record(
        self, n: Notification, attempt: int, copy: int, outcome: str, detail: str | None
    ) -> None:
        self.attempts.append(
            {
                "id": n.id,
                "type": n.type,
                "intent_id": n.intent_id,
                "out_trade_no": n.out_trade_no,
                "refund_no": n.refund_no,
                "attempt": attempt,
                "copy": copy,
                "outcome": outcome,
                "detail": detail,
                "at": rfc3339(time.time()),
            }
        )


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    # A single read() returns whatever chunk has arrived, which may be only
    # part of "success"; keep reading until EOF or the cap.
    buf = bytearray()
    while len(buf) < limit:
        chunk = await resp.content.read(limit - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)
